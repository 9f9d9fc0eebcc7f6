#!/usr/bin/env python
"""What a tool call costs an answer: first-token latency and answers/s on one node, tool questions beside articles.

    .venv/bin/python bench/tools.py                                   # 40 asks of each kind, 30 customers for 20 s
    .venv/bin/python bench/tools.py --asks 60 --customers 50 --seconds 30 --json /tmp/tools.json

Starts the demo order API (``python -m knowledge.tools.demo_api``, its own process and port, as `make run` does)
and one Daphne node run as in production (bench/streams.py ``PRODUCTION_ENV``, answers unpaced, the offline
extractive answerer) on the configured database with the demo knowledge base, accounts and tools
(``bootstrap_demo``); the demo tools are pointed at this run's API for the run and put back after. Then, in the
same run:

* **latency**: one signed-in demo customer asks, one at a time on one socket, a question of the order tool ("Where
  is my order 10432?" and variants over the customer's own orders) and an article question of about the same
  length (bench/ws_client.py ``DEMO_QUESTIONS``), alternately, ``--asks`` of each; then ``--asks`` article
  questions with the tools switched off (what choosing a tool costs every question). Per kind: ack, the tool's
  "Checking…" status, its result card, first token and final (seconds from the ask), and the tool call's own
  latency from the answer's trace (``Message.trace["tools"][0]["latency_ms"]``, the HTTP call to the API).
* **throughput**: ``--customers`` sockets (half signed in as each demo customer, each asking about their own
  orders) ask back to back for ``--seconds``: all article questions (tools off, then on), then half of them tool
  questions. Answers/s, first token, the node's CPU per answer and the API's CPU per tool call (/proc/<pid>/stat).

The customers run in this process, on the same cores as the node and the API: the figures are for one machine
doing all three, as written in docs/benchmarks.md.
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
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")

from bench.streams import PRODUCTION_ENV, cpu_seconds, wait_listening  # noqa: E402

#: The demo customers (bootstrap_demo's accounts) and their own orders in the demo API.
CUSTOMERS = {"customer": "customer-demo-pass", "customer2": "customer2-demo-pass"}
#: Order-tool questions, each about as long as an article question; ``{n}`` is one of the asker's orders.
TOOL_QUESTIONS = [
    "Where is my order {n}?",
    "Has my order {n} shipped yet?",
    "What's the status of order {n}?",
    "When will my order {n} arrive?",
]
#: A question for the tool and the articles together: the order looked up, the rest answered from the articles.
BOTH_QUESTION = "Where is my order {n} and how do I return an item?"
ANSWER_TIMEOUT_SECONDS = 60.0
#: Where a profiled run's samples go (``--profile``): a part is a function (py-spy's "name (file" of a frame); a
#: sample counts once for each part it passes through (inclusive), so the shares overlap.
PROFILE_PARTS = {
    "the tool step on the event loop (tool_answers.answer)": "answer (knowledge/answering/tool_answers.py",
    "the HTTP call to the API (calling.call)": "call (knowledge/tools/calling.py",
    "the identity re-check, a transaction in a thread (tool_askers._identity)": "_identity (conversations/tool_askers.py",
    "choosing a tool, every question (tool_answers.plan)": "plan (knowledge/answering/tool_answers.py",
    "the usable tools lookup, every question (running._usable_tools)": "_usable_tools (knowledge/tools/running.py",
    "embedding the question (knowledge/inference.py)": "(knowledge/inference.py",
    "articles: retrieval (knowledge/retrieval.py)": "(knowledge/retrieval.py",
    "articles: composing the extractive answer": "compose (knowledge/answering/generators/extractive.py",
    "saving the question (chat._ask)": "_ask (conversations/chat.py",
    "saving the finished answer (MessageStream._save_finished)": "_save_finished (conversations/streaming/stream.py",
    "the console's inbox row (inbox.list_item)": "list_item (conversations/inbox.py",
    "claiming the next answer (workers.claim_next)": "claim_next (conversations/streaming/workers.py",
    "PostgreSQL round trips (psycopg, anywhere)": "(psycopg/",
}


@dataclass
class Ask:
    """One question and when its frames came, in seconds from the ask (None: no such frame)."""

    kind: str  # "tool", "articles" or "articles, tools off"
    question: str
    message: str | None = None
    ack: float | None = None
    tool_status: float | None = None  # the tool's "Checking Order status: 10432…"
    tool_result: float | None = None  # its card
    tool_ok: bool | None = None
    first_token: float | None = None
    final: float | None = None
    state: str = ""
    citations: int = 0  # sources the answer cites (the tool's result is one)


@dataclass
class Throughput:
    label: str
    customers: int
    tool_share: float
    round: int = 1
    answers: int = 0
    tool_answers: int = 0
    tool_ok: int = 0
    errors: int = 0
    seconds: float = 0.0
    node_cpu: float = 0.0
    api_cpu: float = 0.0
    first: list[float] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        return self.answers / self.seconds if self.seconds else 0.0


def q(values: list[float], percent: int) -> float:
    """The ``percent``-th percentile (nearest rank), NaN for none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * percent / 100))]


