"""The demo host: a small "company website" on another origin with the widget's tag on its pages, so anyone sees
the widget working cross-origin in one command (``make run`` starts it beside Daphne). Standard library only, as a
company's own server would be; it signs its signed-in customer as docs/widget.md tells companies to:

    python -m conversations.demo_host --port 8002 --support http://127.0.0.1:8000 --site demo

Pages: ``/`` (a visitor), ``/delivery/`` (another page: the chat follows the visitor there) and ``/account/`` (the
shop's signed-in customer Chris Miller, whose orders the demo order API knows: the assistant can look them up).
"""

from __future__ import annotations

import argparse
import html
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from conversations.identity_signing import sign

DEFAULT_PORT = 8002
#: The demo site's identity secret when DEMO_SITE_SECRET is not set (bootstrap_demo gives the demo site the same).
DEV_SECRET = "demo-site-identity-secret-for-local-development-only"


def default_secret() -> str:
    return os.environ.get("DEMO_SITE_SECRET") or DEV_SECRET


@dataclass(frozen=True)
class Customer:
    id: str
    name: str
    email: str


#: The shop's signed-in customer on /account/ (the demo order API keeps Chris's orders under this address).
CHRIS = Customer(id="cust-1001", name="Chris Miller", email="chris.miller@example.com")

PAGES = {
    "/": ("Northwind Outfitters", "Jackets, boots and tents for every season. Questions? Ask our assistant below."),
    "/delivery/": ("Delivery", "We ship within 2 working days. The chat stays with you on every page."),
    "/account/": ("Your account", "Signed in as Chris Miller. Ask the assistant where your order 10432 is."),
}

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · Northwind Outfitters</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;margin:0;color:#222}}header{{background:#1b4332;color:#fff;
padding:1rem 1.5rem}}nav a{{color:#fff;margin-right:1rem}}main{{padding:1.5rem;max-width:40rem}}
button{{font:inherit}}</style></head>
<body><header><strong>Northwind Outfitters</strong>
<nav><a href="/">Home</a><a href="/delivery/">Delivery</a><a href="/account/">Account</a></nav></header>
<main><h1>{title}</h1><p>{text}</p></main>
<script src="{support}/widget.js" data-site="{site}" data-color="#1b4332" async{identity}></script>
</body></html>
"""


def page(path: str, support: str, site: str, secret: str, now: float | None = None) -> str | None:
    """A page of the demo host, or None for one it does not have."""
    if path not in PAGES:
        return None
    title, text = PAGES[path]
    identity = ""
    if path == "/account/":  # the shop's server vouches for its signed-in customer
        stamp = int(time.time() if now is None else now)
        signature = sign(secret, stamp, CHRIS.id, CHRIS.email, CHRIS.name)
        attributes = {"customer-id": CHRIS.id, "customer-name": CHRIS.name, "customer-email": CHRIS.email,
                      "customer-timestamp": str(stamp), "customer-signature": signature}  # fmt: skip
        identity = "".join(f' data-{name}="{html.escape(value)}"' for name, value in attributes.items())
    return _PAGE.format(title=html.escape(title), text=html.escape(text), support=html.escape(support.rstrip("/")),
                        site=html.escape(site), identity=identity)  # fmt: skip


def handler(support: str, site: str, secret: str) -> type[BaseHTTPRequestHandler]:
    """The request handler of a demo host in front of the support site at ``support``."""

    class DemoHost(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/favicon.ico":
                self.send_response(204)
                self.end_headers()
                return
            body = page(self.path.split("?", 1)[0], support, site, secret)
            if body is None:
                self.send_error(404)
                return
            data = body.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return DemoHost


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A demo company website with the chat widget on it.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--support", default="http://127.0.0.1:8000", help="the support site's base URL")
    parser.add_argument("--site", default="demo", help="the widget Site's slug")
    args = parser.parse_args(argv)
    try:
        server = ThreadingHTTPServer((args.host, args.port), handler(args.support, args.site, default_secret()))
    except OSError as exc:
        raise SystemExit(f"Demo host: cannot listen on {args.host}:{args.port} ({exc.strerror}).") from None
    # Named localhost, not 127.0.0.1: the support site is on 127.0.0.1, and the demo site must be another site, as a
    # company's is (the demo widget site allows http://localhost:<port>, DEMO_HOST_URL).
    shown = "localhost" if args.host in ("127.0.0.1", "localhost") else args.host
    print(f"Demo company site with the chat widget on http://{shown}:{server.server_address[1]}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
