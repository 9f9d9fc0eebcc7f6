"""/metrics: the node's numbers in the Prometheus text format, for staff or the allowed networks only."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from prometheus_client.parser import text_string_to_metric_families

from tests.chat_support import connect

pytestmark = pytest.mark.django_db(transaction=True)


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of a Prometheus text page (parsed by prometheus-client itself)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape(client, **extra) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics", **extra)
    assert response.status_code == 200, response.content[:200]
    assert response["Content-Type"].startswith("text/plain; version=")
    return samples(response.content.decode())


def test_an_allowed_network_reads_the_metrics_without_signing_in(client, settings):
    settings.METRICS_ALLOWED_NETWORKS = ["10.1.0.0/16"]
    found = scrape(client, REMOTE_ADDR="10.1.2.3")
    names = {name for name, _ in found}
    for expected in ("chat_open_sockets", "chat_answers_streaming", "chat_first_token_seconds_count",
                     "chat_token_gap_seconds_count", "knowledge_retrieval_seconds_count",
                     "knowledge_embedding_batch_size_count", "knowledge_ingestion_queue",
                     "knowledge_documents_failed", "chat_answers_waiting"):  # fmt: skip
        assert expected in names or any(n.startswith(expected) for n in names), expected
    assert client.get("/metrics", REMOTE_ADDR="10.2.0.1").status_code == 403


def test_only_staff_read_them_from_elsewhere(client, settings):
    settings.METRICS_ALLOWED_NETWORKS = []
    assert client.get("/metrics").status_code == 403  # the test client is 127.0.0.1, not allowed now
    customer = get_user_model().objects.create_user("carol", password="pw-carol-123")
    client.force_login(customer)
    assert client.get("/metrics").status_code == 403
    staff = get_user_model().objects.create_user("sam", password="pw-sam-123", is_staff=True)
    client.force_login(staff)
    assert client.get("/metrics").status_code == 200


async def test_an_answer_moves_sockets_frames_answers_and_token_timing(demo_kb, fast_answers, cleanup, settings):
    from asgiref.sync import sync_to_async
    from django.test import Client

    settings.METRICS_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    read = sync_to_async(lambda: scrape(Client()))
    user = await get_user_model().objects.acreate_user("dora", password="pw-dora-123")
    before = await read()
    client = await connect(user)
    during = await read()
    ack = await client.ask("How do I return an item?")
    frames = await client.until_final(ack["message"])
    after = await read()
    await client.close()
    closed = await read()

    def value(found, name, **labels):
        return found.get((name, tuple(sorted(labels.items()))), 0.0)

    assert value(during, "chat_open_sockets", socket="chat") == value(before, "chat_open_sockets", socket="chat") + 1
    assert value(closed, "chat_open_sockets", socket="chat") == value(before, "chat_open_sockets", socket="chat")
    sent = value(after, "chat_frames_sent_total", socket="chat") - value(before, "chat_frames_sent_total", socket="chat")
    assert sent >= len(frames)  # every frame of the answer (and the ack) went out through send_frame
    finished = ("chat_answers_finished_total", (("state", "complete"),))
    assert after.get(finished, 0) == before.get(finished, 0) + 1
    tokens = sum(f["type"] == "token" for f in frames)
    assert value(after, "chat_first_token_seconds_count") == value(before, "chat_first_token_seconds_count") + 1
    gaps = value(after, "chat_token_gap_seconds_count") - value(before, "chat_token_gap_seconds_count")
    assert gaps == tokens - 1
    assert value(after, "knowledge_retrieval_seconds_count") > value(before, "knowledge_retrieval_seconds_count")
    assert value(after, "chat_answers_streaming") == 0
    assert re.fullmatch(r"\d+(\.0)?", str(value(after, "knowledge_ingestion_queue")))
