"""Choosing a tool without a language model (issue 19, point 3): from the staff's example questions, in several
languages, with the arguments found in the question by their patterns, a missing one asked for and taken from the
customer's next message.
"""

from __future__ import annotations

import pytest

from knowledge.embeddings import get_embedder
from knowledge.models import Tool
from knowledge.tools.choosing import choose, find_arguments, min_similarity

pytestmark = pytest.mark.django_db

ORDER_EXAMPLES = """where is my order?
when will my parcel arrive?
has my order 10432 shipped yet?
wo ist meine Bestellung?
我的订单到哪了？"""
REFUND_EXAMPLES = """has my refund been paid?
when do I get my money back for the return?
wann bekomme ich mein Geld zurück?
我的退款到账了吗？"""


@pytest.fixture
def tools():
    order = Tool.objects.create(
        name="Order status", description="Where an order is.", examples=ORDER_EXAMPLES,
        base_url="https://api.example.com", path_template="/orders/{order_number}",
        parameters=[{"name": "order_number", "type": "string", "pattern": r"\d{5}"}],
    )  # fmt: skip
    refund = Tool.objects.create(
        name="Refund status", description="Whether a refund was paid.", examples=REFUND_EXAMPLES,
        base_url="https://api.example.com", path_template="/refunds/{return_code}",
        parameters=[{"name": "return_code", "type": "string", "pattern": r"R-\d{6}"}],
    )  # fmt: skip
    return [order, refund]


def vector(text: str) -> list[float]:
    return get_embedder().embed_query(text)


@pytest.mark.parametrize(
    "question, tool, arguments",
    [
        ("Where's my parcel? Order 10432", "Order status", {"order_number": "10432"}),
        ("Bestellung 55120 ist noch nicht da, wo ist sie?", "Order status", {"order_number": "55120"}),
        ("我的订单10432什么时候到？", "Order status", {"order_number": "10432"}),
        ("I returned the kettle, has the refund for R-200431 gone through?", "Refund status",
         {"return_code": "R-200431"}),
    ],
)  # fmt: skip
def test_the_tool_and_its_arguments_are_found_in_the_question(tools, question, tool, arguments):
    choice = choose(question, vector(question), tools)
    assert choice is not None and choice.tool.name == tool, (question, choice)
    assert choice.arguments == arguments and choice.missing == []


def test_a_question_the_articles_answer_needs_no_tool(tools):
    for question in (
        "How do I return an item?",
        "How much is express delivery to Austria?",
        "Wie lange gilt die Garantie?",
    ):
        choice = choose(question, vector(question), tools)
        assert choice is None, (question, choice and (choice.tool.name, choice.similarity, min_similarity(False)))


def test_a_missing_argument_is_asked_for_and_taken_from_the_next_message(tools):
    first = "where is my order?"
    choice = choose(first, vector(first), tools)
    assert choice is not None and choice.tool.name == "Order status"
    assert choice.arguments == {} and [p["name"] for p in choice.missing] == ["order_number"]

    reply = "it's 10432"
    later = choose(reply, vector(reply), tools, previous=first, previous_vector=vector(first))
    assert later is not None and later.tool.name == "Order status"
    assert later.arguments == {"order_number": "10432"} and later.missing == []
    # A number that fits no parameter of the tool asked about is not taken for one.
    assert choose("it's 104", vector("it's 104"), tools, previous=first, previous_vector=vector(first)) is None


def test_a_value_must_stand_alone_to_be_taken():
    tool = Tool(parameters=[{"name": "order_number", "pattern": r"\d{5}"}])
    assert find_arguments(tool, "order 104321 and card 1234-56789")[0] == {}
    assert find_arguments(tool, "order #10432.")[0] == {"order_number": "10432"}
