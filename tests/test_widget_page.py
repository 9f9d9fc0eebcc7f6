"""The chat widget on a company's own site, in a real browser (issue 20): a real Daphne node, the demo host
(conversations/demo_host.py) as a real HTTP server on another site (``localhost`` against the node's ``127.0.0.1``)
with the widget's tag, Debian's Chromium. A visitor opens the launcher, asks and watches a cited answer stream in
the frame; reloads the host page mid-answer and sees it resume; goes to another page of the host and finds their
conversation; hands off to a person in the console, attaches a screenshot, and gets the reply. A verified customer
gets their order looked up; a forged identity stays anonymous; a page on an origin the site does not list gets no
chat. Screenshots at 1280 and 390 px wide (the panel full screen) are looked at.
"""

from __future__ import annotations

import io
import os

import pytest
from django.contrib.auth import get_user_model
from PIL import Image

from conversations.models import Conversation, Message, SiteCustomer
from knowledge.models import Tool
from knowledge.tools import demo_api
from tests.browser import new_page, sign_in
from tests.demo_api_process import SECRET as API_SECRET
from tests.demo_api_process import running_demo_api
from tests.test_chat_page import ANSWER_TIMEOUT_MS, screenshot
from tests.test_console_page import STAFF_PASSWORD
from tests.widget_support import DemoHost, make_site, open_widget, widget_frame

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

NODE = {"CHAT_RATE_LIMIT": "0", "TOOLS_ALLOW_PRIVATE_ADDRESSES": "1"}
QUESTION = "How do I return an item?"
SHADOW = "document.querySelector('[data-support-widget]').shadowRoot"  # the launcher and panel, apart from the page
FINISHED = "() => { const m = [...document.querySelectorAll('.msg-assistant')].pop(); return m && m.dataset.state === 'complete'; }"


def ask(frame, text: str) -> None:
    frame.fill("#question", text)
    frame.press("#question", "Enter")


def wait_for_final(frame) -> None:
    frame.wait_for_function(FINISHED, timeout=ANSWER_TIMEOUT_MS)


def panel_box(page) -> dict:
    return page.locator("iframe").bounding_box()


def test_a_visitor_asks_sees_it_stream_with_citations_and_it_resumes_after_a_reload(browser, daphne_server, demo_kb):
    node = daphne_server(**NODE, ANSWER_WORDS_PER_SECOND="6")
    with DemoHost(node.url) as host:
        site = make_site(demo_kb, host.origin, greeting={"en": "Hi! Ask about orders, delivery or returns."})
        errors: list[str] = []
        context, page = new_page(browser, errors, width=1280)

        # The launcher, keyboard-reachable; the panel opens with the site's greeting and connects.
        page.goto(f"{host.origin}/")
        launcher = page.locator("[data-support-widget] button")
        assert launcher.get_attribute("aria-expanded") == "false"
        assert page.locator("iframe").count() == 0  # nothing loads from the support site before it is opened
        frame = open_widget(page, f"{host.origin}/")
        assert launcher.get_attribute("aria-expanded") == "true"
        assert frame.locator("[data-empty]").inner_text() == "Hi! Ask about orders, delivery or returns."
        assert frame.locator(".widget-head h1").inner_text() == "Northwind Outfitters"
        box = panel_box(page)
        assert box["width"] == 380 and box["x"] + box["width"] <= 1280 - 19  # bottom right, beside the page
        screenshot(page, "widget-open-1280")

        # Ask: the words stream in, then the cited answer with its source chips.
        ask(frame, QUESTION)
        frame.wait_for_function(
            "() => ([...document.querySelectorAll('.msg-assistant')].pop()?.dataset.streamed || '').split(/\\s+/).length > 3",
            timeout=ANSWER_TIMEOUT_MS,
        )
        answer = frame.locator(".msg-assistant").last
        assert answer.get_attribute("data-state") == "streaming"
        conversation = Conversation.objects.get()
        assert conversation.site_id == site.pk and conversation.owner_id is None
        assert conversation.anonymous_session_key.startswith("visitor-")
        assert conversation.page_url == f"{host.origin}/" and conversation.knowledge_base_id == demo_kb.pk

        # Reload the host page mid-answer: the panel comes back open on the same conversation and the answer
        # finishes, from where it was, with its citations.
        page.reload()
        page.wait_for_selector("iframe")
        frame = widget_frame(page)
        frame.locator("[data-chat][data-connection=open]").wait_for()
        assert frame.locator(".msg-user .bubble").all_inner_texts() == [QUESTION]
        wait_for_final(frame)
        answer = frame.locator(".msg-assistant").last
        assert answer.locator(".answer .cite a").count() >= 1
        assert answer.locator(".sources .source").count() >= 1
        assert "return" in answer.locator(".answer").inner_text().lower()
        assert Message.objects.filter(role="assistant").count() == 1  # resumed, not asked again
        screenshot(page, "widget-answer-1280")

        # Another page of the host site: the same visitor, the same conversation, the page URL the console shows.
        page.click("text=Delivery")
        page.wait_for_url(f"{host.origin}/delivery/")
        frame = widget_frame(page)
        frame.locator("[data-chat][data-connection=open]").wait_for()
        assert frame.locator(".msg-user .bubble").all_inner_texts() == [QUESTION]
        ask(frame, "How long does delivery take?")
        frame.wait_for_function("document.querySelectorAll('.msg-assistant').length === 2")
        wait_for_final(frame)
        conversation.refresh_from_db()
        assert Conversation.objects.count() == 1 and conversation.page_url == f"{host.origin}/delivery/"

        # Under 480 px the panel takes the whole screen and its ✕ closes it, giving focus back to the launcher.
        page.set_viewport_size({"width": 390, "height": 844})
        page.wait_for_function(f"() => {SHADOW}.querySelector('iframe').getBoundingClientRect().width === 390")
        assert panel_box(page)["height"] == 844
        assert not launcher.is_visible()
        frame.locator(".msg-assistant").last.scroll_into_view_if_needed()
        screenshot(page, "widget-answer-390")
        frame.locator("[data-close]").click()
        page.wait_for_function(f"() => {SHADOW}.activeElement?.tagName === 'BUTTON'")
        assert launcher.get_attribute("aria-expanded") == "false" and launcher.is_visible()
        # Escape closes too.
        launcher.click()
        widget_frame(page).locator("#question").press("Escape")
        page.wait_for_function(f"() => {SHADOW}.querySelector('button').getAttribute('aria-expanded') === 'false'")
        assert errors == []
        context.close()


