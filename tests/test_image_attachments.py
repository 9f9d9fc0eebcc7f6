"""Customers' photos and screenshots (issue 20, point 6): the rules of an image (conversations/images.py), its upload
and serving (conversations/attachment_views.py), and sending it with a question over the real chat socket.

Every image is made here with Pillow, honest or hostile: a PNG with a text chunk, an ICC profile and EXIF; a phone
photo lying on its side with the camera and a GPS position in its EXIF; an SVG and an HTML page; a PNG that is also
a web page (markup in a text chunk, or after its end); a JPEG hiding markup in a comment; truncated files; a
40 KB PNG declaring 400 megapixels.
"""

from __future__ import annotations

import io
import os
import uuid
import zlib

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from PIL import Image, ImageCms, PngImagePlugin

from conversations import images
from conversations.models import Attachment, Conversation, Message
from knowledge.answering.wordless import wordless_text
from tests.chat_support import connect

PASSWORD = "pw-images-1"
RED, BLUE = (220, 20, 20), (20, 20, 220)


# --- Images made for the tests ---------------------------------------------------------------------------------
def png(size=(64, 48), mode="RGB", color=RED, **options) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, color).save(out, "PNG", **options)
    return out.getvalue()


def png_with_metadata() -> bytes:
    """A screenshot as some tools save it: a text chunk, an sRGB ICC profile and EXIF naming the software."""
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "taken on the customer's laptop")
    exif = Image.Exif()
    exif[0x0131] = "SnapTool 3.1"  # Software
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return png(pnginfo=info, exif=exif.tobytes(), icc_profile=icc)


def sideways_photo() -> bytes:
    """A phone photo stored landscape (80×40, the left half red) that its EXIF says to turn 90° clockwise
    (orientation 6), with the camera's make and a GPS position."""
    image = Image.new("RGB", (80, 40), BLUE)
    image.paste(RED, (0, 0, 40, 40))
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "PhoneMaker"
    exif[0x0110] = "Model X"
    exif.get_ifd(0x8825).update({1: "N", 2: (52.0, 31.0, 12.0), 3: "E", 4: (13.0, 24.0, 36.0)})
    out = io.BytesIO()
    image.save(out, "JPEG", quality=95, exif=exif.tobytes())
    return out.getvalue()


def jpeg_with_comment(comment: bytes) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 32), BLUE).save(out, "JPEG", comment=comment)
    return out.getvalue()


def webp_with_alpha() -> bytes:
    out = io.BytesIO()
    Image.new("RGBA", (50, 30), (10, 200, 10, 90)).save(out, "WEBP", lossless=True)
    return out.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")


def png_with_text_chunk(text: bytes) -> bytes:
    """A valid PNG with a tEXt chunk holding ``text`` before its pixels."""
    data = png()
    return data[:33] + png_chunk(b"tEXt", b"Comment\x00" + text) + data[33:]


def bomb() -> bytes:
    """A small PNG (one colour, compressed ~1000:1) declaring 20000×20000 pixels: 400 megapixels once decoded."""
    out = io.BytesIO()
    Image.new("1", (20000, 20000)).save(out, "PNG")
    return out.getvalue()