def orders_of(username: str) -> list[str]:
    from knowledge.tools import demo_api

    return [order.number for c in demo_api.CUSTOMERS if c.username == username for order in c.orders]


def tool_question(username: str, i: int) -> str:
    orders = orders_of(username)
    return TOOL_QUESTIONS[i % len(TOOL_QUESTIONS)].format(n=orders[(i // len(TOOL_QUESTIONS)) % len(orders)])


def article_question(i: int) -> str:
    from bench.ws_client import DEMO_QUESTIONS

    return DEMO_QUESTIONS[i % len(DEMO_QUESTIONS)]


async def ask_on(ws, kind: str, question: str) -> Ask:
    """Ask ``question`` in a new conversation and read its frames to its ``final``, timing each step."""
    ask_id = str(uuid.uuid4())
    result = Ask(kind, question)
    sent = time.monotonic()
    await ws.send(json.dumps({"type": "ask", "id": ask_id, "text": question}))
    async with asyncio.timeout(ANSWER_TIMEOUT_SECONDS):
        async for raw in ws:
            frame = json.loads(raw)
            now = time.monotonic() - sent
            kind_of = frame.get("type")
            if kind_of == "ack" and frame.get("id") == ask_id:
                result.ack, result.message = now, frame.get("message")
            elif frame.get("message") != result.message or result.message is None:
                if kind_of == "error" and frame.get("id") == ask_id:
                    result.state = "error"
                    return result
            elif kind_of == "status" and frame.get("stage") == "tool" and result.tool_status is None:
                result.tool_status = now
            elif kind_of == "tool_result" and result.tool_result is None:
                result.tool_result, result.tool_ok = now, bool(frame["tool"]["ok"])
            elif kind_of == "token" and result.first_token is None:
                result.first_token = now
            elif kind_of == "error":
                result.state = "error"
                return result
            elif kind_of == "final":
                result.final, result.state = now, frame.get("state", "")
                result.citations = len(frame.get("citations") or [])
                return result
    return result


async def open_for(url: str, token: str):
    from bench.ws_client import open_socket

    return await open_socket(url, token)


async def latency(url: str, token: str, username: str, asks: int, tools_on: bool) -> list[Ask]:
    """``asks`` tool, article and tool-and-article questions in turn (tools on), or ``asks`` article questions
    (tools off)."""
    results = []
    async with await open_for(url, token) as ws:
        for i in range(asks):
            if tools_on:
                results.append(await ask_on(ws, "tool", tool_question(username, i)))
                results.append(await ask_on(ws, "articles", article_question(i)))
                order = orders_of(username)[i % len(orders_of(username))]
                results.append(await ask_on(ws, "tool + articles", BOTH_QUESTION.format(n=order)))
            else:
                results.append(await ask_on(ws, "articles, tools off", article_question(i)))
    return results


async def throughput(run: Throughput, url: str, tokens: dict[str, str], node_pid: int, api_pid: int, seconds: float):
    """``run.customers`` sockets asking back to back for ``seconds``; the clock starts once all are open."""
    users = [list(tokens)[i % len(tokens)] for i in range(run.customers)]
    sockets = await asyncio.gather(*(open_for(url, tokens[user]) for user in users))

    async def customer(index: int, ws, username: str, deadline: float) -> None:
        i = 0
        while time.monotonic() < deadline:
            # Every other question is a tool question (customers start on alternate kinds): half of all at any time.
            use_tool = run.tool_share > 0 and (i + index) % round(1 / run.tool_share) == 0
            try:
                if use_tool:
                    result = await ask_on(ws, "tool", tool_question(username, i + index))
                else:
                    result = await ask_on(ws, "articles", article_question(i + index))
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
            if result.tool_ok is not None:
                run.tool_answers += 1
                run.tool_ok += result.tool_ok

    node_start, api_start = cpu_seconds(node_pid), cpu_seconds(api_pid)
    started = time.monotonic()
    deadline = started + seconds
    try:
        pairs = enumerate(zip(sockets, users, strict=True))
        await asyncio.gather(*(customer(i, ws, user, deadline) for i, (ws, user) in pairs))
    finally:
        run.seconds = time.monotonic() - started
        run.node_cpu = cpu_seconds(node_pid) - node_start
        run.api_cpu = cpu_seconds(api_pid) - api_start
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)


def profile_summary(path: Path) -> list[tuple[str, float]]:
    """Inclusive share of the samples in py-spy's raw (collapsed) output that pass through each of
    ``PROFILE_PARTS``."""
    samples: list[tuple[str, int]] = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if count.isdigit():
            samples.append((stack, int(count)))
    total = sum(count for _, count in samples) or 1
    return [(part, sum(count for stack, count in samples if needle in stack) / total)
            for part, needle in PROFILE_PARTS.items()]  # fmt: skip


def trace_latencies(messages: list[str]) -> list[float]:
    """The tool call's own latency (ms) as each answer's trace has it."""
    from conversations.models import Message

    traces = Message.objects.filter(pk__in=messages).values_list("trace", flat=True)
    return [trace["tools"][0]["latency_ms"] for trace in traces if trace and trace.get("tools")]


def set_tools(tool_ids: list[int], enabled: bool) -> None:
    """Switch the tools on or off, then wait until the node no longer uses the list it read before
    (``TOOLS_CACHE_SECONDS``: a node reads a knowledge base's tools at most that often)."""
    from django.conf import settings

    from knowledge.models import Tool

    Tool.objects.filter(pk__in=tool_ids).update(enabled=enabled)
    time.sleep(settings.TOOLS_CACHE_SECONDS + 0.5)


def start_api(secret: str) -> tuple[subprocess.Popen, str]:
    """The demo order API as `make run` starts it, on a free port; returns the process and its base URL."""
    from knowledge.tools import demo_api
    from tests.daphne_process import free_port

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "knowledge.tools.demo_api", "--port", str(port), "--secret", secret],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_listening(port, process)
    return process, f"http://127.0.0.1:{port}{demo_api.PREFIX}"


def latency_rows(results: list[Ask], tool_ms: dict[str, list[float]]) -> list[dict]:
    rows = []
    for kind in ("articles, tools off", "articles", "tool", "tool + articles"):
        mine = [r for r in results if r.kind == kind]
        done = [r for r in mine if r.state == "complete"]
        if not mine:
            continue

        def of(name: str, done: list[Ask] = done) -> list[float]:
            return [getattr(r, name) for r in done if getattr(r, name) is not None]

        rows.append({
            "kind": kind, "asks": len(mine), "complete": len(done),
            "tool_ok": sum(1 for r in done if r.tool_ok), "ack_p50": q(of("ack"), 50),
            "tool_status_p50": q(of("tool_status"), 50), "tool_result_p50": q(of("tool_result"), 50),
            "first_p50": q(of("first_token"), 50), "first_p95": q(of("first_token"), 95),
            "final_p50": q(of("final"), 50), "citations_mean": sum(r.citations for r in done) / max(1, len(done)),
            "tool_ms_p50": q(tool_ms[kind], 50) if kind in tool_ms else None,
            "tool_ms_p95": q(tool_ms[kind], 95) if kind in tool_ms else None,
        })  # fmt: skip
    return rows


def ms(value: float | None) -> str:
    return "–" if value is None or value != value else f"{value * 1000:.0f}"


def signed_ms(value: float) -> str:
    return f"{value * 1000:+.0f}"


def print_latency(rows: list[dict]) -> None:
    print("| question | asks | complete | tool ok | ack p50 ms | tool status p50 ms | tool card p50 ms | "
          "first token p50 / p95 ms | final p50 ms | sources cited | tool call (trace) p50 / p95 ms |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        call = "–" if row["tool_ms_p50"] is None else f"{row['tool_ms_p50']:.1f} / {row['tool_ms_p95']:.1f}"
        print(f"| {row['kind']} | {row['asks']} | {row['complete']} | {row['tool_ok']} | {ms(row['ack_p50'])} | "
              f"{ms(row['tool_status_p50'])} | {ms(row['tool_result_p50'])} | "
              f"{ms(row['first_p50'])} / {ms(row['first_p95'])} | {ms(row['final_p50'])} | {row['citations_mean']:.1f} | "
              f"{call} |")  # fmt: skip
    by = {row["kind"]: row for row in rows}
    if "tool" in by and "articles" in by:
        tool, articles = by["tool"], by["articles"]
        print(f"\ntool question vs article question, first token p50: {ms(tool['first_p50'])} vs "
              f"{ms(articles['first_p50'])} ms = {tool['first_p50'] / articles['first_p50']:.2f}× "
              f"({signed_ms(tool['first_p50'] - articles['first_p50'])} ms); p95 "
              f"{tool['first_p95'] / articles['first_p95']:.2f}×")  # fmt: skip
    if "tool + articles" in by and "articles" in by:
        both, articles = by["tool + articles"], by["articles"]
        print(f"tool and article question vs article question, first token p50: {ms(both['first_p50'])} vs "
              f"{ms(articles['first_p50'])} ms = {both['first_p50'] / articles['first_p50']:.2f}× "
              f"({signed_ms(both['first_p50'] - articles['first_p50'])} ms)")  # fmt: skip
    if "articles, tools off" in by and "articles" in by:
        off, on = by["articles, tools off"], by["articles"]
        print(f"article question with tools on vs off, first token p50: {ms(on['first_p50'])} vs "
              f"{ms(off['first_p50'])} ms = {on['first_p50'] / off['first_p50']:.2f}×")  # fmt: skip


def print_throughput(runs: list[Throughput]) -> None:
    print("| questions | round | customers | seconds | answers | errors | tool answers (ok) | answers/s | "
          "first token p50 / p95 ms | node CPU ms/answer | API CPU ms/tool call | × articles |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for run in runs:
        base = next((r for r in runs if r.label == "articles" and r.round == run.round), None)
        ratio = f"{run.per_second / base.per_second:.2f}×" if base and base.per_second else ""
        api = f"{run.api_cpu / run.tool_answers * 1000:.1f}" if run.tool_answers else "–"
        print(f"| {run.label} | {run.round} | {run.customers} | {run.seconds:.1f} | {run.answers} | {run.errors} | "
              f"{run.tool_answers} ({run.tool_ok}) | {run.per_second:.1f} | {ms(q(run.first, 50))} / "
              f"{ms(q(run.first, 95))} | {run.node_cpu / max(1, run.answers) * 1000:.1f} | {api} | {ratio} |")  # fmt: skip


def throughput_summary(runs: list[Throughput]) -> list[dict]:
    """Per kind of run, over its rounds: the median answers/s, its range, and CPU per answer over all answers."""
    rows = []
    for label in dict.fromkeys(run.label for run in runs):
        mine = [run for run in runs if run.label == label]
        rates = [run.per_second for run in mine]
        answers = sum(run.answers for run in mine)
        tool_answers = sum(run.tool_answers for run in mine)
        rows.append({
            "label": label, "rounds": len(mine), "answers": answers, "errors": sum(run.errors for run in mine),
            "per_second_median": statistics.median(rates), "per_second_min": min(rates), "per_second_max": max(rates),
            "first_p50": q([t for run in mine for t in run.first], 50),
            "node_cpu_ms_per_answer": sum(run.node_cpu for run in mine) / max(1, answers) * 1000,
            "api_cpu_ms_per_call": sum(run.api_cpu for run in mine) / tool_answers * 1000 if tool_answers else None,
        })  # fmt: skip
    base = next((row for row in rows if row["label"] == "articles"), None)
    for row in rows:
        row["ratio"] = row["per_second_median"] / base["per_second_median"] if base else None
    return rows


def print_summary(rows: list[dict]) -> None:
    print("| questions | rounds | answers | errors | answers/s median (min–max) | first token p50 ms | "
          "node CPU ms/answer | API CPU ms/tool call | × articles |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|")  # fmt: skip
    for row in rows:
        api = "–" if row["api_cpu_ms_per_call"] is None else f"{row['api_cpu_ms_per_call']:.1f}"
        print(f"| {row['label']} | {row['rounds']} | {row['answers']} | {row['errors']} | "
              f"{row['per_second_median']:.1f} ({row['per_second_min']:.1f}–{row['per_second_max']:.1f}) | "
              f"{ms(row['first_p50'])} | {row['node_cpu_ms_per_answer']:.1f} | {api} | {row['ratio']:.2f}× |")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--asks", type=int, default=40, help="sequential asks of each kind (latency)")
    parser.add_argument("--customers", type=int, default=30, help="concurrent sockets (throughput)")
    parser.add_argument("--seconds", type=float, default=20.0, help="duration of each throughput run")
    parser.add_argument(
        "--rounds", type=int, default=3,
        help="throughput runs of each kind, interleaved (a shared machine's load moves between runs)",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    parser.add_argument(
        "--profile", type=Path, metavar="RAW",
        help="then one more half-tool run under py-spy (100 Hz, not counted above): write its raw stacks to RAW and "
        "print where the node's samples go",
    )  # fmt: skip
    args = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from bench.ws_client import get_token
    from knowledge.models import Tool
    from knowledge.tools import demo_api
    from tests.daphne_process import start_daphne

    call_command("migrate", verbosity=0)
    call_command("bootstrap_demo", stdout=io.StringIO())
    tools = list(Tool.objects.filter(name__in=[d["name"] for d in demo_api.DEMO_TOOLS]))
    assert len(tools) == len(demo_api.DEMO_TOOLS), "bootstrap_demo made no demo tools (DEBUG off in this process?)"
    saved = {tool.pk: (tool.base_url, tool.enabled) for tool in tools}
    tool_ids = list(saved)
    api, api_url = start_api(settings.DEMO_TOOLS_SECRET)
    env = {
        **PRODUCTION_ENV,
        "ANSWER_WORDS_PER_SECOND": "0",
        "CHAT_RATE_LIMIT": "0",
        "TOOLS_ALLOW_PRIVATE_ADDRESSES": "1",  # the demo API listens on 127.0.0.1
        # One demo customer asks every question: lift the per-tool and per-customer call limits.
        "TOOLS_CALLS_PER_MINUTE": "100000000",
        "TOOLS_CALLS_PER_CUSTOMER_PER_MINUTE": "100000000",
        "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        "CHANNEL_PREFIX": f"bench-{uuid.uuid4().hex[:8]}",
    }
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, load {load_before}, "
          f"answerer {os.environ.get('ANSWER_GENERATOR', 'extractive')}, unpaced")  # fmt: skip
    node = None
    try:
        Tool.objects.filter(pk__in=tool_ids).update(base_url=api_url, enabled=True)
        node = start_daphne(ROOT / ".data" / "bench", env)
        ws_url = node.url  # bench/ws_client.py turns http:// into ws://…/ws/chat/
        tokens = {user: get_token(node.url, user, password) for user, password in CUSTOMERS.items()}
        asyncio.run(latency(ws_url, tokens["customer"], "customer", 3, True))  # warm-up: model, connections

        results = asyncio.run(latency(ws_url, tokens["customer"], "customer", args.asks, True))
        set_tools(tool_ids, False)
        results += asyncio.run(latency(ws_url, tokens["customer"], "customer", args.asks, False))
        set_tools(tool_ids, True)
        tool_ms = {kind: trace_latencies([r.message for r in results if r.kind == kind and r.message])
                   for kind in ("tool", "tool + articles")}  # fmt: skip
        rows = latency_rows(results, tool_ms)
        print(f"\nLatency: one customer, one question at a time, {args.asks} of each kind\n")
        print_latency(rows)

        runs = []
        for round_ in range(1, args.rounds + 1):
            for label, share, enabled in (("articles, tools off", 0.0, False), ("articles", 0.0, True),
                                          ("half tool questions", 0.5, True)):  # fmt: skip
                set_tools(tool_ids, enabled)
                run = Throughput(label, args.customers, share, round_)
                asyncio.run(throughput(run, ws_url, tokens, node.process.pid, api.pid, args.seconds))
                runs.append(run)
        set_tools(tool_ids, True)
        print(f"\nThroughput: {args.customers} customers asking back to back for {args.seconds:g} s, "
              f"{args.rounds} rounds\n")  # fmt: skip
        print_throughput(runs)
        summary = throughput_summary(runs)
        print()
        print_summary(summary)
        if args.profile:
            spy = subprocess.Popen(
                [str(ROOT / ".venv" / "bin" / "py-spy"), "record", "--pid", str(node.process.pid), "--duration",
                 str(round(args.seconds)), "--rate", "100", "--format", "raw", "-o", str(args.profile)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            profiled = Throughput("half tool questions, profiled", args.customers, 0.5)
            asyncio.run(throughput(profiled, ws_url, tokens, node.process.pid, api.pid, args.seconds))
            spy.wait(timeout=60)
            print(f"\nWhere the node's samples go (py-spy, {profiled.answers} answers, half tool questions):\n")
            print("| part | share of samples |\n|---|---:|")
            for part, share in profile_summary(args.profile):
                print(f"| {part} | {share:.0%} |")
    finally:
        if node is not None:
            node.stop()
        api.terminate()
        api.wait(timeout=10)
        for tool in tools:  # put the demo tools back as they were (bootstrap_demo's API URL)
            Tool.objects.filter(pk=tool.pk).update(base_url=saved[tool.pk][0], enabled=saved[tool.pk][1])
    load_after = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\nload after: {load_after}")
    if args.json:
        args.json.write_text(json.dumps({
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cores": os.cpu_count(),
            "load_before": load_before, "load_after": load_after, "args": {k: str(v) for k, v in vars(args).items()},
            "latency": rows, "tool_call_ms": tool_ms, "throughput_summary": summary,
            "throughput": [{**asdict(run), "first": None, "answers_per_second": run.per_second} for run in runs],
        }, indent=2))  # fmt: skip
    failed = sum(1 for r in results if r.state != "complete") + sum(run.errors for run in runs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
