"""GET /healthz: 200 when the database and the channel layer answer, 503 naming the failing part."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from channels.layers import channel_layers

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def fresh_channel_layers():
    """Channels caches layer instances; rebuild them from the (overridden) settings."""
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.mark.django_db
def test_healthy_with_in_memory_layer(client, settings, fresh_channel_layers):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body == {"status": "ok", "failing": [], "checks": {"database": "ok", "channel_layer": "ok"}}


@pytest.mark.django_db
def test_healthy_with_real_redis(client, settings, fresh_channel_layers):
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": ["redis://127.0.0.1:6379/0"]}}
    }
    response = client.get("/healthz")
    assert response.status_code == 200, response.content
    assert response.json()["checks"]["channel_layer"] == "ok"


@pytest.mark.django_db
def test_unreachable_redis_is_named(client, settings, fresh_channel_layers):
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": ["redis://127.0.0.1:1/0"]}}
    }
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["channel_layer"]
    assert body["checks"]["database"] == "ok"
    assert "error" in body["checks"]["channel_layer"]


def test_unreachable_database_is_named(tmp_path):
    """A node whose DATABASE_URL points nowhere reports 503 and names the database (real process)."""
    script = (
        "import django, json; django.setup();"
        "from django.test import Client;"
        "r = Client(HTTP_HOST='localhost').get('/healthz');"
        "print(json.dumps({'status': r.status_code, 'body': r.json()}))"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "chatsite.settings",
        "DATABASE_URL": "postgres://nobody@127.0.0.1:1/nothing",
        "REDIS_URL": "",
    }
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["status"] == 503
    assert result["body"]["failing"] == ["database"]
    assert result["body"]["checks"]["channel_layer"] == "ok"
