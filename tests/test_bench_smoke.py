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
