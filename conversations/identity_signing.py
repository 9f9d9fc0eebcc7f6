"""How a host site's server signs its signed-in customer for the widget, and how we check it (docs/widget.md
"Verified customers"): the hex HMAC-SHA256, with the site's identity secret, of the timestamp, id, e-mail and name
joined by newlines. No Django here: the demo host (conversations/demo_host.py) signs with it as a company's server
would, and conversations/visitors.py verifies with it.
"""

from __future__ import annotations

import hashlib
import hmac


def signed_text(timestamp: int, customer_id: str, email: str, name: str) -> str:
    """What is signed; none of the fields may hold a newline (the widget refuses such an identity)."""
    return f"{timestamp}\n{customer_id}\n{email}\n{name}"


def sign(secret: str, timestamp: int, customer_id: str, email: str, name: str) -> str:
    """The signature the host site's server puts in the page's ``data-customer-signature``."""
    text = signed_text(timestamp, customer_id, email, name)
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()
