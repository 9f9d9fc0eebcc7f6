"""The ingestion pipeline against the real database and the real embedder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from django.contrib.postgres.search import SearchQuery
from django.core.management import call_command
from django.db import connection
from pgvector.django import CosineDistance

from knowledge.embeddings import get_embedder
from knowledge.ingest import pipeline
from knowledge.management.commands.reembed import embedding_column_dimensions
from knowledge.models import Chunk, Document

SAMPLES = Path(__file__).parent / "samples"
pytestmark = pytest.mark.django_db


@pytest.fixture
def kb():
    return pipeline.get_or_create_knowledge_base("Ingest tests")


def add_sample(kb, name: str) -> Document:
    document, created = pipeline.add_document(kb, filename=name, data=(SAMPLES / name).read_bytes())
    assert created
    return document


def keyword_hits(kb, query: str):
    return Chunk.objects.filter(knowledge_base=kb, search_vector=SearchQuery(query, search_type="websearch"))


def nearest(kb, query: str) -> Chunk:
    vector = get_embedder().embed_query(query)
    return Chunk.objects.filter(knowledge_base=kb).order_by(CosineDistance("embedding", vector)).first()


def test_ingest_stores_embedded_searchable_chunks(kb):
    document = add_sample(kb, "returns.md")
    assert document.status == Document.Status.PENDING
    assert document.mime_type == "text/markdown" and document.size_bytes == len((SAMPLES / "returns.md").read_bytes())
    assert document.file.read() == (SAMPLES / "returns.md").read_bytes()  # the original is kept

    pipeline.ingest_document(document)

    document.refresh_from_db()
    assert document.status == Document.Status.READY and document.error == ""
    assert document.title == "Returns and refunds"
    assert document.ingested_at is not None
    chunks = list(document.chunks.all())
    assert document.chunk_count == len(chunks) == 4
    assert [c.position for c in chunks] == list(range(len(chunks)))
    assert all(c.embedding is not None and len(c.embedding) == 384 for c in chunks)
    assert all(c.knowledge_base_id == kb.id and c.token_count > 0 for c in chunks)
    assert chunks[1].heading_path == "Returns and refunds > How to return an item"
    # The generated tsvector is populated: keyword search finds the heading and the body.
    assert list(keyword_hits(kb, "prepaid label")) == [chunks[1]]
    assert (
        nearest(kb, "how many days until the refund is paid to my card").heading_path
        == "Returns and refunds > Refund timing"
    )


@pytest.mark.parametrize(
    ("name", "expect_page"),
    [("shipping.html", None), ("billing.pdf", 2), ("warranty.docx", None), ("contact.txt", None)],
)
def test_every_format_ingests(kb, name, expect_page):
    document = add_sample(kb, name)
    pipeline.ingest_document(document)
    assert document.status == Document.Status.READY, document.error
    assert document.chunk_count == document.chunks.count() > 0
    if expect_page:
        assert document.chunks.filter(page=expect_page).exists()


def test_pasted_text_is_ingested(kb):
    document, created = pipeline.add_text(kb, title="Opening hours", text="The shop opens at nine.\n\nClosed Sundays.")
    assert created and document.mime_type == "text/plain" and not document.file
    pipeline.ingest_document(document)
    assert document.status == Document.Status.READY
    assert document.title == "Opening hours"
    assert "Closed Sundays." in document.chunks.get().text


def test_same_content_is_recognised_by_checksum(kb):
    data = (SAMPLES / "returns.md").read_bytes()
    first, created = pipeline.add_document(kb, filename="returns.md", data=data)
    again, created_again = pipeline.add_document(kb, filename="renamed-copy.md", data=data)
    assert created and not created_again
    assert again.pk == first.pk and Document.objects.filter(knowledge_base=kb).count() == 1
    # Another knowledge base may hold the same content.
    other = pipeline.get_or_create_knowledge_base("Other")
    elsewhere, created_elsewhere = pipeline.add_document(other, filename="returns.md", data=data)
    assert created_elsewhere and elsewhere.pk != first.pk
    text_doc, _ = pipeline.add_text(kb, title="A", text="Same words")
    assert pipeline.add_text(kb, title="B", text="Same words") == (text_doc, False)


def test_reingest_replaces_all_chunks(kb):
    document, _ = pipeline.add_text(kb, title="Policy", text="Version one mentions the blue kettle.")
    pipeline.ingest_document(document)
    old_ids = set(document.chunks.values_list("id", flat=True))

    document.text = "Version two talks about the red toaster.\n\nAnd a second paragraph."
    document.save()
    pipeline.ingest_document(document)

    document.refresh_from_db()
    assert document.status == Document.Status.READY
    texts = list(document.chunks.values_list("text", flat=True))
    assert texts == ["Version two talks about the red toaster.\n\nAnd a second paragraph."]
    assert not Chunk.objects.filter(id__in=old_ids).exists()
    assert not keyword_hits(kb, "kettle").exists() and keyword_hits(kb, "toaster").exists()
    # Running the same ingestion again is idempotent.
    pipeline.ingest_document(document)
    assert list(document.chunks.values_list("text", flat=True)) == texts and document.chunk_count == 1


def test_failed_reingest_keeps_previous_version_searchable(kb, caplog):
    document = add_sample(kb, "billing.pdf")
    pipeline.ingest_document(document)
    before = list(document.chunks.values_list("id", "text", "embedding"))
    assert before

    # The stored file gets corrupted; re-ingesting must fail cleanly.
    with document.file.storage.open(document.file.name, "wb") as handle:
        handle.write(b"%PDF-1.7 garbage")
    result = pipeline.ingest_document(document)  # does not raise

    document.refresh_from_db()
    assert result.status == document.status == Document.Status.FAILED
    assert document.error.startswith("Could not read PDF billing.pdf")
    assert "Could not read PDF" in caplog.text  # logged for the operator, not swallowed
    after = list(document.chunks.values_list("id", "text", "embedding"))
    assert [(i, t) for i, t, _ in after] == [(i, t) for i, t, _ in before]
    assert keyword_hits(kb, "payment card").exists()
    assert nearest(kb, "my card payment did not go through").document_id == document.pk


def test_missing_file_is_a_recorded_failure(kb):
    document = add_sample(kb, "contact.txt")
    document.file.storage.delete(document.file.name)
    pipeline.ingest_document(document)
    assert document.status == Document.Status.FAILED
    assert "No such file" in document.error


@pytest.mark.parametrize(
    ("filename", "data", "message"),
    [
        ("setup.exe", b"MZ", "“setup.exe” is a .exe file; allowed types are .txt, .md, .html, .htm, .pdf, .docx."),
        ("README", b"hi", "“README” is a file without an extension; allowed types are"),
        ("empty.md", b"", "“empty.md” is empty."),
        ("big.txt", b"x" * 2049, "“big.txt” is 2 KB; the limit is 2 KB."),
    ],
)
def test_upload_validation_refuses_with_a_clear_message(kb, settings, filename, data, message):
    settings.UPLOAD_MAX_BYTES = 2048
    with pytest.raises(pipeline.ValidationError) as refused:
        pipeline.add_document(kb, filename=filename, data=data)
    assert str(refused.value).startswith(message)
    assert not Document.objects.exists()


def test_file_of_exactly_the_limit_is_accepted(kb, settings):
    settings.UPLOAD_MAX_BYTES = 2048
    _, created = pipeline.add_document(kb, filename="ok.txt", data=b"y" * 2048)
    assert created


def test_empty_pasted_text_is_refused(kb):
    with pytest.raises(pipeline.ValidationError, match="is empty"):
        pipeline.add_text(kb, title="Nothing", text="   \n ")


# --- manage.py ingest ------------------------------------------------------------------------


def run_ingest(capsys, *args) -> tuple[int, str, str]:
    try:
        call_command("ingest", *args)
        code = 0
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_ingest_command_on_a_folder_creates_the_kb_and_reports_each_file(tmp_path, capsys):
    folder = tmp_path / "articles"
    (folder / "nested").mkdir(parents=True)
    shutil.copy(SAMPLES / "returns.md", folder / "returns.md")
    shutil.copy(SAMPLES / "warranty.docx", folder / "nested" / "warranty.docx")
    (folder / "notes.exe").write_bytes(b"ignored: not an allowed type")

    code, out, _ = run_ingest(capsys, str(folder), "--kb", "Operators")

    assert code == 0
    lines = out.splitlines()
    assert "ok      returns.md  (4 chunks)" in lines
    assert any(line.startswith("ok      warranty.docx  (") for line in lines)
    assert not any("notes.exe" in line for line in lines)
    assert Document.objects.filter(knowledge_base__name="Operators", status="ready").count() == 2

    code, out, _ = run_ingest(capsys, str(folder), "--kb", "Operators")
    assert code == 0
    assert "skipped returns.md  (already ingested)" in out.splitlines()

    code, out, _ = run_ingest(capsys, str(folder / "returns.md"), "--kb", "Operators", "--force")
    assert code == 0 and "ok      returns.md  (4 chunks)" in out.splitlines()
    assert Document.objects.filter(knowledge_base__name="Operators").count() == 2


def test_ingest_command_exits_1_when_a_file_fails(tmp_path, capsys):
    bad = tmp_path / "bad.pdf"
    bad.write_bytes(b"%PDF-1.4 not really")
    good = tmp_path / "contact.txt"
    shutil.copy(SAMPLES / "contact.txt", good)

    code, out, err = run_ingest(capsys, str(bad), str(good))

    assert code == 1
    lines = out.splitlines()
    assert lines[0].startswith("FAILED  bad.pdf: Could not read PDF bad.pdf")
    assert lines[1] == "ok      contact.txt  (1 chunks)"
    assert "1 failed" in err
    failed = Document.objects.get(original_filename="bad.pdf")
    assert failed.status == "failed" and failed.error.startswith("Could not read PDF")
    assert failed.knowledge_base.name == "Help Centre"


def test_ingest_command_refuses_a_missing_path(tmp_path, capsys):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="No such file or folder"):
        call_command("ingest", str(tmp_path / "nope"))


# --- manage.py reembed -------------------------------------------------------------------------


def test_reembed_rebuilds_every_embedding(kb, capsys):
    document = add_sample(kb, "returns.md")
    pipeline.ingest_document(document)
    expected = {c.id: list(c.embedding) for c in document.chunks.all()}
    Chunk.objects.update(embedding=[1.0] + [0.0] * 383)  # as if a different model had made them

    call_command("reembed", "--batch-size", "3")

    out = capsys.readouterr().out
    assert "Re-embedding 4 chunks with" in out and "Re-embedded 4 chunks" in out
    for chunk in Chunk.objects.all():
        assert list(chunk.embedding) == pytest.approx(expected[chunk.id], abs=1e-4)


def test_reembed_resizes_the_column_when_the_model_dimension_changed(kb, capsys):
    document = add_sample(kb, "returns.md")
    pipeline.ingest_document(document)
    # The database as a previous 8-dimensional model left it.
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # the test's own transaction has pending FK checks
        cursor.execute("DROP INDEX chunk_embedding_hnsw")
        cursor.execute("ALTER TABLE knowledge_chunk ALTER COLUMN embedding TYPE vector(8) USING NULL")
    assert embedding_column_dimensions() == 8

    call_command("reembed")

    out = capsys.readouterr().out
    assert "Changed the embedding column from vector(8) to vector(384)" in out
    assert embedding_column_dimensions() == 384
    assert not Chunk.objects.filter(embedding__isnull=True).exists()
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'chunk_embedding_hnsw'")
        (indexdef,) = cursor.fetchone()
    assert "hnsw" in indexdef and "vector_cosine_ops" in indexdef
    assert (
        nearest(kb, "how many days until the refund is paid to my card").heading_path
        == "Returns and refunds > Refund timing"
    )
