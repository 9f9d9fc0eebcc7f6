"""Garbage on both sockets, as an attacker would send it: random and mutated frames against a real Daphne node.

Every frame gets a valid JSON reply with a documented code (or nothing, for a valid frame that needs no reply);
never ``internal``, never a traceback in the node's log, never a close; afterwards a well-formed conversation on
the same socket works. Hypothesis generates the frames: the same ones every run unless ``FUZZ_RANDOM=1``.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import uuid
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect as ws_connect

from conversations import protocol
from tests.node_client import get_token

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

FRAMES_PER_SOCKET = 5_000  # x 2 sockets: the issue's >= 10 000
BATCH = 50  # frames per hypothesis example, sent pipelined, each followed by a ping that marks its end
WAIT = 30.0

# --- What an attacker sends ----------------------------------------------------------------------------------
NASTY_TEXT = st.sampled_from(
    ["\x00", "a\x00b", "\udfff", "\ud800x", "x\udc00", "", " ", "\u202e", "💥" * 3, "a" * 70, "<script>x</script>",
     "' OR 1=1 --", "%s%n", "\\", "\n\r\t"]
)  # fmt: skip
TEXT = st.one_of(st.text(max_size=40), NASTY_TEXT, st.text(alphabet=st.characters(codec="utf-16"), max_size=10))
NUMBER = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 1, 2**31 - 1, 2**31, 2**53, 2**63, 9223372036854775808, -(2**63)]),
    st.floats(allow_nan=True, allow_infinity=True),
)
SCALAR = st.one_of(st.none(), st.booleans(), NUMBER, TEXT, st.uuids().map(str))
JSON = st.recursive(SCALAR, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
                    max_leaves=12)  # fmt: skip

FIELDS = {
    protocol.ASK: {"id": st.text(min_size=1, max_size=10), "text": st.text(min_size=1, max_size=30),
                   "conversation": st.uuids().map(str), "kb": st.text(min_size=1, max_size=10),
                   "attachments": st.lists(st.uuids().map(str), max_size=2)},
    protocol.CANCEL: {"message": st.uuids().map(str)},
    protocol.RESUME: {"message": st.uuids().map(str), "after": st.integers(min_value=0, max_value=100)},
    protocol.FEEDBACK: {"message": st.uuids().map(str), "rating": st.sampled_from([1, -1]), "comment": TEXT},
    protocol.REGENERATE: {"message": st.uuids().map(str), "id": st.text(min_size=1, max_size=10)},
    protocol.END: {"conversation": st.uuids().map(str)},
    protocol.RATE: {"conversation": st.uuids().map(str), "score": st.integers(1, 5), "comment": TEXT},
    protocol.ASSIGN: {"conversation": st.uuids().map(str), "agent": st.integers(1, 2**31 - 1)},
    protocol.HANDOFF: {"conversation": st.uuids().map(str)},
    protocol.JOIN: {"conversation": st.uuids().map(str)},
    protocol.LEAVE_MESSAGE: {"conversation": st.uuids().map(str), "id": st.text(min_size=1, max_size=10),
                             "email": st.one_of(st.emails(), TEXT)},
    protocol.PING: {"t": st.one_of(st.none(), st.text(max_size=10), st.integers(-(2**40), 2**40))},
    protocol.WATCH: {"conversation": st.uuids().map(str)},
    protocol.UNWATCH: {"conversation": st.uuids().map(str)},
    protocol.TAKE_OVER: {"conversation": st.uuids().map(str)},
    protocol.HAND_BACK: {"conversation": st.uuids().map(str)},
    protocol.RESOLVE: {"conversation": st.uuids().map(str)},
    protocol.AGENT_MESSAGE: {"conversation": st.uuids().map(str), "id": st.text(min_size=1, max_size=10),
                             "text": st.text(min_size=1, max_size=30)},
    protocol.NOTE: {"conversation": st.uuids().map(str), "text": st.text(min_size=1, max_size=30)},
    protocol.NUDGE: {"conversation": st.uuids().map(str), "text": st.text(max_size=30)},
    protocol.TYPING: {"conversation": st.uuids().map(str), "typing": st.booleans()},
}  # fmt: skip


def well_formed(registry: protocol.Registry) -> st.SearchStrategy[dict[str, Any]]:
    """A frame of the socket's own types, every field plausible (ids point nowhere: ``not_found``)."""
    return st.sampled_from(registry.types).flatmap(
        lambda kind: st.fixed_dictionaries({"type": st.just(kind), **FIELDS[kind]})
    )


