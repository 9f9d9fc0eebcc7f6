"""Tools end to end (issue 19): a real Daphne node, the demo order API `make run` starts as a real process, the demo
tools as bootstrap_demo defines them, and a customer's real chat socket; the offline answerer and the LLM stand-in.

The company's API answers only for the identity the node signs, so a customer typing another customer's order
number reads nothing; a missing number is asked for and taken from the next message; the tool's frames are in the
frame log, so a resume replays them.
"""

from __future__ import annotations

import asyncio
from importlib import import_module

import pytest
from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import RequestFactory
from websockets.asyncio.client import connect as ws_connect

from conversations.access import ensure_session
from conversations.models import Message
from knowledge.models import KnowledgeBase, Tool
from knowledge.tools import demo_api
from tests.demo_api_process import SECRET, running_demo_api
from tests.llm_standin import LLMStandin
from tests.node_client import Client, get_token, text_of
from tests.tool_api import SECRET as TOOL_API_SECRET
from tests.tool_api import ToolAPI

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PASSWORD = "pw-tools-e2e-7"
#: The faults test changes a tool between questions: the node reads the tools for every answer.
NODE = {"TOOLS_ALLOW_PRIVATE_ADDRESSES": "1", "ANSWER_WORDS_PER_SECOND": "0", "CHAT_RATE_LIMIT": "0",
        "TOOLS_CACHE_SECONDS": "0"}  # fmt: skip


@pytest.fixture
def api(tmp_path):
    with running_demo_api(tmp_path, SECRET) as running:
        yield running


@pytest.fixture
def customers(demo_kb, api):
    """The two demo customers (the API knows them by e-mail) and the demo tools pointed at the running API."""
    User = get_user_model()
    chris = User.objects.create_user("chris", "chris.miller@example.com", PASSWORD, first_name="Chris")
    alex = User.objects.create_user("alex", "alex.weber@example.com", PASSWORD, first_name="Alex")
    kb = KnowledgeBase.objects.get(name=settings.DEFAULT_KNOWLEDGE_BASE)
    for definition in (demo_api.ORDER_TOOL, demo_api.REFUND_TOOL):
        tool = Tool(**definition, base_url=api.url, secret=SECRET)
        tool.full_clean()
        tool.save()
        tool.knowledge_bases.add(kb)
    return chris, alex


async def signed_in(node, username: str) -> Client:
    return await Client.open(node, await asyncio.to_thread(get_token, node, username, PASSWORD))


async def answer_to(client: Client, question: str, **fields) -> list[dict]:
    ack = await client.ask(question, **fields)
    return await client.until_final(ack["message"])


def stored(message_id: str) -> Message:
    return Message.objects.get(pk=message_id)


async def test_a_customer_asks_where_their_order_is_and_gets_it_cited(daphne_server, customers):
    node = daphne_server(**NODE)
    chris = await signed_in(node, "chris")

    frames = await answer_to(chris, "Where is my order 10432?")

    statuses = [f["text"] for f in frames if f["type"] == "status" and f["stage"] == "tool"]
    assert statuses == ["Checking Order status: 10432…", "Found it"]
    (card,) = [f["tool"] for f in frames if f["type"] == "tool_result"]
    fields = {item["name"]: item["value"] for item in card["fields"]}
    assert card["ok"] and card["n"] == 1 and fields["status"] == "shipped" and fields["carrier"] == "DHL"
    assert "warehouse" not in fields and "internal_notes" not in fields
    final = frames[-1]
    assert text_of(frames).startswith("Order 10432: shipped, carrier DHL, delivery date ")
    assert final["citations"] == [1] and 'href="#source-1"' in final["html"] and not final["offer_handoff"]
    # The frame log holds the tool's frames: a resume (another tab, a reconnect) replays them.
    await chris.send({"type": "resume", "message": final["message"], "after": 0})
    replayed = [await chris.stream_of(final["message"]) for _ in frames]
    assert [f["type"] for f in replayed] == [f["type"] for f in frames]
    message = await database_sync_to_async(stored)(final["message"])
    assert message.trace["tools"][0]["outcome"] == "ok" and message.trace["tools"][0]["status"] == 200
    assert message.trace["tools"][0]["request"]["headers"]["X-Support-Signature"] == "•••"
    assert SECRET not in repr(message.trace) and SECRET not in repr(message.frames)
    await chris.close()


async def test_another_customers_order_is_refused_by_the_api_because_of_the_signed_identity(
    daphne_server, customers, api
):
    node = daphne_server(**NODE)
    alex = await signed_in(node, "alex")

    frames = await answer_to(alex, "Where is my order 10432?")  # Chris's order

    assert text_of(frames) == "I could not check this right now. Would you like to talk to a person?"
    assert frames[-1]["offer_handoff"] and frames[-1]["citations"] == []
    assert "shipped" not in repr(frames)
    assert "GET '/api/orders/10432' 404 user alex.weber@example.com" in api.log.read_text()
    await alex.close()


