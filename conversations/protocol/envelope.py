"""What every client frame goes through before its type is known: size, strict JSON, depth, clean text.

Why here and not per field: each of these was a way for client input to reach the server as an exception (an
``internal`` error and a traceback, or a socket closed with 1011): JSON nested 5 000 deep, ``NaN`` echoed back in
a ``pong`` the browser cannot parse, NUL bytes PostgreSQL refuses, lone surrogates that cannot be encoded back.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from django.conf import settings

from conversations.protocol.errors import BAD_FRAME, INVALID, TOO_LARGE, ProtocolError
from conversations.protocol.names import MAX_DEPTH, MAX_ID_CHARS

#: Not text: NUL (PostgreSQL cannot store it) and UTF-16 surrogates (JSON's \ud800–\udfff escapes, which no UTF-8
#: text can hold).
NOT_TEXT = re.compile("[\x00\ud800-\udfff]")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise ValueError(f"{literal[:20]} is out of range")
    return value


def decode(raw: str | bytes | None) -> dict[str, Any]:
    """The frame as a JSON object whose strings are all text, or ``ProtocolError`` naming what is wrong."""
    if raw is None:
        raise ProtocolError(BAD_FRAME, 'Empty frame: send a JSON object with a "type".')
    max_bytes = settings.CHAT_MAX_FRAME_BYTES
    size = len(raw) if isinstance(raw, bytes) else len(raw.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise ProtocolError(TOO_LARGE, f"Frame is {size} bytes; the limit is {max_bytes} bytes.")
    try:
        data = json.loads(raw, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError:
        raise ProtocolError(BAD_FRAME, f"Frame is nested deeper than {MAX_DEPTH} levels.") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(BAD_FRAME, f"Frame is not valid JSON ({_clip(str(exc))}).") from None
    if not isinstance(data, dict):
        raise ProtocolError(BAD_FRAME, f"Frame must be a JSON object, got {type(data).__name__}.")
    kind = data.get("type")
    if not isinstance(kind, str) or NOT_TEXT.search(kind):
        raise ProtocolError(BAD_FRAME, 'Frame needs a string field "type".')
    _check_values(data, kind)
    return data


def _check_values(data: dict[str, Any], kind: str) -> None:
    """Depth at most MAX_DEPTH; every key and string is text. The error names the field (``ask.text``) and
    echoes the frame's ``id`` when that one is clean."""
    stack: list[tuple[Any, str, int]] = [(data, kind, 1)]
    while stack:
        value, path, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ProtocolError(BAD_FRAME, f"Frame is nested deeper than {MAX_DEPTH} levels.")
        if isinstance(value, dict):
            for key, item in value.items():
                if NOT_TEXT.search(key):
                    raise ProtocolError(INVALID, f"A field name in {path} contains a NUL or a lone surrogate.",
                                        id=_clean_id(data))  # fmt: skip
                stack.append((item, f"{path}.{_clip(key)}", depth + 1))
        elif isinstance(value, list):
            stack.extend((item, f"{path}[{index}]", depth + 1) for index, item in enumerate(value))
        elif isinstance(value, str) and NOT_TEXT.search(value):
            raise ProtocolError(
                INVALID, f"{path} contains a NUL character or a lone surrogate; send text.",
                id=None if path == f"{kind}.id" else _clean_id(data),
            )  # fmt: skip


def _clean_id(data: dict[str, Any]) -> str | None:
    """The frame's ``id`` if it can be echoed back safely (an ask's idempotency key, for the client to match)."""
    value = data.get("id")
    if isinstance(value, str) and 0 < len(value) <= MAX_ID_CHARS and not NOT_TEXT.search(value):
        return value
    return None


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "…"
