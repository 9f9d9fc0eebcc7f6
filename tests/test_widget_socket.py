"""The widget's socket (issue 20; conversations/auth.py, conversations/access.py, conversations/visitors.py): a real
Daphne node, visitors made as the frame makes them (the frame page with a host page's Referer, then its ticket
exchanged for a visitor token), and the token offered as the WebSocket subprotocol ``visitor.<token>`` beside
``chat``. What the widget's visitors may do there, and what they may not: use a forged, expired or stale token, act
once their site is off, see another visitor's or the chat page's conversations, ask past their address's limit.
The HTTP side is tests/test_widget_visitors.py."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid

import jwt
import pytest
import requests
from websockets.asyncio.client import connect as ws_connect

from conversations import protocol, visitors
from conversations.models import Conversation, Message, Site
from knowledge.models import KnowledgeBase
from tests.test_revocation import assert_still_open, close_of
from tests.test_widget_visitors import LOCAL, REDIS_URL, SHOP, away_from_window_edge
from tests.widget_support import make_site

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

FAST = {"ANSWER_GENERATOR": "extractive", "ANSWER_WORDS_PER_SECOND": "0"}


@pytest.fixture
def site(transactional_db) -> Site:
    """The demo site, answering from "Northwind help" (its first knowledge base, not the default one)."""
    first = KnowledgeBase.objects.create(name="Northwind help", slug="northwind-help")
    site = make_site(first, f"{SHOP}\n{LOCAL}")
    site.knowledge_bases.add(KnowledgeBase.objects.create(name="Northwind internal", slug="northwind-internal"))
    return site


def visitor_of(node, referer: str = f"{SHOP}/delivery/", **body) -> dict:
    """A visitor as the frame makes one: the frame page for a host page, its ticket exchanged for a token."""
    page = requests.get(f"{node.url}/widget/demo/", headers={"Referer": referer}, timeout=30)
    page.raise_for_status()
    config = json.loads(re.search(r'<script id="widget-config" type="application/json">(.*?)</script>', page.text)[1])
    answer = requests.post(node.url + config["visitorUrl"], json={"ticket": config["ticket"], **body}, timeout=30)
    answer.raise_for_status()
    return answer.json()


async def widget_socket(node, token: str, **options):
    """The frame's socket: on the support site's own origin, the token offered as a subprotocol, no cookie."""
    url = node.url.replace("http://", "ws://") + "/ws/chat/"
    subprotocols = [protocol.CHAT_SUBPROTOCOL, protocol.VISITOR_TOKEN_SUBPROTOCOL_PREFIX + token]
    return await ws_connect(url, subprotocols=subprotocols, origin=node.url, **options)


async def reply(ws, frame: dict, kinds: tuple[str, ...] = ("ack", "error", "conversation")) -> dict:
    """Send ``frame`` and return the first frame of one of ``kinds`` that comes back."""
    await ws.send(json.dumps(frame))
    async with asyncio.timeout(30):
        while (got := json.loads(await ws.recv()))["type"] not in kinds:
            pass
    return got


def ask(text: str, **fields) -> dict:
    return {"type": "ask", "id": str(uuid.uuid4()), "text": text, **fields}


async def refused(node, token: str) -> None:
    """The handshake is answered (``chat``), then told ``unauthenticated`` and closed with 4401."""
    ws = await widget_socket(node, token)
    code, frames = await close_of(ws, 10)
    assert code == protocol.CLOSE_UNAUTHENTICATED, (code, frames)
    assert frames and frames[0]["type"] == "error" and frames[0]["code"] == protocol.UNAUTHENTICATED, frames


async def test_a_visitor_token_offered_as_subprotocol_chats_on_its_site_page_and_knowledge_base(daphne_server, site):
    node = daphne_server(**FAST)
    visitor = await asyncio.to_thread(visitor_of, node, page=f"{SHOP}/delivery/")
    ws = await widget_socket(node, visitor["token"])
    assert ws.subprotocol == protocol.CHAT_SUBPROTOCOL

    acked = await reply(ws, ask("Where is my parcel?"))
    assert acked["type"] == "ack", acked
    async with asyncio.timeout(60):  # answered (from an empty knowledge base: no articles, the offer of a person)
        while (frame := json.loads(await ws.recv())).get("message") != acked["message"] or frame["type"] != "final":
            assert frame["type"] != "error", frame
    conversation = await Conversation.objects.select_related("knowledge_base").aget(pk=acked["conversation"])
    assert (conversation.site_id, conversation.page_url) == (site.pk, f"{SHOP}/delivery/")
    assert conversation.knowledge_base.slug == "northwind-help"
    key = visitors.read_visitor_token(visitor["token"]).session_key
    assert (conversation.owner_id, conversation.anonymous_session_key) == (None, key)
    answer = await Message.objects.aget(pk=acked["message"])
    assert answer.state == Message.State.COMPLETE and answer.text

    # The next visit, from another page: the same visitor, the page the question comes from now.
    later = await asyncio.to_thread(visitor_of, node, page=f"{SHOP}/boots/", token=visitor["token"])
    assert later["conversation"] == acked["conversation"]
    again = await widget_socket(node, later["token"])
    acked = await reply(again, ask("And the boots?", conversation=acked["conversation"]))
    assert acked["type"] == "ack", acked
    assert (await Conversation.objects.aget(pk=acked["conversation"])).page_url == f"{SHOP}/boots/"
    await ws.close()
    await again.close()


async def test_a_forged_expired_or_stale_token_is_refused(daphne_server, site, settings):
    node = daphne_server(**FAST)
    shop = (await asyncio.to_thread(visitor_of, node))["token"]
    local = (await asyncio.to_thread(visitor_of, node, referer=f"{LOCAL}/account/"))["token"]
    claims = {"typ": visitors.VISITOR, "site": site.pk, "org": SHOP, "page": "", "sub": "visitor-" + "0" * 32}
    forged = jwt.encode({**claims, "exp": int(time.time()) + 600}, "not our key, but long enough: 0123456789", "HS256")
    settings.WIDGET_VISITOR_TOKEN_DAYS = -1
    expired = visitors.visitor_token(visitors.VisitorToken(visitors.Visitor(site.pk, SHOP), session_key=claims["sub"]))
    with pytest.raises(visitors.Refused, match="expired"):  # expired, and nothing else
        visitors.read_visitor_token(expired)
    ticket = visitors.embed_ticket(site, SHOP)  # a ticket is no visitor token
    for token in (forged, expired, ticket, "garbage", shop[:-2]):
        await refused(node, token)

    site.allowed_origins = SHOP  # the host origin removed: its tokens go with it
    await site.asave()
    await refused(node, local)
    kept = await widget_socket(node, shop)  # the other origin's still connect
    await assert_still_open(kept)
    await kept.close()
    site.enabled = False
    await site.asave()
    await refused(node, shop)


async def test_a_site_switched_off_or_an_origin_removed_closes_an_open_socket_at_its_next_action(daphne_server, site):
    node = daphne_server(**FAST)
    shop_visitor = await asyncio.to_thread(visitor_of, node)
    shop = await widget_socket(node, shop_visitor["token"])
    local = await widget_socket(node, (await asyncio.to_thread(visitor_of, node, referer=f"{LOCAL}/"))["token"])
    own = await Conversation.objects.acreate(
        knowledge_base=await KnowledgeBase.objects.aget(slug="northwind-help"), site=site,
        anonymous_session_key=visitors.read_visitor_token(shop_visitor["token"]).session_key,
    )  # fmt: skip
    join = {"type": "join", "conversation": str(own.pk)}

    async def closed_by(ws, frame: dict) -> None:
        await ws.send(json.dumps(frame))
        code, frames = await close_of(ws, 10)
        assert code == protocol.CLOSE_REVOKED, (code, frames)  # why: the error's reason (Daphne sends no close reason)
        assert len(frames) == 1 and frames[0]["type"] == "error", frames
        assert (frames[0]["code"], frames[0]["reason"]) == (protocol.UNAUTHENTICATED, protocol.REVOKED_SITE_CLOSED)

    site.allowed_origins = SHOP
    await site.asave()
    await closed_by(local, ask("Still there?"))
    assert not await Message.objects.aexists()  # nothing saved
    assert (await reply(shop, join))["type"] == "conversation"  # the listed origin's socket works on

    site.enabled = False
    await site.asave()
    await closed_by(shop, join)


async def test_one_visitor_cannot_open_another_visitors_conversation(daphne_server, site):
    node = daphne_server(**FAST)
    first = await widget_socket(node, (await asyncio.to_thread(visitor_of, node))["token"])
    second = await widget_socket(node, (await asyncio.to_thread(visitor_of, node))["token"])
    acked = await reply(first, ask("My address is 12 Elm Street"))
    conversation, message = acked["conversation"], acked["message"]

    assert (await reply(first, {"type": "join", "conversation": conversation}))["type"] == "conversation"
    for frame in (
        {"type": "join", "conversation": conversation},
        {"type": "resume", "message": message, "after": 0},
        ask("And mine?", conversation=conversation),
        {"type": "handoff", "conversation": conversation},
        {"type": "feedback", "message": message, "rating": 1},
    ):
        got = await reply(second, frame, kinds=("error", "ack", "conversation", "token", "final", "feedback"))
        assert got["type"] == "error" and got["code"] == protocol.NOT_FOUND, (frame, got)
    assert await Message.objects.filter(conversation_id=conversation, role=Message.Role.USER).acount() == 1
    assert (await Conversation.objects.aget(pk=conversation)).status == Conversation.Status.BOT


async def test_the_chat_pages_anonymous_visitors_and_the_widgets_never_see_each_others_conversations(
    daphne_server, site
):
    node = daphne_server(CHAT_ALLOW_ANONYMOUS="true", **FAST)
    page = await asyncio.to_thread(requests.get, node.url + "/", timeout=30)  # the chat page makes the session
    session = page.cookies["sessionid"]
    on_page = await Conversation.objects.acreate(
        knowledge_base=await KnowledgeBase.objects.aget(slug="northwind-help"), anonymous_session_key=session
    )
    chat_page = await ws_connect(node.url.replace("http://", "ws://") + "/ws/chat/", origin=node.url,
                                 additional_headers={"Cookie": f"sessionid={session}"})  # fmt: skip
    # The widget's socket, even with the chat page's cookie, is its visitor's.
    widget = await widget_socket(node, (await asyncio.to_thread(visitor_of, node))["token"],
                                 additional_headers={"Cookie": f"sessionid={session}"})  # fmt: skip
    in_widget = (await reply(widget, ask("Where is my parcel?")))["conversation"]

    assert (await reply(chat_page, {"type": "join", "conversation": str(on_page.pk)}))["type"] == "conversation"
    assert (await reply(widget, {"type": "join", "conversation": in_widget}))["type"] == "conversation"
    for ws, other in ((chat_page, in_widget), (widget, str(on_page.pk))):
        got = await reply(ws, {"type": "join", "conversation": other})
        assert got["type"] == "error" and got["code"] == protocol.NOT_FOUND, got


async def test_widget_questions_past_the_addresss_limit_are_refused_and_not_saved(daphne_server, site):
    node = daphne_server(REDIS_URL=REDIS_URL, CHANNEL_PREFIX=f"widget-{uuid.uuid4().hex[:10]}",
                         WIDGET_QUESTIONS_PER_IP_PER_MINUTE="2", **FAST)  # fmt: skip
    # Two visitors from one address (127.0.0.1): one count.
    first = await widget_socket(node, (await asyncio.to_thread(visitor_of, node))["token"])
    second = await widget_socket(node, (await asyncio.to_thread(visitor_of, node))["token"])
    await asyncio.to_thread(away_from_window_edge, 60)
    assert (await reply(first, ask("Where is my parcel?")))["type"] == "ack"
    assert (await reply(second, ask("Do you ship to Norway?")))["type"] == "ack"
    for ws in (first, second):
        frame = ask("And returns?")
        got = await reply(ws, frame)
        assert got["type"] == "error" and got["code"] == protocol.RATE_LIMITED, got
        assert got["id"] == frame["id"] and got["retry_after"] == 60
    assert await Message.objects.filter(role=Message.Role.USER).acount() == 2
    assert not await Message.objects.filter(text="And returns?").aexists()