SVG = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><script>alert(2)</script></svg>'
HTML = b"<!doctype html><html><body><script>alert(document.cookie)</script></body></html>"
HOSTILE = {
    "svg": (SVG, "not_an_image", 415),
    "html": (HTML, "not_an_image", 415),
    "gif": (b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", "not_an_image", 415),
    "empty": (b"", "not_an_image", 415),
    "png-and-page-in-text-chunk": (png_with_text_chunk(b"<html><script>alert(1)</script>"), "polyglot", 422),
    "png-and-page-after-its-end": (png() + b"<svg onload=alert(1)>", "polyglot", 422),
    "jpeg-and-page-in-comment": (jpeg_with_comment(b"<script>alert(1)</script>"), "polyglot", 422),
    "truncated-png": (png((300, 200))[:-40], "damaged", 422),
    "truncated-jpeg": (sideways_photo()[:-300], "damaged", 422),
    "bomb": (bomb(), "too_many_pixels", 422),
}


def reopened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


# --- The rules ---------------------------------------------------------------------------------------------------
def test_a_png_is_re_encoded_as_a_png_without_its_text_profile_or_exif():
    original = png_with_metadata()
    assert b"taken on the customer" in original and b"SnapTool" in original
    result = images.reencode(original)
    assert (result.content_type, result.width, result.height) == ("image/png", 64, 48)
    kept = reopened(result.data)
    assert kept.format == "PNG" and kept.getpixel((10, 10)) == RED
    assert not {"Comment", "icc_profile", "exif"} & set(kept.info), kept.info
    assert b"taken on the customer" not in result.data and b"SnapTool" not in result.data
    assert result.data != original


def test_a_photo_on_its_side_comes_out_upright_without_camera_or_position():
    original = sideways_photo()
    assert b"PhoneMaker" in original
    result = images.reencode(original)
    assert (result.content_type, result.width, result.height) == ("image/jpeg", 40, 80)  # turned: portrait
    kept = reopened(result.data)
    # Turned 90° clockwise, the red left half is now the top half.
    top, bottom = kept.getpixel((20, 10)), kept.getpixel((20, 70))
    assert top[0] > 150 and top[2] < 100, top
    assert bottom[2] > 150 and bottom[0] < 100, bottom
    assert not kept.getexif() and "exif" not in kept.info
    assert b"PhoneMaker" not in result.data and b"Model X" not in result.data


def test_a_webp_keeps_its_transparency():
    result = images.reencode(webp_with_alpha())
    assert (result.content_type, result.width, result.height) == ("image/webp", 50, 30)
    kept = reopened(result.data)
    assert kept.mode == "RGBA" and kept.getpixel((5, 5))[3] < 128


def test_a_large_image_is_scaled_to_the_longest_side_allowed(settings):
    settings.ATTACHMENT_MAX_SIDE = 500
    result = images.reencode(png((2000, 1000)))
    assert (result.width, result.height) == (500, 250)
    assert reopened(result.data).size == (500, 250)


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_files_are_refused_with_their_reason(name):
    data, code, _status = HOSTILE[name]
    with pytest.raises(images.ImageRefused) as refused:
        images.reencode(data)
    assert refused.value.code == code
    assert refused.value.detail


def test_the_bomb_is_refused_from_its_header_and_says_the_limit():
    data = bomb()
    assert len(data) < 100_000  # small on the wire, 400 megapixels decoded
    with pytest.raises(images.ImageRefused) as refused:
        images.reencode(data)
    assert "40 megapixels" in refused.value.detail


def test_the_pixel_limit_is_the_setting(settings):
    settings.ATTACHMENT_MAX_PIXELS = 100 * 100
    images.reencode(png((100, 100)))
    with pytest.raises(images.ImageRefused) as refused:
        images.reencode(png((101, 100)))
    assert refused.value.code == "too_many_pixels" and "101×100" in refused.value.detail


def test_the_byte_limit_is_the_setting(settings):
    data = png((400, 400))
    settings.ATTACHMENT_MAX_BYTES = len(data) - 1
    with pytest.raises(images.ImageRefused) as refused:
        images.reencode(data)
    assert refused.value.code == "too_large"


def test_svg_is_named_in_the_refusal():
    with pytest.raises(images.ImageRefused) as refused:
        images.reencode(SVG)
    assert "SVG" in refused.value.detail


def test_markup_spelled_by_the_pixels_themselves_is_no_polyglot():
    """Pixel data is never scanned (it is compressed noise): an image whose stored, uncompressed pixel bytes happen
    to read "<script>" is accepted, and its re-encoding is what is kept."""
    row = b"<script>alert(1)</script>"
    header = len(row).to_bytes(4, "big") + (1).to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])  # 8-bit grey, one row
    pixels = zlib.compress(b"\x00" + row, 0)  # filter "none", stored: the row's bytes as they are
    data = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", pixels) + png_chunk(b"IEND", b"")
    assert row in data
    result = images.reencode(data)
    assert result.content_type == "image/png" and reopened(result.data).tobytes() == row


# --- Upload and serving ------------------------------------------------------------------------------------------
@pytest.fixture
def people(db):
    users = get_user_model().objects
    return {
        "alice": users.create_user("alice", password=PASSWORD),
        "bob": users.create_user("bob", password=PASSWORD),
        "sam": users.create_user("sam", password=PASSWORD, is_staff=True),
    }


