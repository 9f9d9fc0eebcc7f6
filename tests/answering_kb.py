"""A tiny, hand-written knowledge base for the answer-pipeline tests.

Rows are inserted directly (Document + Chunk with real embeddings from the real
embedder) so these tests exercise retrieval and answering without depending on
the parsers and chunker, which have their own tests.
"""

from __future__ import annotations

import hashlib

from knowledge.embeddings import get_embedder
from knowledge.models import Chunk, Document, KnowledgeBase

# (title, heading, text) — one chunk each.
ARTICLES: list[tuple[str, str, str]] = [
    (
        "Returning an item",
        "Return window",
        "You can return most items within 30 days of delivery. "
        "Start a return from My account > Orders and print the prepaid return label. "
        "Pack the item in its original packaging if you still have it.",
    ),
    (
        "Refunds",
        "How long refunds take",
        "Once the returned parcel reaches our warehouse, we refund you within 5 business days. "
        "The money goes back to the payment method you used at checkout. "
        "Card refunds can take another 2-3 days to show on your statement.",
    ),
    (
        "Password reset",
        "Resetting your password",
        "To reset your password, click Forgot password on the sign-in page and enter your email address. "
        "We send you a reset link that is valid for 30 minutes. "
        "If the email does not arrive, check your spam folder.",
    ),
    (
        "Cache cleaner",
        "Browser cache",
        "The cache cleaner script <script>alert('xss')</script> removes old files from your browser cache. "
        "Run it once a week to keep the help centre fast.",
    ),
]


def build_kb(name: str = "Answering test KB", articles: list[tuple[str, str, str]] | None = None) -> KnowledgeBase:
    """Create a ready knowledge base with one chunk per article, embedded by the real model."""
    articles = ARTICLES if articles is None else articles
    kb = KnowledgeBase.objects.create(name=name)
    vectors = get_embedder().embed_documents([f"{heading}\n{text}" for _, heading, text in articles])
    for (title, heading, text), vector in zip(articles, vectors, strict=True):
        document = Document.objects.create(
            knowledge_base=kb,
            title=title,
            text=text,
            checksum=hashlib.sha256(text.encode()).hexdigest(),
            status=Document.Status.READY,
            chunk_count=1,
            mime_type="text/plain",
        )
        Chunk.objects.create(
            document=document,
            knowledge_base=kb,
            position=0,
            text=text,
            heading_path=heading,
            token_count=len(text.split()),
            embedding=vector,
        )
    return kb
