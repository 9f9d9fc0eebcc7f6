"""The knowledge-base manager's admin screen, driven through Django's test client against the real database.

Upload -> Document pending -> procrastinate job in PostgreSQL -> ingestion (run synchronously here) ->
status endpoint says ready -> chunks shown read-only under the document; per-file refusals; re-index; search page.
"""

from __future__ import annotations

import json
import os

import pytest
from django.contrib.auth.models import Permission, User
from django.contrib.messages import constants as message_levels
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import TestCase
from django.urls import reverse
from procrastinate.contrib.django.models import ProcrastinateJob

from knowledge.ingest import pipeline
from knowledge.models import Document, KnowledgeBase

pytestmark = pytest.mark.django_db

UPLOAD_URL = "admin:knowledge_document_upload"
STATUS_URL = "admin:knowledge_document_status"
SEARCH_URL = "admin:knowledge_search"

RETURNS_MD = b"""# Returns and refunds

## How do I return an item?

You can return any unused item within 30 days of delivery. Open your order in your account,
choose "Return an item" and print the prepaid label. Refunds reach your card within 5 business days.

## Damaged parcels

If the parcel arrived damaged, photograph it before opening and contact support with order code ZX-4412.
"""

SHIPPING_MD = b"""# Shipping

## Delivery times

Standard delivery takes 3 to 5 working days. Express delivery arrives the next working day if you order before 2 pm.
"""


def md(name: str, body: bytes = RETURNS_MD) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, body, content_type="text/markdown")


@pytest.fixture
def kb() -> KnowledgeBase:
    return KnowledgeBase.objects.create(name="Help Centre")


@pytest.fixture
def staff(django_user_model) -> User:
    return django_user_model.objects.create_superuser("manager", "manager@example.com", "pw-manager-123")


@pytest.fixture
def staff_client(client, staff):
    client.force_login(staff)
    return client


def committed():
    """Run on_commit hooks (the pipeline defers jobs on commit) inside the test's rolled-back transaction."""
    return TestCase.captureOnCommitCallbacks(execute=True)


def upload(client, kb: KnowledgeBase, *files, **extra):
    """POST the upload form and follow the redirect to the changelist; returns (response, [(level, text)])."""
    data = {"knowledge_base": kb.pk, "files": list(files), **extra}
    with committed():
        response = client.post(reverse(UPLOAD_URL), data, follow=True)
    assert response.status_code == 200
    return response, [(m.level, m.message) for m in response.context["messages"]]


def jobs_for(document: Document):
    return ProcrastinateJob.objects.filter(args__document_id=document.pk)


def status_of(client, *documents: Document) -> dict:
    ids = ",".join(str(d.pk) for d in documents)
    response = client.get(reverse(STATUS_URL), {"ids": ids})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    return json.loads(response.content)


def test_upload_end_to_end(staff_client, kb, staff):
    response, msgs = upload(staff_client, kb, md("returns.md"))

    assert msgs == [(message_levels.SUCCESS, "'returns.md' was added to 'Help Centre' and queued for indexing.")]
    doc = Document.objects.get(original_filename="returns.md")
    assert doc.knowledge_base == kb
    assert doc.uploaded_by == staff
    assert doc.status == Document.Status.PENDING
    assert jobs_for(doc).filter(status="todo").count() == 1
    # The changelist we land on shows the live badge and loads the poller.
    page = response.content.decode()
    assert f'data-doc-status="{doc.pk}" data-status="pending"' in page
    assert "admin/knowledge/document_status.js" in page
    assert status_of(staff_client, doc)[str(doc.pk)]["status"] == "pending"

    pipeline.ingest_document(doc)

    info = status_of(staff_client, doc)[str(doc.pk)]
    assert info["status"] == "ready", info
    assert info["chunk_count"] > 0
    assert info["error"] == ""
    assert info["done"] is True

    detail = staff_client.get(reverse("admin:knowledge_document_change", args=[doc.pk]))
    assert detail.status_code == 200
    html = detail.content.decode()
    first_chunk = doc.chunks.order_by("position").first()
    assert f'id="chunk-{first_chunk.pk}"' in html
    assert "Chunks (read-only" in html
    assert "You can return any unused item" in html
    # Chunks cannot be added, changed or deleted from the inline.
    assert "chunks-0-DELETE" not in html
    assert 'name="chunks-0-text"' not in html
    (chunk_inline,) = detail.context["inline_admin_formsets"]
    assert not (
        chunk_inline.has_add_permission or chunk_inline.has_change_permission or chunk_inline.has_delete_permission
    )
    # Computed fields are read-only: no inputs for them.
    for computed in ("checksum", "status", "chunk_count", "error", "mime_type", "size_bytes"):
        assert f'name="{computed}"' not in html
    assert doc.checksum in html


