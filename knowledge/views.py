"""The document page citations link to (``/kb/documents/<id>/#chunk-<chunk_id>``) and its download.

Thin on purpose: who may read and which documents are readable is decided in ``readable_document``.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.db.models import Exists, OuterRef, Q
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from knowledge.document_text import chunk_html, section_heading
from knowledge.models import Chunk, Document
from knowledge.visibility import Reader, visible_knowledge_bases


def _may_read(request: HttpRequest) -> bool:
    return request.user.is_authenticated or getattr(settings, "CHAT_ALLOW_ANONYMOUS", False)


def readable_document(document_id: int, reader: Reader = None) -> Document:
    """A document a reader may open: ready, or still serving its previous version's chunks.

    The second case is a re-ingest in progress or one that failed: its old chunks stay searchable
    (the replace is atomic), so citations to them must keep working. A document of a knowledge base ``reader``
    may not see (knowledge/visibility.py; None: an anonymous visitor) is a 404, like one that does not exist.
    """
    has_chunks = Exists(Chunk.objects.filter(document=OuterRef("pk")))
    documents = Document.objects.select_related("knowledge_base").filter(Q(status=Document.Status.READY) | has_chunks)
    documents = documents.filter(knowledge_base__in=visible_knowledge_bases(reader))
    return get_object_or_404(documents, pk=document_id)


def document_detail(request: HttpRequest, document_id: int) -> HttpResponse:
    if not _may_read(request):
        return redirect_to_login(request.get_full_path())
    document = readable_document(document_id, request.user)
    chunks = list(document.chunks.order_by("position").only("id", "position", "heading_path", "page", "text"))
    for chunk in chunks:
        chunk.html = chunk_html(chunk.text)  # lists and tables as such; sanitised (knowledge/document_text.py)
        chunk.section = section_heading(chunk.heading_path, str(document))
    return render(request, "knowledge/document.html", {"document": document, "chunks": chunks})


def document_download(request: HttpRequest, document_id: int) -> FileResponse:
    if not _may_read(request):
        return redirect_to_login(request.get_full_path())
    document = readable_document(document_id, request.user)
    if not document.file:
        raise Http404("This document was pasted as text; there is no original file.")
    try:
        handle = document.file.open("rb")
    except FileNotFoundError as exc:
        raise Http404("The original file is missing from storage.") from exc
    filename = document.original_filename or document.file.name
    response = FileResponse(
        handle, as_attachment=True, filename=filename, content_type=download_content_type(filename)
    )
    # Never rendered on our origin: no sniffing into HTML, and no script or plugin even if a browser showed it.
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return response


#: What a download is labelled as, by extension. Anything else, HTML above all, goes out as opaque bytes: an
#: upload is never text/html, so a browser that ignored the attachment could still not run it as our page.
DOWNLOAD_CONTENT_TYPES = {
    ".pdf": "application/pdf",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
}


def download_content_type(filename: str) -> str:
    """The Content-Type of an uploaded file's download (DOWNLOAD_CONTENT_TYPES, else application/octet-stream)."""
    extension = "." + filename.rsplit(".", 1)[1].lower() if "." in filename else ""
    return DOWNLOAD_CONTENT_TYPES.get(extension, "application/octet-stream")