async def test_a_missing_order_number_is_asked_for_and_taken_from_the_next_message(daphne_server, customers):
    node = daphne_server(**NODE)
    chris = await signed_in(node, "chris")

    first = await answer_to(chris, "where is my order?")
    assert text_of(first) == "What is your order number? It has five digits, e.g. 10432."
    ack = await chris.ask("10517", conversation=await conversation_of(first[-1]["message"]))
    second = await chris.until_final(ack["message"])
    assert text_of(second).startswith("Order 10517: processing, carrier Spedition Nordlicht")
    assert second[-1]["citations"] == [1]
    # In German, asked in German.
    german = await answer_to(chris, "Wo ist meine Bestellung?")
    assert text_of(german).startswith("Wie lautet Ihre Bestellnummer?")
    await chris.close()


async def conversation_of(message_id: str) -> str:
    return str((await database_sync_to_async(stored)(message_id)).conversation_id)


async def test_the_llm_calls_the_demo_tool_through_function_calling(daphne_server, customers):
    with LLMStandin(tool_calls=[{"name": "Order_status", "arguments": '{"order_number": "20871"}'}],
                    tool_reply="Your order {order_number} is {status} [{cite_as}].") as llm:  # fmt: skip
        node = daphne_server(**NODE, ANSWER_GENERATOR="openai", LLM_BASE_URL=llm.base_url, LLM_MODEL="standin-model",
                             LLM_API_KEY="sk-test")  # fmt: skip
        alex = await signed_in(node, "alex")

        frames = await answer_to(alex, "Is my order 20871 on its way?")

        (card,) = [f["tool"] for f in frames if f["type"] == "tool_result"]
        assert card["ok"]
        assert text_of(frames) == f"Your order 20871 is processing [{card['n']}]."
        assert card["n"] in frames[-1]["citations"]
        assert [t["function"]["name"] for t in llm.streamed_requests()[0]["tools"]] == ["Order_status", "Refund_status"]
        await alex.close()


async def test_a_failing_or_refused_api_gets_could_not_check_and_a_person(daphne_server, customers):
    """Timeout, 500, malformed JSON, an oversized body, a redirect off the host: each a plain answer; and an API on
    a private address is refused unless the setting allows it."""
    with ToolAPI(slow_seconds=3.0, huge_bytes=400_000) as faulty:
        await Tool.objects.filter(name="Refund status").aupdate(
            base_url=faulty.base_url, method="POST", timeout_seconds=1.0, secret=TOOL_API_SECRET
        )
        node = daphne_server(**NODE)
        chris = await signed_in(node, "chris")
        for path, outcome in (("/slow", "timeout"), ("/error", "http_error"), ("/malformed", "malformed"),
                              ("/huge", "too_large"), ("/redirect", "redirect")):  # fmt: skip
            await Tool.objects.filter(name="Refund status").aupdate(path_template=path)
            frames = await answer_to(chris, "has my refund for order 10388 been paid?")
            assert text_of(frames) == "I could not check this right now. Would you like to talk to a person?", path
            assert frames[-1]["offer_handoff"]
            (card,) = [f["tool"] for f in frames if f["type"] == "tool_result"]
            assert card["outcome"] == outcome and not card["ok"] and card["fields"] == []
        await chris.close()

    private = daphne_server(**{**NODE, "TOOLS_ALLOW_PRIVATE_ADDRESSES": "0"})
    chris = await signed_in(private, "chris")
    frames = await answer_to(chris, "Where is my order 10432?")
    (card,) = [f["tool"] for f in frames if f["type"] == "tool_result"]
    assert card["outcome"] == "refused_address" and frames[-1]["offer_handoff"]
    await chris.close()


async def test_an_anonymous_visitor_is_asked_to_sign_in_and_the_api_is_never_called(daphne_server, customers, api):
    node = daphne_server(**NODE, CHAT_ALLOW_ANONYMOUS="1")
    session = await database_sync_to_async(visitor_session)()
    ws = await ws_connect(node.url.replace("http://", "ws://") + "/ws/chat/", origin=node.url,
                          additional_headers={"Cookie": f"sessionid={session}"})  # fmt: skip
    visitor = Client(ws, node)

    frames = await answer_to(visitor, "Where is my order 10432?")

    assert text_of(frames) == "Please sign in so that I can look this up for you, or talk to a person."
    assert frames[-1]["offer_handoff"]
    (card,) = [f["tool"] for f in frames if f["type"] == "tool_result"]
    assert card["outcome"] == "sign_in_required" and card["fields"] == []
    assert api.log.read_text().count("/api/orders/") == 1  # only the fixture's start-up probe reached it
    await visitor.close()


def visitor_session() -> str:
    """A visitor's session, as the chat page creates it (``access.ensure_session``)."""
    request = RequestFactory().get("/")
    request.session = import_module(settings.SESSION_ENGINE).SessionStore()
    return ensure_session(request)
