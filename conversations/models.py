"""What a chat is made of: conversations, their messages (questions, answers, agents' replies) and feedback, and
the sites customers chat from (the embeddable widget's ``Site``)."""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime

from django.conf import settings
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import models
from django.db.models import Q

from conversations import sites


def default_knowledge_base_id() -> int:
    """The knowledge base named ``settings.DEFAULT_KNOWLEDGE_BASE`` (created empty if missing)."""
    from knowledge.models import KnowledgeBase

    kb, _ = KnowledgeBase.objects.get_or_create(name=settings.DEFAULT_KNOWLEDGE_BASE)
    return kb.pk


class Conversation(models.Model):
    """One customer's thread. Owned by a user, or by an anonymous visitor's session when that is allowed."""

    class Status(models.TextChoices):
        BOT = "bot", "Answered by the assistant"
        WAITING_FOR_AGENT = "waiting_for_agent", "Waiting for a person"
        AGENT = "agent", "A person is answering"
        RESOLVED = "resolved", "Resolved"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="conversations"
    )
    anonymous_session_key = models.CharField(max_length=64, blank=True, default="", db_index=True)
    knowledge_base = models.ForeignKey(
        "knowledge.KnowledgeBase",
        on_delete=models.PROTECT,
        related_name="conversations",
        default=default_knowledge_base_id,
    )
    title = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.BOT, db_index=True)
    # The staff console (conversations/console.py): who holds the conversation, since when the customer waits
    # for a person, and up to when staff have read it (unread = customer messages after agent_read_at).
    assigned_agent = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="held_conversations"
    )
    taken_over_at = models.DateTimeField(null=True, blank=True)
    waiting_since = models.DateTimeField(null=True, blank=True, help_text="When the customer asked for a person.")
    agent_read_at = models.DateTimeField(null=True, blank=True, help_text="Staff have seen everything up to here.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at"]
        indexes = [
            models.Index(fields=["owner", "-updated_at"], name="conv_owner_recent"),
            models.Index(fields=["anonymous_session_key", "-updated_at"], name="conv_session_recent"),
            models.Index(fields=["status", "-updated_at"], name="conv_status_recent"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(owner__isnull=False) | ~Q(anonymous_session_key=""),
                name="conversation_has_owner_or_session",
            ),
        ]

    def __str__(self) -> str:
        return self.title or f"Conversation {self.pk}"

    @property
    def requester(self) -> str:
        """Who is asking, as a node's shared resources tell customers apart: ``"user:<id>"``, or
        ``"session:<key>"`` for an anonymous visitor. The embedding model serves requesters in turn
        (knowledge/inference.py) and one holds at most half of the answer slots (streaming/admission.py), so one
        customer's questions cannot starve another's."""
        return f"user:{self.owner_id}" if self.owner_id is not None else f"session:{self.anonymous_session_key}"