@st.composite
def mutated(draw, registry: protocol.Registry) -> dict[str, Any]:
    """A well-formed frame with one to three fields dropped, retyped, replaced by garbage, or added."""
    frame = dict(draw(well_formed(registry)))
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from([*frame, "extra", "type"]))
        action = draw(st.sampled_from(["drop", "garbage", "nasty", "number", "nest"]))
        if action == "drop":
            frame.pop(key, None)
        elif action == "garbage":
            frame[key] = draw(JSON)
        elif action == "nasty":
            frame[key] = draw(NASTY_TEXT)
        elif action == "number":
            frame[key] = draw(NUMBER)
        else:
            nested: Any = draw(SCALAR)
            for _ in range(draw(st.integers(1, 40))):
                nested = [nested]
            frame[key] = nested
    return frame


def encode(value: Any) -> str:
    """As a hostile client would serialise it: lone surrogates as \\u escapes, NaN/Infinity as bare literals."""
    return json.dumps(value, ensure_ascii=True, allow_nan=True)


RAW = st.one_of(
    st.text(max_size=60),  # not JSON at all
    JSON.map(encode),  # JSON, but rarely an object with a type
    st.integers(1, 6000).map(lambda n: "[" * n + "]" * n),  # nested deep
    st.integers(1, 3000).map(lambda n: '{"type":"ping","t":' + '{"a":' * n + "1" + "}" * n + "}"),
    st.sampled_from(['{"type":"ping","t":NaN}', '{"type":"ping","t":Infinity}', '{"type":"ping","t":-Infinity}',
                     '{"type":"ping","t":1e999}', '{"type":"ping","t":' + "9" * 5000 + "}", '{"type":"ping"',
                     '{"type":"ask","id":"\\udfff","text":"x","conversation":"nope"}', '{"type":"\\u0000"}',
                     '{"type":"resume","message":"' + str(uuid.UUID(int=1)) + '","after":9223372036854775808}',
                     '{"type":"ask","id":"a\\u0000","text":"x"}', '{"type":"ask","id":"x","kb":"\\u0000"}',
                     '{"\\ud800":1,"type":"ping"}', "null", "", " ", "{}", '{"type":null}', '{"type":["ask"]}']),
    st.integers(15_000, 40_000).map(lambda n: '{"type":"ask","id":"big","text":"' + "x" * n + '"}'),  # too_large
)  # fmt: skip


def frames(registry: protocol.Registry) -> st.SearchStrategy[str]:
    return st.one_of(well_formed(registry).map(encode), mutated(registry).map(encode), RAW)


# --- What the node must answer -------------------------------------------------------------------------------
def _strict_constant(name: str) -> Any:
    raise AssertionError(f"the server sent {name}, which a browser's JSON.parse rejects")


def check_reply(text: str, sent: str, seen: dict[str, int]) -> dict[str, Any]:
    frame = json.loads(text, parse_constant=_strict_constant)
    assert isinstance(frame, dict) and isinstance(frame.get("type"), str), text
    text.encode("utf-8")  # no lone surrogates: the browser would get mojibake or nothing
    if frame["type"] == protocol.ERROR:
        assert frame["code"] in protocol.ERROR_CODES, (frame, sent[:200])
        assert frame["code"] != protocol.INTERNAL, (frame, sent[:200])
        assert isinstance(frame["detail"], str) and frame["detail"], frame
        assert "id" not in frame or isinstance(frame["id"], str), frame
        seen[frame["code"]] = seen.get(frame["code"], 0) + 1
    if frame["type"] == protocol.PONG:
        t = frame["t"]
        assert t is None or isinstance(t, str) or (isinstance(t, int | float) and math.isfinite(t)), frame
    return frame


