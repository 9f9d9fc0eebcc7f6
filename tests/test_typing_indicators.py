"""Typing indicators (issue 21, point 4; conversations/typing_indicators.py, docs/protocol.md "Typing").

Over real sockets to a real Daphne node with the Redis channel layer: the customer's typing reaches the staff
watching the conversation and a staff member's reaches the customer — the other side only —, nothing is stored
(no message, no frame log entry, no list change, no replay to a socket that arrives later), extra frames are
dropped without an error, and the access checks of every action hold (another customer's conversation, a socket
whose staff rights went). Then in a real browser: a customer and a staff member each see the other typing, and it
goes away.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid

import pytest
import redis
from django.contrib.auth import get_user_model
from websockets.exceptions import ConnectionClosed

from conversations import protocol
from conversations.models import Conversation, Message
from tests.browser import new_page, sign_in
from tests.node_client import Client, get_token
from tests.test_chat_page import screenshot

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

pytestmark = [pytest.mark.django_db(transaction=True)]

REDIS = "redis://127.0.0.1:6379/0"
QUIET = 0.6  # seconds a socket must stay silent to show that nothing was relayed to it
PASSWORDS = {"carol": "pw-carol-Typing-1", "dave": "pw-dave-Typing-1", "sam": "pw-sam-Typing-1"}


@pytest.fixture
def prefix() -> str:
    try:
        redis.Redis.from_url(REDIS).ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.fail(f"The typing tests need the machine's Redis at {REDIS}: {exc}")
    return f"ty-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def people(transactional_db):
    users = get_user_model().objects
    carol = users.create_user("carol", password=PASSWORDS["carol"], first_name="Carol")
    users.create_user("dave", password=PASSWORDS["dave"], first_name="Dave")
    sam = users.create_user("sam", password=PASSWORDS["sam"], first_name="Sam", is_staff=True)
    conversation = Conversation.objects.create(owner=carol, title="Where is my parcel?")
    return carol, sam, conversation


@pytest.fixture
def node(daphne_server, prefix, people):
    """One node on the machine's Redis (channel layer and frame log), under a prefix of its own."""
    return daphne_server(REDIS_URL=REDIS, CHANNEL_PREFIX=prefix)


async def sockets(node, *who: tuple[str, str]) -> list[Client]:
    """Signed-in sockets: (username, path) each."""
    return [
        await Client.open(node, await asyncio.to_thread(get_token, node, name, PASSWORDS[name]), path)
        for name, path in who
    ]


async def quiet(client: Client, seconds: float = QUIET) -> list[dict]:
    """Every frame ``client`` receives within ``seconds`` (none expected where it is used)."""
    frames = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            frames.append(await client.recv(left))
        except TimeoutError:
            break
    return frames


async def settle(client: Client) -> None:
    """Everything this socket caused so far has been answered: a ping's pong came back."""
    marker = uuid.uuid4().hex
    await client.send({"type": protocol.PING, "t": marker})
    while (frame := await client.recv(10))["type"] != protocol.PONG or frame["t"] != marker:
        assert frame["type"] != protocol.ERROR, frame


async def watching(staff: Client, conversation: str) -> list[dict]:
    await staff.recv_type(protocol.CONVERSATIONS, 10)
    await staff.send({"type": protocol.WATCH, "conversation": conversation})
    frames = [await staff.recv(10)]
    while frames[-1]["type"] != protocol.PRESENCE:
        frames.append(await staff.recv(10))
    return frames + await quiet(staff)  # the list row marked read, which comes through the console group after


def typing(conversation: str, on: bool = True) -> dict:
    return {"type": protocol.TYPING, "conversation": conversation, "typing": on}


