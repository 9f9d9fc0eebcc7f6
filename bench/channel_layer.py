#!/usr/bin/env python
"""Channel layer bench: RedisChannelLayer vs RedisPubSubChannelLayer for the chat's fan-out pattern.

    .venv/bin/python bench/channel_layer.py [--messages 1000] [--rate 500] [--sockets 20] [--slow-ms 5]

What it models: an answer's frames published with ``group_send`` to one conversation group whose members are
sockets on two other nodes (two receiver processes, ``--sockets`` channels in total). One socket is a slow
consumer (``--slow-ms`` per frame, e.g. a handler awaiting the database). The sender publishes ``--messages``
frames at ``--rate`` frames/s from a third process, like a generating node. Each receiver records the latency
of every frame (send → receive, ``time.time()`` on one machine) and which frames never arrived.

Printed per layer configuration: latency p50/p95/p99/max over the normal sockets, frames lost on normal
sockets and on the slow socket, and the wall time of the sender's ``group_send`` calls. Needs the machine's
Redis (``--redis``, default redis://127.0.0.1:6379/0); keys use a random prefix and expire.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import statistics
import time
import uuid

IDLE_SECONDS = 3.0  # a receiver stops after this long without a frame (after the sender finished)
PAYLOAD = "word " * 4  # a token frame's text is a few words


def make_layer(kind: str, url: str, prefix: str, capacity: int):
    if kind == "pubsub":
        from channels_redis.pubsub import RedisPubSubChannelLayer

        return RedisPubSubChannelLayer(hosts=[url], prefix=prefix)
    from channels_redis.core import RedisChannelLayer

    return RedisChannelLayer(hosts=[url], prefix=prefix, capacity=capacity, expiry=60)


async def _receive(kind, url, prefix, capacity, group, sockets, slow_index, slow_ms, ready, results, total):
    layer = make_layer(kind, url, prefix, capacity)
    channels = [await layer.new_channel() for _ in range(sockets)]
    for channel in channels:
        await layer.group_add(group, channel)
    ready.put(True)

    async def consume(index: int, channel: str) -> dict:
        latencies, seen = [], set()
        while True:
            try:
                message = await asyncio.wait_for(layer.receive(channel), timeout=IDLE_SECONDS)
            except TimeoutError:
                break
            latencies.append((time.time() - message["t"]) * 1000)
            seen.add(message["seq"])
            if index == slow_index:
                await asyncio.sleep(slow_ms / 1000)
            if len(seen) == total:
                break
        return {"slow": index == slow_index, "latencies": latencies, "lost": total - len(seen)}

    out = await asyncio.gather(*(consume(i, c) for i, c in enumerate(channels)))
    for channel in channels:
        await layer.group_discard(group, channel)
    results.put(out)


def receiver(*args) -> None:
    asyncio.run(_receive(*args))


async def _send(kind, url, prefix, capacity, group, total, rate) -> float:
    layer = make_layer(kind, url, prefix, capacity)
    interval = 1.0 / rate if rate else 0.0
    started = time.perf_counter()
    spent = 0.0
    for seq in range(1, total + 1):
        t0 = time.perf_counter()
        await layer.group_send(group, {"type": "chat.frame", "seq": seq, "t": time.time(), "text": PAYLOAD})
        spent += time.perf_counter() - t0
        next_at = started + seq * interval
        delay = next_at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
    return spent / total * 1000


def run(kind: str, capacity: int, args) -> dict:
    ctx = mp.get_context("spawn")
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    group = "conv.bench"
    ready, results = ctx.Queue(), ctx.Queue()
    per_node = [args.sockets // 2, args.sockets - args.sockets // 2]
    procs = [
        ctx.Process(
            target=receiver,
            args=(kind, args.redis, prefix, capacity, group, n, 0 if node == 0 else -1, args.slow_ms,
                  ready, results, args.messages),
        )
        for node, n in enumerate(per_node)
    ]
    for proc in procs:
        proc.start()
    for _ in procs:
        ready.get(timeout=30)
    send_ms = asyncio.run(_send(kind, args.redis, prefix, capacity, group, args.messages, args.rate))
    sockets = [item for _ in procs for item in results.get(timeout=120)]
    for proc in procs:
        proc.join(timeout=10)
    normal = [s for s in sockets if not s["slow"]]
    slow = [s for s in sockets if s["slow"]]
    lat = sorted(x for s in normal for x in s["latencies"])
    q = statistics.quantiles(lat, n=100) if len(lat) > 1 else [0.0] * 99
    return {
        "layer": kind if kind == "pubsub" else f"core capacity={capacity}",
        "p50": q[49],
        "p95": q[94],
        "p99": q[98],
        "max": lat[-1] if lat else 0.0,
        "lost_normal": sum(s["lost"] for s in normal),
        "lost_slow": sum(s["lost"] for s in slow),
        "send_ms": send_ms,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=500.0, help="frames per second from the sender (0 = flat out)")
    parser.add_argument("--sockets", type=int, default=20, help="sockets in the group, over two receiver nodes")
    parser.add_argument("--slow-ms", type=float, default=5.0, help="per-frame delay of the one slow socket")
    parser.add_argument("--layers", default="core:100,core:1000,pubsub")
    args = parser.parse_args()
    print(
        f"{args.messages} frames at {args.rate:g}/s to {args.sockets} sockets on 2 nodes; "
        f"one socket takes {args.slow_ms:g} ms per frame\n"
    )
    print("| layer | p50 ms | p95 ms | p99 ms | max ms | lost (normal sockets) | lost (slow socket) | group_send ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for spec in args.layers.split(","):
        kind, _, cap = spec.partition(":")
        row = run(kind, int(cap or 100), args)
        print(
            f"| {row['layer']} | {row['p50']:.2f} | {row['p95']:.2f} | {row['p99']:.2f} | {row['max']:.1f} "
            f"| {row['lost_normal']} | {row['lost_slow']} | {row['send_ms']:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
