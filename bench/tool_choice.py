#!/usr/bin/env python
"""How well the offline answerer chooses a tool: the demo tools against questions that need them and every help
centre's questions that do not.

    .venv/bin/python bench/tool_choice.py            # the four companies' questions (dev and check) + TOOL_QUESTIONS

Reports, per kind: questions that need a tool and got the right one, the wrong one or none (they go to the articles:
the order-tracking article instead of the order); help-centre questions that wrongly chose a tool (a policy question
answered with a customer's order). The demo tools are the ones `make run` creates (knowledge/tools/demo_api.py);
no database, no server: the choice is embeddings and patterns (knowledge/tools/choosing.py).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")

import django  # noqa: E402

django.setup()

from django.utils import timezone  # noqa: E402

from bench.answer_questions import select_corpora  # noqa: E402
from knowledge.embeddings import get_embedder  # noqa: E402
from knowledge.models import Tool  # noqa: E402
from knowledge.tools import choosing, demo_api  # noqa: E402

#: Questions customers ask about their own order or refund, none of them one of the tools' examples: with the
#: order number (the value lowers the bar) and without (it must be nearly an example's paraphrase).
TOOL_QUESTIONS = [
    ("Order status", "where's my package? order 10517"), ("Order status", "has order 10432 left the warehouse?"),
    ("Order status", "my order 20871 still hasn't arrived"), ("Order status", "when does 10517 get here?"),
    ("Order status", "tracking for my order 10432 please"), ("Order status", "Wann kommt Bestellung 10517 an?"),
    ("Order status", "Meine Bestellung 20871 ist immer noch nicht da"),
    ("Order status", "Où en est ma commande 10432 ?"), ("Order status", "¿Cuándo llega el pedido 10517?"),
    ("Order status", "订单20871什么时候送到？"),
    ("Order status", "where is my order?"), ("Order status", "has my parcel shipped?"),
    ("Order status", "Wo bleibt mein Paket?"), ("Order status", "¿Dónde está mi paquete?"),
    ("Order status", "我的快递到哪里了？"), ("Order status", "what's the status of my order"),
    ("Refund status", "did you refund order 20655?"), ("Refund status", "has the refund for 10388 been paid out?"),
    ("Refund status", "Ist die Erstattung für 20655 schon überwiesen?"),
    ("Refund status", "Mon remboursement pour 10388 est-il arrivé ?"),
    ("Refund status", "¿Ya me devolvieron el dinero del pedido 20714?"), ("Refund status", "订单20655的退款到了吗？"),
    ("Refund status", "has my refund come through yet?"), ("Refund status", "where is my money for the return?"),
    ("Refund status", "Ist meine Rückerstattung schon da?"), ("Refund status", "我的退款到账了吗？"),
]  # fmt: skip


def demo_tools() -> list[Tool]:
    """The demo tools as unsaved rows (the choice reads their examples and parameters only)."""
    tools = []
    for pk, definition in enumerate((demo_api.ORDER_TOOL, demo_api.REFUND_TOOL), start=1):
        tool = Tool(**definition, base_url="http://127.0.0.1:8001/api", secret="bench")
        tool.pk, tool.updated_at = pk, timezone.now()
        tools.append(tool)
    return tools


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="all", help="demo, all, or comma-separated corpus names")
    args = parser.parse_args()
    tools, embedder = demo_tools(), get_embedder()

    need = TOOL_QUESTIONS
    vectors = embedder.embed_queries([question for _, question in need])
    outcomes: dict[tuple[bool, str], int] = {}
    for (wanted, question), vector in zip(need, vectors, strict=True):
        choice = choosing.choose(question, vector, tools)
        with_value = bool(choice and choice.arguments) or any(choosing.find_arguments(t, question)[0] for t in tools)
        result = "none" if choice is None else ("right" if choice.tool.name == wanted else "wrong tool")
        outcomes[(with_value, result)] = outcomes.get((with_value, result), 0) + 1
        if result != "right":
            print(f"  {result:10} {question}")
    for with_value in (True, False):
        counts = {result: outcomes.get((with_value, result), 0) for result in ("right", "wrong tool", "none")}
        label = "with a value" if with_value else "without a value"
        print(f"tool questions {label}: {sum(counts.values())}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))

    questions = [q for corpus in select_corpora(args.corpus) for q in corpus.questions()]
    vectors = embedder.embed_queries([q.question for q in questions])
    wrong = [(q, choosing.choose(q.question, v, tools)) for q, v in zip(questions, vectors, strict=True)]
    wrong = [(q, c) for q, c in wrong if c is not None]
    for question, choice in wrong:
        print(f"  chose {choice.tool.name} ({choice.similarity:.3f}): [{question.corpus}] {question.question}")
    print(f"help-centre questions: {len(questions)}: chose a tool {len(wrong)}")


if __name__ == "__main__":
    main()
