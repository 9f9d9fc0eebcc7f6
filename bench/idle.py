#!/usr/bin/env python
"""Idle sockets held by one node, and what an app-level ping costs, side by side with the smallest servers.

    .venv/bin/python bench/idle.py                                # 5 000 sockets, pings at 500/s for 10 s
    .venv/bin/python bench/idle.py --sockets 1000 --ping-rate 200 --seconds 5

For each server — **ours** (one Daphne node, tests/daphne_process.py, signed-in customers' chat sockets, Redis
at ``REDIS_URL``), **minimal** (one Channels consumer on Daphne) and **bare** (a ``websockets`` server), both
from bench/baselines.py — one after the other, each alone on the machine:

1. opens ``--sockets`` sockets, ``--ramp`` per second (each answers one ping; a socket told to come back with
   4013 reconnects with the chat page's backoff), and keeps them open without a word;
2. measures the server process's CPU while they sit idle (``--seconds``);
3. sends ``{"type": "ping", "t": …}`` at ``--ping-rate`` per second, round-robin over the sockets, for
   ``--seconds``, timing each ``pong``;

and reports handshakes/s, failed handshakes, RSS per socket, idle CPU (% of a core), pong p50/p99 (ms), and the
server CPU per ping (µs, idle CPU subtracted). The client runs in this process, on the same cores.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import resource
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")

from bench.streams import PRODUCTION_ENV, cpu_seconds, p, rss_bytes, start_baseline  # noqa: E402


@dataclass
class Held:
    server: str
    sockets: int
    handshakes: int = 0
    refused: int = 0  # handshakes told to come back (4013) and retried
    failed: int = 0
    connect_seconds: float = 0.0
    connect_cpu: float = 0.0  # the server's CPU while sockets were opened, fraction of one core
    client_cpu: float = 0.0  # this process's (the clients') meanwhile
    rss_growth: int = 0
    idle_cpu: float = 0.0  # fraction of one core while idle
    pongs: list[float] = field(default_factory=list)
    pings: int = 0
    lost: int = 0
    ping_cpu: float = 0.0  # seconds of server CPU over the ping phase, idle CPU subtracted

    def row(self, minimal: Held | None) -> str:
        per_ping = self.ping_cpu / self.pings * 1e6 if self.pings else float("nan")
        ratio = ""
        if minimal is not None and minimal.pings and minimal.ping_cpu > 0:
            ratio = f"{per_ping / (minimal.ping_cpu / minimal.pings * 1e6):.1f}×"
        return (
            f"| {self.server} | {self.sockets} | {self.handshakes / self.connect_seconds if self.connect_seconds else 0:.0f} | "
            f"{self.refused} | {self.failed} | {self.connect_cpu * 100:.0f} / {self.client_cpu * 100:.0f} | "
            f"{self.rss_growth / max(1, self.handshakes) / 1024:.0f} | {self.idle_cpu * 100:.1f} | "
            f"{self.pings} | {self.lost} | {p(self.pongs, 50, 1000)} / {p(self.pongs, 99, 1000)} | "
            f"{per_ping:.0f} | {ratio} |"
        )


HEADER = (
    "| server | sockets | handshakes/s | refused (4013), retried | failed handshakes | CPU % server / clients while "
    "connecting | RSS KiB/socket | idle CPU % | pings | pongs lost | pong p50 / p99 ms | CPU µs/ping | × minimal |"
    "\n|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


async def hold(held: Held, pid: int, url: str, headers: dict, origin: str, ramp: float, ping_rate: float,
               seconds: float) -> None:  # fmt: skip
    from bench.ws_client import open_admitted

    sockets: list = []
    waiting: dict[str, float] = {}  # ping token -> when it was sent
    all_back = asyncio.Event()  # set whenever the last ping sent has its pong

    async def open_one(start_at: float) -> None:
        """Connect, and know the node kept the socket (a first pong); told to come back (4013): as the chat page,
        reconnect after a moment."""
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        try:
            ws = await open_admitted(url, headers=headers, origin=origin, on_refused=refused, open_timeout=30,
                                     ping_interval=None)  # fmt: skip
        except Exception:  # noqa: BLE001 - any failure to connect counts
            held.failed += 1
            return
        sockets.append(ws)
        asyncio.get_running_loop().create_task(read(ws))

    def refused() -> None:
        held.refused += 1

    async def read(ws) -> None:
        try:
            async for raw in ws:
                frame = json.loads(raw)
                if frame.get("type") == "pong" and (sent := waiting.pop(str(frame.get("t")), None)) is not None:
                    held.pongs.append(time.monotonic() - sent)
                    if not waiting:
                        all_back.set()
        except Exception:  # noqa: BLE001 - a socket closed under us shows as lost pongs
            return

    rss_start = rss_bytes(pid)
    started, client_cpu, server_cpu = time.monotonic(), time.process_time(), cpu_seconds(pid)
    await asyncio.gather(*(open_one(started + i / ramp) for i in range(held.sockets)))
    held.connect_seconds = time.monotonic() - started
    held.connect_cpu = (cpu_seconds(pid) - server_cpu) / held.connect_seconds
    held.client_cpu = (time.process_time() - client_cpu) / held.connect_seconds
    held.handshakes = len(sockets)
    await asyncio.sleep(1.0)
    held.rss_growth = rss_bytes(pid) - rss_start

    cpu_before = cpu_seconds(pid)
    await asyncio.sleep(seconds)
    held.idle_cpu = (cpu_seconds(pid) - cpu_before) / seconds

    cpu_before, began = cpu_seconds(pid), time.monotonic()
    interval = 1 / ping_rate
    n = 0
    while sockets and time.monotonic() - began < seconds:
        token = uuid.uuid4().hex
        waiting[token] = time.monotonic()
        try:
            await sockets[n % len(sockets)].send(json.dumps({"type": "ping", "t": token}))
        except Exception:  # noqa: BLE001 - counted as lost below
            pass
        n += 1
        await asyncio.sleep(max(0.0, began + n * interval - time.monotonic()))
    all_back.clear()
    if waiting:  # the last pongs, 10 s at most
        try:
            await asyncio.wait_for(all_back.wait(), 10)
        except TimeoutError:
            pass
    elapsed = time.monotonic() - began
    held.pings, held.lost = n, len(waiting)
    held.ping_cpu = cpu_seconds(pid) - cpu_before - held.idle_cpu * elapsed
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)


def measure(count: int, ramp: float, ping_rate: float, seconds: float) -> list[Held]:
    from bench.ws_client import get_token
    from tests.daphne_process import start_daphne

    env = {
        **PRODUCTION_ENV,
        "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        "CHANNEL_PREFIX": f"bench-{uuid.uuid4().hex[:8]}",
    }
    results = []
    node = start_daphne(ROOT / ".data" / "bench", env)
    try:
        headers = {"Authorization": f"Bearer {get_token(node.url, 'customer', 'customer-demo-pass')}"}
        held = Held("ours", count)
        url = node.url.replace("http", "ws") + "/ws/chat/"
        asyncio.run(hold(held, node.process.pid, url, headers, node.url, ramp, ping_rate, seconds))
        results.append(held)
    finally:
        node.stop()
    for kind in ("minimal", "bare"):
        process, port = start_baseline(kind, 0, 1)
        try:
            held = Held(kind, count)
            url, origin = f"ws://127.0.0.1:{port}/ws/chat/", f"http://127.0.0.1:{port}"
            asyncio.run(hold(held, process.pid, url, {}, origin, ramp, ping_rate, seconds))
            results.append(held)
        finally:
            process.terminate()
            process.wait(timeout=10)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sockets", type=int, nargs="+", default=[5000])
    parser.add_argument("--ramp", type=float, default=500.0, help="sockets opened per second")
    parser.add_argument("--ping-rate", type=float, default=500.0, help="pings per second over all sockets")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the idle and the ping phase")
    args = parser.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = max(args.sockets) + 200
    if soft < needed:  # the servers started from here inherit it
        if hard < needed:
            print(f"bench/idle.py needs {needed} open files; the hard limit is {hard} (raise it: ulimit -Hn)")
            return 2
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))

    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    call_command("bootstrap_demo", stdout=io.StringIO())
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, "
          f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())}, ramp {args.ramp:g}/s, "
          f"pings {args.ping_rate:g}/s for {args.seconds:g} s")  # fmt: skip
    print(HEADER)
    for count in args.sockets:
        results = measure(count, args.ramp, args.ping_rate, args.seconds)
        minimal = next(r for r in results if r.server == "minimal")
        for held in results:
            print(held.row(minimal), flush=True)
    print(f"load after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
