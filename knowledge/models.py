"""What the knowledge base is: collections of documents, split into searchable chunks."""

from __future__ import annotations

import re

from django.conf import settings
from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVector, SearchVectorField
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Func
from django.utils import timezone
from django.utils.text import slugify
from pgvector.django import HnswIndex, VectorField

from knowledge.tools.calling import ParameterSpec, ToolSpec


class KnowledgeBase(models.Model):
    """A named collection of documents the assistant answers from.

    Who may ask it and read its documents is ``visibility`` (+ ``groups``); the rule itself is in one place,
    ``knowledge.visibility.visible_knowledge_bases``.
    """

    class Visibility(models.TextChoices):
        PUBLIC = "public", "Public: everyone"
        STAFF = "staff", "Staff only"
        GROUPS = "groups", "Chosen groups (and staff)"

    name = models.CharField(max_length=200, unique=True)
    slug = models.SlugField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    visibility = models.CharField(
        max_length=10,
        choices=Visibility.choices,
        default=Visibility.PUBLIC,
        db_index=True,
        help_text="Who may ask this knowledge base and open its documents: everyone (customers and anonymous visitors), staff only, or members of the chosen groups. Staff always may.",
    )
    groups = models.ManyToManyField(
        "auth.Group",
        blank=True,
        related_name="knowledge_bases",
        help_text='With the visibility "Chosen groups": the groups whose members may use it.',
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs):
        if not self.slug:
            self.slug = slugify(self.name)[:200] or "kb"
        super().save(*args, **kwargs)