def test_upload_many_files_at_once(staff_client, kb):
    _, msgs = upload(staff_client, kb, md("returns.md"), md("shipping.md", SHIPPING_MD))

    assert [level for level, _ in msgs] == [message_levels.SUCCESS, message_levels.SUCCESS]
    docs = Document.objects.filter(knowledge_base=kb).order_by("original_filename")
    assert [d.original_filename for d in docs] == ["returns.md", "shipping.md"]
    assert all(d.status == Document.Status.PENDING for d in docs)
    assert all(jobs_for(d).count() == 1 for d in docs)


def test_upload_into_new_knowledge_base(staff_client):
    with committed():
        response = staff_client.post(
            reverse(UPLOAD_URL), {"new_knowledge_base": "Partners", "files": [md("returns.md")]}, follow=True
        )
    assert response.status_code == 200
    doc = Document.objects.get(original_filename="returns.md")
    assert doc.knowledge_base.name == "Partners"
    assert jobs_for(doc).count() == 1


def test_pasted_text_is_added_and_queued(staff_client, kb):
    _, msgs = upload(staff_client, kb, title="Gift cards", text="Gift cards never expire and can be used on any order.")
    assert msgs == [(message_levels.SUCCESS, "'Gift cards' was added to 'Help Centre' and queued for indexing.")]
    doc = Document.objects.get(title="Gift cards")
    assert doc.status == Document.Status.PENDING
    assert jobs_for(doc).count() == 1


def test_refusals_are_reported_per_file_and_others_still_accepted(staff_client, kb, settings):
    settings.UPLOAD_MAX_BYTES = 2048
    big = md("big.md", b"# Big\n\n" + b"word " * 1000)
    _, msgs = upload(
        staff_client,
        kb,
        SimpleUploadedFile("virus.exe", b"MZ\x90\x00binary", content_type="application/octet-stream"),
        big,
        SimpleUploadedFile("empty.txt", b"", content_type="text/plain"),
        md("returns.md"),
    )

    allowed = ", ".join(settings.UPLOAD_ALLOWED_EXTENSIONS)
    assert [text for level, text in msgs if level == message_levels.ERROR] == [
        f"Refused: “virus.exe” is a .exe file; allowed types are {allowed}.",
        "Refused: “big.md” is 5 KB; the limit is 2 KB.",
        "Refused: “empty.txt” is empty.",
    ]
    assert (message_levels.SUCCESS, "'returns.md' was added to 'Help Centre' and queued for indexing.") in msgs
    # Only the acceptable file was stored and queued; nothing half-created for the refused ones.
    assert list(Document.objects.values_list("original_filename", flat=True)) == ["returns.md"]
    assert ProcrastinateJob.objects.count() == 1


