"""What customers type and what documents are called is shown as text, never run: in the chat page (live and
server-rendered), the staff console and the admin, in a real browser against a real Daphne node."""

from __future__ import annotations

import os

import pytest
from django.contrib.auth import get_user_model

from conversations.models import Conversation
from knowledge.models import Document
from tests.browser import new_page, sign_in
from tests.test_chat_page import PASSWORD, ask, sign_in_and_open_new_conversation, wait_for_final
from tests.test_console_page import STAFF_PASSWORD

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# Each would set window.__xss (or open a dialog) if the page ran it.
PAYLOAD = '<img src=x onerror="window.__xss=1"><script>window.__xss=1</script><svg onload="window.__xss=1">'
QUESTION = f"How do I return an item? {PAYLOAD}"


@pytest.fixture
def site(daphne_server, demo_kb):
    users = get_user_model().objects
    users.create_user("customer", password=PASSWORD, first_name="Carol")
    users.create_user("sam", password=STAFF_PASSWORD, first_name="Sam", is_staff=True, is_superuser=True)
    for document in Document.objects.filter(knowledge_base=demo_kb):
        document.title = f"{document.title} {PAYLOAD}"
        document.save(update_fields=["title"])
    return daphne_server()


def assert_shown_not_run(page, where: str, dialogs: list[str]) -> None:
    assert page.evaluate("() => window.__xss") is None, f"a payload ran on {where}"
    assert dialogs == [], (where, dialogs)
    assert page.locator("img[src='x'], svg[onload]").count() == 0, f"a payload became markup on {where}"
    assert "onerror=" in page.locator("body").inner_text(), f"the payload is not shown as text on {where}"


def test_a_question_and_document_titles_full_of_markup_are_shown_as_text_everywhere(browser, site):
    errors: list[str] = []
    dialogs: list[str] = []
    customer_context, customer = new_page(browser, errors)
    staff_context, staff = new_page(browser, errors)
    for page in (customer, staff):
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))

    sign_in_and_open_new_conversation(customer, site.url)
    ask(customer, QUESTION)
    wait_for_final(customer, "complete")
    assert_shown_not_run(customer, "the chat page (live)", dialogs)
    customer.reload()
    customer.wait_for_selector(".msg-user")
    assert_shown_not_run(customer, "the chat page (server-rendered)", dialogs)

    conversation = Conversation.objects.get()
    sign_in(staff, f"{site.url}/console/", "sam", STAFF_PASSWORD)
    staff.wait_for_selector(f'.console-row[data-conversation="{conversation.pk}"]')
    assert_shown_not_run(staff, "the console list", dialogs)
    staff.goto(f"{site.url}/console/c/{conversation.pk}/")
    staff.wait_for_selector(".trace .generator")
    assert_shown_not_run(staff, "the console conversation", dialogs)
    staff.goto(f"{site.url}/admin/knowledge/document/")
    assert_shown_not_run(staff, "the admin's document list", dialogs)

    customer_context.close()
    staff_context.close()
    assert [error for error in errors if "favicon" not in error] == []
