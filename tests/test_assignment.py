"""Assigning conversations (issue 21, point 4; conversations/assignment.py) over the real ASGI stack, PostgreSQL and
the channel layer (in-process, and the machine's Redis as between nodes).

What is checked: an assignment reaches every staff console's list and the staff watching it, and leaves the
assistant answering (it is not a take-over); a held conversation can be passed on by its holder only, and the hold
passes with it (the customer meets the new person, only they can reply); access is checked at the moment of the
action, for the actor and for the assignee; a console whose list is filtered ("mine") gets the row when it starts
to match and a ``conversation_hidden`` when it stops.
"""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model

from chatsite.routing import websocket_application
from conversations.auth import issue_token
from conversations.models import Conversation, Message
from tests import test_console
from tests.chat_support import HOST, ORIGIN, ChatClient, connect
from tests.test_console import staff_console, update_for, watch

# The console tests' people and channel layers (in-process, and Redis as between nodes).
backend, bob, cleanup, customer, sam = (test_console.backend, test_console.bob, test_console.cleanup,
                                        test_console.customer, test_console.sam)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def conversation(customer) -> Conversation:
    row = Conversation.objects.create(owner=customer, title="Broken lamp", status=Conversation.Status.WAITING_FOR_AGENT)
    Message.objects.create(conversation=row, role=Message.Role.USER, text="My lamp arrived broken")
    return row


async def console_at(user, path: str) -> ChatClient:
    """A console socket opened at ``path`` (a query string: the list page's search and filters)."""
    token, _ = await database_sync_to_async(issue_token)(user)
    headers = [(b"origin", ORIGIN), (b"host", HOST), (b"authorization", f"Bearer {token}".encode())]
    comm = WebsocketCommunicator(websocket_application, path, headers=headers)
    assert (await comm.connect())[0]
    return ChatClient(comm)


def assign(conversation: Conversation | str, agent) -> dict:
    return {"type": "assign", "conversation": str(getattr(conversation, "pk", conversation)),
            "agent": None if agent is None else agent.pk}


async def test_assigning_is_shown_to_every_console_and_does_not_take_over(conversation, customer, sam, bob, backend,
                                                                        cleanup):
    key = str(conversation.pk)
    first, _ = await staff_console(sam)
    second, _ = await staff_console(bob)
    await watch(first, key)
    await first.send(assign(conversation, bob))
    # The staff watching it get `assigned` (first), every console's list the row, on whichever node.
    assigned = await first.recv_type("assigned")
    for client in (first, second):
        item = await update_for(client, key, assignee={"id": bob.pk, "name": "Bob"})
        assert item["status"] == "waiting_for_agent" and item["holder"] is None
    assert assigned == {"type": "assigned", "conversation": key, "assignee": {"id": bob.pk, "name": "Bob"},
                        "by": {"id": sam.pk, "name": "Sam"}}
    row = await Conversation.objects.aget(pk=key)
    assert (row.assigned_agent_id, row.status) == (bob.pk, "waiting_for_agent")  # not taken over
    assert not await Message.objects.filter(conversation=row, role="system").aexists()  # the customer is told nothing

    # Assigning the same again changes nothing and tells nobody; to nobody clears it.
    await first.send(assign(conversation, bob))
    await first.send(assign(conversation, None))
    item = await update_for(second, key)
    assert item["assignee"] is None
    # A conversation assigned to Bob that nobody holds can still be taken over, and then it is Sam's.
    await first.send(assign(conversation, bob))
    await update_for(second, key, assignee={"id": bob.pk, "name": "Bob"})
    await first.send({"type": "take_over", "conversation": key})
    item = await update_for(second, key, status="agent")
    assert item["holder"] == item["assignee"] == {"id": sam.pk, "name": "Sam"}
    for client in (first, second):
        await client.close()


