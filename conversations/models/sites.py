"""The sites customers chat from: a company website the widget is embedded on (``Site``), and the host site's
verified customers (``SiteCustomer``)."""

from __future__ import annotations

import secrets
from datetime import datetime

from django.conf import settings
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import models

from conversations import sites
from knowledge.language import for_language


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
        return for_language(self.greeting, language, fallback=settings.LANGUAGE_CODE, or_any=False) or ""

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


class SiteCustomer(models.Model):
    """A host site's signed-in customer, as its server vouched for them (an HMAC of their id with the site's identity
    secret, conversations/visitors.py): the user who owns their conversations on every device, and whose identity a
    tool call carries. Their account has no usable password: they exist only through the site that verifies them.
    """

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="customers")
    external_id = models.CharField(max_length=200, help_text="The customer's id on the host site.")
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="site_customer")
    created_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["site", "external_id"], name="site_customer_unique_external_id"),
        ]

    def __str__(self) -> str:
        return f"{self.external_id} on {self.site_id}"
