"""The knowledge-base manager's screen: upload, watch ingestion progress, re-index, inspect chunks, try a search.

Views stay thin: storing and validating files is knowledge.ingest.pipeline's job, ranking is
knowledge.retrieval's; this module only wires them into the Django admin.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import Count, IntegerField, OuterRef, Subquery, URLField
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden, HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.template.defaultfilters import filesizeformat, truncatechars
from django.urls import path, reverse
from django.utils.html import format_html

from knowledge import retrieval, tasks
from knowledge.admin_forms import KnowledgeBaseForm, SearchForm, UploadForm
from knowledge.curated import indexing as curated_indexing
from knowledge.curated.admin import CuratedAnswerAdmin  # noqa: F401  (curated answers' screen, likewise)
from knowledge.embeddings import EmbeddingError
from knowledge.models import Chunk, CuratedAnswer, Document, KnowledgeBase
from knowledge.tools.admin import ToolAdmin  # noqa: F401  (the tools' screen, registered where it is defined)

#: Statuses after which nothing changes until someone acts; the progress poller stops on these.
IN_PROGRESS = {Document.Status.PENDING, Document.Status.PROCESSING}
ERROR_PREVIEW_CHARS = 80


def _count_of(model, field: str) -> Coalesce:
    """A correlated COUNT subquery: two joined Counts would multiply each other."""
    counts = model.objects.filter(**{field: OuterRef("pk")}).order_by().values(field).annotate(n=Count("pk"))
    return Coalesce(Subquery(counts.values("n"), output_field=IntegerField()), 0)


def status_badge(document: Document) -> str:
    """The coloured status label; data attributes let the progress poller update it in place."""
    return format_html(
        '<span class="kb-status kb-status--{}" data-doc-status="{}" data-status="{}">{}</span>',
        document.status,
        document.pk,
        document.status,
        document.get_status_display(),
    )


def status_snapshot(ids: list[int]) -> dict[str, dict]:
    """What the progress poller needs per document; unknown (e.g. deleted) ids are simply absent."""
    rows = Document.objects.filter(pk__in=ids).values("pk", "status", "chunk_count", "error")
    labels = dict(Document.Status.choices)
    return {
        str(row["pk"]): {
            "status": row["status"],
            "label": labels.get(row["status"], row["status"]),
            "chunk_count": row["chunk_count"],
            "error": row["error"],
            "done": row["status"] not in IN_PROGRESS,
        }
        for row in rows
    }


@admin.register(KnowledgeBase)
class KnowledgeBaseAdmin(admin.ModelAdmin):
    form = KnowledgeBaseForm
    list_display = ["name", "slug", "visibility_display", "document_count", "chunk_count"]
    list_filter = ["visibility"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    readonly_fields = ["created_at"]
    filter_horizontal = ["groups"]
    fieldsets = [
        (None, {"fields": ["name", "slug", "description", "created_at"]}),
        (
            "Who may use it",
            {
                "fields": ["visibility", "groups"],
                "description": "Anyone who may not use a knowledge base is told it does not exist (“not found”).",
            },
        ),
    ]

    def get_queryset(self, request: HttpRequest):
        return (
            super()
            .get_queryset(request)
            .annotate(n_documents=_count_of(Document, "knowledge_base"), n_chunks=_count_of(Chunk, "knowledge_base"))
            .prefetch_related("groups")
        )

    @admin.display(description="Visible to", ordering="visibility")
    def visibility_display(self, obj: KnowledgeBase) -> str:
        if obj.visibility == KnowledgeBase.Visibility.GROUPS:
            names = ", ".join(group.name for group in obj.groups.all()) or "no group yet: staff only"
            return f"Groups: {names}"
        return {KnowledgeBase.Visibility.PUBLIC: "Everyone", KnowledgeBase.Visibility.STAFF: "Staff only"}.get(
            obj.visibility, obj.get_visibility_display()
        )

    @admin.display(description="Documents", ordering="n_documents")
    def document_count(self, obj: KnowledgeBase) -> int:
        return obj.n_documents

    @admin.display(description="Chunks", ordering="n_chunks")
    def chunk_count(self, obj: KnowledgeBase) -> int:
        return obj.n_chunks

    def get_urls(self):
        urls = [
            path("search/", self.admin_site.admin_view(self.search_view), name="knowledge_search"),
        ]
        return urls + super().get_urls()

    def search_view(self, request: HttpRequest) -> HttpResponse:
        """ "Try a search": the ranking the assistant would get, with every score and the timings."""
        if not self.has_view_permission(request):
            return HttpResponseForbidden("You may not search the knowledge bases.")
        form = SearchForm(request.GET or None)
        result = None
        if form.is_valid():
            try:
                result = retrieval.search(
                    form.cleaned_data["q"],
                    kb=form.cleaned_data["kb"],
                    k=form.cleaned_data["k"] or None,
                    mode=form.cleaned_data["mode"],
                    reader=request.user,  # staff see every knowledge base (knowledge/visibility.py)
                )
            except (ValueError, EmbeddingError) as exc:  # empty query, unreachable embedding endpoint...
                form.add_error(None, str(exc))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Try a search",
            "form": form,
            "result": result,
        }
        return render(request, "admin/knowledge/search.html", context)


class ChunkInline(admin.TabularInline):
    """The chunks exactly as indexed, read-only: they only change by re-indexing the document."""

    model = Chunk
    fk_name = "document"
    fields = ["position", "heading_path", "page", "token_count", "preview"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False
    verbose_name_plural = "Chunks (read-only; re-index the document to rebuild them)"

    def get_queryset(self, request: HttpRequest):
        return super().get_queryset(request).defer("embedding", "search_vector").order_by("position")

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    @admin.display(description="Text")
    def preview(self, obj: Chunk) -> str:
        return format_html('<span class="kb-chunk-text" id="chunk-{}">{}</span>', obj.pk, truncatechars(obj.text, 300))


@admin.register(Document)
class DocumentAdmin(admin.ModelAdmin):
    list_display = [
        "display_title",
        "knowledge_base",
        "status_display",
        "chunks",
        "error_preview",
        "uploaded_by",
        "updated_at",
    ]
    list_filter = ["knowledge_base", "status"]
    search_fields = ["title", "original_filename"]
    # A source URL typed without a scheme is https:// (Django 6's default; said now, without its warning).
    formfield_overrides = {URLField: {"assume_scheme": "https"}}
    list_select_related = ["knowledge_base", "uploaded_by"]
    actions = ["reindex"]
    inlines = [ChunkInline]
    fields = [
        "knowledge_base",
        "title",
        "source_url",
        "original_filename",
        "file_download",
        "status_display",
        "chunks",
        "error_display",
        "mime_type",
        "size_display",
        "checksum",
        "uploaded_by",
        "created_at",
        "updated_at",
        "ingested_at",
        "text",
    ]
    #: Only what a person wrote is editable; everything else is computed by ingestion or fixed at upload.
    readonly_fields = [name for name in fields if name not in {"title", "source_url"}]

    # --- columns -------------------------------------------------------------------------------------------
    @admin.display(description="Title", ordering="title")
    def display_title(self, obj: Document) -> str:
        return str(obj)

    @admin.display(description="Status", ordering="status")
    def status_display(self, obj: Document) -> str:
        return status_badge(obj)

    @admin.display(description="Chunks", ordering="chunk_count")
    def chunks(self, obj: Document) -> str:
        return format_html('<span data-doc-chunks="{}">{}</span>', obj.pk, obj.chunk_count)

    @admin.display(description="Error")
    def error_preview(self, obj: Document) -> str:
        return format_html(
            '<span class="kb-error" data-doc-error="{}" data-truncate="{}" title="{}">{}</span>',
            obj.pk,
            ERROR_PREVIEW_CHARS,
            obj.error,
            truncatechars(obj.error, ERROR_PREVIEW_CHARS),
        )

    @admin.display(description="Error")
    def error_display(self, obj: Document) -> str:
        return format_html('<span class="kb-error kb-error--full" data-doc-error="{}">{}</span>', obj.pk, obj.error)

    @admin.display(description="File")
    def file_download(self, obj: Document) -> str:
        """The access-checked download, not the FileField's own link: nothing serves MEDIA_URL (docs/security.md)."""
        if not obj.file:
            return "–"
        url = reverse("knowledge:document-download", args=[obj.pk])
        return format_html('<a href="{}">Download {}</a>', url, obj.original_filename or "the original")

    @admin.display(description="Size", ordering="size_bytes")
    def size_display(self, obj: Document) -> str:
        human = filesizeformat(obj.size_bytes)
        return human if obj.size_bytes < 1024 else f"{human} ({obj.size_bytes} bytes)"

    # --- actions -------------------------------------------------------------------------------------------
    @admin.action(description="Re-index selected documents")
    def reindex(self, request: HttpRequest, queryset) -> None:
        """Rebuild chunks from the stored source; the previous chunks stay searchable until the new ones land.

        A curated answer's document has no file: it is rebuilt at once from its curated answer (its questions and
        their vectors too), never by the ingestion job, which would index its text alone."""
        documents = list(queryset)
        files = [d for d in documents if d.kind != Document.Kind.CURATED]
        for document in files:
            tasks.enqueue_ingestion(document)  # marks it pending; the job is deferred on commit
        for curated in CuratedAnswer.objects.filter(document__in=[d for d in documents if d not in files]):
            curated_indexing.index(curated)
        if files:
            self.message_user(request, f"Queued {len(files)} document(s) for re-indexing.", messages.SUCCESS)
        if len(files) < len(documents):
            self.message_user(request, f"Re-indexed {len(documents) - len(files)} curated answer(s) from their "
                                       "questions and answer.", messages.SUCCESS)  # fmt: skip

    # --- extra views ---------------------------------------------------------------------------------------
    def get_urls(self):
        urls = [
            path("upload/", self.admin_site.admin_view(self.upload_view), name="knowledge_document_upload"),
            path("status/", self.admin_site.admin_view(self.status_view), name="knowledge_document_status"),
        ]
        return urls + super().get_urls()

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context=None) -> HttpResponse:
        """Documents only enter through the pipeline (checksum, validation, queue), so "Add" means upload."""
        return HttpResponseRedirect(reverse("admin:knowledge_document_upload"))

    def upload_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_add_permission(request):
            return HttpResponseForbidden("You may not add documents.")
        if request.method == "POST":
            form = UploadForm(request.POST, request.FILES)
            if form.is_valid():
                outcomes = form.save(uploaded_by=request.user)
                for outcome in outcomes:
                    self.message_user(request, outcome.message, outcome.level)
                kb = form.target_knowledge_base()
                changelist = reverse("admin:knowledge_document_changelist")
                return HttpResponseRedirect(f"{changelist}?knowledge_base__id__exact={kb.pk}")
        else:
            form = UploadForm(initial={"knowledge_base": request.GET.get("kb")})
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Upload documents",
            "form": form,
        }
        return render(request, "admin/knowledge/document/upload.html", context)

    def status_view(self, request: HttpRequest) -> JsonResponse:
        """Polled by static/admin/knowledge/document_status.js while ingestion runs: {id: {status, ...}}."""
        if not self.has_view_permission(request):
            return JsonResponse({"error": "forbidden"}, status=403)
        try:
            ids = [int(part) for part in request.GET.get("ids", "").split(",") if part.strip()][:500]
        except ValueError:
            return JsonResponse({"error": "ids must be a comma-separated list of document ids"}, status=400)
        return JsonResponse(status_snapshot(ids))