def signed_in(user, **options) -> Client:
    client = Client(**options)
    client.force_login(user)
    return client


def upload(client: Client, data: bytes, conversation: Conversation | None = None, name: str = "photo.png", **extra):
    form = {"image": _named(data, name)}
    if conversation is not None:
        form["conversation"] = str(conversation.pk)
    return client.post("/attachments/", form, **extra)


def _named(data: bytes, name: str) -> io.BytesIO:
    handle = io.BytesIO(data)
    handle.name = name
    return handle


@pytest.fixture
def alices_conversation(people) -> Conversation:
    return Conversation.objects.create(owner=people["alice"])


@pytest.mark.django_db
def test_a_customer_uploads_an_image_and_only_its_re_encoding_is_stored(people, alices_conversation):
    response = upload(signed_in(people["alice"]), png_with_metadata(), alices_conversation)
    assert response.status_code == 201, response.content
    body = response.json()
    stored = Attachment.objects.get()
    assert body == {
        "id": str(stored.pk),
        "url": f"/attachments/{stored.pk}/",
        "content_type": "image/png",
        "width": 64,
        "height": 48,
    }
    assert (stored.owner, stored.conversation, stored.message) == (people["alice"], alices_conversation, None)
    data = bytes(Attachment.objects.get().data)
    assert data == images.reencode(png_with_metadata()).data and stored.byte_size == len(data)
    assert b"SnapTool" not in data


@pytest.mark.django_db
def test_the_image_is_served_to_its_customer_and_staff_with_safe_headers(people, alices_conversation):
    stored = upload(signed_in(people["alice"]), sideways_photo(), alices_conversation).json()
    for who in ("alice", "sam"):
        response = signed_in(people[who]).get(stored["url"])
        assert response.status_code == 200, who
        assert response["Content-Type"] == "image/jpeg"
        assert response["X-Content-Type-Options"] == "nosniff"
        assert response["Content-Disposition"].startswith("inline")
        assert response["Cache-Control"].startswith("private")
        assert response["Content-Security-Policy"] == "default-src 'none'; sandbox"
        assert response["Cross-Origin-Resource-Policy"] == "same-origin"
        assert response.content == bytes(Attachment.objects.get().data)
        assert reopened(response.content).size == (40, 80)
    again = signed_in(people["alice"]).get(stored["url"], HTTP_IF_NONE_MATCH=response["ETag"])
    assert again.status_code == 304 and again.content == b""


@pytest.mark.django_db
def test_anyone_else_gets_404_as_for_an_image_that_does_not_exist(people, alices_conversation, settings):
    stored = upload(signed_in(people["alice"]), png(), alices_conversation).json()
    settings.CHAT_ALLOW_ANONYMOUS = True  # an anonymous visitor has a requester of their own, and still sees nothing
    for client in (signed_in(people["bob"]), Client()):
        for url in (stored["url"], f"/attachments/{uuid.uuid4()}/"):
            response = client.get(url)
            assert response.status_code == 404
            assert response.json()["code"] == "not_found"
            assert response["Content-Type"] == "application/json"


@pytest.mark.django_db
def test_an_unsent_upload_without_a_conversation_is_its_uploaders_only(people):
    stored = upload(signed_in(people["alice"]), png()).json()
    assert Attachment.objects.get().conversation is None
    assert signed_in(people["alice"]).get(stored["url"]).status_code == 200
    assert signed_in(people["bob"]).get(stored["url"]).status_code == 404


@pytest.mark.django_db
@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_hostile_upload_gets_a_clear_json_error_and_nothing_is_stored(people, alices_conversation, name):
    data, code, status = HOSTILE[name]
    response = upload(signed_in(people["alice"]), data, alices_conversation, name=f"{name}.png")
    assert response.status_code == status
    assert response.json()["code"] == code and response.json()["error"]
    assert not Attachment.objects.exists()


@pytest.mark.django_db
def test_too_many_bytes_are_refused_before_decoding(people, alices_conversation, settings):
    settings.ATTACHMENT_MAX_BYTES = 1000
    response = upload(signed_in(people["alice"]), b"\x89PNG\r\n\x1a\n" + os.urandom(5000), alices_conversation)
    assert response.status_code == 413 and response.json()["code"] == "too_large"
    assert "MB" in response.json()["error"] and not Attachment.objects.exists()


