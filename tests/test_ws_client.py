"""bench/ws_client.py against a real Daphne: the protocol is usable without our JavaScript."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model

from conversations.models import Message

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "ws_client.py"
PASSWORD = "pw-for-the-script-1"


@pytest.fixture
def site(daphne_server, demo_kb):
    get_user_model().objects.create_user("scripted", password=PASSWORD)
    return daphne_server(ANSWER_WORDS_PER_SECOND="0")


def run_client(url: str, *args: str, password: str = PASSWORD) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--url", url, "--username", "scripted", *args],
        env={**os.environ, "CHAT_PASSWORD": password},
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_asks_and_prints_every_frame_until_final(site):
    result = run_client(site.url, "how do I return an item")
    assert result.returncode == 0, result.stderr
    frames = [json.loads(line) for line in result.stdout.splitlines()]
    assert frames[0]["type"] == "ack"
    message_id = frames[0]["message"]
    stream = [f for f in frames if f.get("message") == message_id and "seq" in f]
    assert [f["seq"] for f in stream] == list(range(1, len(stream) + 1))
    assert [f["type"] for f in stream[:4]] == ["status", "status", "sources", "status"]
    assert stream[-1]["type"] == "final" and stream[-1] is frames[-1]
    final = stream[-1]
    assert final["state"] == "complete"
    tokens = [f["text"] for f in stream if f["type"] == "token"]
    assert tokens and final["text"] == "".join(tokens)
    assert set(final["citations"]) <= {item["n"] for item in stream[2]["items"]}
    saved = Message.objects.get(pk=message_id)
    assert saved.text == final["text"] and saved.state == "complete"
    assert saved.conversation.owner.username == "scripted"


def test_error_frame_gives_a_failing_exit_status(site):
    result = run_client(site.url, "x" * 5000)
    assert result.returncode == 1
    frames = [json.loads(line) for line in result.stdout.splitlines()]
    assert frames[-1]["type"] == "error" and frames[-1]["code"] == "too_large"
    assert not Message.objects.exists()


def test_wrong_password_is_reported(site):
    result = run_client(site.url, "hello", password="wrong")
    assert result.returncode == 2
    assert "HTTP 401" in result.stderr
