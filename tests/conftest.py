"""Shared fixtures. Real PostgreSQL + pgvector (embedded unless DATABASE_URL is set), real Redis."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from django.core.files.base import ContentFile

from tests.tool_api import tool_api  # noqa: F401 - a company's API (tool calls), for any test to ask for

if TYPE_CHECKING:
    from knowledge.ingest.pipeline import PreparedDocument


def pytest_collection_modifyitems(config, items):
    """``postgres_faults`` tests stop the TCP PostgreSQL of the DATABASE_URL run; they run there (`make
    test-database-url` sets FAULT_POSTGRES_DATA) and are deselected, said out loud, everywhere else."""
    import os

    if os.environ.get("FAULT_POSTGRES_DATA"):
        return
    deselected = [item for item in items if item.get_closest_marker("postgres_faults")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker("postgres_faults")]
        print(f"\n{len(deselected)} postgres_faults tests deselected: they run in `make test-database-url`.")


@pytest.fixture(scope="session", autouse=True)
def _close_persistent_connections(django_db_setup):
    """Connections are persistent (DATABASE_CONN_MAX_AGE): the ones sync_to_async's database thread and the
    answer threads (chatsite/db_threads.py) kept open must close before the test database is dropped (set up
    after the database, so torn down before it)."""
    yield
    import asyncio

    from asgiref.sync import sync_to_async
    from django.db import connections

    from conversations import auth
    from knowledge import inference

    asyncio.run(sync_to_async(connections.close_all)())
    inference.ANSWERS.close_connections()
    auth.LOOKUPS.close_connections()


@pytest.fixture(autouse=True)
def _media_in_tmp(settings, tmp_path):
    """Uploaded files go to a throwaway folder, never into the developer's .data/."""
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture(autouse=True)
def _own_sign_in_counts(monkeypatch):
    """Failed sign-ins of one test never throttle the next: without Redis chatsite/sign_in.py counts them in the
    process, which the whole run shares (every test client signs in from 127.0.0.1)."""
    from chatsite import sign_in

    monkeypatch.setattr(sign_in, "_LOCAL", sign_in._LocalCounters())


# --- Demo knowledge base (owned by ingestion) -------------------------------------------------


@dataclass
class DemoFile:
    path: Path
    data: bytes
    prepared: PreparedDocument


@pytest.fixture
def extractive(settings):
    """The offline answerer at full speed: what answers say, not how fast they are typed."""
    settings.ANSWER_GENERATOR = "extractive"
    settings.ANSWER_WORDS_PER_SECOND = 0


@pytest.fixture(scope="session")
def demo_kb_files() -> list[DemoFile]:
    """knowledge/demo_kb/ parsed, chunked and embedded ONCE per test session (the slow part, ~seconds)."""
    from django.conf import settings as django_settings

    from knowledge.ingest.pipeline import collect_files, prepare

    paths = collect_files([django_settings.DEMO_KB_DIR])
    assert paths, f"No demo articles in {django_settings.DEMO_KB_DIR}; the demo knowledge base ships with the repo."
    return [DemoFile(path, path.read_bytes(), prepare(path.read_bytes(), path.name)) for path in paths]


@pytest.fixture
def demo_kb(db, demo_kb_files):
    """The "Help Centre" knowledge base with every demo article ingested (status ready, real embeddings).

    Works in plain ``db`` tests and in ``transactional_db`` tests (request both; transactional wins):
    the embedding work is cached for the session, and this fixture only bulk-inserts the rows when
    they are missing (every ``db`` test rolls back, every ``transactional_db`` test flushes), which
    takes milliseconds. Returns the KnowledgeBase; documents and chunks hang off it.

        def test_finds_returns(demo_kb):
            result = search("how do I send something back", kb=demo_kb)
    """
    from django.conf import settings as django_settings

    return insert_demo_kb(django_settings.DEFAULT_KNOWLEDGE_BASE, demo_kb_files)


