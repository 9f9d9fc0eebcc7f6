"""Reading a client frame's fields: the checks every frame type shares, with errors that name the field."""

from __future__ import annotations

import uuid
from typing import Any

from conversations.protocol.errors import INVALID, TOO_LARGE, ProtocolError
from conversations.protocol.names import MAX_ID_CHARS, MAX_SAFE_INTEGER


class Fields:
    """One frame's fields (a decoded JSON object of clean text: ``envelope.decode``). Errors say
    ``<type>.<field>`` and carry the frame's ``id`` once ``client_id`` has read a valid one."""

    def __init__(self, kind: str, data: dict[str, Any]) -> None:
        self.kind = kind
        self.data = data
        self.id: str | None = None

    def error(self, code: str, field: str, detail: str) -> ProtocolError:
        return ProtocolError(code, f"{self.kind}.{field} {detail}", id=self.id)

    def client_id(self, name: str = "id") -> str:
        """The client's idempotency key: a non-empty string of at most MAX_ID_CHARS."""
        value = self.data.get(name)
        if not isinstance(value, str) or not value.strip() or len(value) > MAX_ID_CHARS:
            raise self.error(INVALID, name, f"must be a non-empty string of at most {MAX_ID_CHARS} characters.")
        self.id = value
        return value

    def uuid(self, name: str) -> uuid.UUID:
        value = self.data.get(name)
        if value is None:
            raise self.error(INVALID, name, "is required (a UUID).")
        return self._as_uuid(name, value)

    def optional_uuid(self, name: str) -> uuid.UUID | None:
        value = self.data.get(name)
        return None if value in (None, "") else self._as_uuid(name, value)

    def _as_uuid(self, name: str, value: Any) -> uuid.UUID:
        if not isinstance(value, str):
            raise self.error(INVALID, name, "must be a UUID string.")
        try:
            return uuid.UUID(value)
        except ValueError:
            raise self.error(INVALID, name, f"is not a valid UUID: {value[:40]!r}.") from None

    def uuid_list(self, name: str, limit: int) -> tuple[uuid.UUID, ...]:
        """Distinct UUIDs, in the order given, at most ``limit`` of them (absent: none)."""
        value = self.data.get(name)
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self.error(INVALID, name, "must be a list of UUID strings.")
        if len(value) > limit:
            raise self.error(TOO_LARGE, name, f"has {len(value)} items; the limit is {limit}. Nothing was saved.")
        return tuple(dict.fromkeys(self._as_uuid(name, item) for item in value))

    def text(self, name: str, limit: int, *, required: bool = True) -> str:
        """Stripped text of at most ``limit`` characters (empty only when not ``required``)."""
        value = self.data.get(name, None if required else "")
        if value is None and not required:
            value = ""
        if not isinstance(value, str):
            raise self.error(INVALID, name, "must be a string.")
        value = value.strip()
        if required and not value:
            raise self.error(INVALID, name, "is empty.")
        if len(value) > limit:
            raise self.error(TOO_LARGE, name, f"is {len(value)} characters; the limit is {limit}. Nothing was saved.")
        return value

    def optional_name(self, name: str, what: str) -> str | None:
        """A short non-empty name (e.g. a knowledge base's slug), or None when absent."""
        value = self.data.get(name)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip() or len(value) > 200:
            raise self.error(INVALID, name, f"must be {what}.")
        return value.strip()

    def integer(self, name: str, *, default: int, minimum: int, maximum: int, what: str) -> int:
        value = self.data.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
            raise self.error(INVALID, name, f"must be an integer from {minimum} to {maximum} ({what}).")
        return value

    def choice(self, name: str, choices: tuple[int, ...]) -> int:
        value = self.data.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or value not in choices:
            raise self.error(INVALID, name, f"must be one of {', '.join(map(str, choices))}.")
        return value

    def flag(self, name: str, *, default: bool) -> bool:
        value = self.data.get(name, default)
        if not isinstance(value, bool):
            raise self.error(INVALID, name, "must be true or false.")
        return value

    def echo(self, name: str) -> str | int | float | None:
        """A value the server sends back as it came (``ping.t``): a string, or a number JavaScript reads exactly."""
        value = self.data.get(name)
        if value is None or isinstance(value, str | float):  # floats are finite (envelope.decode)
            return value
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) <= MAX_SAFE_INTEGER:
            return value
        raise self.error(INVALID, name, f"must be a string or a number of magnitude at most {MAX_SAFE_INTEGER}.")
