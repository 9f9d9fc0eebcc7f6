"""ASGI entry point: HTTP through Django, WebSockets through Channels."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")

# Initialise Django (apps, models) before importing anything that uses the ORM.
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402

from chatsite.handshakes import cheap_handshakes  # noqa: E402
from chatsite.routing import websocket_application  # noqa: E402
from chatsite.slow_clients import bound_daphne_sockets  # noqa: E402
from conversations.streaming import start_node_when_serving  # noqa: E402

# Lease renewal and the reaper of answers left by dead nodes run from the moment Daphne serves, not only
# after a customer's first question (conversations/streaming/node.py, Node).
start_node_when_serving()
# A client that stops reading is closed once CHAT_SEND_BUFFER_LIMIT_BYTES wait for it (chatsite/slow_clients.py).
bound_daphne_sockets()
# autobahn's per-connection debug formatting only when its debug logging is on (chatsite/handshakes.py).
cheap_handshakes()

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": websocket_application,
    }
)
