"""What a chat is made of: conversations, their messages (questions, answers, agents' replies), feedback and
staff's internal notes."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q


def default_knowledge_base_id() -> int:
    """The knowledge base named ``settings.DEFAULT_KNOWLEDGE_BASE`` (created empty if missing)."""
    from knowledge.models import KnowledgeBase

    kb, _ = KnowledgeBase.objects.get_or_create(name=settings.DEFAULT_KNOWLEDGE_BASE)
    return kb.pk


class Conversation(models.Model):
    """One customer's thread. Owned by a user, or by an anonymous visitor: a session of our chat page (when
    ``CHAT_ALLOW_ANONYMOUS``) or a widget visitor (``anonymous_session_key`` "visitor-<id>", conversations/visitors.py).
    """

    class Status(models.TextChoices):
        BOT = "bot", "Answered by the assistant"
        WAITING_FOR_AGENT = "waiting_for_agent", "Waiting for a person"
        AGENT = "agent", "A person is answering"
        RESOLVED = "resolved", "Resolved"

    class Outcome(models.TextChoices):
        """How the conversation went, for the insights (docs/analytics.md defines each; conversations/outcomes.py
        sets them). Blank while it is still open."""

        BOT_RESOLVED = "bot_resolved", "Resolved by the assistant"
        HANDED_OFF = "handed_off", "Handed to a person"
        AGENT_RESOLVED = "agent_resolved", "Resolved by a person"
        ABANDONED = "abandoned", "Abandoned"
        REOPENED = "reopened", "Reopened"

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
    # for a person, and up to when staff have read it (unread counts: conversations/inbox.py).
    assigned_agent = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="held_conversations"
    )
    taken_over_at = models.DateTimeField(null=True, blank=True)
    waiting_since = models.DateTimeField(null=True, blank=True, help_text="When the customer asked for a person.")
    agent_read_at = models.DateTimeField(null=True, blank=True, help_text="Staff have seen everything up to here.")
    # The widget (docs/widget.md): the site a visitor or verified customer chats from, and the host page they were
    # last on (what the console shows: "Visitor on <site> · <page URL>").
    site = models.ForeignKey(
        "conversations.Site", null=True, blank=True, on_delete=models.SET_NULL, related_name="conversations"
    )
    page_url = models.URLField(max_length=2000, blank=True, help_text="The host page the customer chats from.")
    # Leave a message: nobody could answer when the customer asked for a person, so they left an address and a
    # staff reply is sent there (conversations/leave_message.py).
    contact_email = models.EmailField(blank=True, help_text="Where a staff reply goes while the customer is away.")
    left_message_at = models.DateTimeField(
        null=True, blank=True, help_text="When the customer left a message (marked 'customer offline')."
    )
    # Outcomes and the insights (docs/analytics.md): when the customer first asked for a person (never cleared,
    # unlike waiting_since), when a person first replied, when the conversation ended, and how it went.
    handed_off_at = models.DateTimeField(null=True, blank=True)
    first_agent_reply_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=20, choices=Outcome.choices, blank=True, default="")
    outcome_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at"]
        indexes = [
            # The insights' period filters (conversations/insights): by day, per knowledge base, per site.
            models.Index(fields=["created_at"], name="conv_created"),
            models.Index(fields=["knowledge_base", "created_at"], name="conv_kb_created"),
            models.Index(fields=["site", "created_at"], name="conv_site_created"),
            # Open conversations the outcome sweep settles once they have been quiet long enough.
            models.Index(fields=["updated_at"], condition=Q(outcome=""), name="conv_unsettled"),
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
    # Answers: regenerate makes another version of the answer to the same question (reply_to), numbered from 1.
    version = models.PositiveSmallIntegerField(default=1)
    # Answers, copied from the trace when they finish so the insights aggregate columns, not JSON: time to the
    # first token and the tool calls made (and how many failed).
    first_token_ms = models.FloatField(null=True, blank=True)
    tool_calls = models.PositiveSmallIntegerField(default=0)
    tool_failures = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at"]
        indexes = [
            models.Index(fields=["created_at"], condition=Q(role="assistant"), name="msg_answer_created"),
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
    class Reason(models.TextChoices):
        """What staff found when they reviewed a 👎 (the insights' review queue)."""

        WRONG = "wrong", "Wrong"
        INCOMPLETE = "incomplete", "Incomplete"
        OUTDATED_ARTICLE = "outdated_article", "Outdated article"
        SHOULD_HAVE_HANDED_OFF = "should_have_handed_off", "Should have handed off"
        FINE = "fine", "Nothing wrong"

    rating = models.SmallIntegerField()
    comment = models.TextField(blank=True)
    review_reason = models.CharField(max_length=30, choices=Reason.choices, blank=True, default="")
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [
            # The review queue: 👎 not yet reviewed, newest first.
            models.Index(fields=["-created_at"], condition=Q(rating=-1, reviewed_at__isnull=True), name="fb_to_review"),
        ]
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