def insert_demo_kb(name: str, files: list[DemoFile], vectors: list[list[list[float]]] | None = None):
    """The demo articles as ready documents of knowledge base ``name`` (bulk-inserted, unless already there).

    ``vectors`` (per file, per chunk) replaces the default model's chunk embeddings, for a knowledge base of
    another model (``demo_vectors``); its sentence vectors are then filled on first use with that model.
    """
    from django.utils import timezone

    from knowledge.ingest.pipeline import PreparedDocument, build_chunks, get_or_create_knowledge_base
    from knowledge.models import Chunk, Document

    kb = get_or_create_knowledge_base(name)
    if kb.documents.exists():
        return kb
    now = timezone.now()
    chunks = []
    for index, item in enumerate(files):
        document = Document(
            knowledge_base=kb,
            title=item.prepared.parsed.title,
            original_filename=item.path.name,
            mime_type=item.prepared.parsed.mime_type,
            size_bytes=len(item.data),
            checksum=hashlib.sha256(item.data).hexdigest(),
            status=Document.Status.READY,
            chunk_count=len(item.prepared.drafts),
            ingested_at=now,
        )
        document.file.save(item.path.name, ContentFile(item.data), save=False)
        document.save()
        prepared = item.prepared
        if vectors is not None:
            prepared = PreparedDocument(prepared.parsed, prepared.drafts, vectors[index])
        chunks.extend(build_chunks(document, prepared))
    Chunk.objects.bulk_create(chunks, batch_size=500)
    return kb


def demo_vectors(request, files: list[DemoFile], embedder) -> list[list[list[float]]]:
    """The demo articles' chunks embedded with ``embedder`` (not the default model), at most once.

    Kept in pytest's cache (.pytest_cache), keyed by the model and the exact texts: embedding ~110 chunks is
    the slow part of a second model's knowledge base.
    """
    import json

    from knowledge.ingest.pipeline import embedding_input

    texts = [[embedding_input(f.prepared.parsed.title, d.heading_path, d.text) for d in f.prepared.drafts] for f in files]
    digest = hashlib.sha256(json.dumps([embedder.name, texts]).encode()).hexdigest()[:16]
    cache = getattr(request.config, "cache", None)
    key = f"demo-vectors/{digest}"
    cached = cache.get(key, None) if cache is not None else None
    if cached is None:
        cached = [embedder.embed_documents(article) for article in texts]
        if cache is not None:
            cache.set(key, cached)
    return cached


# --- Real Daphne processes (owned by the chat page; reused by the multi-node tests) -------------------


@pytest.fixture
def daphne_server(transactional_db, tmp_path):
    """Factory: ``node = daphne_server()`` starts a real Daphne on a free port against the test database.

    Returns a ``tests.daphne_process.DaphneNode`` (``node.url`` is the base URL). Call it N times for N
    nodes; ``daphne_server(REDIS_URL=...)`` overrides environment variables. All are stopped at teardown.
    Tests using it need ``@pytest.mark.django_db(transaction=True)`` so the server sees their rows.
    """
    from tests.daphne_process import start_daphne

    nodes = []

    def start(**env: str):
        node = start_daphne(tmp_path / "daphne", env)
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        node.stop()


@pytest.fixture(scope="module")
def browser():
    """Debian's headless Chromium driven by Playwright (tests/browser.py opens pages in it)."""
    import os

    from playwright.sync_api import sync_playwright

    from tests.browser import CHROMIUM, LAUNCH_ARGS

    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: install it with `make system-deps` (never `playwright install`).")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def fast_answers(settings):
    """Answers stream with no pacing, through the in-process frame log and channel layer."""
    settings.ANSWER_WORDS_PER_SECOND = 0
    settings.REDIS_URL = ""


@pytest.fixture
async def cleanup():
    """Stop every answer this test started, so none outlives its test database."""
    from tests.chat_support import stop_generation

    yield
    await stop_generation()
