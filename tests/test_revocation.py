"""Revocation within a second, on every node (issue 9, point 1; conversations/revocation.py, docs/security.md).

Two real Daphne nodes share the test database and the machine's Redis (a channel prefix unique to the test); this
test process publishes through the same Redis when it changes a user row itself (the ORM save an admin does).
Each trigger is made through its real path — the logout view, a save of the user row, the password-change view,
``POST /api/token/revoke/`` — on node A or in this process, and the sockets on node B must close with 4001 within a
second, with an ``error`` frame saying why; a new handshake with the same credential is then refused.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from pathlib import Path

import pytest
import requests
from channels.db import database_sync_to_async
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from conversations import protocol, revocation
from conversations.models import Conversation, InternalNote, Message
from tests.chat_support import protocol_js_names
from tests.node_client import get_token

pytestmark = [pytest.mark.multinode, pytest.mark.django_db(transaction=True)]

REDIS = "redis://127.0.0.1:6379/0"
WITHIN = 1.0  # seconds from the change to the close, on the other node
CHAT, CONSOLE = "/ws/chat/", "/ws/console/"
SAM_PASSWORD = "pw-sam-Revocation-1"


@pytest.fixture
def two_nodes(daphne_server, settings):
    import redis

    try:
        redis.Redis.from_url(REDIS).ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.fail(f"Revocation tests need the machine's Redis at {REDIS} (start redis-server): {exc}")
    prefix = f"rv-{uuid.uuid4().hex[:10]}"
    # This process publishes too (a user row saved here): the same Redis and prefix as the nodes.
    settings.REDIS_URL = REDIS
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
                    "CONFIG": {"hosts": [REDIS], "prefix": prefix}},
    }  # fmt: skip
    env = {"REDIS_URL": REDIS, "CHANNEL_PREFIX": prefix}
    return daphne_server(**env), daphne_server(**env)


@pytest.fixture
def sam(transactional_db):
    """A staff member (may use the chat as well as the console)."""
    return get_user_model().objects.create_user("sam", password=SAM_PASSWORD, is_staff=True, first_name="Sam")


# --- helpers -------------------------------------------------------------------------------------------------
class Browser:
    """A signed-in browser: its own cookie jar, signed in through node ``node``'s real sign-in page."""

    def __init__(self, node, username: str, password: str) -> None:
        self.node = node
        self.http = requests.Session()
        self.http.get(node.url + "/accounts/login/", timeout=30).raise_for_status()
        response = self.http.post(
            node.url + "/accounts/login/",
            data={"username": username, "password": password, "csrfmiddlewaretoken": self.csrf},
            timeout=30, allow_redirects=False,
        )  # fmt: skip
        assert response.status_code == 302, response.text[:500]
        assert self.session

    @property
    def csrf(self) -> str:
        return self.http.cookies["csrftoken"]

    @property
    def session(self) -> str:
        return self.http.cookies.get("sessionid", "")

    def post(self, path: str, **data: str) -> requests.Response:
        return self.http.post(
            self.node.url + path, data={**data, "csrfmiddlewaretoken": self.csrf}, timeout=30, allow_redirects=False,
            headers={"X-CSRFToken": self.csrf},
        )  # fmt: skip


