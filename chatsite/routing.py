"""WebSocket routes. Origins are checked (scheme, host and port: chatsite/origins.py) before any consumer runs."""

from channels.routing import URLRouter
from channels.sessions import SessionMiddlewareStack
from django.urls import path

from chatsite.handshakes import HandshakeAdmission
from chatsite.origins import StrictOriginValidator
from conversations.auth import TokenOrSessionAuthMiddleware
from conversations.console_consumer import ConsoleConsumer
from conversations.consumers import ChatConsumer

websocket_urlpatterns: list = [
    path("ws/chat/", ChatConsumer.as_asgi()),
    path("ws/console/", ConsoleConsumer.as_asgi()),  # staff only (4403 otherwise); docs/protocol.md "Console"
]

# A bounded line of handshakes (4013 past it); the Origin check (refused: HTTP 403); then a bearer token (other
# clients) when the handshake carries one, else the session cookie (browsers).
websocket_application = HandshakeAdmission(
    StrictOriginValidator(SessionMiddlewareStack(TokenOrSessionAuthMiddleware(URLRouter(websocket_urlpatterns))))
)
