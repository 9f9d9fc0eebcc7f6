#!/usr/bin/env python
"""A fair share of the model: one customer's flood of expensive questions against another customer's ordinary one.

    .venv/bin/python bench/fair_share.py                          # 8 questions of 4 000 characters, 3 rounds
    .venv/bin/python bench/fair_share.py --flood 8 --chars 4000 --rounds 3 --idle 5 --probes 3

One Daphne node run as in production (bench/streams.py ``PRODUCTION_ENV``) on the configured database with the
demo knowledge base, and two customers with accounts of their own (made here). Each of ``--rounds`` rounds:

1. **idle**: customer B asks ``--idle`` ordinary questions one after the other (each a new text, so none is a
   cached query vector), timing each from the ``ask`` to its first ``token``;
2. **under the flood**: customer A sends ``--flood`` questions of ``--chars`` characters of one unbroken word at
   once (each in a new conversation, so they are answered side by side; each a different word) and, once they are
   acknowledged, B asks ``--probes`` ordinary questions one after the other, the first right behind A's, timed the
   same way; then every answer is read to its ``final``.

It prints, per round, B's first token idle (median, range) and under the flood (each), the worst of those against
the idle median, how many of A's questions were still unanswered when B's last one had its first token (0: B
waited for the whole flood), and A's own first tokens. The issue's measurement (issue 17, point 5) was 2.2 s idle
against 33.2 s under 8 such questions, when the embedding thread served its queue first come first served.
The scenario's pieces (``Customer``, ``flood_questions``,
``probe_questions``, ``first_tokens``) are also what tests/test_fair_share.py drives a test node with.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import statistics
import string
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")

WAIT_SECONDS = 300.0  # FIFO under 8 × 4 000 characters took 33 s to a first token: room for a slow machine
#: One question the demo knowledge base answers, said a little differently each time: the same work per answer,
#: but never the same text, so every probe is embedded (a repeated question's vector is remembered).
PROBE = "how long does a refund take?"
OPENERS = ["", "hi, ", "hello, ", "please, ", "quick question: ", "hey, ", "good morning, ", "sorry, ", "one thing: ",
           "excuse me, ", "hi there, ", "hello again, ", "thanks, and ", "also, ", "so, ", "ok, "]  # fmt: skip
CLOSERS = ["", " thanks!", " cheers", " please"]


def flood_questions(count: int, chars: int) -> list[str]:
    """``count`` different questions of ``chars`` characters of one unbroken word (issue 17's measurement: ~4 s of
    the embedding model each at 4 000 characters, within the 20-per-minute rate limit)."""
    return [(f"refund{string.ascii_lowercase[i % 26]}{i}" * chars)[:chars] for i in range(count)]


def probe_questions(count: int) -> list[str]:
    """``count`` ordinary questions with the same answer and the same work, each a new text."""
    texts = [f"{opener}{PROBE}{closer}" for closer in CLOSERS for opener in OPENERS]
    if count > len(texts):
        raise ValueError(f"at most {len(texts)} probes")
    return texts[:count]


@dataclass
class Asked:
    """One question in flight: when it was sent, its answer's id, and when its first token and final came."""

    text: str
    sent: float
    acked: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    message: str | None = None
    first_token: float | None = None
    done: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    async def first_token_seconds(self, wait: float = WAIT_SECONDS) -> float:
        """Seconds from the ``ask`` to the answer's first token (waits for the final if none came first)."""
        await asyncio.wait_for(asyncio.shield(self.done), wait)
        if self.first_token is None:
            raise AssertionError(f"no token before the final: {self.done.result()}")
        return self.first_token - self.sent


class Customer:
    """One signed-in customer's chat socket (bearer token); the frames of every question sorted to its ``Asked``."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.by_id: dict[str, Asked] = {}
        self.by_message: dict[str, Asked] = {}
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, base_url: str, token: str) -> Customer:
        from websockets.asyncio.client import connect

        ws = await connect(base_url.replace("http://", "ws://") + "/ws/chat/", origin=base_url, max_size=None,
                           additional_headers={"Authorization": f"Bearer {token}"}, ping_interval=None)  # fmt: skip
        return cls(ws)

    async def ask(self, text: str) -> Asked:
        """Send ``text`` as a new conversation's first question; returns once it is acknowledged."""
        ask_id = str(uuid.uuid4())
        asked = self.by_id[ask_id] = Asked(text, time.monotonic())
        await self.ws.send(json.dumps({"type": "ask", "id": ask_id, "text": text}))
        await asyncio.wait_for(asyncio.shield(asked.acked), WAIT_SECONDS)
        return asked

    async def ask_all(self, texts: list[str]) -> list[Asked]:
        """Send every text at once, each a new conversation's question (answered side by side); returns once all
        are acknowledged."""
        return list(await asyncio.gather(*(self.ask(text) for text in texts)))

    async def _read(self) -> None:
        async for raw in self.ws:
            frame = json.loads(raw)
            kind, now = frame.get("type"), time.monotonic()
            if kind == "ack" and (asked := self.by_id.get(frame.get("id"))):
                asked.message = frame.get("message")
                self.by_message[asked.message] = asked
                asked.acked.set_result(None)
            elif kind == "error" and (asked := self.by_id.get(frame.get("id")) or self.by_message.get(frame.get("message"))):
                for future in (asked.acked, asked.done):
                    if not future.done():
                        future.set_exception(AssertionError(f"{asked.text[:40]!r}: {frame}"))
            elif kind == "token" and (asked := self.by_message.get(frame.get("message"))) and asked.first_token is None:
                asked.first_token = now
            elif kind == "final" and (asked := self.by_message.get(frame.get("message"))) and not asked.done.done():
                asked.done.set_result(frame)

    async def close(self) -> None:
        await self.ws.close()
        await asyncio.gather(self.reader, return_exceptions=True)


