"""The demo order API: a small company API that ``make run`` starts beside Daphne, so a new user can ask "where is
my order?" and watch the assistant look it up. Its own process and port, JSON over HTTP, standard library only:

    python -m knowledge.tools.demo_api --port 8001        # http://127.0.0.1:8001/api

It behaves as a company's real API should (docs/tools.md): every request's identity signature is checked with
``knowledge.tools.signing.verify`` and the demo tools' secret (``DEMO_TOOLS_SECRET``), and it answers for the
customer it verified, never for an identifier the request names, so typing another customer's order number reads
nothing (404). Orders are kept by the customer's e-mail, the one field of the signed identity that is the same in
every database (``bootstrap_demo`` gives the demo accounts these addresses). Routes, all ``GET``:

- ``/api/orders/<order_number>``: the order (status, carrier, tracking number, delivery date);
- ``/api/refunds/<order_number>``: that order's refund (``none``, ``requested``, ``approved`` or ``paid``).

401 without a valid signature, 403 for an anonymous visitor, 404 for an order that is not the customer's. Each
payload also carries fields a customer should not see (``warehouse``, ``internal_notes``, ``delivery.depot``), so
the tools' visible fields visibly filter them. Dates are relative to today, so the demo never looks stale. One
log line per request (method, path, status, who), never a header value.

``ORDER_TOOL`` and ``REFUND_TOOL`` are the two tools that use it, as ``bootstrap_demo`` creates them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from knowledge.tools.signing import Identity, verify

logger = logging.getLogger("knowledge.tools.demo_api")

PREFIX = "/api"
DEFAULT_PORT = 8001
CURRENCY = "EUR"
MAX_BODY_BYTES = 16 * 1024
_ROUTE = re.compile(rf"{PREFIX}/(orders|refunds)/([^/]+)")


@dataclass(frozen=True)
class DemoRefund:
    state: str  # none, requested, approved, paid
    amount: str = "0.00"
    requested_days_ago: int | None = None
    paid_days_ago: int | None = None
    internal_notes: str = ""


@dataclass(frozen=True)
class DemoOrder:
    """One order; days are counted from today: ``delivery_in_days`` is negative once it was delivered."""

    number: str
    status: str  # processing, shipped, delivered
    placed_days_ago: int
    delivery_in_days: int
    carrier: str
    tracking_number: str
    items: tuple[str, ...]
    total: str
    warehouse: str
    internal_notes: str
    refund: DemoRefund


@dataclass(frozen=True)
class DemoCustomer:
    """A demo customer as the API knows them; ``username`` is the demo account ``bootstrap_demo`` signs them in as."""

    username: str
    email: str
    orders: tuple[DemoOrder, ...]


CUSTOMERS = (
    DemoCustomer("customer", "chris.miller@example.com", (
        DemoOrder("10432", "shipped", 3, 1, "DHL", "00340434161094042557", ("Kettle NW-4410",), "59.90",
                  "Hamburg, bay 12", "Asked to leave it with the neighbour at no. 14.", DemoRefund("none")),
        DemoOrder("10388", "delivered", 20, -16, "DHL", "00340434161094038812", ("Robot vacuum NW-RV7",), "249.00",
                  "Hamburg, bay 3", "Returned: charging dock faulty, RMA 5521.",
                  DemoRefund("paid", "249.00", 12, 4, "Approved by returns desk after inspection.")),
        DemoOrder("10517", "processing", 1, 6, "Spedition Nordlicht", "", ("Dishwasher NW-D900",), "649.00",
                  "Hamburg, large goods", "Delivery slot to be agreed by phone.", DemoRefund("none")),
    )),
    DemoCustomer("customer2", "alex.weber@example.com", (
        DemoOrder("20871", "processing", 0, 3, "DHL", "", ("Kettle NW-4410", "Descaler 2-pack"), "71.80",
                  "Hamburg, bay 7", "Paid by invoice; credit check passed.", DemoRefund("none")),
        DemoOrder("20655", "delivered", 15, -9, "DHL", "00340434161094065590", ("Toaster NW-T2",), "34.99",
                  "Hamburg, bay 12", "Return received, item unused.",
                  DemoRefund("approved", "34.99", 5, None, "Payout in the next batch.")),
        DemoOrder("20714", "shipped", 4, 2, "Spedition Nordlicht", "NL-7719-2043", ("Fridge NW-F60",), "899.00",
                  "Hamburg, large goods", "Side panel dented in the photo at dispatch.",
                  DemoRefund("requested", "50.00", 1, None, "Goodwill refund for the dent, awaiting approval.")),
    )),
)  # fmt: skip

_ORDERS_BY_EMAIL = {customer.email: {order.number: order for order in customer.orders} for customer in CUSTOMERS}


def _day(today: datetime.date, offset: int) -> str:
    return (today + datetime.timedelta(days=offset)).isoformat()


def order_payload(order: DemoOrder, today: datetime.date) -> dict[str, Any]:
    """The order as the API answers it. ``delivery.date`` is the expected day, or the day it came once delivered
    (``status`` says which), so one answer template fits every state; no tracking number before it ships."""
    payload: dict[str, Any] = {
        "order_number": order.number,
        "status": order.status,
        "placed_on": _day(today, -order.placed_days_ago),
        "items": list(order.items),
        "total": order.total,
        "currency": CURRENCY,
        "carrier": order.carrier,
        "delivery": {"date": _day(today, order.delivery_in_days), "depot": f"{order.carrier} depot Hamburg-Billbrook"},
        "warehouse": order.warehouse,
        "internal_notes": order.internal_notes,
    }
    if order.tracking_number:
        payload["tracking_number"] = order.tracking_number
    return payload


def refund_payload(order: DemoOrder, today: datetime.date) -> dict[str, Any]:
    """The order's refund: ``state`` and ``amount`` always (``0.00`` when there is none), the days when they
    happened."""
    refund = order.refund
    payload: dict[str, Any] = {
        "order_number": order.number,
        "state": refund.state,
        "amount": refund.amount,
        "currency": CURRENCY,
        "internal_notes": refund.internal_notes,
    }
    if refund.requested_days_ago is not None:
        payload["requested_on"] = _day(today, -refund.requested_days_ago)
    if refund.paid_days_ago is not None:
        payload["paid_on"] = _day(today, -refund.paid_days_ago)
    return payload


def answer(method: str, path: str, identity: Identity | None) -> tuple[int, dict[str, Any]]:
    """(status, JSON) for a request whose signature was checked: ``identity`` is None when it was not valid."""
    if identity is None:
        return 401, {"error": "the identity signature is missing, wrong or stale"}
    if identity.kind != "user":
        return 403, {"error": "orders are shown to signed-in customers only"}
    route = _ROUTE.fullmatch(urlsplit(path).path)
    if route is None:
        return 404, {"error": "no such route"}
    if method != "GET":
        return 405, {"error": "only GET"}
    order = _ORDERS_BY_EMAIL.get(identity.email.strip().lower(), {}).get(unquote(route[2]))
    if order is None:
        return 404, {"error": "no such order"}  # also for another customer's order: it is not theirs to see
    today = datetime.date.today()
    return 200, order_payload(order, today) if route[1] == "orders" else refund_payload(order, today)


class DemoOrderAPI(ThreadingHTTPServer):
    """The server; ``DemoOrderAPI(("127.0.0.1", 0), secret).serve_forever()`` in a thread works in tests too."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], secret: str) -> None:
        self.secret = secret
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}{PREFIX}"