class Message(models.Model):
    """A turn: the user's question, the assistant's answer (streamed), an agent's reply or a system note."""

    class Role(models.TextChoices):
        USER = "user", "Customer"
        ASSISTANT = "assistant", "Assistant"
        AGENT = "agent", "Agent"
        SYSTEM = "system", "System"

    class State(models.TextChoices):
        STREAMING = "streaming", "Streaming"
        COMPLETE = "complete", "Complete"
        CANCELLED = "cancelled", "Cancelled"
        FAILED = "failed", "Failed"
        INTERRUPTED = "interrupted", "Interrupted"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    role = models.CharField(max_length=10, choices=Role.choices)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    text = models.TextField(blank=True)
    html = models.TextField(blank=True, help_text="Sanitised HTML rendered from the answer's Markdown.")
    # A question is complete once saved; an answer is streaming until its final frame.
    state = models.CharField(max_length=12, choices=State.choices, default=State.COMPLETE, db_index=True)
    citations = models.JSONField(default=list, blank=True)
    sources = models.JSONField(default=list, blank=True)
    trace = models.JSONField(default=dict, blank=True, help_text="Query, passages with scores, timings, generator.")
    # Compact copy of the message's stream frames so `resume` works after the frame log expired:
    # status/sources/error frames as dicts (without message/seq), tokens as their length in `text`.
    frames = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True)
    client_id = models.CharField(max_length=64, blank=True, default="", help_text="The client's idempotency id.")
    reply_to = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="replies"
    )
    seq_last = models.PositiveIntegerField(default=0, help_text="seq of the last stream frame saved.")
    # Several nodes (conversations/streaming/node.py): the node generating a streaming answer holds a lease on it,
    # renewed every few seconds; a lapsed lease means the node died and any node's reaper closes the answer.
    lease_owner = models.CharField(
        max_length=200, blank=True, default="", help_text="Control channel of the node generating this answer."
    )
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    cancel_requested = models.BooleanField(default=False, help_text="Stop asked from another node (durable).")
    # Agent messages: when the customer was reminded of it (the idle reminder goes once per agent message).
    reminded_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at"]
        indexes = [
            models.Index(fields=["conversation", "created_at"], name="msg_conv_created"),
            models.Index(
                fields=["created_at"], condition=Q(role="agent", reminded_at__isnull=True), name="msg_agent_unreminded"
            ),
            models.Index(
                fields=["conversation"], condition=Q(state="streaming"), name="msg_conv_streaming"
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["conversation", "client_id"],
                condition=Q(role="user") & ~Q(client_id=""),
                name="message_unique_client_id_per_conversation",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.role}: {self.text[:60]}"

    @property
    def is_finished(self) -> bool:
        return self.state != self.State.STREAMING

    @property
    def offers_handoff(self) -> bool:
        """A complete answer that found nothing relevant offers "Talk to a person" (``final.offer_handoff``)."""
        return self.state == self.State.COMPLETE and bool((self.trace or {}).get("offer_handoff"))


class Feedback(models.Model):
    """A customer's thumbs up/down on an answer; one per user (or anonymous session) per message."""

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="feedback")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    anonymous_session_key = models.CharField(max_length=64, blank=True, default="")
    rating = models.SmallIntegerField()
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(rating__in=[1, -1]), name="feedback_rating_plus_minus_one"),
            models.UniqueConstraint(
                fields=["message", "user"], condition=Q(user__isnull=False), name="feedback_one_per_user"
            ),
            models.UniqueConstraint(
                fields=["message", "anonymous_session_key"],
                condition=Q(user__isnull=True),
                name="feedback_one_per_session",
            ),
        ]

    def __str__(self) -> str:
        return f"{'+' if self.rating > 0 else '-'}1 on {self.message_id}"


class InternalNote(models.Model):
    """A staff member's note on a conversation: visible in the console only, never sent to the customer."""

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="notes")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    text = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]
        indexes = [models.Index(fields=["conversation", "created_at"], name="note_conv_created")]

    def __str__(self) -> str:
        return f"note on {self.conversation_id}: {self.text[:60]}"


class TokenGeneration(models.Model):
    """A user's bearer-token generation: "sign out everywhere" (``POST /api/token/revoke/``) adds one, and every
    token issued before carries the old number in its ``ver`` claim, so it stops working at once
    (``conversations.auth.user_for_token``; ``conversations/revocation.py``). No row: generation 0."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, primary_key=True, on_delete=models.CASCADE, related_name="token_generation"
    )
    generation = models.PositiveIntegerField(default=0)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"tokens of user {self.user_id}: generation {self.generation}"


def new_identity_secret() -> str:
    """A fresh site identity secret: 256 random bits, URL-safe so it pastes into any server's configuration."""
    return secrets.token_urlsafe(32)


