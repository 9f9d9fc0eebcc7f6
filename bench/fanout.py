#!/usr/bin/env python
"""Fan-out between nodes: how much later a watcher on node B sees a token than the customer on node A.

    .venv/bin/python bench/fanout.py                      # 10, 100 and 500 concurrent streams
    .venv/bin/python bench/fanout.py --streams 10 100

Starts two Daphne nodes (tests/daphne_process.py) on the configured database with the demo knowledge base,
sharing Redis (``REDIS_URL``, default the machine's) and a channel prefix, answers paced at 30 words/s. For each
of S streams a customer on A asks a demo question and a watcher on B joins the conversation; every token both
received gives one figure: B's receive time − A's (same clock: both clients run in this process). In the same
run, the baseline: S raw Redis pub/sub pairs (redis-py asyncio) publishing one small message per 33 ms, each
figure a PUBLISH → message-received time.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")

REDIS = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
PACE = 30.0


def q(values: list[float], percent: int) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * percent / 100))] if ordered else float("nan")


async def one_stream(node_a, node_b, headers: dict, question: str, deltas: list[float], missing: list[int]) -> None:
    from bench.ws_client import open_admitted

    def url(node) -> str:
        return node.url.replace("http://", "ws://") + "/ws/chat/"

    async with await open_admitted(url(node_a), headers=headers, origin=node_a.url, max_size=None) as customer, \
            await open_admitted(url(node_b), headers=headers, origin=node_b.url, max_size=None) as watcher:  # fmt: skip
        ask_id = str(uuid.uuid4())
        await customer.send(json.dumps({"type": "ask", "id": ask_id, "text": question}))
        while (ack := json.loads(await customer.recv()))["type"] != "ack":
            pass
        await watcher.send(json.dumps({"type": "join", "conversation": ack["conversation"]}))
        seen_a: dict[int, float] = {}
        seen_b: dict[int, float] = {}

        async def read(ws, seen: dict[int, float]) -> None:
            async for raw in ws:
                frame = json.loads(raw)
                if frame.get("message") != ack["message"]:
                    continue
                if frame["type"] == "token":
                    seen[frame["seq"]] = time.monotonic()
                elif frame["type"] == "final":
                    return

        await asyncio.wait_for(asyncio.gather(read(customer, seen_a), read(watcher, seen_b)), 300)
        both = sorted(set(seen_a) & set(seen_b))
        deltas.extend(seen_b[s] - seen_a[s] for s in both)
        joined = min(seen_b, default=0)  # tokens before the watcher had joined are not missing
        missing.append(sum(1 for s in seen_a if s not in seen_b and s > joined))


async def all_streams(streams: int, node_a, node_b, headers: dict, deltas: list[float], missing: list[int]) -> None:
    from bench.ws_client import DEMO_QUESTIONS

    await asyncio.gather(*(
        one_stream(node_a, node_b, headers, DEMO_QUESTIONS[i % len(DEMO_QUESTIONS)], deltas, missing)
        for i in range(streams)
    ))  # fmt: skip


async def redis_baseline(streams: int, messages: int) -> list[float]:
    import redis.asyncio as aioredis

    client = aioredis.from_url(REDIS, max_connections=2 * streams + 10)  # a subscriber and a publisher each
    latencies: list[float] = []

    async def pair(i: int) -> None:
        channel = f"fanout-bench-{uuid.uuid4().hex}"
        pubsub = client.pubsub()
        await pubsub.subscribe(channel)

        async def receive() -> None:
            got = 0
            while got < messages:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
                if message is not None:
                    latencies.append(time.monotonic() - float(message["data"]))
                    got += 1

        receiver = asyncio.create_task(receive())
        for _ in range(messages):
            await client.publish(channel, repr(time.monotonic()))
            await asyncio.sleep(1 / PACE)
        await asyncio.wait_for(receiver, 30)
        await pubsub.aclose()

    await asyncio.gather(*(pair(i) for i in range(streams)))
    await client.aclose()
    return latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, nargs="+", default=[10, 100, 500])
    args = parser.parse_args()

    import django

    django.setup()
    from django.core.management import call_command

    from bench.streams import PRODUCTION_ENV
    from bench.ws_client import get_token
    from tests.daphne_process import start_daphne

    call_command("migrate", verbosity=0)
    call_command("bootstrap_demo", stdout=io.StringIO())
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, "
          f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())}, answers paced at {PACE:g} words/s")  # fmt: skip
    print("| streams | tokens compared | B − A p50 ms | B − A p99 ms | tokens A had and B missed | "
          "raw Redis pub/sub p50 ms | p99 ms |\n|---|---|---|---|---|---|---|")
    for streams in args.streams:
        env = {**PRODUCTION_ENV, "REDIS_URL": REDIS, "CHANNEL_PREFIX": f"fanout-{uuid.uuid4().hex[:8]}", "CHAT_RATE_LIMIT": "0",
               "ANSWER_WORDS_PER_SECOND": str(PACE)}  # fmt: skip
        node_a = start_daphne(ROOT / ".data" / "bench", env)
        node_b = start_daphne(ROOT / ".data" / "bench", env)
        try:
            headers = {"Authorization": f"Bearer {get_token(node_a.url, 'customer', 'customer-demo-pass')}"}
            deltas: list[float] = []
            missing: list[int] = []

            asyncio.run(all_streams(streams, node_a, node_b, headers, deltas, missing))
        finally:
            node_a.stop()
            node_b.stop()
        raw = asyncio.run(redis_baseline(streams, 60))
        print(f"| {streams} | {len(deltas)} | {q(deltas, 50) * 1000:.1f} | {q(deltas, 99) * 1000:.1f} | "
              f"{sum(missing)} | {q(raw, 50) * 1000:.2f} | {q(raw, 99) * 1000:.2f} |", flush=True)
    print(f"load after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
