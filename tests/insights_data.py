"""A small, hand-counted set of conversations, answers, ratings, gaps and 👎 for the insights tests.

Seeded straight through the ORM (the columns conversations/outcomes.py would fill), with times set after creation
(``auto_now_add`` ignores a given value). The figures each test expects are worked out in the comments of ``seed``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
from django.contrib.auth import get_user_model

from conversations.models import Conversation, ConversationRating, Feedback, KnowledgeGap, Message, Site
from knowledge.models import Document, KnowledgeBase

UTC = dt.UTC
D1, D2, D3 = dt.date(2026, 11, 2), dt.date(2026, 11, 3), dt.date(2026, 11, 10)  # a Monday, a Tuesday, next Tuesday


def at(day: dt.date, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute), tzinfo=UTC)


@dataclass
class Seeded:
    kb_a: KnowledgeBase
    kb_b: KnowledgeBase
    site: Site
    customer: object
    conversations: dict[str, Conversation] = field(default_factory=dict)
    answers: dict[str, Message] = field(default_factory=dict)
    feedback: dict[str, Feedback] = field(default_factory=dict)
    document: Document | None = None


def conversation(owner, kb, when, *, outcome="", site=None, handed=None, replied=None, rating=None, by_person=False):
    conv = Conversation.objects.create(owner=owner, knowledge_base=kb, site=site, title="t", outcome=outcome)
    Conversation.objects.filter(pk=conv.pk).update(created_at=when, handed_off_at=handed, first_agent_reply_at=replied)
    if rating is not None:
        ConversationRating.objects.create(conversation=conv, score=rating, by_person=by_person)
    conv.refresh_from_db()
    return conv


def answer(conv, when, text="An answer.", *, first_token_ms=None, tool_calls=0, tool_failures=0, question="A question?",
           sources=None, citations=None):
    asked = Message.objects.create(conversation=conv, role="user", text=question)
    reply = Message.objects.create(
        conversation=conv, role="assistant", text=text, reply_to=asked, first_token_ms=first_token_ms,
        tool_calls=tool_calls, tool_failures=tool_failures, sources=sources or [], citations=citations or [],
    )
    Message.objects.filter(pk__in=[asked.pk, reply.pk]).update(created_at=when)
    return reply


def seed() -> Seeded:
    """Eight conversations over three days (two weeks), two knowledge bases, one site.

    Per day (conversations, with an outcome, bot-resolved, handed off; CSAT; first reply; answers' first tokens):
      D1 kb A: 4, 3, 2, 1; bot 5 and 4, person 2; reply after 120 s; tokens 100, 200, 300 ms (+1 untimed), tools 3/1
      D2 kb A, site: 2, 2, 0, 1; person 5; reply after 600 s; tokens 400 ms
      D3 kb B: 2, 2, 1, 1 (never replied); bot 3; tokens 1000 ms, tools 1/1
      and one conversation on Oct 1, outside every range asked.
    """
    users = get_user_model().objects
    customer = users.create_user("insights-customer", password="x-customer-pass-1")
    kb_a = KnowledgeBase.objects.create(name="Help Centre A")
    kb_b = KnowledgeBase.objects.create(name="Help Centre B")
    site = Site.objects.create(name="North Shop", slug="north-shop", allowed_origins="https://shop.example")
    s = Seeded(kb_a, kb_b, site, customer)
    c = s.conversations
    c["c1"] = conversation(customer, kb_a, at(D1, 9), outcome="bot_resolved", rating=5)
    c["c2"] = conversation(customer, kb_a, at(D1, 10), outcome="bot_resolved", rating=4)
    c["c3"] = conversation(customer, kb_a, at(D1, 11), outcome="agent_resolved", handed=at(D1, 11, 5),
                           replied=at(D1, 11, 7), rating=2, by_person=True)
    c["c4"] = conversation(customer, kb_a, at(D1, 23, 30))
    c["c5"] = conversation(customer, kb_a, at(D2, 12), outcome="agent_resolved", site=site, handed=at(D2, 12, 1),
                           replied=at(D2, 12, 11), rating=5, by_person=True)
    c["c6"] = conversation(customer, kb_a, at(D2, 13), outcome="abandoned", site=site)
    c["c7"] = conversation(customer, kb_b, at(D3, 8), outcome="bot_resolved", rating=3)
    c["c8"] = conversation(customer, kb_b, at(D3, 9), outcome="handed_off", handed=at(D3, 9, 2))
    c["old"] = conversation(customer, kb_a, dt.datetime(2026, 10, 1, 12, tzinfo=UTC), outcome="bot_resolved", rating=1)

    s.document = Document.objects.create(knowledge_base=kb_a, title="Shipping abroad", checksum="0" * 64)
    cited = {"sources": [{"n": 1, "document": s.document.pk, "title": "Shipping abroad"}], "citations": [1]}
    a = s.answers
    a["a1"] = answer(c["c1"], at(D1, 9, 1), first_token_ms=100, question="Do you ship to Iceland?", **cited)
    a["a2"] = answer(c["c1"], at(D1, 9, 2), first_token_ms=200, tool_calls=1, question="Can I get delivery to Iceland?")
    a["a3"] = answer(c["c3"], at(D1, 11, 1), first_token_ms=300, tool_calls=2, tool_failures=1, **cited)
    a["a4"] = answer(c["c4"], at(D1, 23, 31), question="Liefern Sie nach Island?")  # cancelled before a token
    a["a5"] = answer(c["c5"], at(D2, 12), first_token_ms=400, text="Returns take 30 days.", question="How long for returns?")
    a["a6"] = answer(c["c7"], at(D3, 8), first_token_ms=1000, tool_calls=1, tool_failures=1)
    answer(c["old"], dt.datetime(2026, 10, 1, 12, tzinfo=UTC), first_token_ms=5000, tool_calls=5, tool_failures=5)

    f = s.feedback
    f["down"] = Feedback.objects.create(message=a["a5"], user=customer, rating=-1, comment="That is not what I asked")
    f["down_kb_b"] = Feedback.objects.create(message=a["a6"], user=customer, rating=-1)
    f["up"] = Feedback.objects.create(message=a["a1"], user=customer, rating=1)
    reviewer = users.create_user("insights-old-reviewer", is_staff=True)
    f["reviewed"] = Feedback.objects.create(
        message=a["a3"], user=customer, rating=-1, review_reason="wrong", reviewed_by=reviewer, reviewed_at=at(D2, 9)
    )
    return s


def unit_vector(seed: int, dims: int = 384) -> np.ndarray:
    vector = np.random.default_rng(seed).standard_normal(dims)
    return vector / np.linalg.norm(vector)


def near(vector: np.ndarray, seed: int, noise: float = 0.15) -> list[float]:
    """A vector about 0.99 similar to ``vector`` (a paraphrase)."""
    moved = vector + noise * unit_vector(seed, len(vector))
    return (moved / np.linalg.norm(moved)).tolist()


def gap(answer_message, kb, question, language, embedding, when, *, reason="nothing_found", site=None):
    row = KnowledgeGap.objects.create(
        answer=answer_message, knowledge_base=kb, site=site, reason=reason, question=question, language=language,
        embedding=embedding,
    )
    KnowledgeGap.objects.filter(pk=row.pk).update(created_at=when)
    return row


def seed_gaps(s: Seeded) -> None:
    """Three Iceland questions in three languages (near one vector), one returns question (another vector), and two
    spellings of a question without an embedding, plus one unlike them."""
    iceland, returns = unit_vector(1), unit_vector(2)
    a = s.answers
    gap(a["a1"], s.kb_a, "Do you ship to Iceland?", "en", near(iceland, 11), at(D1, 9, 1))
    gap(a["a2"], s.kb_a, "Can I get delivery to Iceland?", "en", near(iceland, 12), at(D1, 9, 2), reason="thumbs_down")
    gap(a["a4"], s.kb_a, "Liefern Sie nach Island?", "de", near(iceland, 13), at(D1, 23, 31))
    gap(a["a3"], s.kb_a, "你们发货到冰岛吗？", "zh-hans", near(iceland, 14), at(D1, 11, 1))
    gap(a["a5"], s.kb_a, "How long for returns?", "en", near(returns, 21), at(D2, 12), site=s.site)
    gap(a["a6"], s.kb_b, "Do you ship to MARS?!", "en", None, at(D3, 8))
    gap(a["a6"], s.kb_b, "do you ship to mars", "en", None, at(D3, 8, 30), reason="thumbs_down")
    gap(a["a2"], s.kb_a, "Can I pay with bitcoin", "en", None, at(D1, 9, 3))
