#!/usr/bin/env python
"""Retrieval benchmark: latency of vector / keyword / hybrid search and HNSW recall at scale.

    .venv/bin/python bench/retrieval.py                 # 100 000 chunks, 500 queries (~10-20 min first run)
    .venv/bin/python bench/retrieval.py --tiny          # 100 chunks, 10 queries: the CI smoke size

What it does, and why each step is there:
1. Generates varied synthetic help-centre chunks (products, product codes, error codes, returns,
   shipping, billing, warranty...) from templates and vocabulary, deterministically (--seed).
2. Embeds them FOR REAL with the configured embedder; the vectors are cached in
   .data/bench/*.npy keyed by a hash of the texts, so reruns skip the slow part.
3. Loads them into a database of its own (--db-name, default bench_retrieval / bench_retrieval_tiny)
   on the same server the project uses (DATABASE_URL, or the embedded PostgreSQL): migrate, COPY
   (binary, vectors as pgvector's binary format), then builds the HNSW and GIN indexes the model
   declares. A load already present with the same data is reused.
4. Runs the queries through knowledge.retrieval.fetch_passages, the code the app runs, filtered by
   knowledge base as the app always is: query-embedding time and database time are measured apart.
5. HNSW recall@10 against exact search (the same ORDER BY with index scans disabled) at several
   hnsw.ef_search values, with the vector and hybrid database time at each.
Prints markdown tables (pasted into docs/benchmarks.md) and exits 0.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import statistics
import sys
import time
from pathlib import Path

from psycopg.types.json import Jsonb

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")

GOAL_DB_P50_MS = 15.0
GOAL_RECALL = 0.95
TOP_K = 10
BLOCK = 2000  # texts embedded (and cached) per step
#: ``--tiny``, the CI smoke run (tests/test_bench_smoke.py): ten articles and a handful of queries go through every
#: step and print every table in seconds. Its numbers mean nothing; embedding 2 000 chunks on a fresh checkout
#: made it the slowest test of the suite (162-272 s).
TINY_CHUNKS, TINY_QUERIES = 100, 10

# --- synthetic help-centre corpus ------------------------------------------------------------------

CATEGORIES = [
    "kettle", "toaster", "dishwasher", "washing machine", "robot vacuum", "coffee machine", "blender",
    "air fryer", "fridge freezer", "oven", "microwave", "wifi router", "smart speaker", "headphones",
    "electric toothbrush", "hair dryer", "steam iron", "fan heater", "air purifier", "stand mixer",
]  # fmt: skip
SERIES = ["Aero", "Brio", "Cove", "Dash", "Echo", "Flux", "Glow", "Halo", "Iris", "Juno", "Kite", "Lumo", "Mira"]
SYMPTOMS = [
    "does not turn on", "makes a grinding noise", "keeps disconnecting from the wifi", "leaks water onto the floor",
    "stops in the middle of a cycle", "will not charge", "smells of burning plastic", "is much louder than usual",
    "shows a flashing red light", "gets too hot to touch", "does not heat up", "vibrates and moves around",
    "switches itself off after a few minutes", "cannot be found in the app", "has a cracked lid",
    "drains very slowly", "leaves white marks", "beeps three times", "shows the wrong time", "loses suction",
]  # fmt: skip
FIXES = [
    "unplug it for ten minutes and then try again", "clean the filter under warm running water",
    "check that the power cable is firmly pushed into the socket", "update the firmware from the mobile app",
    "descale it with citric acid or white vinegar", "hold the power button for {n} seconds to reset it",
    "make sure nothing is blocking the air vents", "replace the battery with an original spare part",
    "run an empty hot programme with a cleaning tablet", "move it closer to the router and restart both",
    "remove the drain hose and rinse out any debris", "tighten the lid until you hear a click",
    "let it cool down completely before using it again", "pair it again after deleting it from the app",
]  # fmt: skip
COUNTRIES = [
    "Germany", "France", "Spain", "Italy", "the Netherlands", "Belgium", "Austria", "Ireland", "Portugal",
    "Denmark", "Sweden", "Poland", "Switzerland", "Norway", "the United Kingdom", "Czechia", "Finland",
]  # fmt: skip
COURIERS = ["DHL", "UPS", "DPD", "GLS", "FedEx", "PostNL", "La Poste", "Royal Mail"]
PAYMENTS = ["Visa", "Mastercard", "American Express", "PayPal", "Klarna", "Apple Pay", "Google Pay", "bank transfer"]
PARTS = ["power cable", "filter", "lid", "base station", "brush roll", "water tank", "door seal", "display", "battery"]
DEFECTS = ["manufacturing defects", "faulty electronics", "motor failure", "heating element failure", "battery wear"]
CITIES = ["Leipzig", "Lyon", "Valencia", "Turin", "Utrecht", "Ghent", "Graz", "Cork", "Porto", "Malmo"]

TOPICS = {
    "Troubleshooting": [
        "If your {product} {symptom}, {fix}.",
        "Error {err} on the {product} usually means the {part} needs attention; {fix}.",
        "When the {product} {symptom} even after a reset, note the serial number and contact our support team.",
        "Customers often report that the {product} {symptom}. In most cases you can {fix}.",
    ],
    "Returns and refunds": [
        "You can return the {product} within {days} days of delivery for a full refund.",
        "Refunds for the {product} reach your {payment} account within {n} working days of us receiving it.",
        "Print the prepaid return label from your account, pack the {product} with its {part} and drop it at "
        "any {courier} point.",
        "Opened {category} boxes can still be returned as long as the {part} is undamaged.",
    ],
    "Delivery": [
        "Orders of the {product} to {country} ship within {n} working days with {courier}.",
        "Tracking numbers for {category} deliveries are emailed once the parcel leaves our warehouse in {city}.",
        "Large items such as the {product} are delivered to the door; the driver calls 30 minutes ahead.",
        "Delivery to {country} costs {price} euros and is free above {amount} euros.",
    ],
    "Warranty": [
        "The {product} comes with a {years}-year warranty covering {defect}.",
        "Warranty claims for the {product} need the order number and a photo of the {part}.",
        "Damage from limescale or dropping the {category} is not covered by the warranty.",
        "Registering the {product} online extends the warranty by one year at no cost.",
    ],
    "Billing": [
        "Invoices for {category} orders over {amount} euros show VAT at {rate} percent.",
        "We accept {payment} for the {product}; the card is charged when the order ships.",
        "Paying for the {product} in three instalments with Klarna carries no interest.",
        "A corrected invoice for order {order} can be requested from the billing page.",
    ],
    "Setup": [
        "To set up the {product}, download the app, press the {part} button and follow the pairing steps.",
        "Before first use, rinse the {part} of the {product} and run it once empty.",
        "The {product} needs a 2.4 GHz wifi network; 5 GHz networks are not supported.",
        "Mount the {product} at least {n}0 centimetres away from walls so it can cool.",
    ],
}


def _products(rng: random.Random) -> list[tuple[str, str, str]]:
    """(display name, category, code) for ~260 products, codes like NW-4410."""
    products, codes = [], set()
    for category in CATEGORIES:
        for series in rng.sample(SERIES, 13):
            code = f"NW-{rng.randint(1000, 9999)}"
            while code in codes:
                code = f"NW-{rng.randint(1000, 9999)}"
            codes.add(code)
            products.append((f"{series} {category} {code}", category, code))
    return products


def _fill(template: str, rng: random.Random, product: tuple[str, str, str]) -> str:
    name, category, _ = product
    return template.format(
        product=name, category=category, symptom=rng.choice(SYMPTOMS),
        fix=rng.choice(FIXES).format(n=rng.randint(3, 30)), err=f"E{rng.randint(1, 99):02d}",
        part=rng.choice(PARTS), days=rng.choice([14, 30, 60, 100]), payment=rng.choice(PAYMENTS),
        n=rng.randint(2, 9), courier=rng.choice(COURIERS), country=rng.choice(COUNTRIES), city=rng.choice(CITIES),
        price=rng.choice(["4.95", "6.90", "9.95", "14.50", "24.00"]), amount=rng.choice([50, 99, 150, 250, 500]),
        years=rng.choice([2, 3, 5]), defect=rng.choice(DEFECTS), rate=rng.choice([7, 10, 19, 20, 21, 25]),
        order=f"{rng.randint(100000, 999999)}",
    )  # fmt: skip


def generate_corpus(n_chunks: int, seed: int) -> list[tuple[int, str, str]]:
    """(document number, heading, text) per chunk: 10 chunks per product document, unique texts."""
    rng = random.Random(seed)
    products = _products(rng)
    seen: set[str] = set()
    rows: list[tuple[int, str, str]] = []
    while len(rows) < n_chunks:
        doc = len(rows) // 10
        product = products[doc % len(products)]
        topic = rng.choice(list(TOPICS))
        sentences = [_fill(t, rng, product) for t in rng.sample(TOPICS[topic], 2)]
        text = " ".join(sentences)
        if text in seen:
            continue
        seen.add(text)
        rows.append((doc, f"{product[0]} > {topic}", text))
    return rows


def generate_queries(n: int, seed: int) -> list[str]:
    """Questions customers type: natural sentences, short keyword queries and bare product codes."""
    products = _products(random.Random(seed))  # the corpus's products: same seed, same first draw
    rng = random.Random(seed + 1)
    shapes = [
        lambda p: f"my {p[1]} {rng.choice(SYMPTOMS)}, what should I do?",
        lambda p: f"how do I fix a {p[1]} that {rng.choice(SYMPTOMS)}",
        lambda p: f"can I still return my {p[1]} after {rng.choice([20, 45, 90])} days",
        lambda p: f"error E{rng.randint(1, 99):02d} {p[1]}",
        lambda p: p[2],
        lambda p: f"{p[2]} {rng.choice(SYMPTOMS)}",
        lambda p: f"shipping cost to {rng.choice(COUNTRIES)}",
        lambda p: f"how long does a refund to {rng.choice(PAYMENTS)} take",
        lambda p: f"is {rng.choice(DEFECTS)} on the {p[1]} covered by warranty",
        lambda p: f"invoice with VAT for my {p[1]} order",
    ]
    return [rng.choice(shapes)(rng.choice(products)) for _ in range(n)]


# --- database setup ---------------------------------------------------------------------------------


def use_bench_database(name: str) -> None:
    """Point Django at database ``name`` on the project's server, creating it if needed."""
    import chatsite.settings as project_settings
    from chatsite.embedded_postgres import _ensure_database

    _ensure_database(project_settings.DATABASE_URL, name)
    project_settings.DATABASES["default"]["NAME"] = name
    project_settings.DATABASES["default"].pop("TEST", None)

    import django

    django.setup()


