"""Saved replies: texts staff write once in the admin and insert in the console's reply box by typing "/shortcut".

A reply may hold placeholders from a small fixed set (``PLACEHOLDERS``); the console fills them in the browser from
values the server rendered into the page (conversations/console_views.py, static/console/saved_replies.js). An
unknown placeholder is refused when the reply is saved, so a typo such as ``{custmer_name}`` never reaches a
customer as it was typed.
"""

from __future__ import annotations

import re

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models

# Every placeholder a saved reply may hold, and what it becomes (docs/architecture.md, "Saved replies"). Empty
# values are dropped, with a space before them when punctuation follows: "Hi {customer_name}," reads "Hi,".
PLACEHOLDERS = {
    "customer_name": "the customer's name as the console shows it; empty for an anonymous visitor, or a verified "
    "customer whose site sent no name",
    "agent_name": "your own name, as customers see it on your replies",
    "site": "the name of the website the customer chats from (the widget's site); empty on this site's chat page",
}
# What counts as a placeholder: a word in braces. Other braces ("{ }", "{1,2}") are plain text.
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def unknown_placeholders(text: str) -> list[str]:
    """The placeholders in ``text`` that are not in ``PLACEHOLDERS``, sorted, each once."""
    return sorted(set(PLACEHOLDER.findall(text)) - PLACEHOLDERS.keys())


class SavedReply(models.Model):
    """One saved reply: the agent types "/" and its ``shortcut`` in the reply box and picks it from the list."""

    shortcut = models.CharField(
        max_length=40,
        unique=True,
        validators=[
            RegexValidator(
                r"^[a-z0-9][a-z0-9_-]*\Z",
                "Lower-case letters, digits, hyphens and underscores, starting with a letter or digit.",
            )
        ],
        help_text="What the agent types after “/” in the reply box, e.g. “returns” for /returns.",
    )
    title = models.CharField(max_length=120, help_text="Shown in the list beside the shortcut.")
    text = models.TextField(help_text="The reply as inserted, with placeholders such as {customer_name}.")
    language = models.CharField(
        max_length=10,
        blank=True,
        choices=settings.LANGUAGES,
        help_text="The language it is written in, shown in the list; empty: any.",
    )
    enabled = models.BooleanField(default=True, help_text="Only enabled replies are offered in the console.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["shortcut"]
        verbose_name_plural = "saved replies"

    def __str__(self) -> str:
        return f"/{self.shortcut}"

    def clean(self) -> None:
        """Unknown placeholders, and a text longer than any reply the console may send, are refused here, where
        staff can fix them, rather than in front of a customer."""
        errors = []
        unknown = unknown_placeholders(self.text)
        if unknown:
            known = ", ".join(f"{{{name}}}" for name in PLACEHOLDERS)
            errors.append(f"Unknown placeholder {', '.join(f'{{{n}}}' for n in unknown)}: use {known}.")
        if len(self.text) > settings.CHAT_MAX_QUESTION_CHARS:
            errors.append(f"At most {settings.CHAT_MAX_QUESTION_CHARS} characters: a reply is sent as one message.")
        if errors:
            raise ValidationError({"text": errors})

    def as_option(self) -> dict[str, str]:
        """The reply as the console's picker gets it (the page config): unfilled, filled in the browser."""
        return {"shortcut": self.shortcut, "title": self.title, "text": self.text, "language": self.language}
