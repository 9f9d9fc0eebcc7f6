"""The staff console socket ``/ws/console/``: the live list, watched conversations, and the people's actions.

Thin like the chat socket it extends (same per-message ``seq`` dedupe and gap filling for the answer streams it
shows): parse a console frame, call ``conversations.console``, let the groups deliver the result. Staff only —
anonymous: ``error unauthenticated`` + close 4401; signed in but not staff: ``error forbidden`` + close 4403.

Groups: ``console`` (list rows), and per watched conversation ``conv.<hex>`` (exactly what the customer sees,
token by token) plus ``staff.<hex>`` (notes, holder changes, presence). Presence needs no shared store: a socket
that starts watching announces itself to ``staff.<hex>``, every other watcher answers it directly with ``here``,
and a socket that stops watching (or disconnects) announces ``leave`` — so it works across nodes through Redis.
"""

from __future__ import annotations

import logging
import uuid

from channels.db import database_sync_to_async

from conversations import (
    assignment,
    chat,
    console,
    console_search,
    groups,
    inbox,
    protocol,
    reminders,
    staff_presence,
    streaming,
    typing_indicators,
)
from conversations.access import requester_from_scope
from conversations.consumers import ChatConsumer
from conversations.models import Conversation, Message

log = logging.getLogger(__name__)