class Site(models.Model):
    """A company website the chat widget may be embedded on (``data-site="<slug>"``), and what it may use there.

    The server enforces it, not the widget's script: a page on an origin not in ``allowed_origins`` gets no widget
    and no socket (``allows_origin``). The identity secret verifies the host site's signed-in customers (HMAC, like
    a tool's secret it is write-only in the admin); business hours say when a person may be asked for
    (``is_open``). The rules themselves are plain functions in ``conversations/sites.py``.
    """

    #: A secret typed by staff must be at least this long: it is all that stands between a forged identity and a
    #: customer's orders.
    MIN_SECRET_LENGTH = 32

    name = models.CharField(max_length=200, unique=True)
    slug = models.SlugField(
        max_length=100,
        unique=True,
        help_text='What the embed tag names: data-site="<slug>". Changed, the tags already on pages stop working.',
    )
    enabled = models.BooleanField(default=True, help_text="Off: the widget loads nowhere and its sockets are refused.")
    allowed_origins = models.TextField(
        blank=True,
        help_text="The pages' origins, one per line, as https://shop.example.com[:port] (no path, no wildcard). "
        "http:// only for localhost, 127.0.0.1 and [::1]. Nowhere else may embed the widget.",
    )
    knowledge_bases = models.ManyToManyField(
        "knowledge.KnowledgeBase", related_name="sites", help_text="What the assistant answers from on this site."
    )
    tools = models.ManyToManyField(
        "knowledge.Tool",
        blank=True,
        related_name="sites",
        help_text="Which of its knowledge bases' tools the assistant may call here (each needs one of them).",
    )
    greeting = models.JSONField(
        default=dict,
        blank=True,
        help_text='The widget’s first words, per language: {"en": "Hi! How can we help?", "de": "Hallo! …"}. '
        "A page's data-greeting overrides it; data-language (else the visitor's browser) picks one.",
    )
    identity_secret = models.CharField(
        max_length=200,
        blank=True,
        help_text="Signs the host site's signed-in customer (HMAC-SHA256, docs/widget.md). Write-only.",
    )
    business_hours = models.JSONField(
        default=dict,
        blank=True,
        help_text='When staff answer, per weekday: {"mon": [["09:00", "12:30"], ["13:30", "17:00"]], …}; a day '
        "left out is closed, {} is always open. Outside them a customer asking for a person may leave a message.",
    )
    time_zone = models.CharField(
        max_length=64, default="UTC", help_text="Of the business hours, as Europe/Berlin or America/New_York."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs) -> None:
        if not self.identity_secret:  # every site can verify customers from the start
            self.identity_secret = new_identity_secret()
        super().save(*args, **kwargs)

    @property
    def origins(self) -> list[str]:
        """The allowed origins, normalised (saved ones already are; a bad line, only possible for a row written
        without ``clean``, allows nothing rather than failing the caller)."""
        try:
            return sites.normalise_origins(self.allowed_origins)
        except ValidationError:
            return []

    def allows_origin(self, origin: str) -> bool:
        """Whether a page whose ``Origin`` header is ``origin`` may embed this site's widget: an exact match after
        normalisation, and never while the site is off."""
        candidate = sites.header_origin(origin)
        return self.enabled and candidate is not None and candidate in self.origins

    def is_open(self, at: datetime) -> bool:
        """Whether ``at`` (aware) is within the business hours, on the wall clock of the site's time zone."""
        return sites.is_open(self.business_hours, self.time_zone, at)

    def greeting_for(self, language: str) -> str:
        """The greeting in ``language`` (``de``, or ``de-CH`` falling back to ``de``), else the site's default
        language's, else "" (the widget's own)."""
        for code in (language.lower(), language.lower().split("-")[0], settings.LANGUAGE_CODE):
            if self.greeting.get(code):
                return self.greeting[code]
        return ""

    def clean(self) -> None:
        """Every origin, the time zone, the business hours and the greeting's languages are checked when the site
        is saved, and the origins are stored normalised, so the socket compares strings and a typo is a message
        to staff rather than a widget that silently never loads."""
        errors: dict[str, list[str]] = {}
        # An emptied box in the admin is None: the same as the default, {}.
        self.greeting = {} if self.greeting is None else self.greeting
        self.business_hours = {} if self.business_hours is None else self.business_hours
        try:
            self.allowed_origins = "\n".join(sites.normalise_origins(self.allowed_origins))
        except ValidationError as exc:
            errors["allowed_origins"] = exc.messages
        try:
            sites.check_time_zone(self.time_zone)
        except ValidationError as exc:
            errors["time_zone"] = exc.messages
        try:
            sites.check_business_hours(self.business_hours)
        except ValidationError as exc:
            errors["business_hours"] = exc.messages
        languages = dict(settings.LANGUAGES)
        if not isinstance(self.greeting, dict) or not all(isinstance(v, str) for v in self.greeting.values()):
            errors["greeting"] = ['An object of languages and texts: {"en": "Hi! How can we help?"}.']
        elif unknown := sorted(set(self.greeting) - set(languages)):
            errors["greeting"] = [f"Languages {', '.join(unknown)}: use {', '.join(languages)}."]
        if self.identity_secret and len(self.identity_secret) < self.MIN_SECRET_LENGTH:
            # Not under the field's name: the admin's form has no such field (it is write-only there).
            errors[NON_FIELD_ERRORS] = [f"The identity secret needs at least {self.MIN_SECRET_LENGTH} characters."]
        if errors:
            raise ValidationError(errors)