class _Handler(BaseHTTPRequestHandler):
    server: DemoOrderAPI
    server_version = "NorthwindDemoAPI/1"

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _handle(self) -> None:
        length = self.headers.get("Content-Length") or "0"
        if not length.isdigit() or int(length) > MAX_BODY_BYTES:
            self._reply(413, {"error": "body too large"}, None)
            return
        body = self.rfile.read(int(length))
        identity = verify(self.server.secret, self.command, self.path, body, self.headers)
        self._reply(*answer(self.command, self.path, identity), identity)

    def _reply(self, status: int, payload: dict[str, Any], identity: Identity | None) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)
        who = "unsigned" if identity is None else f"{identity.kind} {identity.email or identity.user_id}"
        logger.info("%s %r %d %s", self.command, self.path[:200], status, who)

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per request, from _reply; http.server's own would repeat it


def _default_secret() -> str:
    """``DEMO_TOOLS_SECRET`` as the site reads it (chatsite/settings.py), so both sides share one value."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
    from django.conf import settings

    return settings.DEMO_TOOLS_SECRET


def main(argv: Sequence[str] | None = None) -> None:
    """Serve until interrupted. The first line on stdout is the base URL (``--port 0`` picks a free port)."""
    parser = argparse.ArgumentParser(description="The demo order API that `make run` starts beside Daphne.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--secret", default=None, help="the tools' signing secret (default: DEMO_TOOLS_SECRET)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s demo-api %(message)s")
    try:
        server = DemoOrderAPI((args.host, args.port), args.secret or _default_secret())
    except OSError as exc:  # most often: the port is taken (another `make run`); say so in one line
        raise SystemExit(f"Demo order API: cannot listen on {args.host}:{args.port} ({exc.strerror}).") from None
    print(f"Demo order API on {server.url}", flush=True)
    for customer in CUSTOMERS:
        numbers = ", ".join(order.number for order in customer.orders)
        print(f"  signed in as {customer.username} ({customer.email}): orders {numbers}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


# The two tools that use this API, as bootstrap_demo creates them (with the base URL and secret of the setting).
ORDER_NUMBER = {
    "name": "order_number",
    "type": "string",
    "pattern": r"\d{5}",
    "description": "The customer's five-digit order number, e.g. 10432.",
}
ORDER_TOOL: dict[str, Any] = {
    "name": "Order status",
    "description": (
        "Looks up one of the signed-in customer's own orders by its five-digit order number: its status "
        "(processing, shipped or delivered), the carrier, the tracking number and the delivery date (expected, or "
        "the day it came). Use it when customers ask where their order or parcel is or when it will arrive; the "
        "articles answer general questions about shipping and tracking."
    ),
    "examples": "\n".join(
        [
            "where is my order?",
            "when will my parcel arrive?",
            "has my order shipped yet?",
            "has my order 10432 shipped yet?",
            "what's the status of order 10517?",
            "my package still hasn't come, where is it?",
            "Wo ist meine Bestellung?",
            "Wann kommt mein Paket an?",
            "Ist mein Paket schon unterwegs?",
            "Ist meine Bestellung 10432 schon verschickt?",
            "Wie ist der Status von Bestellung 10517?",
            "Où est ma commande ?",
            "Quand mon colis va-t-il arriver ?",
            "Ma commande 10432 a-t-elle été expédiée ?",
            "Quel est le statut de la commande 10517 ?",
            "¿Dónde está mi pedido?",
            "¿Cuándo llega mi paquete?",
            "¿Ya enviaron mi pedido 10432?",
            "¿Cuál es el estado del pedido 10517?",
            "我的订单到哪了？",
            "我的包裹什么时候到？",
            "我的订单10432发货了吗？",
            "订单10517现在是什么状态？",
        ]
    ),
    "method": "GET",
    "path_template": "/orders/{order_number}",
    "parameters": [
        {
            **ORDER_NUMBER,
            "ask": {
                "en": "What is your order number? It has five digits, e.g. 10432.",
                "de": "Wie lautet Ihre Bestellnummer? Sie hat fünf Ziffern, z. B. 10432.",
                "fr": "Quel est votre numéro de commande ? Il a cinq chiffres, par exemple 10432.",
                "es": "¿Cuál es su número de pedido? Tiene cinco dígitos, por ejemplo 10432.",
                "zh-hans": "您的订单号是多少？订单号为五位数字，例如 10432。",
            },
        }
    ],
    "timeout_seconds": 5.0,
    "visible_fields": ["order_number", "status", "placed_on", "carrier", "tracking_number", "delivery.date"],
    "answer_templates": {
        "en": "Order {order_number}: {status}, carrier {carrier}, delivery date {delivery.date}.",
        "de": "Bestellung {order_number}: {status}, Versand mit {carrier}, Liefertermin {delivery.date}.",
        "fr": "Commande {order_number} : {status}, transporteur {carrier}, date de livraison {delivery.date}.",
        "es": "Pedido {order_number}: {status}, transportista {carrier}, fecha de entrega {delivery.date}.",
        "zh-hans": "订单 {order_number}：{status}，承运商 {carrier}，送达日期 {delivery.date}。",
    },
}
REFUND_TOOL: dict[str, Any] = {
    "name": "Refund status",
    "description": (
        "Looks up the refund of one of the signed-in customer's own orders by its five-digit order number: its "
        "state (none, requested, approved or paid), the amount and the day it was paid. Use it when customers ask "
        "whether their refund or money back has come through; the articles answer questions about the refund "
        "policy and how to return an item."
    ),
    "examples": "\n".join(
        [
            "has my refund been paid?",
            "is my refund through yet?",
            "has the money for my return reached my account yet?",
            "I sent my order back, has my refund come through?",
            "did you refund order 10388 yet?",
            "what's happening with the refund for order 20655?",
            "Wurde meine Erstattung schon ausgezahlt?",
            "Ist meine Rückerstattung schon da?",
            "Ist das Geld für meine Rücksendung schon überwiesen?",
            "Wann bekomme ich mein Geld für Bestellung 10388 zurück?",
            "Mon remboursement a-t-il été versé ?",
            "L'argent de mon retour est-il arrivé sur mon compte ?",
            "Quand serai-je remboursé pour la commande 10388 ?",
            "¿Ya me devolvieron el dinero?",
            "¿Ya llegó a mi cuenta el dinero de mi devolución?",
            "¿Cuándo me devuelven el dinero del pedido 10388?",
            "钱退到我卡上了吗？",
            "退款已经打到我账户了吗？",
            "订单10388的钱什么时候退给我？",
        ]
    ),
    "method": "GET",
    "path_template": "/refunds/{order_number}",
    "parameters": [
        {
            **ORDER_NUMBER,
            "ask": {
                "en": "Which order is the refund for? Please tell me its five-digit order number.",
                "de": "Für welche Bestellung ist die Erstattung? Bitte nennen Sie die fünfstellige Bestellnummer.",
                "fr": "Pour quelle commande est le remboursement ? Indiquez son numéro à cinq chiffres.",
                "es": "¿De qué pedido es el reembolso? Indíqueme su número de pedido de cinco dígitos.",
                "zh-hans": "这笔退款对应哪个订单？请告诉我五位数的订单号。",
            },
        }
    ],
    "timeout_seconds": 5.0,
    "visible_fields": ["order_number", "state", "amount", "currency", "requested_on", "paid_on"],
    "answer_templates": {
        "en": "Refund for order {order_number}: {state}, {amount} {currency}.",
        "de": "Erstattung für Bestellung {order_number}: {state}, {amount} {currency}.",
        "fr": "Remboursement de la commande {order_number} : {state}, {amount} {currency}.",
        "es": "Reembolso del pedido {order_number}: {state}, {amount} {currency}.",
        "zh-hans": "订单 {order_number} 的退款：{state}，{amount} {currency}。",
    },
}
DEMO_TOOLS = (ORDER_TOOL, REFUND_TOOL)


if __name__ == "__main__":
    main()