async def open_ws(node, path: str, *, token: str = "", session: str = ""):
    headers = {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if session:
        headers["Cookie"] = f"sessionid={session}"
    return await ws_connect(node.url.replace("http://", "ws://") + path, additional_headers=headers, origin=node.url)


async def accepted(node, path: str, **auth: str):
    """An open socket that the server kept (a console socket gets its list first; a chat socket answers a ping)."""
    ws = await open_ws(node, path, **auth)
    await ws.send(json.dumps({"type": "ping", "t": "hello"}))
    async with asyncio.timeout(10):
        while (frame := json.loads(await ws.recv()))["type"] != "pong":
            assert frame["type"] != "error", frame
    return ws


async def close_of(ws, within: float) -> tuple[int | None, list[dict]]:
    """The close code of ``ws`` (None if still open after ``within`` s) and the frames before it."""
    frames: list[dict] = []
    try:
        async with asyncio.timeout(within):
            while True:
                frames.append(json.loads(await ws.recv()))
    except ConnectionClosed:
        return ws.close_code, frames
    except TimeoutError:
        return None, frames
    raise AssertionError("unreachable")


async def assert_revoked(sockets: list, reason: str, since: float) -> None:
    """Every socket closes with 4001 within WITHIN s of ``since``, after an error frame with ``reason``."""
    results = await asyncio.gather(*(close_of(ws, WITHIN + 0.5) for ws in sockets))
    elapsed = time.monotonic() - since
    for code, frames in results:
        assert code == protocol.CLOSE_REVOKED, (code, frames)
        # The event comes twice (the channel layer and PostgreSQL's NOTIFY): the socket says why and closes once.
        assert [f["type"] for f in frames].count("error") == 1, frames
        error = frames[-1]
        assert error["type"] == "error" and error["reason"] == reason, frames
        assert error["code"] in (protocol.UNAUTHENTICATED, protocol.FORBIDDEN) and error["detail"]
    assert elapsed <= WITHIN, f"closed {elapsed:.2f} s after the change"


async def assert_still_open(ws) -> None:
    t = uuid.uuid4().hex
    await ws.send(json.dumps({"type": "ping", "t": t}))
    async with asyncio.timeout(10):
        while (frame := json.loads(await ws.recv()))["type"] != "pong" or frame["t"] != t:
            assert frame["type"] != "error", frame


async def refused(node, path: str, **auth: str) -> tuple[int, dict]:
    """A handshake the server refuses: its error frame and close code."""
    ws = await open_ws(node, path, **auth)
    code, frames = await close_of(ws, 10)
    assert frames and frames[0]["type"] == "error", frames
    return code, frames[0]


def save_user(**changes) -> None:
    """An admin's save of the user row (``save()``: the signals run), in this process."""
    user = get_user_model().objects.get(username="sam")
    for name, value in changes.items():
        setattr(user, name, value)
    user.save()


# --- the triggers ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", [CHAT, CONSOLE])
async def test_logout_closes_that_sessions_sockets_on_the_other_node(two_nodes, sam, path):
    node_a, node_b = two_nodes
    leaving = await asyncio.to_thread(Browser, node_a, "sam", SAM_PASSWORD)
    other_browser = await asyncio.to_thread(Browser, node_a, "sam", SAM_PASSWORD)
    token = await asyncio.to_thread(get_token, node_a, "sam", SAM_PASSWORD)
    of_that_session = [await accepted(node_b, path, session=leaving.session),
                       await accepted(node_a, path, session=leaving.session)]  # fmt: skip
    others = [await accepted(node_b, path, session=other_browser.session), await accepted(node_b, path, token=token)]
    session = leaving.session

    response = await asyncio.to_thread(leaving.post, "/accounts/logout/")
    changed = time.monotonic()
    assert response.status_code in (200, 302)

    await assert_revoked(of_that_session, protocol.REVOKED_LOGOUT, changed)
    for ws in others:  # one logout ends one session: another browser and a token stay signed in
        await assert_still_open(ws)
    code, error = await refused(node_b, path, session=session)
    assert code == protocol.CLOSE_UNAUTHENTICATED and error["code"] == protocol.UNAUTHENTICATED


@pytest.mark.parametrize("path", [CHAT, CONSOLE])
async def test_deactivation_closes_every_socket_of_the_user_on_every_node(two_nodes, sam, path):
    node_a, node_b = two_nodes
    browser = await asyncio.to_thread(Browser, node_a, "sam", SAM_PASSWORD)
    token = await asyncio.to_thread(get_token, node_a, "sam", SAM_PASSWORD)
    sockets = [await accepted(node_b, path, token=token), await accepted(node_b, path, session=browser.session),
               await accepted(node_a, path, token=token)]  # fmt: skip

    await database_sync_to_async(save_user)(is_active=False)
    changed = time.monotonic()

    await assert_revoked(sockets, protocol.REVOKED_DEACTIVATED, changed)
    for auth in ({"token": token}, {"session": browser.session}):
        code, error = await refused(node_b, path, **auth)
        assert code == protocol.CLOSE_UNAUTHENTICATED and error["code"] == protocol.UNAUTHENTICATED


async def test_losing_staff_closes_the_console_sockets_and_keeps_the_chat_ones(two_nodes, sam):
    node_a, node_b = two_nodes
    token = await asyncio.to_thread(get_token, node_a, "sam", SAM_PASSWORD)
    consoles = [await accepted(node_b, CONSOLE, token=token), await accepted(node_a, CONSOLE, token=token)]
    chat = await accepted(node_b, CHAT, token=token)

    await database_sync_to_async(save_user)(is_staff=False)
    changed = time.monotonic()

    await assert_revoked(consoles, protocol.REVOKED_STAFF_REMOVED, changed)
    assert consoles[0].close_code == protocol.CLOSE_REVOKED
    await assert_still_open(chat)  # still an active customer: the chat stays
    code, error = await refused(node_b, CONSOLE, token=token)
    assert code == protocol.CLOSE_FORBIDDEN and error["code"] == protocol.FORBIDDEN
    assert (await close_of(chat, 0.5))[0] is None


@pytest.mark.parametrize("path", [CHAT, CONSOLE])
async def test_password_change_closes_every_socket_and_old_tokens_stop_working(two_nodes, sam, path):
    node_a, node_b = two_nodes
    changer = await asyncio.to_thread(Browser, node_a, "sam", SAM_PASSWORD)
    other_browser = await asyncio.to_thread(Browser, node_a, "sam", SAM_PASSWORD)
    old_token = await asyncio.to_thread(get_token, node_a, "sam", SAM_PASSWORD)
    sockets = [await accepted(node_b, path, token=old_token), await accepted(node_b, path, session=other_browser.session),
               await accepted(node_b, path, session=changer.session)]  # fmt: skip
    new_password = "pw-sam-Changed-2"

    response = await asyncio.to_thread(
        changer.post, "/accounts/password_change/", old_password=SAM_PASSWORD, new_password1=new_password,
        new_password2=new_password,
    )  # fmt: skip
    changed = time.monotonic()
    assert response.status_code == 302, response.text[:2000]

    await assert_revoked(sockets, protocol.REVOKED_PASSWORD_CHANGED, changed)
    code, error = await refused(node_b, path, token=old_token)  # issued before the change
    assert code == protocol.CLOSE_UNAUTHENTICATED and "revoked" in error["detail"]
    code, _ = await refused(node_b, path, session=other_browser.session)  # Django: the old hash no longer matches
    assert code == protocol.CLOSE_UNAUTHENTICATED
    new_token = await asyncio.to_thread(get_token, node_a, "sam", new_password)
    await assert_still_open(await accepted(node_b, path, token=new_token))
    await assert_still_open(await accepted(node_b, path, session=changer.session))  # the changer's stays signed in


@pytest.mark.parametrize("path", [CHAT, CONSOLE])
async def test_sign_out_everywhere_revokes_tokens_sessions_and_sockets(two_nodes, sam, path):
    node_a, node_b = two_nodes
    browser = await asyncio.to_thread(Browser, node_a, "sam", SAM_PASSWORD)
    token = await asyncio.to_thread(get_token, node_a, "sam", SAM_PASSWORD)
    other_token = await asyncio.to_thread(get_token, node_b, "sam", SAM_PASSWORD)
    sockets = [await accepted(node_b, path, token=token), await accepted(node_b, path, token=other_token),
               await accepted(node_b, path, session=browser.session)]  # fmt: skip

    response = await asyncio.to_thread(
        requests.post, node_a.url + "/api/token/revoke/", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    changed = time.monotonic()
    assert response.status_code == 200 and response.json()["revoked"] is True

    await assert_revoked(sockets, protocol.REVOKED_SIGNED_OUT_EVERYWHERE, changed)
    for auth in ({"token": token}, {"token": other_token}, {"session": browser.session}):
        code, _ = await refused(node_b, path, **auth)
        assert code == protocol.CLOSE_UNAUTHENTICATED
    again = await asyncio.to_thread(
        requests.post, node_a.url + "/api/token/revoke/", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    assert again.status_code == 401 and "revoked" in again.json()["error"]
    fresh = await asyncio.to_thread(get_token, node_a, "sam", SAM_PASSWORD)  # signing in again works
    await assert_still_open(await accepted(node_b, path, token=fresh))


async def test_sign_out_everywhere_from_a_browser_session_needs_its_csrf_token(two_nodes, sam):
    node_a, node_b = two_nodes
    browser = await asyncio.to_thread(Browser, node_a, "sam", SAM_PASSWORD)
    ws = await accepted(node_b, CHAT, session=browser.session)
    forged = await asyncio.to_thread(
        requests.post, node_a.url + "/api/token/revoke/", cookies={"sessionid": browser.session}, timeout=30
    )  # another site's form: the session cookie, no CSRF token
    assert forged.status_code == 403
    await assert_still_open(ws)
    session = browser.session
    response = await asyncio.to_thread(browser.post, "/api/token/revoke/")
    changed = time.monotonic()
    assert response.status_code == 200
    await assert_revoked([ws], protocol.REVOKED_SIGNED_OUT_EVERYWHERE, changed)
    code, _ = await refused(node_b, CHAT, session=session)
    assert code == protocol.CLOSE_UNAUTHENTICATED


# --- a socket that never got the close -------------------------------------------------------------------------
def _conversations(owner) -> tuple[Conversation, Conversation]:
    return (Conversation.objects.create(owner=owner, title="Where is my parcel?"),
            Conversation.objects.create(owner=owner, title="Refund"))  # fmt: skip


async def next_of(ws, kind: str) -> dict:
    async with asyncio.timeout(10):
        while (frame := json.loads(await ws.recv()))["type"] != kind:
            pass
    return frame


@pytest.mark.parametrize(
    ("change", "reason", "code"),
    [({"is_staff": False}, protocol.REVOKED_STAFF_REMOVED, protocol.FORBIDDEN),
     ({"is_active": False}, protocol.REVOKED_DEACTIVATED, protocol.UNAUTHENTICATED)],
    ids=["staff-removed", "deactivated"],
)  # fmt: skip
async def test_console_actions_are_refused_once_staff_rights_are_gone_even_without_the_close(
    two_nodes, sam, change, reason, code
):
    """The user row changed without any event (a bulk UPDATE: no signal, as if the event were lost): every action
    re-reads the rights in its transaction, is refused with the reason, and closes its socket (4001) as the event
    would have — nothing is said, noted, handed back, resolved or taken over."""
    node_a, node_b = two_nodes
    customer = await database_sync_to_async(get_user_model().objects.create_user)("carol", password="pw-carol-123")
    held, other = await database_sync_to_async(_conversations)(customer)
    token = await asyncio.to_thread(get_token, node_a, "sam", SAM_PASSWORD)
    console = await accepted(node_b, CONSOLE, token=token)
    await console.send(json.dumps({"type": "take_over", "conversation": str(held.pk)}))
    await next_of(console, "holder")  # while staff: it works
    attempts = [
        {"type": "agent_message", "conversation": str(held.pk), "id": "late-1", "text": "Hello from a revoked agent"},
        {"type": "note", "conversation": str(held.pk), "text": "a note"},
        {"type": "nudge", "conversation": str(held.pk)},
        {"type": "resolve", "conversation": str(held.pk)},
        {"type": "hand_back", "conversation": str(held.pk)},
        {"type": "take_over", "conversation": str(other.pk)},
        {"type": "watch", "conversation": str(other.pk)},
    ]
    sockets = [await accepted(node_b, CONSOLE, token=token) for _ in attempts]  # one per attempt: each closes

    await database_sync_to_async(get_user_model().objects.filter(username="sam").update)(**change)

    assert (await close_of(console, 0.3))[0] is None  # no event was sent: the idle socket itself is still open
    for ws, frame in zip(sockets, attempts, strict=True):
        await ws.send(json.dumps(frame))
        closed, frames = await close_of(ws, 5)
        assert closed == protocol.CLOSE_REVOKED, (frame, closed, frames)
        error = frames[-1]
        assert (error["type"], error["code"], error["reason"]) == ("error", code, reason), (frame, frames)

    def state() -> tuple:
        held.refresh_from_db()
        other.refresh_from_db()
        return (
            held.status, held.assigned_agent_id, other.status, other.assigned_agent_id,
            Message.objects.filter(conversation__in=[held, other], role=Message.Role.AGENT).count(),
            InternalNote.objects.count(),
            Message.objects.filter(conversation=held, role=Message.Role.SYSTEM).count(),
        )  # fmt: skip

    # Still held as taken over before (no hand back, no resolve), nothing said or noted, the other untouched.
    assert await database_sync_to_async(state)() == ("agent", sam.pk, "bot", None, 0, 0, 1)


# --- the browser's copy of the close codes ---------------------------------------------------------------------
def test_the_pages_know_the_servers_close_codes():
    js = {name: int(code) for name, code in protocol_js_names("CLOSE").items()}
    assert js == {name: getattr(protocol, f"CLOSE_{name}") for name in js}
    assert js["REVOKED"] == 4001 and {"UNAUTHENTICATED", "FORBIDDEN"} <= set(js)


def test_the_pages_say_why_for_every_reason_the_server_sends():
    """static/chat/protocol.js names the same reasons as the server, and both pages have a sentence for each."""
    static = Path(django_settings.BASE_DIR) / "static"
    js = protocol_js_names("REVOKED_REASON")
    assert js == {name: getattr(protocol, f"REVOKED_{name}") for name in js}
    assert set(js.values()) == protocol.REVOKED_REASONS == set(revocation.DETAILS)
    for page in (static / "chat" / "chat.js", static / "console" / "console.js"):
        reasons = page.read_text()
        reasons = reasons[reasons.index("const SIGNED_OUT_REASONS = {") :]
        reasons = reasons[: reasons.index("};")]
        assert set(re.findall(r"\[REVOKED_REASON\.([A-Z_]+)\]:", reasons)) == set(js), page


# --- what the pages show -----------------------------------------------------------------------------------------
SCREENS = Path("/tmp/chat-screens")


async def test_the_chat_page_and_the_console_say_why_and_stop_reconnecting(two_nodes, sam):
    """Real pages on node B: losing staff closes the console (which says so) and not the chat; deactivation then
    closes the chat page, which says why, stops taking questions and does not reconnect."""
    from playwright.async_api import async_playwright

    from tests.browser import CHROMIUM, LAUNCH_ARGS

    node_a, node_b = two_nodes
    await asyncio.to_thread(SCREENS.mkdir, parents=True, exist_ok=True)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        pages, sockets = {}, {}
        for name, viewport, start in (("desktop", (1100, 800), "/"), ("phone", (390, 844), "/"),
                                      ("console", (1100, 800), "/console/")):  # fmt: skip
            # bypass_csp: wait_for_function evals (CSP has no 'unsafe-eval'); the policy: tests/test_page_security.py.
            context = await browser.new_context(viewport={"width": viewport[0], "height": viewport[1]}, bypass_csp=True)
            page = await context.new_page()
            sockets[name] = []
            page.on("websocket", lambda ws, name=name: sockets[name].append(ws.url))
            await page.goto(f"{node_b.url}/accounts/login/?next={start}")
            await page.fill("#id_username", "sam")
            await page.fill("#id_password", SAM_PASSWORD)
            await page.click("button[type=submit]")
            await page.wait_for_url(f"{node_b.url}{start}")
            if start == "/":
                await page.click("[data-new-conversation]")
                await page.wait_for_url(re.compile(r"/c/[0-9a-f-]{36}/$"))
            pages[name] = page
        # Selectors, not wait_for_function: the pages' Content-Security-Policy forbids evaluating strings.
        for name in ("desktop", "phone"):
            await pages[name].locator('[data-chat][data-connection="open"]').wait_for()
        await pages["console"].locator('[data-connection-state][data-state="open"]').wait_for()

        await database_sync_to_async(save_user)(is_staff=False)
        console = pages["console"]
        await console.locator('[data-connection-state][data-state="signed_out"]').wait_for(timeout=3000)
        assert "staff access was removed" in await console.locator("[data-connection-state]").inner_text()
        for name in ("desktop", "phone"):
            assert await pages[name].locator("[data-chat]").get_attribute("data-connection") == "open"

        await database_sync_to_async(save_user)(is_active=False)
        for name in ("desktop", "phone"):
            page = pages[name]
            await page.locator('[data-chat][data-connection="signed_out"]').wait_for(timeout=3000)
            banner = page.locator("[data-banner]")
            assert await banner.is_visible()
            assert "account was deactivated" in await banner.inner_text()
            assert await banner.locator("a").get_attribute("href") == "/accounts/login/?next=" + page.url.split(
                node_b.url, 1)[1].replace("/", "%2F")  # fmt: skip
            assert await page.locator("#question").is_disabled()
            assert await page.locator("[data-handoff]").is_disabled()  # nothing left that would send
            await page.screenshot(path=str(SCREENS / f"signed-out-{name}.png"))
        await console.screenshot(path=str(SCREENS / "signed-out-console.png"))
        opened = {name: len(urls) for name, urls in sockets.items()}
        await asyncio.sleep(3)  # the reconnect backoff starts at 0.5 s: a loop would have opened sockets by now
        assert {name: len(urls) for name, urls in sockets.items()} == opened == {"desktop": 1, "phone": 1, "console": 1}
        await browser.close()
