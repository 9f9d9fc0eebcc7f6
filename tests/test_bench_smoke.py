"""bench/retrieval.py at CI size, so the benchmark never rots (its numbers are not judged here)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_retrieval_benchmark_tiny_run_prints_its_tables():
    # Same server as the tests (DATABASE_URL or the embedded one), but a database of its own, dropped after.
    db_name = f"bench_smoke_{os.environ.get('TEST_DATABASE_NAME', 'test')}"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "retrieval.py"), "--tiny", "--db-name", db_name, "--drop"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, f"bench/retrieval.py --tiny failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    out = proc.stdout
    assert "| mode | embed p50 ms | embed p95 ms | db p50 ms | db p95 ms | total p50 ms | total p95 ms |" in out
    for mode in ("vector", "keyword", "hybrid"):
        assert f"\n| {mode} | " in out, f"no {mode} row in:\n{out}"
    for ef in (40, 100, 200):
        assert f"\n| {ef} | " in out, f"no ef_search={ef} row in:\n{out}"
    assert "Goal (hybrid db p50 <= 15 ms at recall@10 >= 0.95):" in out


def bench_rows(script: str, *args: str, timeout: int) -> dict[str, list[str]]:
    """Run ``bench/<script>`` and return its table rows by first cell (stripped cells)."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"bench/{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    rows = {}
    for line in proc.stdout.splitlines():
        if line.startswith("| "):
            cells = [cell.strip() for cell in line.split("|")]
            rows[cells[1]] = cells
    for server in ("ours", "minimal", "bare"):
        assert server in rows, f"no {server} row in:\n{proc.stdout}"
    return rows


@pytest.mark.slow
def test_idle_sockets_benchmark_tiny_run_prints_its_table():
    # bench/idle.py at CI size: a few sockets held on a node and the two baselines, pings answered.
    rows = bench_rows("idle.py", "--sockets", "30", "--ramp", "100", "--ping-rate", "30", "--seconds", "1", timeout=600)
    for server in ("ours", "minimal", "bare"):
        assert (rows[server][5], rows[server][10]) == ("0", "0"), f"{server}: failed handshakes or lost pongs: {rows}"


@pytest.mark.slow
def test_streams_benchmark_tiny_run_prints_its_table():
    # bench/streams.py at CI size: 5 server-bound customers on a node, then the baselines, all complete.
    rows = bench_rows("streams.py", "--customers", "5", "--pace", "0", timeout=900)
    for server in ("ours", "minimal", "bare"):
        failed, errors, interrupted = rows[server][6], rows[server][10], rows[server][11]
        assert (failed, errors, interrupted) == ("0", "0", "0"), f"{server}: failures in {rows}"


def test_hostile_files_benchmark_tiny_run_prints_its_table():
    # bench/hostile_files.py on its one harmless file: the three ways of reading it, each in a process of its own.
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "hostile_files.py"), "--files", "notepad.txt"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = next(line for line in proc.stdout.splitlines() if line.startswith("| notepad.txt"))
    assert row.count("9 passages") == 3, proc.stdout


def test_insights_benchmark_tiny_run_prints_its_tables():
    # bench/insights.py at CI size (2 000 conversations, one run, ~5 s): every range and filter timed, EXPLAIN printed.
    db_name = f"bench_insights_smoke_{os.environ.get('TEST_DATABASE_NAME', 'test')}"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "insights.py"), "--tiny", "--db-name", db_name, "--drop"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, f"bench/insights.py --tiny failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    for days in (30, 90):
        for label in ("none", "knowledge base", "site"):
            assert proc.stdout.count(f"| {days} days | {label} | ") == 2, proc.stdout  # with and without the indexes
    assert "- 30 days, filter knowledge base, conversations: " in proc.stdout