class Thrower:
    """One socket: sends a batch of frames, each followed by a marker ping, and checks every reply."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.sent = 0
        self.seen: dict[str, int] = {}
        self.marker = 0

    async def throw(self, batch: list[str]) -> None:
        marks = []
        for raw in batch:
            self.marker += 1
            marks.append(f"fuzz-{self.marker}")
            await self.ws.send(raw)
            await self.ws.send(json.dumps({"type": "ping", "t": marks[-1]}))
        pending = list(zip(marks, batch, strict=True))
        while pending:
            reply = check_reply(await asyncio.wait_for(self.ws.recv(), WAIT), pending[0][1], self.seen)
            if reply["type"] == protocol.PONG and reply["t"] == pending[0][0]:
                pending.pop(0)  # everything that frame caused has arrived before its marker's pong
        self.sent += len(batch)


def throw_frames(loop: asyncio.AbstractEventLoop, thrower: Thrower, registry: protocol.Registry) -> None:
    # derandomize: the same 10 000 frames on every run, so CI cannot go red on a draw nobody saw locally; set
    # FUZZ_RANDOM=1 to draw new ones (and keep any failure it finds as a case in test_protocol_errors.py).
    @settings(max_examples=FRAMES_PER_SOCKET // BATCH, deadline=None, database=None,
              derandomize=not os.environ.get("FUZZ_RANDOM"), suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(st.lists(frames(registry), min_size=BATCH, max_size=BATCH))
    def run(batch: list[str]) -> None:
        loop.run_until_complete(thrower.throw(batch))

    run()


@pytest.fixture
def node(demo_kb, daphne_server):
    users = get_user_model().objects
    users.create_user("fuzz", password="pw-fuzz-123")
    users.create_user("fuzzstaff", password="pw-fuzzstaff-123", is_staff=True, first_name="Fay")
    return daphne_server(CHAT_RATE_LIMIT="0", ANSWER_WORDS_PER_SECOND="0")


async def open_socket(node, token: str, path: str):
    return await ws_connect(node.url.replace("http://", "ws://") + path, origin=node.url, max_size=None,
                            additional_headers={"Authorization": f"Bearer {token}"}, ping_interval=None)  # fmt: skip


def test_ten_thousand_random_and_mutated_frames_get_documented_errors_and_the_sockets_keep_working(node):
    loop = asyncio.new_event_loop()
    try:
        customer = loop.run_until_complete(open_socket(node, get_token(node, "fuzz", "pw-fuzz-123"), "/ws/chat/"))
        staff_token = get_token(node, "fuzzstaff", "pw-fuzzstaff-123")
        staff = loop.run_until_complete(open_socket(node, staff_token, "/ws/console/"))
        chat, console = Thrower(customer), Thrower(staff)
        throw_frames(loop, chat, protocol.CHAT)
        throw_frames(loop, console, protocol.CONSOLE)
        assert chat.sent + console.sent >= 10_000
        # The garbage was refused for what it was, not as one catch-all.
        for code in (protocol.BAD_FRAME, protocol.INVALID, protocol.TOO_LARGE, protocol.NOT_FOUND):
            assert chat.seen.get(code, 0) > 0, (code, chat.seen)
        assert console.seen.get(protocol.UNKNOWN_TYPE, 0) > 0 and console.seen.get(protocol.NOT_FOUND, 0) > 0

        async def well_formed_conversation() -> None:
            await customer.send(json.dumps({"type": "ask", "id": "after-fuzz", "text": "How do I return an item?"}))
            ack = await next_of(customer, protocol.ACK)
            await staff.send(json.dumps({"type": "watch", "conversation": ack["conversation"]}))
            while (frame := await next_of(customer, protocol.FINAL))["message"] != ack["message"]:
                pass
            assert frame["state"] == protocol.COMPLETE and frame["text"]
            await staff.send(json.dumps({"type": "note", "conversation": ack["conversation"], "text": "fine"}))
            note = await next_of(staff, protocol.NOTE)
            assert note["note"]["text"] == "fine"

        loop.run_until_complete(well_formed_conversation())
        loop.run_until_complete(customer.close())
        loop.run_until_complete(staff.close())
    finally:
        loop.close()
    log = node.log()
    assert "Traceback" not in log, log[log.find("Traceback") - 2000 : log.find("Traceback") + 3000]
    assert "refused" in log and "malformed client frame" in log  # one rate-limited line, not one per frame
    assert log.count("malformed client frame") <= 4, log.count("malformed client frame")


async def next_of(ws, kind: str) -> dict[str, Any]:
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
        assert frame.get("code") != protocol.INTERNAL, frame
        if frame["type"] == kind:
            return frame


def test_a_frame_over_the_transport_limit_is_closed_with_1009_and_a_reason(node):
    async def scenario() -> None:
        from websockets.exceptions import ConnectionClosed

        ws = await open_socket(node, await asyncio.to_thread(get_token, node, "fuzz", "pw-fuzz-123"), "/ws/chat/")
        await ws.send('{"type":"ask","id":"huge","text":"' + "x" * (2 * 1024 * 1024) + '"}')
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(ws.recv(), WAIT)
        assert closed.value.rcvd is not None, "the connection was dropped without a close frame"
        assert closed.value.rcvd.code == protocol.CLOSE_TOO_BIG and closed.value.rcvd.reason

    asyncio.run(scenario())