def test_each_side_sees_the_other_typing_and_nothing_is_stored(node, people, prefix):
    _carol, _sam, conversation_row = people
    conversation = str(conversation_row.pk)
    updated_at = conversation_row.updated_at

    async def scenario() -> None:
        customer, other_tab, staff = await sockets(
            node, ("carol", "/ws/chat/"), ("carol", "/ws/chat/"), ("sam", "/ws/console/")
        )
        for tab in (customer, other_tab):
            await tab.join(conversation)
        await watching(staff, conversation)

        await customer.send(typing(conversation))
        frame = await staff.recv_type(protocol.TYPING, 10)
        assert frame == {"type": "typing", "conversation": conversation, "typing": True, "agent": None}
        await customer.send(typing(conversation, False))
        assert (await staff.recv_type(protocol.TYPING, 10))["typing"] is False
        await settle(customer)
        assert await quiet(other_tab) == []  # the customer's own tabs: not the other side
        assert await quiet(staff) == []  # no list row changed, no unread count, nothing else

        await staff.send(typing(conversation))
        for tab in (customer, other_tab):
            frame = await tab.recv(10)
            assert frame == {"type": "typing", "conversation": conversation, "typing": True, "agent": {"name": "Sam"}}
        await settle(staff)
        assert await quiet(staff) == []  # not echoed to the console that typed

        # A staff member who opens it later is told nothing of the typing before: never stored, never replayed.
        (late,) = await sockets(node, ("sam", "/ws/console/"))
        replayed = await watching(late, conversation)
        assert protocol.TYPING not in {f["type"] for f in replayed}
        for client in (customer, other_tab, staff, late):
            await client.close()

    asyncio.run(scenario())
    assert not Message.objects.filter(conversation_id=conversation).exists()
    conversation_row.refresh_from_db()
    assert conversation_row.updated_at == updated_at  # no activity
    assert list(redis.Redis.from_url(REDIS).scan_iter(f"{prefix}:frames:*")) == []  # nothing in the frame log


def test_extra_frames_are_dropped_without_an_error(node, people):
    conversation = str(people[2].pk)

    async def scenario() -> None:
        customer, staff = await sockets(node, ("carol", "/ws/chat/"), ("sam", "/ws/console/"))
        await customer.join(conversation)
        await watching(staff, conversation)

        for _ in range(6):  # a burst faster than any page sends
            await customer.send(typing(conversation))
        await customer.send(typing(conversation, False))
        await customer.send(typing(conversation, False))  # a second "stopped" without a new "typing"
        await customer.send(typing(conversation))  # a new "typing" within the same second
        await settle(customer)  # no error frame on the way (settle asserts it)
        relayed = [f["typing"] for f in await quiet(staff, 1.0) if f["type"] == protocol.TYPING]
        assert relayed == [True, False]
        await customer.send(typing(conversation))  # a second later: relayed again
        assert (await staff.recv_type(protocol.TYPING, 10))["typing"] is True
        await customer.close()
        await staff.close()

    asyncio.run(scenario())


def test_refused_in_another_customers_conversation_and_without_staff_rights(node, people):
    _carol, sam, conversation_row = people
    conversation = str(conversation_row.pk)

    async def scenario() -> None:
        stranger, customer, staff = await sockets(
            node, ("dave", "/ws/chat/"), ("carol", "/ws/chat/"), ("sam", "/ws/console/")
        )
        await customer.join(conversation)
        await watching(staff, conversation)

        # Someone else's conversation looks like a missing one, and nothing reaches the staff watching it.
        await stranger.send(typing(conversation))
        error = await stranger.recv(10)
        assert error["type"] == protocol.ERROR and error["code"] == protocol.NOT_FOUND
        assert await quiet(staff) == []

        # A customer's account on the console: refused at the handshake, so it can never signal there.
        (not_staff,) = await sockets(node, ("carol", "/ws/console/"))
        refused = await not_staff.recv(10)
        assert refused["code"] == protocol.FORBIDDEN
        with pytest.raises(ConnectionClosed):
            await not_staff.recv(10)
        assert not_staff.ws.close_code == protocol.CLOSE_FORBIDDEN

        # Staff rights gone without the revocation event (a bulk update sends none): the typing frame itself
        # re-checks them, closes the socket with the reason, and the customer is told nothing.
        await asyncio.to_thread(lambda: get_user_model().objects.filter(pk=sam.pk).update(is_staff=False))
        await staff.send(typing(conversation))
        frame = await staff.recv_type(protocol.ERROR, 10)
        assert frame["reason"] == protocol.REVOKED_STAFF_REMOVED
        with pytest.raises(ConnectionClosed):
            await staff.recv(10)
        assert staff.ws.close_code == protocol.CLOSE_REVOKED
        assert await quiet(customer) == []
        await stranger.close()
        await customer.close()

    asyncio.run(scenario())


