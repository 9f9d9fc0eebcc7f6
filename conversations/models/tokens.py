"""What "sign out everywhere" counts: a user's bearer-token generation."""

from __future__ import annotations

from django.conf import settings
from django.db import models


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
