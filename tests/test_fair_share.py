"""A fair share of the model (issue 17, point 5): one customer's flood of expensive questions does not hold up
another customer's ordinary one, through a real Daphne node with the default embedding model (multilingual-e5-small).

Customer A sends 8 questions of 4 000 characters of one unbroken word at once, each in a new conversation (within
the 20-per-minute rate limit; seconds of the model each); customer B then asks ordinary questions one after the
other. B's first token must come within twice its time on the same node idle, measured in the same test just
before, so the bound holds on a slow or loaded machine as well as on a fast one. What makes it hold: A's answers
hold at most half of the node's answer slots (conversations/streaming/admission.py), a long question is embedded on
the long lane beside the ordinary one, and each lane serves its customers in turn (knowledge/inference.py).
"""

from __future__ import annotations

import statistics

import pytest
from django.contrib.auth import get_user_model

from bench.fair_share import Customer, first_tokens, flood_questions, probe_questions
from tests.node_client import get_token

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

FLOOD = 8  # A's questions, within CHAT_RATE_LIMIT (20 a minute)
CHARS = 4000  # CHAT_MAX_QUESTION_CHARS: the longest question a customer may send
PROBES = 5  # B's questions idle, and again under the flood: medians, so one slow answer decides nothing


@pytest.fixture
def node(demo_kb, daphne_server):
    return daphne_server(ANSWER_WORDS_PER_SECOND="0")  # B's answers end at their first token: probes follow quickly


@pytest.fixture
def tokens(node) -> tuple[str, str]:
    """Bearer tokens of customers A and B."""
    for name in ("alice", "bob"):
        get_user_model().objects.create_user(name, password=f"pw-{name}-123")
    return get_token(node, "alice", "pw-alice-123"), get_token(node, "bob", "pw-bob-123")


async def test_one_customers_flood_of_long_questions_leaves_another_customers_first_token_as_fast_as_idle(node, tokens):
    flooder, customer = await Customer.open(node.url, tokens[0]), await Customer.open(node.url, tokens[1])
    questions = probe_questions(1 + 2 * PROBES)
    await first_tokens(customer, questions[:1])  # the node loads the model on its first answer
    idle = statistics.median(await first_tokens(customer, questions[1 : 1 + PROBES]))

    flood = await flooder.ask_all(flood_questions(FLOOD, CHARS))
    under_flood = await first_tokens(customer, questions[1 + PROBES :])
    unanswered = sum(asked.first_token is None for asked in flood)

    assert statistics.median(under_flood) <= 2 * idle, (
        f"B's first token: {idle:.2f} s idle, {under_flood} s under A's flood ({unanswered} of A's unanswered)"
    )
    assert unanswered > 0, f"B's questions waited until A's were all answered: {under_flood} s, {idle:.2f} s idle"
    await flooder.close()
    await customer.close()