def test_storage_failure_is_reported_and_pasted_text_still_added(staff_client, kb, settings, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("media cannot live under a file")
    settings.MEDIA_ROOT = blocker / "media"

    _, msgs = upload(staff_client, kb, md("returns.md"), title="Gift cards", text="Gift cards never expire.")

    assert msgs[0][0] == message_levels.ERROR
    assert msgs[0][1].startswith("Could not store 'returns.md': ") and msgs[0][1].endswith("Please try again.")
    assert msgs[1] == (message_levels.SUCCESS, "'Gift cards' was added to 'Help Centre' and queued for indexing.")
    assert list(Document.objects.values_list("title", flat=True)) == ["Gift cards"]


def test_duplicate_upload_points_at_the_existing_document(staff_client, kb):
    upload(staff_client, kb, md("returns.md"))
    original = Document.objects.get()

    _, msgs = upload(staff_client, kb, md("returns-copy.md"), md("shipping.md", SHIPPING_MD))

    assert (
        message_levels.WARNING,
        f"'returns-copy.md' is already in the knowledge base as '{original}'; nothing was added.",
    ) in msgs
    assert (message_levels.SUCCESS, "'shipping.md' was added to 'Help Centre' and queued for indexing.") in msgs
    assert Document.objects.count() == 2
    assert jobs_for(original).count() == 1  # the duplicate did not queue a second ingestion


def test_reuploading_a_failed_document_indexes_it_again(staff_client, kb):
    doc, _ = pipeline.add_document(kb, filename="returns.md", data=RETURNS_MD)
    Document.objects.filter(pk=doc.pk).update(status=Document.Status.FAILED, error="embedding endpoint down")

    _, msgs = upload(staff_client, kb, md("returns.md"))

    assert msgs == [
        (
            message_levels.WARNING,
            "'returns.md' is already in the knowledge base as 'returns.md', whose indexing failed; indexing it again.",
        )
    ]
    doc.refresh_from_db()
    assert (doc.status, doc.error) == (Document.Status.PENDING, "")
    assert jobs_for(doc).filter(status="todo").count() == 1


def test_upload_form_requires_a_knowledge_base_and_something_to_add(staff_client, kb):
    response = staff_client.post(reverse(UPLOAD_URL), {"files": [md("returns.md")]})
    assert response.status_code == 200
    assert "Choose a knowledge base or name a new one." in response.content.decode()

    response = staff_client.post(reverse(UPLOAD_URL), {"knowledge_base": kb.pk})
    assert "Choose at least one file or paste some text." in response.content.decode()
    assert Document.objects.count() == 0


def test_add_document_button_leads_to_upload(staff_client):
    response = staff_client.get(reverse("admin:knowledge_document_add"))
    assert response.status_code == 302
    assert response["Location"] == reverse(UPLOAD_URL)
    page = staff_client.get(reverse(UPLOAD_URL)).content.decode()
    assert 'type="file"' in page and "multiple" in page


def test_reindex_action_sets_pending_and_enqueues(staff_client, kb):
    doc, _ = pipeline.add_document(kb, filename="returns.md", data=RETURNS_MD)
    pipeline.ingest_document(doc)
    doc.refresh_from_db()
    assert doc.status == Document.Status.READY
    jobs_before = jobs_for(doc).count()

    with committed():
        response = staff_client.post(
            reverse("admin:knowledge_document_changelist"),
            {"action": "reindex", "_selected_action": [doc.pk]},
            follow=True,
        )

    doc.refresh_from_db()
    assert doc.status == Document.Status.PENDING
    assert jobs_for(doc).count() == jobs_before + 1
    assert [m.message for m in response.context["messages"]] == ["Queued 1 document(s) for re-indexing."]
    assert doc.chunk_count > 0  # the previous chunks stay searchable until the new ones replace them


def test_changelist_filters_and_search(staff_client, kb):
    other = KnowledgeBase.objects.create(name="Partners")
    pipeline.add_document(kb, filename="returns.md", data=RETURNS_MD)
    pipeline.add_document(other, filename="shipping.md", data=SHIPPING_MD)
    url = reverse("admin:knowledge_document_changelist")

    by_kb = staff_client.get(url, {"knowledge_base__id__exact": other.pk})
    assert [d.original_filename for d in by_kb.context["cl"].result_list] == ["shipping.md"]
    by_status = staff_client.get(url, {"status__exact": "ready"})
    assert list(by_status.context["cl"].result_list) == []
    by_name = staff_client.get(url, {"q": "returns"})
    assert [d.original_filename for d in by_name.context["cl"].result_list] == ["returns.md"]


def test_knowledge_base_list_counts_documents_and_chunks(staff_client, kb):
    doc, _ = pipeline.add_document(kb, filename="returns.md", data=RETURNS_MD)
    pipeline.add_document(kb, filename="shipping.md", data=SHIPPING_MD)
    pipeline.ingest_document(doc)
    doc.refresh_from_db()

    response = staff_client.get(reverse("admin:knowledge_knowledgebase_changelist"))
    row = response.context["cl"].result_list[0]
    assert (row.n_documents, row.n_chunks) == (2, doc.chunk_count)
    assert reverse(SEARCH_URL) in response.content.decode()


def test_status_endpoint_reports_failure_and_rejects_bad_ids(staff_client, kb):
    doc, _ = pipeline.add_document(kb, filename="returns.md", data=RETURNS_MD)
    Document.objects.filter(pk=doc.pk).update(status=Document.Status.FAILED, error="PDF is encrypted")

    info = status_of(staff_client, doc)[str(doc.pk)]
    assert info == {"status": "failed", "label": "Failed", "chunk_count": 0, "error": "PDF is encrypted", "done": True}
    assert status_of(staff_client) == {}
    bad = staff_client.get(reverse(STATUS_URL), {"ids": "1,abc"})
    assert bad.status_code == 400


def test_search_page_shows_ranking_with_scores(staff_client, kb):
    returns, _ = pipeline.add_document(kb, filename="returns.md", data=RETURNS_MD)
    shipping, _ = pipeline.add_document(kb, filename="shipping.md", data=SHIPPING_MD)
    pipeline.ingest_document(returns)
    pipeline.ingest_document(shipping)

    response = staff_client.get(
        reverse(SEARCH_URL), {"q": "how do I send something back", "kb": kb.pk, "mode": "hybrid", "k": 3}
    )

    assert response.status_code == 200
    result = response.context["result"]
    assert result.mode == "hybrid"
    assert result.passages and result.passages[0].document_id == returns.pk
    html = response.content.decode()
    assert 'id="kb-search-results"' in html
    assert "RRF score" in html and "Vector score" in html and "Keyword score" in html
    assert f"{result.passages[0].score:.4f}" in html
    assert "embed_ms" in html and "db_ms" in html

    keyword = staff_client.get(reverse(SEARCH_URL), {"q": "ZX-4412", "kb": kb.pk, "mode": "keyword"})
    passages = keyword.context["result"].passages
    assert passages and passages[0].document_id == returns.pk and passages[0].vector_score is None


def test_search_page_without_query_shows_only_the_form(staff_client):
    response = staff_client.get(reverse(SEARCH_URL))
    assert response.status_code == 200
    assert response.context["result"] is None
    assert 'id="kb-search-form"' in response.content.decode()


@pytest.mark.parametrize("name", [UPLOAD_URL, STATUS_URL, SEARCH_URL])
def test_non_staff_are_sent_to_login(client, django_user_model, name):
    assert client.get(reverse(name)).status_code == 302  # anonymous
    customer = django_user_model.objects.create_user("customer", password="pw-customer-123")
    client.force_login(customer)
    response = client.get(reverse(name))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))
    assert not Document.objects.exists()


