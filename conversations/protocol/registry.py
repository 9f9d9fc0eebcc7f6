"""One registry per socket: frame type → the frame class that parses it. The only list of a socket's frames."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from conversations.protocol.envelope import decode
from conversations.protocol.errors import UNKNOWN_TYPE, ProtocolError
from conversations.protocol.fields import Fields


class ClientFrame:
    """A parsed client frame: a frozen dataclass with its ``TYPE`` and a ``from_fields`` parser."""

    TYPE: ClassVar[str]

    @classmethod
    def from_fields(cls, fields: Fields) -> Any:
        raise NotImplementedError


class Registry:
    """The client frames one socket accepts (``CHAT``, ``CONSOLE``)."""

    def __init__(self, socket: str, frames: Iterable[type[ClientFrame]]) -> None:
        self.socket = socket
        self.frames: dict[str, type[ClientFrame]] = {frame.TYPE: frame for frame in frames}

    @property
    def types(self) -> tuple[str, ...]:
        return tuple(self.frames)

    def parse(self, raw: str | bytes | None) -> Any:
        """One incoming text frame as its frame class, or ``ProtocolError`` with a detail naming the bad part."""
        data = decode(raw)
        kind = data["type"]
        frame = self.frames.get(kind)
        if frame is None:
            shown = kind if len(kind) <= 40 else kind[:40] + "…"
            raise ProtocolError(UNKNOWN_TYPE, f"Unknown frame type {shown!r} on {self.socket}; expected one of: "
                                              f"{', '.join(self.frames)}.")  # fmt: skip
        return frame.from_fields(Fields(kind, data))
