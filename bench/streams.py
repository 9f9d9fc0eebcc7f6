#!/usr/bin/env python
"""N concurrent customers on one node, side by side with the smallest servers that stream the same frames.

    .venv/bin/python bench/streams.py                                  # 100 and 300 customers, paced 30 w/s and unpaced
    .venv/bin/python bench/streams.py --customers 100 300 1000 --pace 30 0 --plot docs/img/streams.png

For each (customers, pace) it starts, one after the other and each alone on the machine:

* **ours**: one Daphne node (tests/daphne_process.py) on the configured database with the demo knowledge base
  (``bootstrap_demo``), Redis at ``REDIS_URL`` (default the machine's), answers paced at ``pace`` words/s
  (0: server-bound). Every customer signs in with the demo account's bearer token, opens a socket, asks one
  demo question in a new conversation and reads to its ``final``.
* **minimal**: one Channels consumer on Daphne (bench/baselines.py) streaming as many one-word token frames as
  our answers had on average, at the same pace.
* **bare**: a ``websockets`` server streaming the same.

and reports handshakes/s, failed handshakes, ack / first-token / token-gap p50 and p99 (seconds, from the ask),
errors, ``interrupted`` answers, answers/s, the server process's CPU per answer and per frame (from
/proc/<pid>/stat) and its RSS growth per connection. The customers run in this process, on the same cores: the
figures are for one 2-core machine doing both, as written in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")

RUN_TIMEOUT_SECONDS = 240.0
#: Bench nodes run as in production: DEBUG off (Django's debug cursor and query log cost CPU on every query).
#: HTTPS_ONLY off: they serve plain http://127.0.0.1 (no redirect to https, no Secure cookies; docs/security.md).
PRODUCTION_ENV = {
    "DEBUG": "false",
    "SECRET_KEY": "bench-not-secret-" + "x" * 40,
    "ALLOWED_HOSTS": "127.0.0.1,localhost",
    "HTTPS_ONLY": "false",
    # Every simulated customer signs in as the one demo customer: thousands of sockets of ONE user, which the
    # per-user bound (20, conversations/open_sockets.py) would close but the oldest 20 of.
    "CHAT_MAX_SOCKETS_PER_USER": "0",
    # ...and whose answers, as one customer's, would otherwise generate two at a time (customer_streams.py).
    "CHAT_MAX_STREAMS_PER_USER": "0",
}
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    server: str
    customers: int
    pace: float
    handshakes: list[float] = field(default_factory=list)
    handshake_refused: int = 0  # told to come back (4013), retried
    handshake_failed: int = 0
    failures: dict[str, int] = field(default_factory=dict)  # failed handshakes by exception
    acks: list[float] = field(default_factory=list)
    first: list[float] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)
    tokens: int = 0
    frames: int = 0
    errors: int = 0
    interrupted: int = 0
    completed: int = 0
    connect_seconds: float = 0.0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    rss_growth: int = 0

    def refused_one(self) -> None:
        self.handshake_refused += 1

    def row(self, minimal: Run | None) -> str:
        per_frame = self.cpu_seconds / self.frames * 1e6 if self.frames else float("nan")
        ratio = ""
        if minimal is not None and minimal.frames and minimal.cpu_seconds:
            ratio = f"{per_frame / (minimal.cpu_seconds / minimal.frames * 1e6):.1f}×"
        return (
            f"| {self.server} | {self.customers} | {self.pace:g} | "
            f"{len(self.handshakes) / self.connect_seconds if self.connect_seconds else 0:.0f} | "
            f"{self.handshake_refused} | {self.handshake_failed} | {p(self.acks, 50)} | {p(self.first, 50)} / {p(self.first, 99)} | "
            f"{p(self.gaps, 50, 1000)} / {p(self.gaps, 99, 1000)} | {self.errors} | {self.interrupted} | "
            f"{self.completed / self.seconds if self.seconds else 0:.1f} | "
            f"{self.cpu_seconds / max(1, self.completed) * 1000:.1f} | {per_frame:.0f} | {ratio} | "
            f"{self.rss_growth / max(1, self.customers) / 1024:.0f} |"
        )


HEADER = (
    "| server | customers | pace w/s | handshakes/s | refused (4013), retried | failed handshakes | ack p50 s | "
    "first token p50 / p99 s | token gap p50 / p99 ms | errors | interrupted | answers/s | CPU ms/answer | "
    "CPU µs/frame | × minimal | RSS KiB/conn |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def p(values: list[float], q: int, scale: float = 1.0) -> str:
    if not values:
        return "–"
    ordered = sorted(values)
    value = ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))] * scale
    return f"{value:.3f}" if scale == 1.0 else f"{value:.0f}"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def failure_kind(exc: BaseException, after: float) -> str:
    """'InvalidMessage <- ConnectionResetError after 10-30 s': the exception, what caused it, and when."""
    names, cause = [type(exc).__name__], exc.__cause__ or exc.__context__
    while cause is not None and len(names) < 4:
        names.append(type(cause).__name__)
        cause = cause.__cause__ or cause.__context__
    window = next(f"{low}-{high} s" for low, high in ((0, 1), (1, 5), (5, 10), (10, 30), (30, 60), (60, 1e9))
                  if after < high)  # fmt: skip
    return f"{' <- '.join(names)} after {window}"


async def customer(run: Run, url: str, headers: dict, origin: str, question: str, start_at: float) -> None:
    from bench.ws_client import open_admitted

    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    began = time.monotonic()
    try:  # a socket told to come back (4013) reconnects with the chat page's backoff
        ws = await open_admitted(url, headers=headers, origin=origin, on_refused=run.refused_one, open_timeout=30,
                                 max_size=None, ping_interval=None)  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - any failure to connect counts
        run.handshake_failed += 1
        kind = failure_kind(exc, time.monotonic() - began)
        run.failures[kind] = run.failures.get(kind, 0) + 1
        return
    run.handshakes.append(time.monotonic() - began)
    try:
        ask_id = str(uuid.uuid4())
        sent = time.monotonic()
        await ws.send(json.dumps({"type": "ask", "id": ask_id, "text": question}))
        message, last = None, None
        async for raw in ws:
            frame = json.loads(raw)
            run.frames += 1
            now = time.monotonic()
            kind = frame.get("type")
            if kind == "ack" and frame.get("id") == ask_id:
                run.acks.append(now - sent)
                message = frame.get("message")
            elif kind == "token" and frame.get("message") == message:
                run.tokens += 1
                if last is None:
                    run.first.append(now - sent)
                else:
                    run.gaps.append(now - last)
                last = now
            elif kind == "error" and (frame.get("id") == ask_id or frame.get("message") == message):
                run.errors += 1
                return
            elif kind == "final" and frame.get("message") == message:
                if frame.get("state") == "complete":
                    run.completed += 1
                elif frame.get("state") == "interrupted":
                    run.interrupted += 1
                else:
                    run.errors += 1
                return
    except Exception:  # noqa: BLE001 - a dropped socket is an error of the run
        run.errors += 1
    finally:
        await ws.close()


async def drive(run: Run, pid: int, url: str, headers: dict, origin: str, ramp: float) -> None:
    """All customers (started ``ramp`` per second; 0: at once), measuring the server process meanwhile."""
    from bench.ws_client import DEMO_QUESTIONS
    rss_start, cpu_start = rss_bytes(pid), cpu_seconds(pid)
    peak = rss_start
    started = time.monotonic()
    tasks = [
        asyncio.create_task(customer(run, url, headers, origin, DEMO_QUESTIONS[i % len(DEMO_QUESTIONS)],
                                     started + (i / ramp if ramp else 0.0)))  # fmt: skip
        for i in range(run.customers)
    ]
    done = asyncio.gather(*tasks)
    while not done.done():
        await asyncio.wait([done], timeout=0.5)
        peak = max(peak, rss_bytes(pid))
        if not run.connect_seconds and len(run.handshakes) + run.handshake_failed == run.customers:
            run.connect_seconds = time.monotonic() - started
        if time.monotonic() - started > RUN_TIMEOUT_SECONDS:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            break
    run.seconds = time.monotonic() - started
    run.connect_seconds = run.connect_seconds or run.seconds
    run.cpu_seconds = cpu_seconds(pid) - cpu_start
    run.rss_growth = peak - rss_start


def free_port() -> int:
    from tests.daphne_process import free_port as port

    return port()


def wait_listening(port: int, process: subprocess.Popen) -> None:
    import socket

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"baseline server exited with {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def start_baseline(kind: str, pace: float, tokens: int) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {**os.environ, "ANSWER_WORDS_PER_SECOND": str(pace), "BASELINE_TOKENS": str(tokens)}
    if kind == "minimal":
        command = [str(ROOT / ".venv" / "bin" / "daphne"), "-e", f"tcp:port={port}:interface=127.0.0.1:backlog=1024",
                   "bench.baselines:application"]  # fmt: skip
    else:
        command = [sys.executable, "-m", "bench.baselines", "bare", "--port", str(port)]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_listening(port, process)
    return process, port


def measure(customers: int, pace: float, ramp: float) -> list[Run]:
    from bench.ws_client import get_token
    from tests.daphne_process import start_daphne

    env = {
        **PRODUCTION_ENV,
        "ANSWER_WORDS_PER_SECOND": str(pace),
        "CHAT_RATE_LIMIT": "0",
        "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        "CHANNEL_PREFIX": f"bench-{uuid.uuid4().hex[:8]}",
    }
    ours = Run("ours", customers, pace)
    node = start_daphne(ROOT / ".data" / "bench", env)
    try:
        headers = {"Authorization": f"Bearer {get_token(node.url, 'customer', 'customer-demo-pass')}"}
        asyncio.run(drive(Run("warm-up", 2, pace), node.process.pid, node.url.replace("http", "ws") + "/ws/chat/",
                          headers, node.url, 0))  # fmt: skip
        asyncio.run(drive(ours, node.process.pid, node.url.replace("http", "ws") + "/ws/chat/", headers, node.url, ramp))
    finally:
        node.stop()
    tokens = round(ours.tokens / max(1, ours.completed)) or 60
    runs = [ours]
    for kind in ("minimal", "bare"):
        process, port = start_baseline(kind, pace, tokens)
        try:
            run = Run(kind, customers, pace)
            asyncio.run(drive(run, process.pid, f"ws://127.0.0.1:{port}/ws/chat/", {}, f"http://127.0.0.1:{port}", ramp))
            runs.append(run)
        finally:
            process.terminate()
            process.wait(timeout=10)
    return runs


def plot(results: list[Run], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for pace in sorted({r.pace for r in results}, reverse=True):
        for server, style in (("ours", "o-"), ("minimal", "s--"), ("bare", "^:")):
            runs = sorted((r for r in results if r.server == server and r.pace == pace), key=lambda r: r.customers)
            if not runs:
                continue
            label = f"{server}, {'server-bound' if not pace else f'{pace:g} w/s'}"
            left.plot([r.customers for r in runs], [_q(r.first, 99) for r in runs], style, label=label)
            right.plot([r.customers for r in runs], [r.cpu_seconds / max(1, r.frames) * 1e6 for r in runs], style,
                       label=label)  # fmt: skip
    left.set(xlabel="concurrent customers", ylabel="first token p99 (s)", xscale="log", yscale="log")
    right.set(xlabel="concurrent customers", ylabel="server CPU per frame (µs)", xscale="log", yscale="log")
    for axis in (left, right):
        axis.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def _q(values: list[float], q: int) -> float:
    return sorted(values)[min(len(values) - 1, int(len(values) * q / 100))] if values else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, nargs="+", default=[100, 300])
    parser.add_argument("--pace", type=float, nargs="+", default=[30.0, 0.0], help="words/s; 0: server-bound")
    parser.add_argument("--ramp", type=float, default=0.0, help="customers connecting per second (0: all at once)")
    parser.add_argument("--plot", type=Path, help="write a PNG of first-token p99 and CPU per frame")
    args = parser.parse_args()

    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    call_command("bootstrap_demo", stdout=io.StringIO())
    results: list[Run] = []
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, "
          f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())}, ramp {args.ramp or 'all at once'}")  # fmt: skip
    print(HEADER)
    for pace in args.pace:
        for customers in args.customers:
            runs = measure(customers, pace, args.ramp)
            results.extend(runs)
            minimal = next(r for r in runs if r.server == "minimal")
            for run in runs:
                print(run.row(minimal), flush=True)
            for run in runs:
                if run.failures:
                    print(f"  {run.server}: failed handshakes {run.failures}")
    if args.plot:
        plot(results, args.plot)
        print(f"plot: {args.plot}")
    print(f"load after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"mean tokens per answer {statistics.mean([r.tokens / max(1, r.completed) for r in results if r.server == 'ours']):.0f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