@dataclass
class Round:
    probes: list[float]  # B's first tokens under the flood, seconds, one question after the other
    unanswered: int  # A's questions still without a first token when B's last one had its own: > 0, or not "under"
    flood_first: list[float]  # A's first tokens, seconds from their asks


async def first_tokens(customer: Customer, questions: list[str]) -> list[float]:
    """Seconds to the first token of each question, asked one after the other (each read to its final)."""
    seconds = []
    for question in questions:
        asked = await customer.ask(question)
        seconds.append(await asked.first_token_seconds())
    return seconds


async def under_flood(flooder: Customer, customer: Customer, flood: list[str], probes: list[str]) -> Round:
    """A sends every question of ``flood`` at once (each its own conversation); once all are acknowledged B asks
    ``probes`` one after the other, the first right behind A's. B's first tokens, then every answer read to its
    final."""
    floods = await flooder.ask_all(flood)
    probe_seconds = await first_tokens(customer, probes)
    unanswered = sum(each.first_token is None for each in floods)
    flood_seconds = [await each.first_token_seconds() for each in floods]
    return Round(probe_seconds, unanswered, flood_seconds)


def customer_token(base_url: str, username: str) -> str:
    """A bearer token for the bench customer ``username`` (created, with a known password, if missing)."""
    from django.contrib.auth import get_user_model

    from bench.ws_client import get_token

    password = f"{username}-bench-pass"
    user, _ = get_user_model().objects.get_or_create(username=username)
    user.set_password(password)
    user.save()
    return get_token(base_url, username, password)


async def run(base_url: str, tokens: tuple[str, str], args: argparse.Namespace) -> list[tuple[list[float], Round]]:
    """Per round: B's first tokens on the idle node, then under A's flood."""
    a = await Customer.open(base_url, tokens[0])
    b = await Customer.open(base_url, tokens[1])
    try:
        each = args.idle + args.probes
        questions = probe_questions(1 + args.rounds * each)
        await first_tokens(b, questions[:1])  # warm-up: the node loads the model on its first answer
        rounds = []
        for number in range(args.rounds):
            probes = questions[1 + number * each : 1 + (number + 1) * each]
            flood = [f"{number}{text}"[: args.chars] for text in flood_questions(args.flood, args.chars)]  # new words
            idle = await first_tokens(b, probes[: args.idle])
            rounds.append((idle, await under_flood(a, b, flood, probes[args.idle :])))
        return rounds
    finally:
        await a.close()
        await b.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flood", type=int, default=8, help="A's questions per round")
    parser.add_argument("--chars", type=int, default=4000, help="characters of one word per question of A's")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--idle", type=int, default=5, help="B's questions on the idle node, each round")
    parser.add_argument("--probes", type=int, default=3, help="B's questions under A's flood, each round")
    parser.add_argument("--label", default="", help="what this run measures (a commit, a setting), for the table")
    args = parser.parse_args()

    import django

    django.setup()
    from django.core.management import call_command

    from bench.streams import PRODUCTION_ENV
    from tests.daphne_process import start_daphne

    call_command("migrate", verbosity=0)
    call_command("bootstrap_demo", stdout=io.StringIO())
    env = {
        **PRODUCTION_ENV,
        "CHAT_RATE_LIMIT": "0",  # several rounds in a minute; one round (8) is within the default 20
        "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        "CHANNEL_PREFIX": f"bench-{uuid.uuid4().hex[:8]}",
    }
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, "
          f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())}; A: {args.flood} × {args.chars} characters of one "
          f"word, {args.rounds} rounds")  # fmt: skip
    node = start_daphne(ROOT / ".data" / "bench", env)
    try:
        tokens = customer_token(node.url, "fair-share-a"), customer_token(node.url, "fair-share-b")
        rounds = asyncio.run(run(node.url, tokens, args))
    finally:
        node.stop()
    print("| run | B idle: first token p50 s (min–max) | B right behind A's flood, then one after the other, s | "
          "worst / idle | A's unanswered at B's last | A's first tokens p50 / max s |")
    print("|---|---|---|---|---|---|")
    for idle, flood in rounds:
        print(f"| {args.label or '-'} | {statistics.median(idle):.2f} ({min(idle):.2f}–{max(idle):.2f}) | "
              f"{', '.join(f'{s:.2f}' for s in flood.probes)} | {max(flood.probes) / statistics.median(idle):.1f}× | "
              f"{flood.unanswered} of {args.flood} | "
              f"{statistics.median(flood.flood_first):.1f} / {max(flood.flood_first):.1f} |")  # fmt: skip
    print(f"load after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
