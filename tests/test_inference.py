"""Model work off the event loop: query embeddings batched on the embedding thread, answers composed in the
answer threads (knowledge/inference.py), with the real multilingual-e5-small model."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from channels.db import database_sync_to_async
from django.db import connection

from chatsite import metrics
from knowledge import inference
from knowledge.embeddings import get_embedder
from knowledge.models import KnowledgeBase


def batches_observed() -> tuple[float, float]:
    """(passes, texts) the embedding thread has recorded so far."""
    found = {
        sample.name.rsplit("_", 1)[-1]: sample.value
        for metric in metrics.EMBEDDING_BATCH.collect()
        for sample in metric.samples
        if sample.labels.get("kind") == metrics.QUERY and sample.name.endswith(("_count", "_sum"))
    }
    return found["count"], found["sum"]


async def test_concurrent_questions_are_embedded_together_and_each_gets_its_own_vector():
    inference.forget_queries()
    questions = [f"How do I return item number {i} that I bought last week?" for i in range(24)]
    passes_before, texts_before = batches_observed()
    vectors = await asyncio.gather(*(inference.aquery_vector(q) for q in questions))
    passes, texts = batches_observed()
    assert texts - texts_before == len(questions)
    assert passes - passes_before < len(questions) / 2, "concurrent questions were not batched"
    for question, vector in zip(questions[:3], vectors[:3], strict=True):  # same vector as embedding it alone
        alone = get_embedder().embed_query(question)
        assert np.dot(vector, alone) == pytest.approx(1.0, abs=1e-3)
    assert len({tuple(v) for v in vectors}) == len(questions)


async def test_a_repeated_question_is_not_embedded_again():
    inference.forget_queries()
    await inference.aquery_vector("Where is my parcel?")
    passes_before, _ = batches_observed()
    assert await inference.aquery_vector("Where is my parcel?") == inference.query_vector("Where is my parcel?")
    assert batches_observed()[0] == passes_before


def test_the_embedding_queue_is_bounded():
    batcher = inference.QueryBatcher(max_batch=100, wait_seconds=1.0, limit=3)  # holds them for a second
    futures = [batcher.submit(f"question {i}") for i in range(3)]
    with pytest.raises(inference.EmbeddingBusy, match="EMBEDDING_QUEUE_LIMIT"):
        batcher.submit("one too many")
    assert all(len(f.result(timeout=30)) == get_embedder().dimensions for f in futures)


@pytest.mark.django_db(transaction=True)
async def test_answer_work_runs_in_an_answer_thread_with_database_access():
    await database_sync_to_async(KnowledgeBase.objects.get_or_create)(name="Inference test")

    def work() -> tuple[str, int, int]:
        return threading.current_thread().name, KnowledgeBase.objects.filter(name="Inference test").count(), id(connection)

    name, count, _ = await inference.answer_work(work)
    assert name.startswith("answer") and count == 1


async def test_a_question_whose_asker_gave_up_does_not_stop_the_embedding_thread():
    """A cancelled wait (the customer left, the answer was stopped) leaves the embedding thread serving."""
    inference.forget_queries()
    waiting = asyncio.ensure_future(inference.aquery_vector("Do you ship to Norway?"))
    await asyncio.sleep(0)
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    vector = await asyncio.wait_for(inference.aquery_vector("Do you ship to Iceland?"), 30)
    assert len(vector) == get_embedder().dimensions