async def test_a_held_conversation_is_passed_on_by_its_holder_only(conversation, customer, sam, bob, cleanup):
    key = str(conversation.pk)
    chat = await connect(customer)
    await chat.send({"type": "join", "conversation": key})
    await chat.recv_type("conversation")
    first, _ = await staff_console(sam)
    second, _ = await staff_console(bob)
    await first.send({"type": "take_over", "conversation": key})
    await chat.recv_type("agent_joined")
    await watch(second, key)

    # Bob cannot take it from Sam by assigning it to himself, and Sam cannot assign it to nobody while holding it.
    await second.send(assign(conversation, bob))
    refusal = await second.recv_type("error")
    assert refusal["code"] == "conflict" and "Sam" in refusal["detail"]
    await first.send(assign(conversation, None))
    refusal = await first.recv_type("error")
    assert refusal["code"] == "conflict" and "hand it back" in refusal["detail"]

    # Sam passes it to Bob: the hold goes with it, the customer meets Bob.
    await first.send(assign(conversation, bob))
    joined = await chat.recv_type("agent_joined")
    assert joined["agent"] == {"name": "Bob"} and "Bob" in joined["text"]
    holder = await second.recv_type("holder")
    assert holder["holder"] == {"id": bob.pk, "name": "Bob"} and holder["action"] == "assign"
    assert holder["by"] == {"id": sam.pk, "name": "Sam"} and holder["status"] == "agent"
    row = await Conversation.objects.aget(pk=key)
    assert (row.assigned_agent_id, row.status) == (bob.pk, "agent")
    # Now only Bob replies.
    await first.send({"type": "agent_message", "conversation": key, "id": "s1", "text": "Sam here"})
    assert (await first.recv_type("error"))["code"] == "conflict"
    await second.send({"type": "agent_message", "conversation": key, "id": "b1", "text": "Bob here"})
    assert (await chat.recv_type("agent_message"))["text"] == "Bob here"
    for client in (chat, first, second):
        await client.close()


async def test_access_is_checked_for_the_actor_and_the_assignee_when_it_happens(conversation, customer, sam, bob,
                                                                             cleanup):
    key = str(conversation.pk)
    first, _ = await staff_console(sam)
    # The assignee must be active staff at that moment: a customer, a deactivated or a former staff member is not.
    await first.send(assign(conversation, customer))
    assert (await first.recv_type("error"))["code"] == "forbidden"
    await get_user_model().objects.filter(pk=bob.pk).aupdate(is_staff=False)
    await first.send(assign(conversation, bob))
    assert (await first.recv_type("error"))["code"] == "forbidden"
    await first.send({"type": "assign", "conversation": key, "agent": 999999})
    assert (await first.recv_type("error"))["code"] == "forbidden"
    await first.send({"type": "assign", "conversation": key, "agent": "bob"})
    assert (await first.recv_type("error"))["code"] == "invalid"
    assert (await Conversation.objects.aget(pk=key)).assigned_agent_id is None

    # The actor too: staff rights removed while the socket is open (its revocation event lost) — refused, closed.
    await get_user_model().objects.filter(pk=bob.pk).aupdate(is_staff=True)
    await get_user_model().objects.filter(pk=sam.pk).aupdate(is_staff=False)
    await first.send(assign(conversation, bob))
    error = await first.recv_type("error")
    assert error["code"] == "forbidden" and error["reason"] == "staff_removed", error
    closed = await first.comm.receive_output(5)
    assert closed["type"] == "websocket.close" and closed["code"] == 4001
    assert (await Conversation.objects.aget(pk=key)).assigned_agent_id is None


async def test_a_filtered_console_gets_a_row_when_it_matches_and_loses_it_when_it_stops(conversation, sam, bob,
                                                                                     cleanup):
    key = str(conversation.pk)
    filtered = await console_at(bob, "/ws/console/?assigned=mine")  # as the page "/console/?assigned=mine" opens it
    assert (await filtered.recv())["items"] == []  # nothing is Bob's yet
    staff, _ = await staff_console(sam)

    await staff.send(assign(conversation, bob))
    item = (await filtered.recv_type("conversation_update"))["item"]
    assert item["conversation"] == key and item["assignee"]["id"] == bob.pk
    await staff.send(assign(conversation, sam))
    assert await filtered.recv_type("conversation_hidden") == {"type": "conversation_hidden", "conversation": key}
    # A change to a row it does not show: nothing at all.
    await staff.send(assign(conversation, None))
    await update_for(staff, key, assignee=None)
    assert await filtered.quiet(0.5)
    for client in (filtered, staff):
        await client.close()
