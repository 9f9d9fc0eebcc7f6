"""WebSocket routes. Origins are checked against ALLOWED_HOSTS before any consumer runs."""

from channels.auth import AuthMiddlewareStack
from channels.routing import URLRouter
from channels.security.websocket import AllowedHostsOriginValidator
from django.urls import path

from conversations.auth import BearerTokenMiddleware
from conversations.console_consumer import ConsoleConsumer
from conversations.consumers import ChatConsumer

websocket_urlpatterns: list = [
    path("ws/chat/", ChatConsumer.as_asgi()),
    path("ws/console/", ConsoleConsumer.as_asgi()),  # staff only (4403 otherwise); docs/protocol.md "Console"
]

# Session cookie (browsers) first; a valid `Authorization: Bearer` token (other clients) overrides it.
websocket_application = AllowedHostsOriginValidator(
    AuthMiddlewareStack(BearerTokenMiddleware(URLRouter(websocket_urlpatterns)))
)
