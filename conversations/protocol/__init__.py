"""The WebSocket protocol, defined once: frame types, fields, error and close codes, parsing and building.

Everything that speaks ``/ws/chat/`` or ``/ws/console/`` (the consumers, the streaming task, bench/ws_client.py,
the tests; the browser through static/chat/protocol.js and docs/protocol.md) uses these names, so the protocol
cannot drift between its parts. Import the package (``from conversations import protocol``); its modules:

* ``names`` — frame types, message states, field limits;
* ``errors`` — error codes, close codes, ``ProtocolError``, ``error_frame``;
* ``envelope`` — what every incoming frame goes through (size, strict JSON, depth, clean text);
* ``fields`` — reading a frame's fields with errors that name them;
* ``registry`` — one registry per socket: frame type → frame class (``CHAT``, ``CONSOLE``);
* ``chat_frames`` / ``console_frames`` — the client frames of each socket;
* ``server_frames`` — the frames the server sends, and ``encode``.
"""

from conversations.protocol.chat_frames import *  # noqa: F403
from conversations.protocol.console_frames import *  # noqa: F403
from conversations.protocol.errors import *  # noqa: F403
from conversations.protocol.names import *  # noqa: F403
from conversations.protocol.registry import ClientFrame, Registry  # noqa: F401
from conversations.protocol.server_frames import *  # noqa: F403