class ConsoleConsumer(ChatConsumer):
    parse = staticmethod(protocol.CONSOLE.parse)
    socket_kind = "console"

    async def connect(self) -> None:
        self.delivered: dict[str, int] = {}
        self.following: set[str] = set()
        self.watching: set[str] = set()  # conversation ids (str)
        self.watchers: dict[str, dict[str, dict]] = {}  # conversation -> channel -> person
        self.typing = typing_indicators.Throttle()
        user = self.scope.get("user")
        await self.accept()
        if user is None or not user.is_authenticated or not user.is_active:
            detail = self.scope.get("auth_error") or "Sign in as a staff member."  # e.g. the token was revoked
            await self._refuse(protocol.UNAUTHENTICATED, detail, protocol.CLOSE_UNAUTHENTICATED)
            return
        if not user.is_staff:
            await self._refuse(protocol.FORBIDDEN, "The support console is for staff only.", protocol.CLOSE_FORBIDDEN)
            return
        self.agent = user
        self.requester = requester_from_scope(self.scope)  # marks the socket as accepted; its sign-in, re-checked
        self.opened()
        await self.join_user_group()  # revocation closes it on any node (conversations/revocation.py)
        await self.take_place()  # counted apart from the user's chat sockets (conversations/open_sockets.py)
        await staff_presence.arrived(user.pk)  # someone is there: customers asking for a person wait for them
        self.present = True
        # The list page's search and filters, from its query string (conversations/console_search.py).
        self.list_query = console_search.ListQuery.from_query_string(self.scope.get("query_string", b""), user.pk)
        self.listed: set[str] = set()
        await self.channel_layer.group_add(groups.CONSOLE, self.channel_name)
        self.following.add(groups.CONSOLE)
        narrow = self.list_query.narrow if self.list_query.active else None
        items = await inbox.alist_items(narrow=narrow)
        if self.list_query.active:
            self.listed = {item["conversation"] for item in items}  # the rows this filtered list shows
        await self.send_frame(protocol.conversations_frame(items))
        reminders.ensure_running()

    async def _refuse(self, code: str, detail: str, close_code: int) -> None:
        await self.send_frame(protocol.error_frame(code, detail))
        await self.close(code=close_code)

    async def disconnect(self, code: int) -> None:
        for conversation in list(getattr(self, "watching", ())):
            await self._announce(conversation, "leave")
        if getattr(self, "present", False):
            self.present = False
            await staff_presence.left(self.agent.pk)
        await super().disconnect(code)

    # --- watching -------------------------------------------------------------------------------------------
    async def on_watch(self, frame: protocol.Watch) -> None:
        await self.watch(frame.conversation)

    async def watch(self, conversation_id: uuid.UUID) -> None:
        """Join the conversation's groups, then send its state, notes, traces and unfinished answers so far."""
        if str(conversation_id) in self.watching:
            return
        await console.aensure_staff(self.agent, self.requester)  # rights re-read now, not only at the handshake
        conversation = await Conversation.objects.filter(pk=conversation_id).afirst()
        if conversation is None:
            raise protocol.ProtocolError(protocol.NOT_FOUND, f"No conversation {conversation_id}.")
        key = str(conversation.pk)
        if key in self.watching:
            return
        await self.follow(conversation.pk)  # before any replay, so no live frame is missed (dedupe by seq)
        staff = groups.staff(conversation.pk)
        await self.channel_layer.group_add(staff, self.channel_name)
        self.following.add(staff)
        self.watching.add(key)
        self.watchers[key] = {self.channel_name: inbox.person(self.agent)}

        item = await console.amark_read(conversation.pk)
        if item is not None:
            await self.send_frame(protocol.conversation_update_frame(item))
        await self.send_frame(await chat.conversation_frame(conversation))
        for note in await database_sync_to_async(console.notes)(conversation.pk):
            await self.send_frame(note)
        for trace in await database_sync_to_async(console.traces)(conversation.pk):
            await self.send_frame(trace)
        unfinished = Message.objects.filter(
            conversation=conversation, role=Message.Role.ASSISTANT, state=Message.State.STREAMING
        ).order_by("created_at")
        async for message in unfinished:
            self.delivered.setdefault(str(message.pk), 0)
            for item in await streaming.replay(message, self.delivered[str(message.pk)]):
                await self.deliver(str(message.pk), item)
        await self._send_presence(key)
        await self._announce(key, "join")

    async def on_unwatch(self, frame: protocol.Unwatch) -> None:
        key = str(frame.conversation)
        if key not in self.watching:
            return
        await self._announce(key, "leave")
        self.watching.discard(key)
        self.watchers.pop(key, None)
        for group in (groups.conversation(key), groups.staff(key)):
            await self.channel_layer.group_discard(group, self.channel_name)
            self.following.discard(group)

    async def _announce(self, conversation: str, action: str) -> None:
        await self.channel_layer.group_send(
            groups.staff(conversation),
            {"type": groups.STAFF_PRESENCE, "action": action, "conversation": conversation,
             "channel": self.channel_name, "person": inbox.person(self.agent)},
        )

    async def _send_presence(self, conversation: str) -> None:
        people = {p["id"]: p for p in self.watchers.get(conversation, {}).values()}  # one entry per person
        watchers = sorted(people.values(), key=lambda p: (p["name"].lower(), p["id"]))
        await self.send_frame(protocol.presence_frame(uuid.UUID(conversation), watchers))

    # --- actions (acting on a conversation also watches it, so the actor sees the outcome like everyone) ------
    async def on_take_over(self, frame: protocol.TakeOver) -> None:
        await self.watch(frame.conversation)
        await console.take_over(frame.conversation, self.agent, self.requester)

    async def on_hand_back(self, frame: protocol.HandBack) -> None:
        await self.watch(frame.conversation)
        await console.hand_back(frame.conversation, self.agent, self.requester)

    async def on_resolve(self, frame: protocol.Resolve) -> None:
        await self.watch(frame.conversation)
        await console.resolve(frame.conversation, self.agent, self.requester)

    async def on_agent_message(self, frame: protocol.AgentMessage) -> None:
        await self.watch(frame.conversation)
        reply, created = await console.send_agent_message(
            frame.conversation, self.agent, frame.id, frame.text, self.requester
        )
        if not created:
            await self.send_frame(reply)  # a re-send: the saved message again, nothing new for the customer

    async def on_note(self, frame: protocol.Note) -> None:
        await self.watch(frame.conversation)
        await console.add_note(frame.conversation, self.agent, frame.text, self.requester)

    async def on_nudge(self, frame: protocol.Nudge) -> None:
        await self.watch(frame.conversation)
        await console.nudge(frame.conversation, self.agent, frame.text, self.requester)

    async def on_assign(self, frame: protocol.Assign) -> None:
        await self.watch(frame.conversation)
        await assignment.assign(frame.conversation, self.agent, frame.agent, self.requester)

    async def on_typing(self, frame: protocol.Typing) -> None:
        """A staff member is typing: to the customer, with their name. A watched conversation only needs the
        rights re-read (one SELECT); else ``watch`` checks them and that it exists (conversations/typing_indicators.py)."""
        if not self.typing.admit(frame.conversation, frame.typing):
            return
        if str(frame.conversation) in self.watching:
            await console.aensure_staff(self.agent, self.requester)
        else:
            await self.watch(frame.conversation)
        await typing_indicators.relay_from_agent(frame.conversation, frame.typing, console.public_agent(self.agent))

    handlers = {
        protocol.Watch: on_watch,
        protocol.Unwatch: on_unwatch,
        protocol.TakeOver: on_take_over,
        protocol.HandBack: on_hand_back,
        protocol.Resolve: on_resolve,
        protocol.AgentMessage: on_agent_message,
        protocol.Note: on_note,
        protocol.Nudge: on_nudge,
        protocol.Assign: on_assign,
        protocol.Typing: on_typing,
        protocol.Ping: ChatConsumer.on_ping,
    }

    # --- group events ---------------------------------------------------------------------------------------
    async def chat_frame(self, event: dict) -> None:
        """The customer's frames, plus the answer's trace once it is final and reading receipts for questions."""
        await super().chat_frame(event)
        frame = event["frame"]
        kind = frame.get("type")
        if kind == protocol.FINAL:
            trace = await database_sync_to_async(console.message_trace)(frame["message"])
            if trace is not None:
                await self.send_frame(trace)
        elif kind == protocol.QUESTION and frame.get("conversation") in self.watching:
            await console.amark_read(uuid.UUID(frame["conversation"]))

    async def staff_frame(self, event: dict) -> None:
        await self.send_frame(event["frame"])

    async def console_item(self, event: dict) -> None:
        """A list row changed: sent as it is, unless the page filters its list — then only a row that matches, and a
        ``conversation_hidden`` for a listed row that no longer does."""
        item = event["item"]
        if self.list_query.active:
            if not await self.list_query.amatches(item):
                if item["conversation"] in self.listed:
                    self.listed.discard(item["conversation"])
                    await self.send_frame(protocol.conversation_hidden_frame(item["conversation"]))
                return
            self.listed.add(item["conversation"])
        await self.send_frame(protocol.conversation_update_frame(item))

    async def staff_presence(self, event: dict) -> None:
        conversation, channel = event["conversation"], event["channel"]
        if conversation not in self.watching or channel == self.channel_name:
            return
        watchers = self.watchers.setdefault(conversation, {})
        if event["action"] == "leave":
            watchers.pop(channel, None)
        else:
            watchers[channel] = event["person"]
            if event["action"] == "join":  # tell the newcomer that this socket is here too
                await self.channel_layer.send(
                    channel,
                    {"type": groups.STAFF_PRESENCE, "action": "here", "conversation": conversation,
                     "channel": self.channel_name, "person": inbox.person(self.agent)},
                )
        await self._send_presence(conversation)