class Document(models.Model):
    """One source document: an uploaded file or pasted text."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        PROCESSING = "processing", "Processing"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    class Kind(models.TextChoices):
        FILE = "file", "A file or pasted text"
        CURATED = "curated", "An answer written by the support team"  # a CuratedAnswer's, written by knowledge/curated/

    knowledge_base = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="documents")
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.FILE, db_default=Kind.FILE)
    title = models.CharField(max_length=300, blank=True)
    file = models.FileField(upload_to="documents/%Y/%m/", blank=True)
    original_filename = models.CharField(max_length=300, blank=True)
    text = models.TextField(blank=True, help_text="Pasted text, used when no file is attached.")
    source_url = models.URLField(max_length=500, blank=True)
    mime_type = models.CharField(max_length=100, blank=True)
    size_bytes = models.PositiveBigIntegerField(default=0)
    checksum = models.CharField(max_length=64, db_index=True, help_text="SHA-256 of the content.")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING, db_index=True)
    error = models.TextField(blank=True)
    chunk_count = models.PositiveIntegerField(default=0)
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    ingested_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["knowledge_base", "checksum"], name="document_unique_content_per_kb"),
        ]

    def __str__(self) -> str:
        return self.title or self.original_filename or f"Document {self.pk}"

    def set_status(self, status: str, error: str = "") -> None:
        """Record an ingestion state on this instance and in its row, without saving other fields."""
        self.status = status
        self.error = error
        Document.objects.filter(pk=self.pk).update(status=status, error=error, updated_at=timezone.now())

    @property
    def source(self) -> str:
        """The name a reader recognises: the original file name, or the URL for pasted text."""
        return self.original_filename or self.source_url or self.title


class CuratedAnswer(models.Model):
    """The answer the support team wants the assistant to give to some questions, written in the admin.

    Saving it indexes it at once as a ``Document`` of kind ``curated`` with one chunk (knowledge/curated/), found by
    search like any passage and preferred over the articles when a question matches one of ``questions``
    (knowledge/answering/curated.py); deactivating or deleting it takes it out of the knowledge base.
    """

    knowledge_base = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="curated_answers")
    questions = models.TextField(
        help_text="The questions this answers, one per line, in the words and languages customers use."
    )
    answer = models.TextField(help_text="What the assistant answers, in Markdown, in one language.")
    active = models.BooleanField(default=True, help_text="Off: the assistant no longer uses it.")
    document = models.OneToOneField(
        Document, null=True, blank=True, editable=False, on_delete=models.SET_NULL, related_name="curated_answer"
    )
    #: ``questions``' lines embedded as passages (float32, one row per line) by ``question_model``.
    question_vectors = models.BinaryField(null=True, blank=True, editable=False)
    question_model = models.CharField(max_length=200, blank=True, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, editable=False, on_delete=models.SET_NULL, related_name="+"
    )
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, editable=False, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at"]

    def __str__(self) -> str:
        return self.question_lines()[0] if self.question_lines() else f"Curated answer {self.pk}"

    def question_lines(self) -> list[str]:
        """The questions, one per non-empty line."""
        return [line.strip() for line in self.questions.splitlines() if line.strip()]


class CjkBigrams(Func):
    """``cjk_bigrams(text)``, an IMMUTABLE SQL function (migration 0002): every run of CJK characters
    becomes its overlapping character bigrams, other text is left unchanged.

    Why: PostgreSQL has no Chinese/Japanese parser; without this a whole clause ("我怎么退货") is one
    lexeme that no query matches. Bigrams are the classic dictionary-free answer (Lucene's CJK
    analyzer): "退货政策" is indexed as 退货 货政 政策, so a question containing 退货 matches. The
    bigrams are joined by control characters (U+001F, runs wrapped in U+001E) that every text-search
    parser treats as separators and that ``knowledge.retrieval`` removes again from ``ts_headline``
    snippets, so a snippet shows the original text.
    """

    function = "cjk_bigrams"
    output_field = models.TextField()


class Chunk(models.Model):
    """A passage of a document: the unit that is embedded, searched and cited."""

    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="chunks")
    knowledge_base = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="chunks")
    position = models.PositiveIntegerField()
    text = models.TextField()
    heading_path = models.CharField(max_length=500, blank=True)
    page = models.PositiveIntegerField(null=True, blank=True)
    token_count = models.PositiveIntegerField(default=0)
    # The chunk's language (knowledge.language.detect; "" when it can't be told): retrieval and the answerer
    # compare a question with passages of every language on one scale (knowledge.cross_lingual).
    language = models.CharField(max_length=16, blank=True, default="", db_default="")
    embedding = VectorField(dimensions=settings.EMBEDDING_DIMENSIONS, null=True)
    # The units an extractive answer may quote (knowledge.sentences) and their vectors (float32,
    # one row per unit), computed at ingestion so a question costs no model work but its own embedding;
    # ``sentence_model`` is the embedder that made them (another model's are recomputed on first use).
    sentences = models.JSONField(default=list, blank=True)
    sentence_vectors = models.BinaryField(null=True, blank=True, editable=False)
    sentence_model = models.CharField(max_length=200, blank=True)
    search_vector = models.GeneratedField(
        expression=SearchVector(CjkBigrams("heading_path"), weight="A", config="english")
        + SearchVector(CjkBigrams("text"), weight="B", config="english"),
        output_field=SearchVectorField(),
        db_persist=True,
    )

    class Meta:
        ordering = ["document_id", "position"]
        constraints = [
            models.UniqueConstraint(fields=["document", "position"], name="chunk_unique_position"),
        ]
        indexes = [
            HnswIndex(
                name="chunk_embedding_hnsw",
                fields=["embedding"],
                m=16,
                ef_construction=64,
                opclasses=["vector_cosine_ops"],
            ),
            GinIndex(fields=["search_vector"], name="chunk_search_vector_gin"),
            # How much of a knowledge base is in a question's language (the lexical side's weight).
            models.Index(fields=["knowledge_base", "language"], name="chunk_kb_language"),
        ]

    def __str__(self) -> str:
        return f"{self.document} #{self.position}"


class LanguageCentroid(models.Model):
    """An embedding model's mean vector of a fixed set of texts in one language (knowledge/cross_lingual.py).

    Stored because computing them takes the model seconds (320 texts); every process and node reads the same."""

    model = models.CharField(max_length=200)
    language = models.CharField(max_length=16)
    messages = models.PositiveIntegerField(help_text="How many texts the mean is over.")
    vector = models.BinaryField(help_text="float32, the model's dimensions.")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["model", "language", "messages"], name="centroid_unique_per_model"),
        ]

    def __str__(self) -> str:
        return f"{self.model} · {self.language}"


class Tool(models.Model):
    """A company's HTTP API the assistant may call mid-answer to look something up (an order, a refund).

    Defined by staff in the admin. The call itself (``knowledge.tools.calling``) knows nothing of the ORM:
    ``spec()`` hands it plain data. Header values and the signing secret are write-only in the admin: never shown
    again, and never in frames, traces or logs. Who is asking travels signed (``knowledge.tools.signing``), so a
    customer cannot read another customer's order by typing its number.
    """

    class Method(models.TextChoices):
        GET = "GET", "GET"
        POST = "POST", "POST"

    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(
        help_text="What it does and when to use it, for the assistant (and an LLM's function description)."
    )
    examples = models.TextField(
        blank=True,
        help_text="Example questions that need this tool, one per line, in every language customers ask in.",
    )
    method = models.CharField(max_length=4, choices=Method.choices, default=Method.GET)
    base_url = models.URLField(
        help_text="Scheme, host, port and path prefix of the API (https://api.example.com/support). Requests go "
        "nowhere else: redirects are not followed."
    )
    path_template = models.CharField(
        max_length=300, help_text="Under the base URL, with {parameter} placeholders: /orders/{order_number}"
    )
    parameters = models.JSONField(
        default=list,
        blank=True,
        help_text='[{"name": "order_number", "type": "string", "pattern": "\\\\d{5}", "description": "…", '
        '"ask": {"en": "What is your order number?"}}]: each value must match its pattern before any request.',
    )
    headers = models.JSONField(
        default=dict, blank=True, help_text="Sent with every call (an API key). Write-only: never shown again."
    )
    secret = models.CharField(
        max_length=200, blank=True, help_text="Signs who is asking (HMAC-SHA256, docs/tools.md). Write-only."
    )
    timeout_seconds = models.FloatField(default=5.0)
    visible_fields = models.JSONField(
        default=list,
        blank=True,
        help_text='Response fields the customer may see, as dotted paths: ["status", "delivery.eta"].',
    )
    answer_templates = models.JSONField(
        default=dict,
        blank=True,
        help_text='Per language, with {field} placeholders: {"en": "Order {order_number} is {status}."}',
    )
    knowledge_bases = models.ManyToManyField(
        KnowledgeBase, blank=True, related_name="tools", help_text="Where the assistant may use it."
    )
    enabled = models.BooleanField(default=True)
    needs_signed_in = models.BooleanField(
        default=True,
        verbose_name="needs a signed-in customer",
        help_text="Never called for an anonymous visitor: the answer asks them to sign in or offers a person.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        """Every parameter has a pattern its values must match, a GET tool's path names each parameter, and the
        rest is what ``ToolSpec`` checks (an http(s) base URL without credentials, a secret, headers the call does
        not set itself): a tool that could never be called, or could be called with an unchecked value, is
        refused when it is saved, not when a customer asks."""
        if not isinstance(self.parameters, list) or not all(isinstance(p, dict) for p in self.parameters):
            raise ValidationError({"parameters": "A list of objects, one per parameter."})
        for parameter in self.parameters:
            name = parameter.get("name")
            if not isinstance(name, str) or not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
                raise ValidationError({"parameters": f"Parameter name {name!r}: lower-case letters, digits and _."})
            if not isinstance(parameter.get("pattern"), str) or not parameter["pattern"]:
                raise ValidationError({"parameters": f"Parameter {name}: a pattern is required (values are checked)."})
        placeholders = set(re.findall(r"{(\w+)}", self.path_template or ""))
        names = {p["name"] for p in self.parameters}
        if self.method == self.Method.GET and placeholders != names:
            raise ValidationError({"path_template": f"A GET tool's path names each parameter once: placeholders "
                                                    f"{sorted(placeholders)}, parameters {sorted(names)}."})  # fmt: skip
        if not isinstance(self.headers, dict) or not all(isinstance(v, str) for v in self.headers.values()):
            raise ValidationError({"headers": "An object of header names and text values."})
        try:
            self.spec()
        except ValueError as exc:
            raise ValidationError(str(exc).split(": ", 1)[-1].capitalize() + ".") from exc

    def spec(self) -> ToolSpec:
        """The plain data a call needs (``knowledge.tools.calling``); ``ValueError`` when it could not be called."""
        return ToolSpec(
            name=self.name,
            method=self.method,
            base_url=self.base_url,
            path_template=self.path_template,
            parameters=[
                ParameterSpec(p["name"], p.get("type", "string"), p.get("pattern", ""), p.get("description", ""))
                for p in self.parameters
            ],
            headers=dict(self.headers),
            secret=self.secret,
            timeout_seconds=self.timeout_seconds,
            visible_fields=list(self.visible_fields),
        )
