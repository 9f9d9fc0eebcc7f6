"""The chat page swaps an uncited LLM answer for the guard's replacement (``final.replaced``), in a real browser.

A real Daphne answers with ANSWER_GENERATOR=openai against the stand-in, which replies without any citation;
LLM_UNCITED_ANSWER=replace makes the server replace it by the extractive answer after the tokens streamed.
"""

from __future__ import annotations

import os
import re

import pytest
from django.contrib.auth import get_user_model

from conversations.models import Message
from tests.llm_standin import LLMStandin
from tests.test_chat_page import ANSWER_TIMEOUT_MS, PASSWORD, ask, sign_in_and_open_new_conversation

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

DRAFT = "Sure, send it back whenever you like and we will sort it out."


def test_replaced_answer_swaps_the_bubble_for_the_stored_replacement(browser, daphne_server, demo_kb):
    get_user_model().objects.create_user("customer", password=PASSWORD)
    with LLMStandin(reply=DRAFT, token_delay=0.05) as llm:
        site = daphne_server(
            ANSWER_GENERATOR="openai", LLM_BASE_URL=llm.base_url, LLM_MODEL="standin-model",
            LLM_UNCITED_ANSWER="replace", LLM_TIMEOUT="10",
        )  # fmt: skip
        # bypass_csp: wait_for_function evals (CSP has no 'unsafe-eval'); the policy: tests/test_page_security.py.
        context = browser.new_context(viewport={"width": 1100, "height": 900}, bypass_csp=True)
        page = context.new_page()
        page.set_default_timeout(30_000)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda msg: msg.type in ("error", "warning") and errors.append(msg.text))
        try:
            sign_in_and_open_new_conversation(page, site.url)
            ask(page, "How do I return an item?")
            # The draft streams in first, word by word…
            page.wait_for_function(
                "() => ([...document.querySelectorAll('.msg-assistant')].pop()?.dataset.streamed || '')"
                ".includes('whenever')",
                timeout=ANSWER_TIMEOUT_MS,
            )
            # …then the final replaces it.
            page.wait_for_function(
                "() => [...document.querySelectorAll('.msg-assistant')].pop()?.dataset.state === 'complete'",
                timeout=ANSWER_TIMEOUT_MS,
            )
            answer = page.locator(".msg-assistant").last
            message = Message.objects.get(pk=answer.get_attribute("data-message"))
            assert message.trace["grounding"]["replaced"] is True and message.text != DRAFT
            assert answer.get_attribute("data-replaced") == "true"
            shown = answer.locator(".answer").inner_text()
            assert "whenever" not in shown  # the uncited draft is gone from the bubble
            assert re.findall(r"[A-Za-z]{2,}", shown) == re.findall(r"[A-Za-z]{2,}", message.text)
            assert answer.locator(".answer sup.cite a").count() >= 1  # the replacement cites its sources
            assert answer.get_attribute("data-text") == message.text  # Copy copies what is shown

            page.reload()  # the server-rendered page shows the stored replacement too
            page.wait_for_function("document.querySelector('[data-chat]').dataset.connection === 'open'")
            assert "whenever" not in page.locator(".msg-assistant").last.locator(".answer").inner_text()
            assert errors == []
        finally:
            context.close()
