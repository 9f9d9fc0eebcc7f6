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

Function calling, as OpenAI streams it. With ``tool_calls`` (``[{"name": ..., "arguments": "<JSON text>"}, ...]``;
``"id"`` optional), a streamed request that offers ``tools`` with ``tool_choice`` other than ``"none"`` gets those
calls: ``tool_preamble`` (if any) as content first, then for each call a fragment with its ``index``, ``id``,
``type`` and ``function.name`` and then its ``function.arguments`` a few characters per chunk, and
``finish_reason: "tool_calls"``. It asks in the first ``tool_rounds`` rounds (an assistant ``tool_calls`` message
in the request is one round done); after that, or with ``tool_choice: "none"``, it answers. The follow-up must
answer every call with a ``tool`` message of the same ``tool_call_id``, as OpenAI requires (else HTTP 400); its
answer is ``tool_reply`` formatted with the fields of the tool results' JSON (``"Order {status} [{cite_as}]."``).
``cut_tool_call`` ends the stream halfway through the first call's arguments, without ``finish_reason`` or
``[DONE]``.

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
        tool_calls: list[dict[str, str]] | None = None,
        tool_rounds: int = 1,
        tool_preamble: str = "",
        tool_reply: str = "Here is what I found [1].",
        cut_tool_call: bool = False,
    ) -> None:
        self.reply = reply
        self.rewrite_reply = rewrite_reply
        self.token_delay = token_delay
        self.fail_status = fail_status
        self.hang_seconds = hang_seconds
        self.model = model
        self.embed = embed
        self.tool_calls = tool_calls or []
        self.tool_rounds = tool_rounds
        self.tool_preamble = tool_preamble
        self.tool_reply = tool_reply
        self.cut_tool_call = cut_tool_call
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


def _words(text: str) -> list[str]:
    return re.findall(r"\S+\s*", text)


def _unanswered_calls(messages: list[dict[str, Any]]) -> list[str]:
    """Ids of assistant ``tool_calls`` not followed by a ``tool`` message answering them (OpenAI refuses those)."""
    missing = []
    for i, message in enumerate(messages):
        if message.get("role") == "assistant" and message.get("tool_calls"):
            answered = {m.get("tool_call_id") for m in messages[i + 1 :] if m.get("role") == "tool"}
            missing += [call["id"] for call in message["tool_calls"] if call["id"] not in answered]
    return missing


def _tool_results(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The fields of every ``tool`` message's JSON content, merged with the ``fields`` object inside it (what
    ``tool_reply`` is formatted with: ``{cite_as}``, ``{status}``)."""
    fields: dict[str, Any] = {}
    for message in messages:
        if message.get("role") == "tool":
            content = json.loads(message["content"])
            if isinstance(content, dict):
                fields.update(content)
                fields.update(content.get("fields") if isinstance(content.get("fields"), dict) else {})
    return fields


def _tool_call_chunks(model: str, calls: list[dict[str, str]], round_number: int, cut: bool) -> list[bytes]:
    """The calls as OpenAI streams them: per call, the fragment naming it, then its arguments in small pieces."""
    pieces = []
    for index, call in enumerate(calls):
        call_id = call.get("id") or f"call_standin_{round_number}_{index}"
        head = {"index": index, "id": call_id, "type": "function", "function": {"name": call["name"], "arguments": ""}}
        pieces.append(_chunk(model, {"tool_calls": [head]}))
        arguments = call["arguments"]
        if cut:
            arguments = arguments[: len(arguments) // 2]
        for start in range(0, len(arguments), 4):
            fragment = {"index": index, "function": {"arguments": arguments[start : start + 4]}}
            pieces.append(_chunk(model, {"tool_calls": [fragment]}))
        if cut:
            return pieces
    return [*pieces, _chunk(model, {}, "tool_calls"), b"data: [DONE]\n\n"]


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
            missing = _unanswered_calls(body.get("messages", []))
            if missing:
                message = (
                    "An assistant message with 'tool_calls' must be followed by tool messages responding to each "
                    f"'tool_call_id'. The following tool_call_ids did not have response messages: {missing[0]}"
                )
                self._json(400, {"error": {"message": message, "type": "invalid_request_error", "param": "messages"}})
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
            messages = body.get("messages", [])
            rounds_done = sum(1 for m in messages if m.get("role") == "assistant" and m.get("tool_calls"))
            asks_tools = (
                standin.tool_calls
                and body.get("tools")
                and body.get("tool_choice") != "none"
                and rounds_done < standin.tool_rounds
            )
            if asks_tools:
                pieces = [_chunk(model, {"role": "assistant", "content": None})]
                pieces += [_chunk(model, {"content": word}) for word in _words(standin.tool_preamble)]
                pieces += _tool_call_chunks(model, standin.tool_calls, rounds_done, standin.cut_tool_call)
            else:
                reply = standin.tool_reply.format(**_tool_results(messages)) if rounds_done else standin.reply
                pieces = [_chunk(model, {"role": "assistant", "content": ""})]
                pieces += [_chunk(model, {"content": word}) for word in _words(reply)]
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