@pytest.mark.parametrize("name", [UPLOAD_URL, STATUS_URL, SEARCH_URL])
def test_staff_without_permissions_get_403(client, django_user_model, name):
    clerk = django_user_model.objects.create_user("clerk", password="pw-clerk-123", is_staff=True)
    client.force_login(clerk)
    assert client.get(reverse(name)).status_code == 403


def test_staff_with_view_permission_may_watch_but_not_upload(client, django_user_model, kb):
    viewer = django_user_model.objects.create_user("viewer", password="pw-viewer-123", is_staff=True)
    viewer.user_permissions.add(
        Permission.objects.get(codename="view_document"), Permission.objects.get(codename="view_knowledgebase")
    )
    client.force_login(viewer)
    assert client.get(reverse(STATUS_URL), {"ids": "1"}).status_code == 200
    assert client.get(reverse(SEARCH_URL)).status_code == 200
    assert client.post(reverse(UPLOAD_URL), {"knowledge_base": kb.pk, "files": [md("returns.md")]}).status_code == 403
    assert not Document.objects.exists()


@pytest.mark.e2e
def test_changelist_badge_turns_ready_without_reload(transactional_db, live_server, django_user_model, monkeypatch):
    """Real Chromium on the changelist: the badge goes pending -> ready while the page stays loaded."""
    from django.db import connection
    from playwright.sync_api import expect, sync_playwright

    from tests.browser import CHROMIUM, LAUNCH_ARGS

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # ORM calls between sync Playwright calls
    django_user_model.objects.create_superuser("manager", "manager@example.com", "pw-manager-123")
    kb = KnowledgeBase.objects.create(name="Help Centre")
    doc, _ = pipeline.add_document(kb, filename="returns.md", data=RETURNS_MD)
    assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing: install it with `make system-deps`"

    with sync_playwright() as p:  # not the `browser` fixture: its event loop would outlive this test's ORM permit
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            page = browser.new_page()
            page.goto(f"{live_server.url}{reverse('admin:login')}")
            page.fill("#id_username", "manager")
            page.fill("#id_password", "pw-manager-123")
            page.click("input[type=submit]")
            page.goto(f"{live_server.url}{reverse('admin:knowledge_document_changelist')}")
            badge = page.locator(f'[data-doc-status="{doc.pk}"]')
            expect(badge).to_have_text("Pending")
            expect(page.locator("[data-kb-progress]")).to_contain_text("Indexing 1 document")
            page.evaluate("window.__sameDocument = true")

            pipeline.ingest_document(doc)  # what the worker does, committed for the server thread to see

            expect(badge).to_have_text("Ready", timeout=15_000)
            expect(badge).to_have_class("kb-status kb-status--ready")
            doc.refresh_from_db()
            expect(page.locator(f'[data-doc-chunks="{doc.pk}"]')).to_have_text(str(doc.chunk_count))
            assert page.evaluate("window.__sameDocument") is True  # no reload happened
        finally:
            # ORM calls made under sync Playwright get their own connection (another context); close it or the
            # test database cannot be dropped at the end of the session.
            connection.close()
            browser.close()
