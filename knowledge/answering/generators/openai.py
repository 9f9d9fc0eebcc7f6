"""Any OpenAI-compatible chat-completions endpoint (OpenAI, Azure, Ollama, vLLM, llama.cpp server)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from django.conf import settings

from knowledge.answering.events import AnswerBackendError

SYSTEM_PROMPT = """You are the customer support assistant of this company. Answer the customer's question \
using ONLY the numbered passages from the knowledge base below.

Rules:
- Cite the passage(s) each statement comes from with its number in square brackets, e.g. [1] or [2][3].
- If the passages do not contain the answer, say plainly that you could not find it in the knowledge base \
and offer to connect the customer to a person. Never invent facts, prices, dates or policies.
- Be concise and friendly; use short paragraphs or a list for steps. Reply in the customer's language.

Passages:
{passages}"""

REWRITE_PROMPT = """Rewrite the customer's last message as one standalone search query for the knowledge base, \
resolving words like "it" or "that" from the conversation. Reply with the query only, no quotes."""


def format_passages(passages: Sequence[Any]) -> str:
    """The numbered passages as the model sees them."""
    if not passages:
        return "(no passages matched the question)"
    blocks = []
    for n, p in enumerate(passages, start=1):
        where = " › ".join(part for part in (p.title, p.heading) if part)
        page = f", page {p.page}" if p.page else ""
        blocks.append(f"[{n}] {where}{page}\n{p.text.strip()}")
    return "\n\n".join(blocks)


def _http_errors() -> tuple[type[Exception], ...]:
    """Exceptions meaning "the endpoint failed": the SDK's own, plus its HTTP library's raised mid-stream.

    The SDK wraps request errors but not all errors while a stream is being read; it has used
    ``httpx`` and, in newer releases, ``httpx2``, so both are recognised when installed.
    """
    import importlib

    import openai

    errors: list[type[Exception]] = [openai.OpenAIError]
    for module_name in ("httpx2", "httpx"):
        try:
            errors.append(importlib.import_module(module_name).HTTPError)
        except ImportError:
            continue
    return tuple(errors)


def _is_timeout(exc: Exception) -> bool:
    import openai

    return isinstance(exc, openai.APITimeoutError) or type(exc).__name__ in {
        "TimeoutException", "ReadTimeout", "ConnectTimeout", "WriteTimeout", "PoolTimeout",
    }  # fmt: skip


class OpenAIChatGenerator:
    """Any OpenAI-compatible chat endpoint (OpenAI, Azure, Ollama, vLLM, llama.cpp) via the official SDK.

    One client per call, closed after it: the SDK's HTTP pool is bound to the event loop
    that created it, and answers run on many loops (Daphne, tests).
    """

    name = "openai"

    def __init__(
        self,
        *,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        timeout: float | None = None,
        max_tokens: int | None = None,
    ) -> None:
        self.base_url = base_url or settings.LLM_BASE_URL
        self.model = model or settings.LLM_MODEL
        self.api_key = api_key or settings.LLM_API_KEY or "not-needed"
        self.timeout = timeout if timeout is not None else settings.LLM_TIMEOUT
        self.max_tokens = max_tokens or settings.LLM_MAX_TOKENS
        if not self.base_url or not self.model:
            raise AnswerBackendError(
                "ANSWER_GENERATOR=openai needs LLM_BASE_URL (e.g. http://localhost:11434/v1) and LLM_MODEL."
            )
        self.name = f"openai:{self.model}"

    def _client(self):
        from openai import AsyncOpenAI

        return AsyncOpenAI(
            base_url=self.base_url, api_key=self.api_key, timeout=self.timeout, max_retries=settings.LLM_MAX_RETRIES
        )

    def _error(self, exc: Exception) -> AnswerBackendError:
        import openai

        if _is_timeout(exc):
            message = f"The language model did not respond within {self.timeout:g} s."
        elif isinstance(exc, openai.APIStatusError):
            message = f"The language model endpoint returned HTTP {exc.status_code}: {exc.message}"
        elif isinstance(exc, openai.APIConnectionError):
            message = f"Could not reach the language model endpoint at {self.base_url}."
        else:
            message = f"The language model endpoint failed: {exc}"
        return AnswerBackendError(message)

    @staticmethod
    def history_messages(history: list[dict]) -> list[dict[str, str]]:
        """The last few turns as chat messages; a human agent's replies count as the assistant side."""
        recent = history[-settings.ANSWER_HISTORY_MESSAGES :] if settings.ANSWER_HISTORY_MESSAGES > 0 else []
        return [
            {"role": "user" if turn.get("role") == "user" else "assistant", "content": turn["text"]} for turn in recent
        ]

    def messages(self, question: str, passages: Sequence[Any], history: list[dict]) -> list[dict[str, str]]:
        return [
            {"role": "system", "content": SYSTEM_PROMPT.format(passages=format_passages(passages))},
            *self.history_messages(history),
            {"role": "user", "content": question},
        ]

    async def stream(self, question: str, passages: Sequence[Any], history: list[dict]) -> AsyncIterator[str]:
        errors = _http_errors()
        async with self._client() as client:
            try:
                response = await client.chat.completions.create(
                    model=self.model,
                    messages=self.messages(question, passages, history),
                    stream=True,
                    max_tokens=self.max_tokens,
                    temperature=settings.LLM_TEMPERATURE,
                )
            except errors as exc:
                raise self._error(exc) from exc
            try:
                async for chunk in response:
                    for choice in chunk.choices:
                        if choice.delta and choice.delta.content:
                            yield choice.delta.content
            except errors as exc:
                raise self._error(exc) from exc
            finally:
                await response.close()  # also on cancel: the server sees the connection go away

    async def rewrite(self, question: str, history: list[dict]) -> str:
        errors = _http_errors()
        conversation = "\n".join(
            f"{'Customer' if m['role'] == 'user' else 'Support'}: {m['content']}"
            for m in self.history_messages(history)
        )
        async with self._client() as client:
            try:
                completion = await client.chat.completions.create(
                    model=self.model,
                    messages=[
                        {"role": "system", "content": REWRITE_PROMPT},
                        {"role": "user", "content": f"Conversation:\n{conversation}\n\nLast message: {question}"},
                    ],
                    max_tokens=64,
                    temperature=0,
                )
            except errors as exc:
                raise self._error(exc) from exc
        content = completion.choices[0].message.content if completion.choices else None
        return " ".join((content or "").split()).strip("\"'") or question
