"""WebSocket handshakes that stay cheap under a burst: a bounded line of handshakes (``HandshakeAdmission``) and
no per-connection formatting of debug lines nobody sees.

Why the latter: autobahn (Daphne's WebSocket layer) pretty-prints its whole protocol configuration for a debug log line at
every connection, whether or not debug logging is on: 7 % of a node's CPU in a burst of handshakes
(docs/benchmarks.md "Idle sockets and handshakes"). With autobahn's log level above debug, its ``pformat`` is
replaced by one that skips the work; at debug level it formats as before.
"""

from __future__ import annotations

import pprint
import sys
from typing import Any

from django.conf import settings

NOT_FORMATTED = "(not formatted: autobahn's debug logging is off)"


def _pformat_when_debugging(obj: Any, *args: Any, **kwargs: Any) -> str:
    import txaio

    try:
        debugging = txaio.get_global_log_level() in ("debug", "trace")
    except RuntimeError:  # txaio without a framework chosen: not Daphne's autobahn, format as usual
        debugging = True
    return pprint.pformat(obj, *args, **kwargs) if debugging else NOT_FORMATTED


def cheap_handshakes() -> None:
    """Under Daphne, stop autobahn's per-connection formatting for log lines nobody sees (chatsite/asgi.py)."""
    if "daphne.server" not in sys.modules:
        return
    from autobahn.websocket import protocol

    protocol.pformat = _pformat_when_debugging


#: Past this many times the limit a handshake is refused (4013): connections Daphne had accepted before it stopped
#: accepting (Twisted takes them in batches of 100 or more) still arrive; at ~250 lookups a second, 4 × 200 waiting
#: is ~3 s, inside Daphne's 5 s connect timeout.
REFUSE_AT = 4


class HandshakeAdmission:
    """ASGI middleware (outermost on the WebSocket side): at most ``CHAT_MAX_PENDING_HANDSHAKES`` handshakes of
    this node wait for their sign-in lookups at once. At the limit the node stops accepting connections (under
    Daphne: its listening sockets stop being read) until one answers, so new ones wait in the kernel's listen
    queue, costing nothing and not yet counting against Daphne's connect timeout. A handshake that still arrives
    past ``REFUSE_AT`` times the limit is accepted and closed at once with **4013** (the application-range twin of the RFC's
    1013 "Try Again Later"), before any database work; the client reconnects after a moment.

    Why: a handshake waits for one database lookup on the thread every socket shares. Past what a node can
    look up per second, the line grew until Daphne's connect timeout (5 s) dropped handshakes whose lookups still
    ran afterwards: at 500 new sockets a second for 10 s, 4 805 of 5 000 failed and the node did nothing useful;
    refusing them instead (4013) only moved the work to refusals and retries (docs/benchmarks.md "Idle sockets
    and handshakes").
    """

    def __init__(self, app) -> None:
        self.app = app
        self.pending = 0
        self.paused: list = []  # the listening ports this node stopped reading

    async def __call__(self, scope, receive, send):
        limit = settings.CHAT_MAX_PENDING_HANDSHAKES
        if limit > 0 and self.pending >= REFUSE_AT * limit:
            await refuse_handshake(receive, send)
            return
        self.pending += 1
        if limit > 0 and self.pending >= limit:
            self._pause()
        answered = False

        def done() -> None:
            nonlocal answered
            answered = True
            self.pending -= 1
            if self.paused and self.pending < limit:
                self._resume()

        async def send_and_count(message: dict) -> None:
            if not answered and message["type"] in ("websocket.accept", "websocket.close"):
                done()
            await send(message)

        try:
            return await self.app(scope, receive, send_and_count)
        finally:
            if not answered:
                done()

    def _pause(self) -> None:
        """Stop accepting new connections on this node's listening TCP ports (Daphne's Twisted reactor)."""
        if self.paused or "twisted.internet.reactor" not in sys.modules:
            return
        from twisted.internet import reactor, tcp

        from chatsite import metrics

        self.paused = [reader for reader in reactor.getReaders() if isinstance(reader, tcp.Port)]
        for port in self.paused:
            port.stopReading()
        if self.paused:
            metrics.ACCEPT_PAUSES.inc()

    def _resume(self) -> None:
        ports, self.paused = self.paused, []
        for port in ports:
            port.startReading()


async def refuse_handshake(receive, send) -> None:
    """Accept and close at once with 4013: the client reconnects after a moment (its backoff)."""
    from chatsite import metrics
    from conversations import protocol

    metrics.HANDSHAKES_REFUSED.inc()
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    retry = settings.CHAT_BUSY_RETRY_AFTER_SECONDS
    await send({"type": "websocket.close", "code": protocol.CLOSE_TRY_AGAIN_LATER,
                "reason": f"Too many connections at once; reconnect in {retry} s."})  # fmt: skip
