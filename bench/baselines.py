"""The baselines of bench/streams.py: the same frames streamed by the smallest servers that can stream them.

* ``minimal_channels``: an ASGI application of one Channels ``AsyncWebsocketConsumer`` on Daphne
  (``daphne bench.baselines:application``) — what Channels + Daphne cost before anything of ours.
* ``bare``: a ``websockets`` server (``python -m bench.baselines bare --port P``) — what a WebSocket costs at all.

Both answer a ``ping`` with a ``pong`` (bench/idle.py) and an ``ask`` frame with an ``ack``, ``BASELINE_TOKENS`` token frames of one word each at
``ANSWER_WORDS_PER_SECOND`` (0: as fast as they go) and a ``final``, shaped like our protocol's frames.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

WORDS = ("You can return most items within 30 days of delivery for a full refund. Start the return from your "
         "order page, print the label, and drop the parcel at any post office. ").split()


def frames_for(ask: dict) -> list[dict]:
    count = int(os.environ.get("BASELINE_TOKENS", "60"))
    words = [WORDS[i % len(WORDS)] + " " for i in range(count)]
    message = "0" * 32
    frames = [{"type": "ack", "id": ask.get("id"), "conversation": message, "question": message, "message": message}]
    frames += [{"type": "token", "message": message, "seq": seq, "text": w} for seq, w in enumerate(words, 1)]
    frames.append({"type": "final", "message": message, "seq": count + 1, "text": "".join(words), "html": "",
                   "citations": [], "state": "complete", "timings": {}, "offer_handoff": False, "replaced": False})
    return frames


def pause() -> float:
    pace = float(os.environ.get("ANSWER_WORDS_PER_SECOND", "0") or 0)
    return 1 / pace if pace > 0 else 0.0


async def stream(send, text: str) -> None:
    ask = json.loads(text)
    if ask.get("type") == "ping":  # bench/idle.py: the app-level ping our sockets answer
        await send(json.dumps({"type": "pong", "t": ask.get("t")}))
        return
    if ask.get("type") != "ask":
        return
    delay = pause()
    for frame in frames_for(ask):
        await send(json.dumps(frame))
        await asyncio.sleep(delay)


# --- the minimal Channels consumer on Daphne ---------------------------------------------------------------
def _channels_application():
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(INSTALLED_APPS=["channels"], CHANNEL_LAYERS={}, ALLOWED_HOSTS=["*"], SECRET_KEY="bench")
        django.setup()
    from channels.generic.websocket import AsyncWebsocketConsumer
    from channels.routing import URLRouter
    from django.urls import path

    class Streamer(AsyncWebsocketConsumer):
        async def receive(self, text_data=None, bytes_data=None):
            await stream(lambda data: self.send(text_data=data), text_data)

    return URLRouter([path("ws/chat/", Streamer.as_asgi())])


if "daphne" in os.path.basename(sys.argv[0]):  # imported by `daphne bench.baselines:application`
    application = _channels_application()


# --- the bare websockets server ----------------------------------------------------------------------------
async def _bare(port: int) -> None:
    from websockets.asyncio.server import serve

    async def handler(ws):
        async for text in ws:
            await stream(ws.send, text)

    async with serve(handler, "127.0.0.1", port, ping_interval=None, max_queue=None):
        print(f"listening on {port}", flush=True)
        await asyncio.Future()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("server", choices=["bare"])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(_bare(args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
