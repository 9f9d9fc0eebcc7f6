#!/usr/bin/env python
"""What the widget's way in costs: a widget visitor against a signed-in customer of the same node, in one run.

    .venv/bin/python bench/widget.py                                  # 30 opens, 30 asks of each, 20 sockets for 15 s
    .venv/bin/python bench/widget.py --opens 50 --asks 50 --customers 30 --seconds 20 --json /tmp/widget.json

One Daphne node run as in production (bench/streams.py ``PRODUCTION_ENV``, answers unpaced, the offline extractive
answerer) on the configured database with the demo knowledge base, accounts and widget site (``bootstrap_demo``);
the host page is the demo site's origin (``DEMO_HOST_URL``), named in the ``Referer`` as a browser would. Then:

* **opening**: a new visitor's way to an open socket — the frame page (``GET /widget/demo/``), the ticket exchanged
  for a visitor token (``POST /widget/demo/visitor/``), the socket with the token as its subprotocol, admitted
  (``ping``/``pong``) — against a signed-in customer's (``POST /api/token/``, the socket with the bearer token);
  ``--opens`` of each, alternately. The customer's way includes checking a password (PBKDF2, by design slow): it
  is the baseline of "a person arriving", not of the socket alone.
* **asking**: first token and final of the same questions (bench/ws_client.py ``DEMO_QUESTIONS``) asked by one
  visitor and one customer in turn, ``--asks`` of each: what a widget question adds (the site re-read in every
  action, the per-address count in Redis).
* **throughput**: ``--customers`` visitors, then as many customers, asking back to back for ``--seconds``,
  ``--rounds`` interleaved rounds: answers/s and the node's CPU per answer.

The clients run in this process, on the same cores as the node: the figures are for one machine doing both.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import re
import statistics
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")

from bench.streams import PRODUCTION_ENV, cpu_seconds  # noqa: E402
from bench.tools import ask_on, ms, q  # noqa: E402
from bench.ws_client import DEMO_QUESTIONS, get_token, open_admitted, origin_of, websocket_url  # noqa: E402

CUSTOMER = ("customer", "customer-demo-pass")
SITE = "demo"
_CONFIG = re.compile(r'<script id="widget-config" type="application/json">(.*?)</script>', re.S)


def http(url: str, *, data: bytes | None = None, headers: dict | None = None) -> bytes:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read()


def visitor_token(base: str, host: str) -> str:
    """A new visitor's token, the way the frame gets it: the frame page (with the host page as Referer), then the
    exchange of its ticket."""
    page = http(f"{base}/widget/{SITE}/", headers={"Referer": f"{host}/"}).decode()
    config = json.loads(_CONFIG.search(page).group(1))
    body = json.dumps({"ticket": config["ticket"], "token": None, "page": f"{host}/", "identity": None}).encode()
    answer = http(f"{base}{config['visitorUrl']}", data=body, headers={"Content-Type": "application/json"})
    return json.loads(answer)["token"]


async def open_visitor(base: str, token: str):
    return await open_admitted(websocket_url(base), headers={}, origin=origin_of(base), open_timeout=10,
                               subprotocols=["chat", f"visitor.{token}"])  # fmt: skip


async def open_customer(base: str, token: str):
    return await open_admitted(websocket_url(base), headers={"Authorization": f"Bearer {token}"},
                               origin=origin_of(base), open_timeout=10)  # fmt: skip


async def opening(base: str, host: str, opens: int) -> dict[str, list[float]]:
    """Seconds from nothing to an admitted socket, per kind."""
    times: dict[str, list[float]] = {"visitor": [], "customer": []}
    for _ in range(opens):
        started = time.monotonic()
        token = await asyncio.to_thread(visitor_token, base, host)
        ws = await open_visitor(base, token)
        times["visitor"].append(time.monotonic() - started)
        await ws.close()
        started = time.monotonic()
        token = await asyncio.to_thread(get_token, base, *CUSTOMER)
        ws = await open_customer(base, token)
        times["customer"].append(time.monotonic() - started)
        await ws.close()
    return times


async def asking(base: str, host: str, asks: int) -> dict[str, list]:
    visitor = await open_visitor(base, await asyncio.to_thread(visitor_token, base, host))
    customer = await open_customer(base, await asyncio.to_thread(get_token, base, *CUSTOMER))
    results: dict[str, list] = {"visitor": [], "customer": []}
    try:
        for i in range(asks):
            question = DEMO_QUESTIONS[i % len(DEMO_QUESTIONS)]
            results["visitor"].append(await ask_on(visitor, "visitor", question))
            results["customer"].append(await ask_on(customer, "customer", question))
    finally:
        await asyncio.gather(visitor.close(), customer.close())
    return results


@dataclass
class Run:
    kind: str
    round: int
    answers: int = 0
    errors: int = 0
    seconds: float = 0.0
    cpu: float = 0.0
    first: list[float] = field(default_factory=list)


async def throughput(run: Run, base: str, host: str, sockets: int, seconds: float, pid: int) -> None:
    if run.kind == "visitors":
        tokens = await asyncio.gather(*(asyncio.to_thread(visitor_token, base, host) for _ in range(sockets)))
        opened = await asyncio.gather(*(open_visitor(base, token) for token in tokens))
    else:
        token = await asyncio.to_thread(get_token, base, *CUSTOMER)
        opened = await asyncio.gather(*(open_customer(base, token) for _ in range(sockets)))

    async def asker(index: int, ws, deadline: float) -> None:
        i = index
        while time.monotonic() < deadline:
            try:
                result = await ask_on(ws, run.kind, DEMO_QUESTIONS[i % len(DEMO_QUESTIONS)])
            except Exception:  # noqa: BLE001 - a dropped socket is an error of the run
                run.errors += 1
                return
            i += 1
            if result.state != "complete":
                run.errors += 1
                continue
            run.answers += 1
            if result.first_token is not None:
                run.first.append(result.first_token)

    cpu_before, started = cpu_seconds(pid), time.monotonic()
    try:
        await asyncio.gather(*(asker(i, ws, started + seconds) for i, ws in enumerate(opened)))
    finally:
        run.seconds, run.cpu = time.monotonic() - started, cpu_seconds(pid) - cpu_before
        await asyncio.gather(*(ws.close() for ws in opened), return_exceptions=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--opens", type=int, default=30, help="new sockets of each kind, one at a time")
    parser.add_argument("--asks", type=int, default=30, help="sequential questions of each kind")
    parser.add_argument("--customers", type=int, default=20, help="concurrent sockets (throughput)")
    parser.add_argument("--seconds", type=float, default=15.0, help="duration of each throughput run")
    parser.add_argument("--rounds", type=int, default=3, help="throughput runs of each kind, interleaved")
    parser.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    args = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from tests.daphne_process import start_daphne

    call_command("migrate", verbosity=0)
    call_command("bootstrap_demo", stdout=io.StringIO())
    host = settings.DEMO_HOST_URL
    env = {
        **PRODUCTION_ENV,
        "ANSWER_WORDS_PER_SECOND": "0",
        "CHAT_RATE_LIMIT": "0",
        # Every visitor comes from 127.0.0.1: lift the per-address limits, which would otherwise be what is measured.
        "WIDGET_NEW_VISITORS_PER_IP_PER_HOUR": "0",
        "WIDGET_QUESTIONS_PER_IP_PER_MINUTE": "0",
        "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        "CHANNEL_PREFIX": f"bench-{uuid.uuid4().hex[:8]}",
    }
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, load {load_before}, "
          "answerer extractive, unpaced")  # fmt: skip
    node = start_daphne(ROOT / ".data" / "bench", env)
    try:
        base = node.url
        asyncio.run(asking(base, host, 3))  # warm-up: the model, connections
        opened = asyncio.run(opening(base, host, args.opens))
        asked = asyncio.run(asking(base, host, args.asks))
        runs = []
        for round_ in range(1, args.rounds + 1):
            for kind in ("visitors", "customers"):
                run = Run(kind, round_)
                asyncio.run(throughput(run, base, host, args.customers, args.seconds, node.process.pid))
                runs.append(run)
    finally:
        node.stop()

    print(f"\nOpening: {args.opens} of each, one at a time (seconds from nothing to an admitted socket)\n")
    print("| who | p50 ms | p95 ms |\n|---|---:|---:|")
    for kind, times in opened.items():
        print(f"| {kind} | {ms(q(times, 50))} | {ms(q(times, 95))} |")
    print(f"visitor vs customer, p50: {q(opened['visitor'], 50) / q(opened['customer'], 50):.2f}×")

    print(f"\nAsking: {args.asks} questions each, one at a time\n")
    print("| who | complete | first token p50 / p95 ms | final p50 ms |\n|---|---:|---:|---:|")
    firsts = {}
    for kind, results in asked.items():
        done = [r for r in results if r.state == "complete"]
        firsts[kind] = [r.first_token for r in done if r.first_token is not None]
        finals = [r.final for r in done if r.final is not None]
        print(f"| {kind} | {len(done)}/{len(results)} | {ms(q(firsts[kind], 50))} / {ms(q(firsts[kind], 95))} | "
              f"{ms(q(finals, 50))} |")  # fmt: skip
    print(f"visitor vs customer, first token p50: {q(firsts['visitor'], 50) / q(firsts['customer'], 50):.2f}×")

    print(f"\nThroughput: {args.customers} sockets asking back to back for {args.seconds:g} s, {args.rounds} rounds\n")
    print("| who | round | answers | errors | answers/s | first token p50 ms | node CPU ms/answer |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for run in runs:
        print(f"| {run.kind} | {run.round} | {run.answers} | {run.errors} | {run.answers / run.seconds:.1f} | "
              f"{ms(q(run.first, 50))} | {run.cpu / max(1, run.answers) * 1000:.1f} |")  # fmt: skip
    rates = {kind: sorted(r.answers / r.seconds for r in runs if r.kind == kind) for kind in ("visitors", "customers")}
    medians = {kind: statistics.median(values) for kind, values in rates.items()}
    print(f"visitors vs customers, median answers/s: {medians['visitors']:.1f} vs {medians['customers']:.1f} = "
          f"{medians['visitors'] / medians['customers']:.2f}×")  # fmt: skip
    load_after = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\nload after: {load_after}")
    if args.json:
        args.json.write_text(json.dumps({
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cores": os.cpu_count(),
            "load_before": load_before, "load_after": load_after, "opening": opened,
            "first_token": firsts, "throughput": [{**vars(run), "first": None} for run in runs],
        }, indent=2))  # fmt: skip
    failed = sum(run.errors for run in runs) + sum(r.state != "complete" for rs in asked.values() for r in rs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