def png_bytes() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (120, 80), (200, 40, 40)).save(out, "PNG")
    return out.getvalue()


def test_a_visitor_hands_off_to_a_person_sends_a_screenshot_and_gets_the_reply(browser, daphne_server, demo_kb):
    get_user_model().objects.create_user("sam", password=STAFF_PASSWORD, first_name="Sam", is_staff=True)
    node = daphne_server(**NODE)
    with DemoHost(node.url) as host:
        make_site(demo_kb, host.origin)
        errors: list[str] = []
        visitor_context, page = new_page(browser, errors, width=1280)
        staff_context, staff = new_page(browser, errors, width=1280)
        sign_in(staff, f"{node.url}/console/", "sam", STAFF_PASSWORD)
        staff.wait_for_function("document.querySelector('[data-connection-state]').dataset.state === 'open'")

        frame = open_widget(page, f"{host.origin}/delivery/")
        ask(frame, QUESTION)
        wait_for_final(frame)
        conversation = Conversation.objects.get()
        row = f'.console-row[data-conversation="{conversation.pk}"]'

        # The console says who and where: a visitor on the site, on that page.
        staff.wait_for_selector(row)
        label = f"Visitor on Northwind Outfitters · {host.origin}/delivery/"
        assert staff.locator(f"{row} [data-customer]").inner_text() == label

        # "Talk to a person" in the widget's head; the console takes over and replies.
        frame.click("[data-handoff]")
        staff.wait_for_selector(f'[data-section-list="waiting"] {row}')
        staff.click(f"{row} a.row-title")
        staff.wait_for_function("document.querySelector('[data-connection-state]').dataset.state === 'open'")
        assert staff.locator(".row-customer").first.inner_text() == label
        staff.click("[data-action=take_over]")
        frame.wait_for_selector(".msg-system[data-kind=agent_joined]")

        # The visitor attaches a screenshot with their message; the console shows it.
        frame.set_input_files(".composer input[type=file]", files=[{"name": "screen.png", "mimeType": "image/png", "buffer": png_bytes()}])
        frame.wait_for_function("() => document.querySelector('.attach-tile img')?.naturalWidth > 0")
        ask(frame, "Here is what I see.")
        staff.wait_for_function(
            "() => document.querySelector('.console-chat .msg-user:last-of-type .attachments img')?.naturalWidth > 0"
            " || [...document.querySelectorAll('.console-chat .msg-user .attachments img')].some(i => i.naturalWidth > 0)"
        )
        question = Message.objects.filter(role="user").order_by("-created_at").first()
        assert question.text == "Here is what I see." and question.attachments.count() == 1

        # Back on the host page later: the history's image comes with the visitor token too (no cookie in the frame).
        page.reload()
        frame = widget_frame(page)
        frame.locator("[data-chat][data-connection=open]").wait_for()
        frame.wait_for_function("() => document.querySelector('.msg-user .attachments img')?.naturalWidth > 0")

        staff.fill("#agent-text", "Thanks! Your parcel left our warehouse today.")
        staff.press("#agent-text", "Enter")
        frame.wait_for_selector(".msg-agent")
        reply = frame.locator(".msg-agent").last
        assert reply.locator(".bubble").inner_text() == "Thanks! Your parcel left our warehouse today."
        assert "Sam" in reply.locator(".who").inner_text()
        screenshot(page, "widget-agent-reply-1280")
        screenshot(staff, "console-widget-visitor-1280")
        page.set_viewport_size({"width": 390, "height": 844})
        screenshot(page, "widget-agent-reply-390")
        assert errors == []
        visitor_context.close()
        staff_context.close()


