"""Uploaded files are never served from a public URL, never inline, never as HTML (issue 9, docs/security.md).

An uploaded .html whose script ran on our origin could act as whoever opened it. Against a real Daphne and the
real database: MEDIA_URL serves nothing even with DEBUG on (the `make run` default); the only way to a file is
the access-checked download, as an attachment with a safe Content-Type and nosniff; the document page shows an
HTML upload as sanitised text; in a real browser neither the media URL nor the download runs the file's script.
"""

from __future__ import annotations

import os

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from knowledge.ingest.pipeline import add_document, get_or_create_knowledge_base, ingest_document
from knowledge.models import Document
from knowledge.views import download_content_type
from tests.browser import sign_in
from tests.test_chat_page import PASSWORD
from tests.web_client import WebClient

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

pytestmark = pytest.mark.django_db(transaction=True)

#: An attacker's "help article": a script, an event handler, and a script written out as text.
EVIL_HTML = b"""<!doctype html><html><head><title>Returns, the evil edition</title>
<script>window.__pwned = "script"; document.title = "PWNED";</script></head>
<body><h1>Returns</h1><p>You can return any unworn item within 30 days of delivery for a full refund.</p>
<img src="x" onerror="window.__pwned = 'onerror'">
<p>The characters &lt;script&gt;alert(1)&lt;/script&gt; are only text in this article.</p>
<iframe src="javascript:alert(2)"></iframe></body></html>
"""


@pytest.fixture
def evil_document(transactional_db) -> Document:
    """The HTML above uploaded and ingested into a public knowledge base (ready, with chunks)."""
    kb = get_or_create_knowledge_base("Help Centre")
    document, created = add_document(kb, filename="evil.html", data=EVIL_HTML)
    assert created
    document = ingest_document(document)
    assert document.status == Document.Status.READY, document.error
    assert document.file.name.endswith(".html") and os.path.exists(document.file.path)
    return document


@pytest.fixture
def customer(transactional_db):
    return get_user_model().objects.create_user("customer", password=PASSWORD)


def test_media_url_serves_nothing_even_in_debug(daphne_server, evil_document):
    node = daphne_server(DEBUG="true")  # what `make run` serves
    response = WebClient(node.url).get("/media/" + evil_document.file.name)
    assert response.status == 404
    assert b"__pwned" not in response.body and b"evil edition" not in response.body


def test_download_is_an_attachment_never_html(daphne_server, evil_document, customer):
    node = daphne_server()
    anonymous = WebClient(node.url).get(f"/kb/documents/{evil_document.pk}/download/")
    assert anonymous.status == 302 and "/accounts/login/" in anonymous.header("Location")

    client = WebClient(node.url)
    client.sign_in("customer", PASSWORD)
    response = client.get(f"/kb/documents/{evil_document.pk}/download/")
    assert response.status == 200
    assert response.body == EVIL_HTML  # the original, byte for byte
    assert response.header("Content-Disposition") == 'attachment; filename="evil.html"'
    assert response.header("Content-Type") == "application/octet-stream"
    assert response.header("X-Content-Type-Options") == "nosniff"
    policy = response.header("Content-Security-Policy")
    assert "sandbox" in policy and "default-src 'none'" in policy


def test_document_page_shows_an_html_upload_as_sanitised_text(daphne_server, evil_document, customer):
    node = daphne_server()
    client = WebClient(node.url)
    client.sign_in("customer", PASSWORD)
    page = client.get(f"/kb/documents/{evil_document.pk}/")
    assert page.status == 200 and page.header("Content-Type").startswith("text/html")
    assert "return any unworn item within 30 days" in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text  # written-out markup stays text
    for forbidden in ("__pwned", "PWNED", "onerror", "<img", "<iframe", "javascript:", "alert(1)</script>"):
        assert forbidden not in page.text, forbidden
    # The page's only scripts are our own files.
    assert page.text.count("<script") == page.text.count('<script src="/')


@pytest.mark.e2e
def test_in_a_browser_no_upload_script_runs(browser, daphne_server, evil_document, customer):
    node = daphne_server(DEBUG="true")
    context = browser.new_context()
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    sign_in(page, f"{node.url}/", "customer", PASSWORD)

    media = page.goto(f"{node.url}/media/{evil_document.file.name}")
    assert media.status == 404
    assert page.evaluate("window.__pwned") is None and page.title() != "PWNED"

    page.goto(f"{node.url}/kb/documents/{evil_document.pk}/")
    assert "return any unworn item" in page.inner_text("article")
    assert page.evaluate("window.__pwned") is None and page.title() != "PWNED"

    # Following the download link saves a file; the page stays ours and nothing of the file runs.
    with page.expect_download() as download_info:
        page.click("a[href$='/download/']")
    download = download_info.value
    assert download.suggested_filename == "evil.html"
    assert open(download.path(), "rb").read() == EVIL_HTML
    assert page.url == f"{node.url}/kb/documents/{evil_document.pk}/"
    assert page.evaluate("window.__pwned") is None
    assert dialogs == []
    context.close()


def test_admin_links_to_the_checked_download_not_to_media(evil_document):
    staff = get_user_model().objects.create_user("sam", password="pw-staff-1", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(staff)
    page = client.get(f"/admin/knowledge/document/{evil_document.pk}/change/").content.decode()
    assert f'href="/kb/documents/{evil_document.pk}/download/"' in page
    assert "/media/" not in page


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("evil.html", "application/octet-stream"),
        ("EVIL.HTM", "application/octet-stream"),
        ("image.svg", "application/octet-stream"),
        ("page.xhtml", "application/octet-stream"),
        ("no-extension", "application/octet-stream"),
        ("manual.PDF", "application/pdf"),
        ("notes.md", "text/plain; charset=utf-8"),
        ("guide.docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
    ],
)
def test_download_types_are_never_html(filename, expected):
    assert download_content_type(filename) == expected