def drop_bench_database(name: str) -> None:
    import psycopg
    from django.db import connection

    import chatsite.settings as project_settings

    connection.close()
    with psycopg.connect(project_settings.DATABASE_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def embed_corpus(texts: list[str], cache_dir: Path):
    """Real embeddings of ``texts``, cached by content hash (the slow part: minutes for 100k).

    Saved in blocks of BLOCK texts as they are done, so an interrupted run resumes where it stopped.
    """
    import numpy as np

    from knowledge.embeddings import get_embedder

    embedder = get_embedder()
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    stem = f"{embedder.name.replace('/', '_')}-{len(texts)}-{digest}"
    path = cache_dir / f"{stem}.npy"
    if path.exists():
        print(f"embeddings: cached {path.relative_to(ROOT)}", flush=True)
        return np.load(path), None
    cache_dir.mkdir(parents=True, exist_ok=True)
    parts, embedded, seconds = [], 0, 0.0
    for number, start in enumerate(range(0, len(texts), BLOCK)):
        part_path = cache_dir / f"{stem}.part{number}.npy"
        if part_path.exists():
            parts.append(np.load(part_path))
            continue
        started = time.perf_counter()
        block = np.asarray(embedder.embed_documents(texts[start : start + BLOCK]), dtype=np.float32)
        seconds += time.perf_counter() - started
        embedded += len(block)
        np.save(part_path, block)
        parts.append(block)
        print(f"embeddings: {start + len(block)}/{len(texts)} ({embedded / seconds:.0f} texts/s)", flush=True)
    vectors = np.concatenate(parts)
    np.save(path, vectors)
    for part_path in cache_dir.glob(f"{stem}.part*.npy"):
        part_path.unlink()
    return vectors, (embedded / seconds if embedded else None)


def load_corpus(rows, vectors, signature: str) -> tuple[int, dict[str, float]]:
    """Fresh load of chunks (COPY) and indexes; reuses an identical previous load. Returns (kb id, timings)."""
    from django.core.management import call_command
    from django.db import connection
    from pgvector.psycopg import register_vector

    from knowledge.models import Chunk, Document, KnowledgeBase

    call_command("migrate", "knowledge", verbosity=0)
    kb = KnowledgeBase.objects.filter(name="Bench").first()
    if kb and kb.description == signature and Chunk.objects.filter(knowledge_base=kb).count() == len(rows):
        print("load: reusing the identical load already in the database", flush=True)
        return kb.pk, {}
    timings: dict[str, float] = {}
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE knowledge_chunk, knowledge_document, knowledge_knowledgebase CASCADE")
    kb = KnowledgeBase.objects.create(name="Bench", description="loading")
    n_docs = rows[-1][0] + 1
    docs = Document.objects.bulk_create(
        [
            Document(
                knowledge_base=kb,
                title=f"Bench article {d}",
                original_filename=f"article-{d}.md",
                checksum=hashlib.sha256(f"{signature}/{d}".encode()).hexdigest(),
                status=Document.Status.READY,
                chunk_count=10,
            )  # fmt: skip
            for d in range(n_docs)
        ],
        batch_size=5000,
    )
    indexes = {index.name: index for index in Chunk._meta.indexes}
    with connection.schema_editor() as editor:  # load first, index after: much faster than per-row upkeep
        for index in indexes.values():
            editor.execute(f"DROP INDEX IF EXISTS {editor.quote_name(index.name)}")
    started = time.perf_counter()
    connection.ensure_connection()
    register_vector(connection.connection)
    with connection.cursor() as cursor:
        copy_sql = (
            "COPY knowledge_chunk (document_id, knowledge_base_id, position, heading_path, text, token_count, "
            "embedding, sentences, sentence_model) FROM STDIN WITH (FORMAT BINARY)"
        )
        with cursor.cursor.copy(copy_sql) as copy:  # sentence vectors: filled on first use (retrieval only here)
            copy.set_types(["bigint", "bigint", "integer", "varchar", "text", "integer", "vector", "jsonb", "varchar"])
            for i, ((doc, heading, text), vector) in enumerate(zip(rows, vectors, strict=True)):
                copy.write_row(
                    (docs[doc].pk, kb.pk, i % 10, heading, text, len(text.split()), vector, Jsonb([]), "")
                )
    timings["copy_s"] = time.perf_counter() - started
    with connection.cursor() as cursor:
        cursor.execute("SET maintenance_work_mem = '1GB'")
        cursor.execute("SET max_parallel_maintenance_workers = 1")  # 2 shared cores
    for name, index in indexes.items():
        started = time.perf_counter()
        with connection.schema_editor() as editor:
            editor.add_index(Chunk, index)
        timings[f"index_{name}_s"] = time.perf_counter() - started
        print(f"load: built {name} in {timings[f'index_{name}_s']:.1f} s", flush=True)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE knowledge_chunk")
    kb.description = signature
    kb.save(update_fields=["description"])
    return kb.pk, timings


# --- measuring --------------------------------------------------------------------------------------


def pct(values: list[float], p: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1]


def exact_top_ids(embedding, kb_id: int, k: int) -> list[int]:
    """Ground truth: the same cosine ORDER BY with index scans off (a full scan + sort)."""
    from django.db import connection, transaction

    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_indexscan = off")
        cursor.execute(
            "SELECT id FROM knowledge_chunk WHERE knowledge_base_id = %s ORDER BY embedding <=> %s::vector, id LIMIT %s",
            [kb_id, "[" + ",".join(map(str, embedding)) + "]", k],
        )
        return [row[0] for row in cursor.fetchall()]


def run(args: argparse.Namespace) -> int:
    use_bench_database(args.db_name)
    from django.conf import settings

    from knowledge.retrieval import embed_query, fetch_passages

    print(f"bench database: {args.db_name}; {args.chunks} chunks, {args.queries} queries", flush=True)
    rows = generate_corpus(args.chunks, args.seed)
    vectors, embed_rate = embed_corpus([f"{heading}\n{text}" for _, heading, text in rows], ROOT / ".data" / "bench")
    signature = f"{args.chunks}/{args.seed}/{hashlib.sha256(vectors.tobytes()).hexdigest()[:16]}"
    kb_id, load_timings = load_corpus(rows, vectors, signature)
    queries = generate_queries(args.queries, args.seed)

    def timed(mode: str, query: str, embedding, ef: int | None = None) -> tuple[list[int], float]:
        passages, db_ms = fetch_passages(query, embedding, kb_id=kb_id, k=TOP_K, mode=mode, ef_search=ef)
        return [p.chunk_id for p in passages], db_ms

    embeddings, embed_ms = [], []
    for query in queries:
        vector, ms = embed_query(query)
        embeddings.append(vector)
        embed_ms.append(ms)
    for query, embedding in list(zip(queries, embeddings, strict=True))[:20]:  # warm caches, not counted
        for mode in ("vector", "keyword", "hybrid"):
            timed(mode, query, embedding)

    default_ef = settings.HNSW_EF_SEARCH
    db_ms: dict[str, list[float]] = {"vector": [], "keyword": [], "hybrid": []}
    empty_keyword = 0
    for query, embedding in zip(queries, embeddings, strict=True):
        for mode in db_ms:
            ids, ms = timed(mode, query, embedding)
            db_ms[mode].append(ms)
            empty_keyword += mode == "keyword" and not ids

    recall_rows = []
    truth = [exact_top_ids(e, kb_id, TOP_K) for e in embeddings]
    for ef in args.ef:
        recalls, vector_ms, hybrid_ms = [], [], []
        for query, embedding, exact in zip(queries, embeddings, truth, strict=True):
            ids, ms = timed("vector", query, embedding, ef)
            vector_ms.append(ms)
            recalls.append(len(set(ids) & set(exact)) / max(len(exact), 1))
            hybrid_ms.append(timed("hybrid", query, embedding, ef)[1])
        recall_rows.append((ef, statistics.mean(recalls), vector_ms, hybrid_ms))

    print()
    print(f"### Latency ({len(queries)} queries, top {TOP_K}, hnsw.ef_search={default_ef}, knowledge-base filter on)")
    print()
    print("| mode | embed p50 ms | embed p95 ms | db p50 ms | db p95 ms | total p50 ms | total p95 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for mode, values in db_ms.items():
        embeds = embed_ms if mode != "keyword" else [0.0] * len(values)
        totals = [a + b for a, b in zip(embeds, values, strict=True)]
        print(
            f"| {mode} | {pct(embeds, 50):.1f} | {pct(embeds, 95):.1f} | {pct(values, 50):.2f} | "
            f"{pct(values, 95):.2f} | {pct(totals, 50):.1f} | {pct(totals, 95):.1f} |"
        )
    print()
    print(f"### HNSW recall@{TOP_K} against exact search")
    print()
    print("| ef_search | recall@10 | vector db p50 ms | vector db p95 ms | hybrid db p50 ms | hybrid db p95 ms |")
    print("|---:|---:|---:|---:|---:|---:|")
    for ef, recall, vector_ms, hybrid_ms in recall_rows:
        print(
            f"| {ef} | {recall:.3f} | {pct(vector_ms, 50):.2f} | {pct(vector_ms, 95):.2f} | "
            f"{pct(hybrid_ms, 50):.2f} | {pct(hybrid_ms, 95):.2f} |"
        )
    print()
    hybrid_p50 = pct(db_ms["hybrid"], 50)
    default_recall = next((r for ef, r, _, _ in recall_rows if ef == default_ef), None)
    met = hybrid_p50 <= GOAL_DB_P50_MS and (default_recall or 0) >= GOAL_RECALL
    print(
        f"Goal (hybrid db p50 <= {GOAL_DB_P50_MS:.0f} ms at recall@10 >= {GOAL_RECALL}): "
        f"{'MET' if met else 'MISSED'} — hybrid db p50 {hybrid_p50:.2f} ms, recall@10 at ef_search={default_ef}: "
        f"{default_recall if default_recall is None else f'{default_recall:.3f}'}"
    )
    extra = [f"{empty_keyword}/{len(queries)} queries had no keyword match (AND semantics of websearch_to_tsquery)"]
    if embed_rate:
        extra.append(f"corpus embedding {embed_rate:.0f} texts/s")
    extra += [f"{name} {seconds:.1f} s" for name, seconds in load_timings.items()]
    print("Notes: " + "; ".join(extra))
    if args.drop:
        drop_bench_database(args.db_name)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--tiny", action="store_true", help=f"{TINY_CHUNKS} chunks, {TINY_QUERIES} queries (CI smoke run)")
    parser.add_argument("--ef", type=lambda s: [int(x) for x in s.split(",")], default=[40, 100, 200])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--db-name", help="database on the project's server (default bench_retrieval[_tiny])")
    parser.add_argument("--drop", action="store_true", help="drop the bench database afterwards")
    args = parser.parse_args(argv)
    if args.tiny:
        args.chunks, args.queries = TINY_CHUNKS, TINY_QUERIES
    args.db_name = args.db_name or ("bench_retrieval_tiny" if args.tiny else "bench_retrieval")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