def test_a_verified_customer_gets_their_order_a_forged_one_stays_anonymous_and_an_unlisted_origin_gets_no_chat(
    browser, daphne_server, demo_kb, tmp_path
):
    node = daphne_server(**NODE)
    with running_demo_api(tmp_path, API_SECRET) as api, DemoHost(node.url) as host, \
            DemoHost(node.url, secret="not-the-sites-secret-but-long-enough-to-pass") as forger, \
            DemoHost(node.url) as stranger:  # fmt: skip
        site = make_site(demo_kb, f"{host.origin}\n{forger.origin}")
        for definition in demo_api.DEMO_TOOLS:
            tool = Tool(**{**definition, "timeout_seconds": 15.0}, base_url=api.url, secret=API_SECRET,
                        needs_signed_in=True)  # fmt: skip
            tool.full_clean()
            tool.save()
            tool.knowledge_bases.add(demo_kb)
            site.tools.add(tool)
        errors: list[str] = []

        # The shop's signed-in customer (/account/): verified, their order looked up and cited.
        context, page = new_page(browser, errors, width=1280)
        frame = open_widget(page, f"{host.origin}/account/")
        assert frame.locator("[data-chat]").get_attribute("data-identity") == "verified"
        ask(frame, "Where is my order 10432?")
        wait_for_final(frame)
        answer = frame.locator(".msg-assistant").last
        card = answer.locator(".tools .tool-card")
        assert card.get_attribute("data-ok") == "true"
        assert answer.locator(".answer").inner_text().startswith("Order 10432: shipped")
        customer = SiteCustomer.objects.get()
        assert (customer.external_id, customer.user.email, customer.user.first_name) == (
            "cust-1001", "chris.miller@example.com", "Chris Miller")  # fmt: skip
        assert Conversation.objects.get().owner_id == customer.user_id
        screenshot(page, "widget-verified-order-1280")
        context.close()

        # The same page signed with the wrong secret: refused, the visitor is anonymous, no order is read.
        context, page = new_page(browser, errors, width=1280)
        frame = open_widget(page, f"{forger.origin}/account/")
        assert frame.locator("[data-chat]").get_attribute("data-identity") == "refused"
        ask(frame, "Where is my order 10432?")
        wait_for_final(frame)
        text = frame.locator(".msg-assistant").last.inner_text()
        assert "10432: shipped" not in text and "sign in" in text.lower()
        assert SiteCustomer.objects.count() == 1
        forged = Conversation.objects.exclude(owner_id=customer.user_id).get()
        assert forged.owner_id is None and forged.anonymous_session_key.startswith("visitor-")
        context.close()

        # An origin the site does not list: the frame is refused (403, and frame-ancestors names only the site's).
        context, page = new_page(browser, [], width=1280)
        responses = []
        page.on("response", lambda r: "/widget/" in r.url and responses.append(r.status))
        page.goto(f"{stranger.origin.replace('localhost', '127.0.0.1')}/")
        page.locator("[data-support-widget] button").click()
        page.wait_for_function(f"() => {SHADOW}.querySelector('iframe')")
        page.wait_for_timeout(1500)
        assert responses and set(responses) == {403}
        chat_frames = [f for f in page.frames if "/widget/" in f.url]
        assert all(not f.locator("[data-chat]").count() for f in chat_frames)
        assert Conversation.objects.count() == 2
        context.close()
        assert errors == [], errors
