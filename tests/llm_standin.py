"""A local stand-in for a hosted OpenAI-compatible endpoint (chat and embeddings), speaking the real wire format.

``POST /v1/chat/completions``:
- ``"stream": true`` -> ``text/event-stream``: ``data: {chat.completion.chunk}`` lines, then ``data: [DONE]``;
- otherwise a ``chat.completion`` JSON object (used for follow-up rewriting).

``POST /v1/embeddings`` (when ``embed`` is given): ``{"object": "list", "data": [{"object": "embedding",
"index": i, "embedding": [...]}, ...]}``, deliberately in reverse order (clients must sort by ``index``).

Every request body is recorded in ``requests`` so tests can check the prompt. Behaviour knobs:
``reply`` (streamed answer, sent word by word), ``rewrite_reply`` (non-streamed answer),
``token_delay`` (seconds between streamed chunks), ``fail_status`` (answer every call with
this HTTP status and an OpenAI-style error body), ``hang_seconds`` (sleep before responding).
``disconnected`` is set when the client goes away in the middle of a stream.

Usage (also from consumer and browser tests):

    with LLMStandin(reply="Hello [1].") as llm:
        settings.LLM_BASE_URL = llm.base_url
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.local_http import LocalHTTPServer


class LLMStandin(LocalHTTPServer):
    def __init__(
        self,
        *,
        reply: str = "Here is the answer [1].",
        rewrite_reply: str = "standalone question",
        token_delay: float = 0.0,
        fail_status: int | None = None,
        hang_seconds: float = 0.0,
        model: str = "standin-model",
        embed: Callable[[list[str]], list[list[float]]] | None = None,
    ) -> None:
        self.reply = reply
        self.rewrite_reply = rewrite_reply
        self.token_delay = token_delay
        self.fail_status = fail_status
        self.hang_seconds = hang_seconds
        self.model = model
        self.embed = embed
        self.requests: list[dict[str, Any]] = []
        self.disconnected = threading.Event()
        self.stream_finished = threading.Event()
        super().__init__(_handler_for(self))

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def streamed_requests(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r.get("stream")]

    def plain_requests(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if not r.get("stream")]


def _chunk(model: str, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
    payload = {
        "id": "chatcmpl-standin",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }
    return f"data: {json.dumps(payload)}\n\n".encode()


def _handler_for(standin: LLMStandin) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
            pass

        def _json(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:  # noqa: N802 (http.server naming)
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            body["_authorization"] = self.headers.get("Authorization", "")
            standin.requests.append(body)
            route = self.path.rstrip("/")
            if route == "/v1/embeddings" and standin.embed is not None and not standin.fail_status:
                self._embeddings(body)
                return
            if route not in ("/v1/chat/completions", "/v1/embeddings"):
                self._json(404, {"error": {"message": f"No route {self.path}", "type": "invalid_request_error"}})
                return
            if standin.hang_seconds:
                time.sleep(standin.hang_seconds)
            if standin.fail_status:
                self._json(
                    standin.fail_status,
                    {"error": {"message": "The stand-in model is overloaded", "type": "server_error", "code": None}},
                )
                return
            if body.get("stream"):
                self._stream(body)
            else:
                self._json(
                    200,
                    {
                        "id": "chatcmpl-standin",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": body.get("model", standin.model),
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": standin.rewrite_reply},
                                "logprobs": None,
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
                    },
                )

        def _embeddings(self, body: dict[str, Any]) -> None:
            texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
            vectors = standin.embed(texts)
            data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
            self._json(
                200,
                {
                    "object": "list",
                    "data": list(reversed(data)),
                    "model": body.get("model", standin.model),
                    "usage": {"prompt_tokens": len(texts), "total_tokens": len(texts)},
                },
            )

        def _stream(self, body: dict[str, Any]) -> None:
            model = body.get("model", standin.model)
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            pieces = [_chunk(model, {"role": "assistant", "content": ""})]
            pieces += [_chunk(model, {"content": word}) for word in re.findall(r"\S+\s*", standin.reply)]
            pieces += [_chunk(model, {}, "stop"), b"data: [DONE]\n\n"]
            try:
                for piece in pieces:
                    self.wfile.write(piece)
                    self.wfile.flush()
                    if standin.token_delay:
                        time.sleep(standin.token_delay)
            except (BrokenPipeError, ConnectionResetError):
                standin.disconnected.set()
                return
            standin.stream_finished.set()

    return Handler
