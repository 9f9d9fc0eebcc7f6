"""A real HTTP server on 127.0.0.1, on a free port, served from a daemon thread: the base of the stand-ins for
services the site calls (an OpenAI-compatible endpoint, a company's API), so each only says how it answers.

    class Standin(LocalHTTPServer):
        def __init__(self) -> None:
            super().__init__(handler_class)   # a BaseHTTPRequestHandler subclass

    with Standin() as standin:
        ... standin.port ...
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self


class LocalHTTPServer:
    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True  # a request still being answered never holds up stop()
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._server.serve_forever, name=type(self).__name__, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