# --- in the browser ---------------------------------------------------------------------------------------------
INDICATOR = ".typing-indicator"


def indicator_says(page, text: str) -> None:
    page.wait_for_function(
        "text => document.querySelector('.typing-indicator')?.textContent === text", arg=text, timeout=8000
    )


def indicator_gone(page, timeout: int = 8000) -> None:
    page.wait_for_function("() => document.querySelector('.typing-indicator')?.textContent === ''", timeout=timeout)


@pytest.mark.e2e
def test_customer_and_staff_see_each_other_typing(browser, daphne_server, people):
    _carol, _sam, conversation_row = people
    conversation = str(conversation_row.pk)
    site = daphne_server()
    errors: list[str] = []
    customer_context, customer = new_page(browser, errors, width=390, height=760)
    staff_context, staff = new_page(browser, errors, width=1280, height=860)

    sign_in(customer, f"{site.url}/c/{conversation}/", "carol", PASSWORDS["carol"])
    customer.wait_for_function("document.querySelector('[data-chat]').dataset.connection === 'open'")
    sign_in(staff, f"{site.url}/console/c/{conversation}/", "sam", PASSWORDS["sam"])
    staff.wait_for_function("document.querySelector('[data-connection-state]').dataset.state === 'open'")
    staff.click("[data-action=take_over]")
    staff.wait_for_function("document.querySelector('[data-holder]').textContent.includes('You are answering')")
    customer.wait_for_selector(".msg-system[data-kind=agent_joined]")
    assert customer.locator(INDICATOR).get_attribute("aria-live") == "polite"
    assert customer.locator(INDICATOR).inner_text() == ""

    # The staff member types: the customer sees who; sending the reply takes it away at once.
    staff.locator("#agent-text").press_sequentially("Hi Carol, let me check", delay=40)
    indicator_says(customer, "Sam is typing…")
    screenshot(customer, "typing-customer-390")
    staff.press("#agent-text", "Enter")
    customer.wait_for_selector(".msg-agent")
    indicator_gone(customer, timeout=3000)

    # The customer types: the console says so; emptying the box takes it away.
    customer.locator("#question").press_sequentially("It was due on Monday", delay=40)
    indicator_says(staff, "Customer is typing…")
    screenshot(staff, "typing-console-1280")
    customer.fill("#question", "")  # an input event, like deleting the text
    indicator_gone(staff, timeout=3000)
    customer.wait_for_timeout(2100)  # the page tells at most every 2 s

    # Typing that just stops (no "stopped" frame: the box still holds text) goes away by itself after ~5 s.
    customer.locator("#question").press_sequentially("Still there?", delay=40)
    indicator_says(staff, "Customer is typing…")
    started = time.monotonic()
    indicator_gone(staff, timeout=9000)
    assert time.monotonic() - started > 3

    # The other widths, to look at.
    customer.set_viewport_size({"width": 1280, "height": 860})
    staff.locator("#agent-text").press_sequentially("One moment", delay=40)
    indicator_says(customer, "Sam is typing…")
    screenshot(customer, "typing-customer-1280")
    staff.set_viewport_size({"width": 390, "height": 760})
    customer.locator("#question").press_sequentially(" please", delay=40)
    indicator_says(staff, "Customer is typing…")
    screenshot(staff, "typing-console-390")

    assert not Message.objects.filter(conversation_id=conversation, text__icontains="typing").exists()
    customer_context.close()
    staff_context.close()
    assert errors == []
