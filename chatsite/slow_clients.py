"""A bound on what a node holds for a client that stops reading.

Why: Daphne (Twisted + autobahn) queues every frame the application sends in the socket's write buffer, without
limit; a client that stops reading (a frozen tab, a stalled proxy, an attacker) made one node grow by 62 MiB and
never give it back. Under Daphne this module swaps in a WebSocket protocol whose sends check the bytes already
waiting for the client: past ``CHAT_SEND_BUFFER_LIMIT_BYTES`` (1 MiB by default) the socket is closed with
``protocol.CLOSE_TOO_SLOW`` (4008) and dropped two seconds later if the client does not even read the close, so
its buffers are freed. The chat page reconnects and resumes; nothing of the answer is lost (the frame log).
In the other direction, a frame over the transport limit gets close code 1009 with a reason (``_connectionMade``).
"""

from __future__ import annotations

import logging
import sys

from django.conf import settings

log = logging.getLogger(__name__)

DROP_AFTER_SECONDS = 2.0  # after the close frame, for a client that reads nothing any more


def buffered_bytes(transport) -> int:
    """Bytes a Twisted TCP transport still holds for its peer (its write buffers)."""
    data = getattr(transport, "dataBuffer", b"")
    return len(data) - getattr(transport, "offset", 0) + getattr(transport, "_tempDataLen", 0)


def bound_daphne_sockets() -> None:
    """Under Daphne, make every WebSocket it accepts from now on bounded (called from chatsite/asgi.py)."""
    if "daphne.server" not in sys.modules:
        return
    from daphne import ws_protocol

    if getattr(ws_protocol.WebSocketFactory.protocol, "bounded", False):
        return
    from conversations import protocol

    class BoundedWebSocketProtocol(ws_protocol.WebSocketProtocol):
        bounded = True
        too_slow = False

        def serverSend(self, content, binary=False):  # noqa: N802 - Daphne's name
            if self.too_slow:
                return  # closing: nothing more is queued for this client
            limit = settings.CHAT_SEND_BUFFER_LIMIT_BYTES
            if limit > 0 and self.transport is not None and buffered_bytes(self.transport) > limit:
                self.close_too_slow(limit)
                return
            super().serverSend(content, binary)

        def close_too_slow(self, limit: int) -> None:
            from twisted.internet import reactor

            from chatsite import metrics

            self.too_slow = True
            metrics.SLOW_CLIENTS_CLOSED.inc()
            log.warning("closing a WebSocket whose client stopped reading (%s: over %d bytes waiting)",
                        self.client_addr, limit)
            self.sendClose(code=protocol.CLOSE_TOO_SLOW, reason="Client too slow: over the send buffer limit")
            reactor.callLater(DROP_AFTER_SECONDS, self._drop)

        def _connectionMade(self) -> None:  # noqa: N802 - autobahn's name
            """autobahn's options are copied from the factory here; then one is changed: a client that breaks the
            WebSocket rules (a frame over Daphne's ``--websocket-max-message-size``, invalid UTF-8) gets a close
            frame with the code and a reason — 1009 "message too big", 1007, 1002 — instead of its TCP connection
            dropped without a word (autobahn's ``failByDrop``, on by default)."""
            super()._connectionMade()
            self.failByDrop = False

        def _drop(self) -> None:
            if self.transport is not None and self.transport.connected:
                self.transport.abortConnection()  # frees what the client never read

    ws_protocol.WebSocketFactory.protocol = BoundedWebSocketProtocol
