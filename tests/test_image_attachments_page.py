"""A customer's photo in a real browser against a real Daphne node (issue 20, point 6): the customer attaches a PNG on
the chat page with the keyboard, sees the server's re-encoded thumbnail before sending, sends it with a question and
gets the answer to the question's words; a staff member with the console open on the conversation sees the image
arrive live, and again after a reload. A file that is not an image is refused with its reason and nothing is
shown; an image sent without words is answered by the offer of a person. Screenshots at 1280 and 390 px.
"""

from __future__ import annotations

import io
import os

import pytest
from django.contrib.auth import get_user_model
from PIL import Image, ImageDraw

from conversations.models import Attachment, Message
from knowledge.answering.wordless import wordless_text
from tests.test_chat_page import wait_for_final
from tests.test_console_page import STAFF_PASSWORD
from tests.test_tool_progress_page import PASSWORD, customer_and_console, shoot_at_each_width

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

QUESTION = "How do I return an item?"
SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'


def parcel_photo() -> bytes:
    """A 'photo' of a dented parcel: something to recognise in the screenshots."""
    image = Image.new("RGB", (640, 420), (214, 232, 245))
    draw = ImageDraw.Draw(image)
    draw.rectangle((140, 110, 500, 360), fill=(196, 152, 98), outline=(120, 84, 40), width=6)
    draw.polygon([(140, 110), (230, 40), (590, 40), (500, 110)], fill=(215, 175, 120), outline=(120, 84, 40))
    draw.polygon([(500, 110), (590, 40), (590, 290), (500, 360)], fill=(170, 128, 78), outline=(120, 84, 40))
    draw.line((300, 110, 340, 200, 300, 260), fill=(60, 40, 20), width=8)  # the dent
    draw.rectangle((180, 280, 330, 330), fill=(250, 250, 250))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


@pytest.fixture
def people(demo_kb):
    users = get_user_model().objects
    users.create_user("chris", password=PASSWORD, first_name="Chris")
    users.create_user("sam", password=STAFF_PASSWORD, first_name="Sam", is_staff=True)


def loaded(locator) -> bool:
    """The image was fetched and decoded (a 404 or a refused type leaves naturalWidth at 0)."""
    return locator.evaluate("img => img.complete && img.naturalWidth > 0")


def test_a_customer_attaches_a_png_and_staff_see_it_in_the_console(browser, daphne_server, people):
    site = daphne_server(CHAT_RATE_LIMIT="0", ANSWER_WORDS_PER_SECOND="0")
    errors: list[str] = []
    (chat_context, chat), conversation, (console_context, staff) = customer_and_console(browser, errors, site.url)

    # A file that is not an image: refused with its reason, nothing in the tray, nothing stored.
    chat.set_input_files(".composer input[type=file]", files=[{"name": "logo.svg", "mimeType": "image/svg+xml",
                                                                "buffer": SVG}])  # fmt: skip
    error = chat.locator(".attach-error")
    error.wait_for()
    assert error.inner_text() == "logo.svg: Only PNG, JPEG and WebP images can be attached."
    assert chat.locator(".attach-tile").count() == 0 and not Attachment.objects.exists()
    assert f"HTTP 415 {site.url}/attachments/" in errors  # the refusal itself, expected: the only error allowed
    errors[:] = [e for e in errors if "415" not in e]  # (and the browser console's note of it)

    # The attach button is reached and pressed with the keyboard; the picked PNG comes back as the server's
    # re-encoded thumbnail before anything is sent.
    button = chat.locator("[data-attach]")
    assert button.get_attribute("aria-label") == "Attach an image (PNG, JPEG or WebP)"
    chat.on("filechooser", lambda _chooser: None)  # file choosers intercepted from now on, not from the press
    chat.focus("#question")
    chat.keyboard.press("Shift+Tab")
    assert chat.evaluate("document.activeElement.matches('[data-attach]')")
    with chat.expect_file_chooser() as chooser:
        chat.keyboard.press("Enter")
    chooser.value.set_files([{"name": "parcel.png", "mimeType": "image/png", "buffer": parcel_photo()}])
    tile = chat.locator(".attach-tile[data-attachment]")
    tile.wait_for()
    assert error.is_hidden()
    thumbnail = tile.locator("img")
    chat.wait_for_function("() => document.querySelector('.attach-tile img')?.naturalWidth > 0")
    stored = Attachment.objects.get()
    assert thumbnail.get_attribute("src") == f"/attachments/{stored.pk}/"
    assert stored.message_id is None and str(stored.conversation_id) == conversation
    assert tile.locator(".attach-remove").get_attribute("aria-label") == "Remove image 1"
    chat.fill("#question", QUESTION)
    shoot_at_each_width(chat, "images-chat-before-sending", chat.locator(".composer"))

    # Sent with the question: the bubble shows it, and the answer is the one to the question's words.
    chat.press("#question", "Enter")
    sent = chat.locator(".msg-user").last
    sent.locator(".attachments img").wait_for()
    assert chat.locator(".attach-tray").is_hidden()
    wait_for_final(chat, "complete")
    assert loaded(sent.locator(".attachments img"))
    answer = chat.locator(".msg-assistant").last
    assert answer.locator(".cite a").count() and "return" in answer.locator(".answer").inner_text().lower()
    question = Message.objects.get(conversation_id=conversation, role="user")
    assert question.text == QUESTION and [a.pk for a in question.attachments.all()] == [stored.pk]
    shoot_at_each_width(chat, "images-chat-sent", sent)

    # The console drew the customer's message with the image, live.
    image = staff.locator(".console-chat .msg-user .attachments img")
    image.wait_for()
    staff.wait_for_function(
        "() => document.querySelector('.console-chat .msg-user .attachments img')?.naturalWidth > 0"
    )
    assert image.evaluate("img => img.naturalWidth") == 640
    assert staff.locator(".console-chat .msg-user .bubble").inner_text() == QUESTION
    shoot_at_each_width(staff, "images-console-live", staff.locator(".console-chat .msg-user").last)

    # An image without words: sent, and answered by the offer of a person.
    chat.set_input_files(".composer input[type=file]", files=[{"name": "label.png", "mimeType": "image/png",
                                                                "buffer": parcel_photo()}])  # fmt: skip
    chat.locator(".attach-tile[data-attachment]").wait_for()
    chat.click(".composer button[type=submit]")
    chat.wait_for_function("document.querySelectorAll('.msg-assistant').length === 2")
    wait_for_final(chat, "complete")
    wordless = chat.locator(".msg-assistant").last
    assert wordless.locator(".answer").inner_text().strip() == wordless_text()
    assert wordless.locator(".handoff-offer").is_visible()
    assert chat.locator(".msg-user").last.locator(".bubble").is_hidden()  # no empty bubble
    shoot_at_each_width(chat, "images-chat-image-only", chat.locator(".msg-user").last)

    # After a reload the console renders both from the server, shown with the staff member's session.
    staff.reload()
    staff.wait_for_function("document.querySelector('[data-connection-state]').dataset.state === 'open'")
    rendered = staff.locator(".console-chat .msg-user .attachments img")
    assert rendered.count() == 2
    staff.wait_for_function(
        "() => [...document.querySelectorAll('.console-chat .msg-user .attachments img')].every(i => i.naturalWidth)"
    )
    shoot_at_each_width(staff, "images-console-reloaded", staff.locator(".console-chat .msg-user").first)

    assert errors == []
    chat_context.close()
    console_context.close()
