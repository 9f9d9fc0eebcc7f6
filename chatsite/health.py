"""/healthz: is this node able to serve? Load balancers poll it."""

from __future__ import annotations

import asyncio
import uuid
import weakref

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import connection
from django.http import JsonResponse


def _check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        if cursor.fetchone() is None:
            raise RuntimeError("pgvector extension is not installed")


# One probe channel per layer instance, reused: with RedisPubSubChannelLayer every new channel is a Redis
# subscription that lives until a receive on it is cancelled, so a channel per poll would leak subscriptions.
_probes: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


async def _check_channel_layer() -> None:
    layer = get_channel_layer()
    if layer is None:
        raise RuntimeError("no channel layer configured")
    if layer not in _probes:
        _probes[layer] = (await layer.new_channel("healthz."), asyncio.Lock())
    channel, lock = _probes[layer]
    async with lock:
        token = uuid.uuid4().hex
        await layer.send(channel, {"type": "healthz.ping", "token": token})
        while True:  # skip the answer to an earlier probe that timed out
            message = await asyncio.wait_for(layer.receive(channel), timeout=2)
            if message.get("token") == token:
                return


async def healthz(request):
    checks: dict[str, str] = {}
    failing: list[str] = []
    try:
        await sync_to_async(_check_database)()
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means unhealthy
        checks["database"] = f"error: {exc}"
        failing.append("database")
    try:
        await _check_channel_layer()
        checks["channel_layer"] = "ok"
    except Exception as exc:  # noqa: BLE001
        checks["channel_layer"] = f"error: {type(exc).__name__}: {exc}"
        failing.append("channel_layer")
    status = 503 if failing else 200
    return JsonResponse({"status": "ok" if not failing else "failing", "failing": failing, "checks": checks}, status=status)
