"""At most CHAT_MAX_SOCKETS_PER_USER open sockets per user or visitor, across the site (issue 17, point 7;
conversations/open_sockets.py, docs/protocol.md "Close codes").

Real Daphne nodes: one with the in-memory layer (the count is the node's own), two sharing Redis (one count for the
site). Past the bound the user's OLDEST socket gets ``too_many_sockets`` and closes with 4429; the others keep
working. The chat page says why and does not reconnect.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
import uuid

import pytest
import requests
from django.contrib.auth import get_user_model

from conversations import protocol
from tests.node_client import get_token
from tests.test_revocation import accepted, assert_still_open, close_of, open_ws

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

REDIS = "redis://127.0.0.1:6379/0"
CHAT, CONSOLE = "/ws/chat/", "/ws/console/"
LIMIT = 3


@pytest.fixture
def users(transactional_db):
    make = get_user_model().objects.create_user
    make("sam", password="pw-sam-123", is_staff=True, first_name="Sam")
    make("carol", password="pw-carol-123")


async def assert_displaced(ws) -> None:
    """The socket was told why, then closed with 4429."""
    code, frames = await close_of(ws, 5)
    assert code == protocol.CLOSE_TOO_MANY_SOCKETS, (code, frames)
    assert frames[-1]["type"] == "error" and frames[-1]["code"] == protocol.TOO_MANY_SOCKETS, frames
    assert str(LIMIT) in frames[-1]["detail"]


def evicted_on(node) -> float:
    with urllib.request.urlopen(f"{node.url}/metrics", timeout=10) as response:
        lines = response.read().decode().splitlines()
    return sum(float(line.split()[-1]) for line in lines if line.startswith("chat_sockets_evicted_total{"))


async def test_one_socket_past_the_bound_closes_the_users_oldest_and_the_others_keep_working(daphne_server, users):
    node = daphne_server(CHAT_MAX_SOCKETS_PER_USER=str(LIMIT))
    sam = await asyncio.to_thread(get_token, node, "sam", "pw-sam-123")
    carol = await asyncio.to_thread(get_token, node, "carol", "pw-carol-123")
    oldest, *kept = [await accepted(node, CHAT, token=sam) for _ in range(LIMIT)]
    others = [await accepted(node, CHAT, token=carol) for _ in range(LIMIT)]  # another user counts apart
    consoles = [await accepted(node, CONSOLE, token=sam) for _ in range(LIMIT)]  # so do console sockets

    newest = await accepted(node, CHAT, token=sam)

    await assert_displaced(oldest)
    for ws in [*kept, newest, *others, *consoles]:
        await assert_still_open(ws)
    await accepted(node, CONSOLE, token=sam)  # one console socket too many: the oldest console socket goes
    await assert_displaced(consoles[0])
    for ws in [*kept, newest, *consoles[1:]]:
        await assert_still_open(ws)
    assert await asyncio.to_thread(evicted_on, node) == 2


async def test_an_anonymous_visitor_is_counted_by_their_session(daphne_server, users):
    node = daphne_server(CHAT_MAX_SOCKETS_PER_USER=str(LIMIT), CHAT_ALLOW_ANONYMOUS="true")

    def visitor() -> str:
        http = requests.Session()
        http.get(node.url + "/", timeout=30).raise_for_status()  # the chat page creates the visitor's session
        return http.cookies["sessionid"]

    first, second = await asyncio.to_thread(visitor), await asyncio.to_thread(visitor)
    oldest, *kept = [await accepted(node, CHAT, session=first) for _ in range(LIMIT)]
    strangers = [await accepted(node, CHAT, session=second) for _ in range(LIMIT)]

    newest = await accepted(node, CHAT, session=first)

    await assert_displaced(oldest)
    for ws in [*kept, newest, *strangers]:
        await assert_still_open(ws)


@pytest.mark.multinode
async def test_two_nodes_share_one_count_and_a_dead_nodes_sockets_cost_nothing(daphne_server, users):
    import redis

    try:
        redis.Redis.from_url(REDIS).ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.fail(f"This test needs the machine's Redis at {REDIS}: {exc}")
    env = {"REDIS_URL": REDIS, "CHANNEL_PREFIX": f"spu-{uuid.uuid4().hex[:10]}", "CHAT_MAX_SOCKETS_PER_USER": str(LIMIT)}
    node_a, node_b = daphne_server(**env), daphne_server(**env)
    token = await asyncio.to_thread(get_token, node_a, "carol", "pw-carol-123")
    first = await accepted(node_a, CHAT, token=token)
    second = await accepted(node_b, CHAT, token=token)
    third = await accepted(node_a, CHAT, token=token)

    fourth = await accepted(node_b, CHAT, token=token)  # over the bound across the site: the oldest, on A, closes
    await assert_displaced(first)
    fifth = await accepted(node_a, CHAT, token=token)  # and again: now the oldest is on B
    await assert_displaced(second)
    for ws in (third, fourth, fifth):
        await assert_still_open(ws)

    # A node dies with its sockets still counted: they are the oldest, so the next ones evict them, costing nothing.
    for ws in (third, fourth, fifth):
        await ws.close()
    on_a = [await accepted(node_a, CHAT, token=token) for _ in range(LIMIT)]
    node_a.kill()
    on_b = [await accepted(node_b, CHAT, token=token) for _ in range(LIMIT)]
    for ws in on_b:
        await assert_still_open(ws)
    await accepted(node_b, CHAT, token=token)  # now a live socket is the oldest: it goes
    await assert_displaced(on_b[0])
    assert on_a  # (dead with their node)


async def test_the_chat_page_says_why_it_was_closed_and_does_not_reconnect(daphne_server, users):
    """The bound at 1: opening the chat in a second tab closes the first, which says why and offers to use it there
    (which closes the second in turn), without reconnecting by itself."""
    from playwright.async_api import async_playwright

    from tests.browser import CHROMIUM, LAUNCH_ARGS

    node = daphne_server(CHAT_MAX_SOCKETS_PER_USER="1")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        # bypass_csp: wait_for evals nothing, but the policy is tested elsewhere (tests/test_page_security.py).
        context = await browser.new_context(bypass_csp=True)
        errors: list[str] = []
        sockets: dict[str, list[str]] = {"first": [], "second": []}
        first = await context.new_page()
        first.on("pageerror", lambda exc: errors.append(str(exc)))
        first.on("websocket", lambda ws: sockets["first"].append(ws.url))
        await first.goto(f"{node.url}/accounts/login/?next=/")
        await first.fill("#id_username", "carol")
        await first.fill("#id_password", "pw-carol-123")
        await first.click("button[type=submit]")
        await first.wait_for_url(f"{node.url}/")
        await first.click("[data-new-conversation]")
        await first.locator('[data-chat][data-connection="open"]').wait_for()

        second = await context.new_page()  # another tab of the same browser: the same session, the same user
        second.on("pageerror", lambda exc: errors.append(str(exc)))
        second.on("websocket", lambda ws: sockets["second"].append(ws.url))
        await second.goto(first.url)
        await second.locator('[data-chat][data-connection="open"]').wait_for()

        await first.locator('[data-chat][data-connection="displaced"]').wait_for(timeout=5000)
        banner = first.locator("[data-banner]")
        assert "open in too many windows or tabs" in await banner.inner_text()
        assert await first.locator("#question").is_disabled()
        await asyncio.sleep(3)  # the reconnect backoff starts at 0.5 s: a loop would have opened sockets by now
        assert (len(sockets["first"]), len(sockets["second"])) == (1, 1)
        assert await second.locator("[data-chat]").get_attribute("data-connection") == "open"

        await banner.locator("a").click()  # "Use it here": the person picks this tab; the other one closes instead
        await first.locator('[data-chat][data-connection="open"]').wait_for()
        await second.locator('[data-chat][data-connection="displaced"]').wait_for(timeout=5000)
        assert errors == []
        await browser.close()


def test_the_pages_know_the_too_many_sockets_error():
    from tests.chat_support import PROTOCOL_JS

    assert f'export const TOO_MANY_SOCKETS_ERROR = "{protocol.TOO_MANY_SOCKETS}";' in PROTOCOL_JS.read_text()


async def test_a_bench_of_one_user_with_many_sockets_runs_without_the_bound(daphne_server, users):
    """CHAT_MAX_SOCKETS_PER_USER=0 switches the bound off (bench/streams.py PRODUCTION_ENV: thousands of sockets of
    the one demo customer)."""
    node = daphne_server(CHAT_MAX_SOCKETS_PER_USER="0")
    token = await asyncio.to_thread(get_token, node, "carol", "pw-carol-123")
    sockets = [await open_ws(node, CHAT, token=token) for _ in range(30)]
    for ws in sockets:
        await ws.send(json.dumps({"type": "ping", "t": "x"}))
    for ws in sockets:
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "pong"