@pytest.mark.django_db
def test_another_customers_conversation_is_not_found(people, alices_conversation):
    response = upload(signed_in(people["bob"]), png(), alices_conversation)
    assert response.status_code == 404 and response.json()["code"] == "not_found"
    assert not Attachment.objects.exists()


@pytest.mark.django_db
def test_signed_out_and_malformed_uploads_are_refused(people):
    assert upload(Client(), png()).status_code == 401
    alice = signed_in(people["alice"])
    assert alice.post("/attachments/", {}).json()["code"] == "invalid"
    response = alice.post("/attachments/", {"image": _named(png(), "a.png"), "conversation": "not-a-uuid"})
    assert response.status_code == 400
    assert alice.get("/attachments/").status_code == 405
    assert not Attachment.objects.exists()


@pytest.mark.django_db
def test_the_session_upload_needs_the_pages_csrf_token(people, alices_conversation):
    client = signed_in(people["alice"], enforce_csrf_checks=True)
    refused = upload(client, png(), alices_conversation)
    assert refused.status_code == 403 and refused.json()["code"] == "csrf"
    page = client.get(f"/c/{alices_conversation.pk}/")
    token = page.context["chat_config"]["csrfToken"]
    assert page.context["chat_config"]["uploadUrl"] == "/attachments/"
    assert upload(client, png(), alices_conversation, HTTP_X_CSRFTOKEN=token).status_code == 201


@pytest.mark.django_db
def test_unsent_uploads_are_bounded_and_expire(people, alices_conversation, settings):
    settings.ATTACHMENT_MAX_UNSENT = 2
    alice = signed_in(people["alice"])
    for _ in range(2):
        assert upload(alice, png(), alices_conversation).status_code == 201
    refused = upload(alice, png(), alices_conversation)
    assert refused.status_code == 429 and refused.json()["code"] == "too_many"
    assert upload(signed_in(people["bob"]), png()).status_code == 201  # someone else's count is their own
    Attachment.objects.filter(owner=people["alice"]).update(created_at="2000-01-01T00:00:00Z")
    assert upload(alice, png(), alices_conversation).status_code == 201  # the expired ones were deleted first
    assert Attachment.objects.filter(owner=people["alice"]).count() == 1


@pytest.mark.django_db
def test_the_chat_page_and_the_console_show_a_sent_image(people, alices_conversation):
    stored = upload(signed_in(people["alice"]), png(), alices_conversation).json()
    question = Message.objects.create(conversation=alices_conversation, role="user", text="Broken box")
    Attachment.objects.update(message=question)
    for who, url in (("alice", f"/c/{alices_conversation.pk}/"), ("sam", f"/console/c/{alices_conversation.pk}/")):
        html = signed_in(people[who]).get(url).content.decode()
        assert f'<img src="{stored["url"]}" width="64" height="48"' in html, who
    assert signed_in(people["bob"]).get(f"/c/{alices_conversation.pk}/").status_code == 404


# --- Sent with a question over the chat socket -------------------------------------------------------------------
async def _upload_for(user, conversation: Conversation | None, data: bytes) -> str:
    def run() -> str:
        response = upload(signed_in(user), data, conversation)
        assert response.status_code == 201, response.content
        return response.json()["id"]

    from asgiref.sync import sync_to_async

    return await sync_to_async(run)()


@pytest.mark.django_db(transaction=True)
async def test_an_ask_sends_the_images_and_the_answer_comes_from_its_text(demo_kb, people, fast_answers, cleanup):
    alice = people["alice"]
    conversation = await Conversation.objects.acreate(owner=alice)
    first, second = [await _upload_for(alice, conversation, png(color=color)) for color in (RED, BLUE)]
    client = await connect(alice)
    await client.send({"type": "join", "conversation": str(conversation.pk)})
    await client.recv_type("conversation")
    ack = await client.ask("How do I return an item?", conversation=str(conversation.pk), attachments=[first, second])
    question = await client.recv_type("question")
    assert [image["id"] for image in question["attachments"]] == [first, second]
    assert question["attachments"][0] == {
        "id": first, "url": f"/attachments/{first}/", "content_type": "image/png", "width": 64, "height": 48,
    }  # fmt: skip
    frames = await client.until_final(ack["message"])
    final = frames[-1]
    assert final["state"] == "complete" and final["citations"] and not final["offer_handoff"]
    assert "return" in final["text"].lower()
    linked = [
        str(pk) async for pk in Attachment.objects.filter(message_id=ack["question"]).values_list("pk", flat=True)
    ]
    assert sorted(linked) == sorted([first, second])
    await client.close()


