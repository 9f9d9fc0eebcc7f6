"""Model work off the event loop: query embeddings batched on the embedding thread, answers composed in the
answer threads (knowledge/inference.py), with the real multilingual-e5-small model."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import numpy as np
import pytest
from channels.db import database_sync_to_async
from django.conf import settings
from django.db import connection

from chatsite import metrics
from knowledge import embeddings, inference
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


def test_a_replaced_model_is_never_served_the_old_ones_query_vectors(monkeypatch):
    """After a settings change the process's model is another one (``embeddings.reset_embedder``): a question it
    remembers is embedded again, even when the new model has the old one's name (an HTTP endpoint's, a file's)."""
    real = get_embedder()
    question = "Where is my parcel?"
    before = inference.query_vector(question)

    class SameName:  # another model under the same name: the real one's vectors, reversed
        name, dimensions, max_input_tokens = real.name, real.dimensions, real.max_input_tokens

        def embed_queries(self, texts: list[str]) -> list[list[float]]:
            return [vector[::-1] for vector in real.embed_queries(texts)]

    monkeypatch.setattr(embeddings, "_embedder", SameName())
    assert np.dot(inference.query_vector(question), before[::-1]) == pytest.approx(1.0, abs=1e-3)
    monkeypatch.undo()
    assert np.dot(inference.query_vector(question), before) == pytest.approx(1.0, abs=1e-3)


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


class RecordingModel:
    """A stand-in model that records the texts of every forward pass; the first pass waits until ``release`` is
    set, so the questions asked meanwhile line up behind it exactly as the test sends them."""

    def __init__(self) -> None:
        self.passes: list[list[str]] = []
        self.running = threading.Event()
        self.release = threading.Event()

    def embed_queries(self, texts: list[str]) -> list[list[float]]:
        self.passes.append(list(texts))
        self.running.set()
        self.release.wait(30)
        return [[float(len(text))] for text in texts]


def served_in_order(lines: dict[str | None, list[str]], *, max_batch: int = 32) -> list[list[str]]:
    """The passes the embedding thread makes of ``lines`` (requester -> questions, asked in this order) sent while
    a first question of customer "user:a" is being embedded."""
    model = RecordingModel()
    batcher = inference.QueryBatcher(max_batch=max_batch, wait_seconds=0, limit=100, model=lambda: model)
    futures = [batcher.submit("a0", "user:a")]
    assert model.running.wait(30)
    for requester, texts in lines.items():
        futures += [batcher.submit(text, requester) for text in texts]
    model.release.set()
    for future in futures:
        future.result(timeout=30)
    return model.passes


def test_each_pass_takes_one_question_of_each_customer_in_turn():
    passes = served_in_order({"user:a": ["a1", "a2", "a3", "a4"], "session:b": ["b1", "b2"], "user:c": ["c1"]})
    # Customer a's four questions queued first, yet b's and c's are in the very next pass: none waits for a's.
    assert passes == [["a0"], ["a1", "b1", "c1"], ["a2", "b2"], ["a3"], ["a4"]]


def test_a_call_without_a_requester_is_a_customer_of_its_own():
    passes = served_in_order({"user:a": ["a1", "a2"], None: ["manage.py search", "another search"]})
    assert passes == [["a0"], ["a1", "manage.py search", "another search"], ["a2"]]


def test_past_the_largest_batch_the_customers_left_out_come_first_in_the_next_pass():
    passes = served_in_order({"user:a": ["a1", "a2"], "user:b": ["b1", "b2"], "user:c": ["c1", "c2"]}, max_batch=2)
    assert passes == [["a0"], ["a1", "b1"], ["c1", "a2"], ["b2", "c2"]]


def test_a_question_whose_asker_gave_up_does_not_take_its_customers_turn():
    model = RecordingModel()
    batcher = inference.QueryBatcher(max_batch=32, wait_seconds=0, limit=100, model=lambda: model)
    running = batcher.submit("a0", "user:a")
    assert model.running.wait(30)
    batcher.submit("b1 (gave up)", "user:b").cancel()
    kept = [batcher.submit("b2", "user:b"), batcher.submit("a1", "user:a")]
    model.release.set()
    for future in [running, *kept]:
        future.result(timeout=30)
    assert model.passes == [["a0"], ["b2", "a1"]]


async def test_an_ordinary_question_is_not_held_up_by_a_long_one_being_embedded():
    """A long question (4 000 characters of one word: seconds of the model) is embedded on the long lane, with its
    own copy of the model at a low CPU priority; an ordinary question asked meanwhile is answered at once."""
    inference.forget_queries()
    long_question = ("refundable" * 400)[:4000]
    assert inference.lane(long_question) is not inference.lane("Where is my parcel?")
    await inference.aquery_vector("warm-up: both lanes have their model", "user:b")
    await inference.aquery_vector("warm-up " + long_question[:1000], "user:a")
    long = asyncio.ensure_future(inference.aquery_vector(long_question, "user:a"))
    await asyncio.sleep(0.2)  # its pass has started
    started = time.monotonic()
    ordinary = await inference.aquery_vector("Where is my parcel?", "user:b")
    took = time.monotonic() - started
    assert not long.done(), f"the long question took less than {took:.2f} s: nothing was measured beside it"
    assert len(ordinary) == len(await long) == get_embedder().dimensions


def test_the_long_lane_runs_at_a_low_cpu_priority():
    long_lane = inference.lane("x" * (settings.EMBEDDING_LONG_QUERY_CHARS + 1))
    long_lane.submit("x" * (settings.EMBEDDING_LONG_QUERY_CHARS + 1)).result(timeout=60)
    ours = os.getpriority(os.PRIO_PROCESS, 0)  # this thread's nice value (Linux: per thread)
    assert os.getpriority(os.PRIO_PROCESS, long_lane._thread.native_id) == max(inference.BACKGROUND_NICE, ours)
    assert os.getpriority(os.PRIO_PROCESS, inference.lane("short")._thread.native_id) == ours