@pytest.mark.django_db(transaction=True)
async def test_an_image_without_words_is_answered_by_saying_so_and_offering_a_person(people, fast_answers, cleanup):
    alice = people["alice"]
    image = await _upload_for(alice, None, png())  # before any conversation: the ask starts one
    client = await connect(alice)
    ack = await client.ask("", attachments=[image])
    frames = await client.until_final(ack["message"])
    final = frames[-1]
    assert final["state"] == "complete" and final["offer_handoff"] is True
    assert final["text"] == wordless_text() and final["citations"] == []
    stored = await Attachment.objects.aget(pk=image)
    assert str(stored.message_id) == ack["question"] and str(stored.conversation_id) == ack["conversation"]
    assert (await Message.objects.aget(pk=ack["question"])).text == ""
    await client.close()


@pytest.mark.django_db(transaction=True)
async def test_the_answer_to_an_image_without_words_is_in_the_browsers_language(people, fast_answers, cleanup):
    image = await _upload_for(people["alice"], None, png())
    client = await connect(people["alice"], headers=[(b"accept-language", b"de-DE,de;q=0.9")])
    ack = await client.ask("", attachments=[image])
    final = (await client.until_final(ack["message"]))[-1]
    assert final["text"].startswith("Ich kann nur Text lesen") and final["offer_handoff"]
    await client.close()


@pytest.mark.django_db(transaction=True)
async def test_only_your_own_unsent_images_of_the_conversation_can_be_sent(people, fast_answers, cleanup):
    alice, bob = people["alice"], people["bob"]
    conversation = await Conversation.objects.acreate(owner=alice)
    other = await Conversation.objects.acreate(owner=alice)
    bobs = await _upload_for(bob, None, png())
    elsewhere = await _upload_for(alice, other, png())
    client = await connect(alice)
    for images_sent in ([bobs], [elsewhere], [str(uuid.uuid4())]):
        await client.send({"type": "ask", "id": str(uuid.uuid4()), "text": "Look", "conversation": str(conversation.pk),
                           "attachments": images_sent})  # fmt: skip
        error = await client.recv_type("error")
        assert error["code"] == "not_found" and images_sent[0] in error["detail"]
    assert not await Message.objects.filter(conversation=conversation).aexists()
    assert not await Attachment.objects.filter(message__isnull=False).aexists()

    mine = await _upload_for(alice, conversation, png())
    ack = await client.ask("Look", conversation=str(conversation.pk), attachments=[mine])
    await client.until_final(ack["message"])
    await client.send({"type": "ask", "id": str(uuid.uuid4()), "text": "Again", "conversation": str(conversation.pk),
                       "attachments": [mine]})  # fmt: skip
    assert (await client.recv_type("error"))["code"] == "not_found"  # already sent
    await client.close()


@pytest.mark.django_db(transaction=True)
async def test_the_ask_frame_bounds_its_images(people, settings, cleanup):
    settings.ATTACHMENT_MAX_PER_MESSAGE = 2
    client = await connect(people["alice"])
    bad = {
        "too_large": [str(uuid.uuid4()) for _ in range(3)],
        "invalid": "not a list",
    }
    for code, value in bad.items():
        await client.send({"type": "ask", "id": str(uuid.uuid4()), "text": "x", "attachments": value})
        error = await client.recv_type("error")
        assert error["code"] == code and "ask.attachments" in error["detail"]
    await client.send({"type": "ask", "id": str(uuid.uuid4()), "text": "  ", "attachments": []})
    assert (await client.recv_type("error"))["detail"] == "ask.text is empty."
    assert not await Message.objects.aexists()
    await client.close()
