"""The server-rendered chat pages: list, new, rename, delete, ownership and history rendering."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from conversations.models import Conversation, Feedback, Message

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice(client):
    user = get_user_model().objects.create_user("alice", password="pw-alice-123")
    client.force_login(user)
    return user


@pytest.fixture
def bob():
    return get_user_model().objects.create_user("bob", password="pw-bob-123")


def _answered(conversation: Conversation, question: str = "How do I return an item?") -> tuple[Message, Message]:
    q = Message.objects.create(conversation=conversation, role="user", text=question, client_id="c1")
    a = Message.objects.create(
        conversation=conversation,
        role="assistant",
        reply_to=q,
        text="Return it within **30 days** [1].",
        html="<p>Return it within <strong>30 days</strong> [1].</p>",
        state="complete",
        citations=[1],
        sources=[
            {
                "n": 1,
                "document": 7,
                "title": "How to return an item",
                "heading": "How to return an item > Our 30-day returns policy",
                "page": None,
                "snippet": "You can return almost any item within 30 days",
                "score": 0.8,
                "url": "/kb/documents/7/#chunk-3",
            }
        ],
    )
    return q, a


def test_anonymous_visitor_is_sent_to_sign_in(client, settings):
    settings.CHAT_ALLOW_ANONYMOUS = False
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=/")


def test_sign_in_page_renders_and_signs_in(client):
    get_user_model().objects.create_user("carol", password="pw-carol-123")
    page = client.get("/accounts/login/")
    assert page.status_code == 200
    assert b'name="username"' in page.content and b"csrfmiddlewaretoken" in page.content
    response = client.post("/accounts/login/", {"username": "carol", "password": "pw-carol-123"})
    assert response.status_code == 302
    assert client.get("/").status_code == 200


def test_sign_out_is_a_post_form(client, alice):
    page = client.get("/")
    assert b'action="/accounts/logout/"' in page.content
    client.post("/accounts/logout/")
    assert client.get("/").status_code == 302


def test_list_shows_only_my_conversations(client, alice, bob):
    Conversation.objects.create(owner=alice, title="My returns question")
    Conversation.objects.create(owner=bob, title="Bob's secret order")
    page = client.get("/")
    assert page.status_code == 200
    assert "My returns question" in page.text
    assert "Bob&#x27;s secret order" not in page.text and "Bob's secret order" not in page.text


def test_new_creates_an_owned_conversation_and_redirects_to_it(client, alice):
    response = client.post(reverse("conversations:new"))
    conversation = Conversation.objects.get(owner=alice)
    assert response.status_code == 302
    assert response["Location"] == reverse("conversations:detail", args=[conversation.pk])
    assert conversation.knowledge_base.name == "Help Centre"


def test_new_refuses_get(client, alice):
    assert client.get(reverse("conversations:new")).status_code == 405
    assert not Conversation.objects.exists()


def test_forms_need_csrf(alice):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    strict.force_login(alice)
    assert strict.post(reverse("conversations:new")).status_code == 403
    conversation = Conversation.objects.create(owner=alice, title="Keep me")
    assert strict.post(reverse("conversations:delete", args=[conversation.pk])).status_code == 403
    assert Conversation.objects.filter(pk=conversation.pk).exists()


def test_rename(client, alice):
    conversation = Conversation.objects.create(owner=alice, title="Old")
    response = client.post(reverse("conversations:rename", args=[conversation.pk]), {"title": "  Refund   timing "})
    assert response.status_code == 302
    conversation.refresh_from_db()
    assert conversation.title == "Refund timing"


def test_rename_refuses_empty_and_too_long_titles(client, alice):
    conversation = Conversation.objects.create(owner=alice, title="Old")
    page = client.post(reverse("conversations:rename", args=[conversation.pk]), {"title": "   "}, follow=True)
    assert "needs a title" in page.text
    page = client.post(reverse("conversations:rename", args=[conversation.pk]), {"title": "x" * 201}, follow=True)
    assert "at most 200 characters" in page.text
    conversation.refresh_from_db()
    assert conversation.title == "Old"


def test_rename_returns_to_a_local_next_only(client, alice):
    conversation = Conversation.objects.create(owner=alice, title="Old")
    url = reverse("conversations:rename", args=[conversation.pk])
    detail = reverse("conversations:detail", args=[conversation.pk])
    assert client.post(url, {"title": "A", "next": detail})["Location"] == detail
    assert client.post(url, {"title": "B", "next": "https://evil.example/"})["Location"] == "/"


def test_delete(client, alice):
    conversation = Conversation.objects.create(owner=alice, title="Bye")
    _answered(conversation)
    response = client.post(reverse("conversations:delete", args=[conversation.pk]))
    assert response.status_code == 302
    assert not Conversation.objects.filter(pk=conversation.pk).exists()
    assert not Message.objects.filter(conversation_id=conversation.pk).exists()


@pytest.mark.parametrize("action", ["detail", "rename", "delete"])
def test_someone_elses_conversation_is_404(client, alice, bob, action):
    theirs = Conversation.objects.create(owner=bob, title="Bob's")
    _answered(theirs)
    url = reverse(f"conversations:{action}", args=[theirs.pk])
    response = client.get(url) if action == "detail" else client.post(url, {"title": "hijacked"})
    assert response.status_code == 404
    theirs.refresh_from_db()
    assert theirs.title == "Bob's"


def test_unknown_conversation_is_404(client, alice):
    assert client.get(reverse("conversations:detail", args=[uuid.uuid4()])).status_code == 404


def test_history_is_rendered_on_the_server(client, alice):
    conversation = Conversation.objects.create(owner=alice, title="Returns")
    question, answer = _answered(conversation)
    Message.objects.create(conversation=conversation, role="agent", author=alice, text="Hi, I'm here to help.")
    Feedback.objects.create(message=answer, user=alice, rating=1)
    page = client.get(reverse("conversations:detail", args=[conversation.pk]))
    assert page.status_code == 200
    html = page.text
    assert f'data-message="{question.pk}"' in html and "How do I return an item?" in html
    # The assistant's saved, sanitised HTML is used, not the raw Markdown.
    assert "<strong>30 days</strong>" in html and "**30 days**" not in html.split('data-text="')[0]
    assert f'id="src-{answer.pk}-1"' in html
    assert 'href="/kb/documents/7/#chunk-3"' in html
    assert "You can return almost any item within 30 days" in html
    assert 'class="chip used"' in html
    assert '<span class="t">Our 30-day returns policy</span>' in html  # the chip names the passage's section
    assert 'data-question="How do I return an item?"' in html
    assert 'data-action="feedback-up" title="Helpful" aria-label="Helpful" aria-pressed="true"' in html
    # The agent is shown as a person, not as the bot.
    assert 'class="msg msg-agent"' in html and "alice · Support team" in html
    assert 'src="/static/chat/chat.js"' in html and 'type="module"' in html
    assert 'id="chat-config"' in html and str(conversation.pk) in html


def test_history_escapes_user_text(client, alice):
    conversation = Conversation.objects.create(owner=alice)
    Message.objects.create(conversation=conversation, role="user", text="<script>alert(1)</script>")
    page = client.get(reverse("conversations:detail", args=[conversation.pk]))
    assert "<script>alert(1)</script>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text


@pytest.mark.parametrize("state", ["cancelled", "interrupted", "failed"])
def test_unfinished_answers_say_so(client, alice, state):
    conversation = Conversation.objects.create(owner=alice)
    question = Message.objects.create(conversation=conversation, role="user", text="Q")
    Message.objects.create(conversation=conversation, role="assistant", reply_to=question, text="Partial", state=state)
    page = client.get(reverse("conversations:detail", args=[conversation.pk]))
    assert f'data-state="{state}"' in page.text
    assert {"cancelled": "Stopped", "interrupted": "Interrupted", "failed": "went wrong"}[state] in page.text


def test_staff_get_an_admin_link(client, alice):
    assert b'href="/admin/"' not in client.get("/").content
    alice.is_staff = True
    alice.save()
    assert b'href="/admin/"' in client.get("/").content


def test_anonymous_mode_binds_conversations_to_the_session(client, settings):
    settings.CHAT_ALLOW_ANONYMOUS = True
    assert client.get("/").status_code == 200
    response = client.post(reverse("conversations:new"))
    conversation = Conversation.objects.get()
    assert conversation.owner is None and conversation.anonymous_session_key == client.session.session_key
    assert client.get(response["Location"]).status_code == 200
    from django.test import Client

    stranger = Client()
    assert stranger.get(response["Location"]).status_code == 404


def test_untitled_conversations_are_named_by_their_first_question(client, alice):
    conversation = Conversation.objects.create(owner=alice)
    assert "New conversation" in client.get("/").text
    _answered(conversation, "Where is my parcel?")
    Message.objects.create(conversation=conversation, role="user", text="And a second question")
    assert "Where is my parcel?" in client.get("/").text
    page = client.get(reverse("conversations:detail", args=[conversation.pk]))
    assert "<h1 data-title>Where is my parcel?</h1>" in page.text


# --- Issue 7: nothing found, done right; the page around the answer --------------------------------------------

NOTHING_FOUND = "I couldn't find anything about that in the knowledge base. Would you like to talk to a person?"


def _nothing_found(conversation: Conversation, *, state: str = "complete", sources: list | None = None) -> Message:
    q = Message.objects.create(conversation=conversation, role="user", text="Can you fix my car?", client_id="c9")
    return Message.objects.create(
        conversation=conversation,
        role="assistant",
        reply_to=q,
        text=NOTHING_FOUND,
        html=f"<p>{NOTHING_FOUND}</p>",
        state=state,
        citations=[],
        sources=sources or [],
        trace={"query": q.text, "passages": [], "timings": {}, "offer_handoff": True},
    )


def _message_html(html: str, message: Message) -> str:
    """The markup of one message (up to the next one) in a rendered page."""
    start = html.index(f'data-message="{message.pk}"')
    end = html.find("<article", start)
    return html[start : end if end != -1 else len(html)]


def test_a_nothing_found_answer_offers_a_person_in_the_answer(client, alice):
    conversation = Conversation.objects.create(owner=alice, title="Cars")
    _, answered = _answered(conversation)
    # Retrieved but irrelevant passages: a nothing-found answer shows no chips even if some were saved.
    stray = [{"n": 1, "document": 7, "title": "Returns", "heading": "Returns", "page": None, "snippet": "x",
              "score": 0.1, "url": "/kb/documents/7/#chunk-3"}]
    nothing = _nothing_found(conversation, sources=stray)
    assert nothing.offers_handoff and not answered.offers_handoff
    html = client.get(reverse("conversations:detail", args=[conversation.pk])).text
    offer = _message_html(html, nothing)
    assert NOTHING_FOUND.replace("'", "&#x27;") in offer
    assert '<button type="button" class="btn handoff-offer" data-action="handoff">Talk to a person</button>' in offer
    assert offer.index('class="bubble"') < offer.index("handoff-offer") < offer.index('class="msg-actions"')
    assert 'class="source"' not in offer
    assert 'data-action="handoff"' not in _message_html(html, answered)  # a real answer offers nothing
    assert 'class="source"' in _message_html(html, answered)
    assert "data-handoff>Talk to a person" in html  # the page's own button is there too


@pytest.mark.parametrize("status", ["waiting_for_agent", "agent"])
def test_the_offer_is_hidden_while_a_person_is_asked_for_or_there(client, alice, status):
    conversation = Conversation.objects.create(owner=alice, title="Cars", status=status)
    nothing = _nothing_found(conversation)
    html = client.get(reverse("conversations:detail", args=[conversation.pk])).text
    assert 'data-action="handoff" hidden>Talk to a person' in _message_html(html, nothing)
    assert "data-handoff hidden>" in html


@pytest.mark.parametrize("state", ["cancelled", "interrupted", "failed"])
def test_only_a_complete_answer_offers_a_person(client, alice, state):
    conversation = Conversation.objects.create(owner=alice)
    nothing = _nothing_found(conversation, state=state)
    assert not nothing.offers_handoff
    html = client.get(reverse("conversations:detail", args=[conversation.pk])).text
    assert 'data-action="handoff"' not in html


def test_the_console_shows_the_answer_without_the_customers_button(client, alice):
    conversation = Conversation.objects.create(owner=alice)
    _nothing_found(conversation)
    staff = get_user_model().objects.create_user("sam", password="pw-sam-123", is_staff=True)
    client.force_login(staff)
    html = client.get(reverse("console:detail", args=[conversation.pk])).text
    assert NOTHING_FOUND.replace("'", "&#x27;") in html and 'data-action="handoff"' not in html


def test_final_frame_carries_offer_handoff():
    from conversations import protocol

    base = {"text": "t", "html": "", "citations": [], "timings": {}}
    message = uuid.uuid4()
    assert protocol.final_frame(message, 3, state="complete", **base)["offer_handoff"] is False
    assert protocol.final_frame(message, 3, state="complete", offer_handoff=True, **base)["offer_handoff"] is True
    for state in ("cancelled", "failed", "interrupted"):  # a stopped answer never offers it
        assert protocol.final_frame(message, 3, state=state, offer_handoff=True, **base)["offer_handoff"] is False


def test_a_final_rebuilt_from_the_database_keeps_the_offer(alice):
    from conversations import streaming

    conversation = Conversation.objects.create(owner=alice)
    nothing = _nothing_found(conversation)
    nothing.frames = [{"type": "status", "stage": "retrieving", "text": "…"}, {"type": "sources", "items": []},
                      len(NOTHING_FOUND)]
    frames = streaming.frames_from_db(nothing)
    assert frames[-1]["type"] == "final" and frames[-1]["offer_handoff"] is True
    _, answered = _answered(conversation)
    assert streaming.frames_from_db(answered)[-1]["offer_handoff"] is False


def _document_with_chunks(texts: list[tuple[str, str]]):
    from knowledge.models import Chunk, Document, KnowledgeBase

    kb = KnowledgeBase.objects.create(name="Docs")
    document = Document.objects.create(knowledge_base=kb, title="Refunds", checksum="c" * 64, status="ready")
    chunks = [
        Chunk.objects.create(document=document, knowledge_base=kb, position=i, heading_path=heading, text=text)
        for i, (heading, text) in enumerate(texts)
    ]
    return document, chunks


def test_the_article_page_renders_lists_and_tables_and_keeps_the_chunk_anchors(client, alice):
    document, chunks = _document_with_chunks([
        ("Refunds > Policy", "- The 30 days start on delivery.\n\n- The item must be complete.\n\nNo account? Ask us."),
        ("Refunds > Timing", "Once approved:\n\nPayment method | Refund arrives\n\nCard | 3–5 business days\n\n"
                             "PayPal | within 24 hours\n\nThe delivery charge is refunded <script>alert(1)</script>."),
        ("Refunds > Pasted", "| Plan | Price |\n|---|---|\n| Plus | **EUR 9** |"),
    ])
    html = client.get(reverse("knowledge:document", args=[document.pk])).text
    for chunk in chunks:
        assert f'id="chunk-{chunk.pk}"' in html  # what citations link to (#chunk-N)
    policy = html[html.index(f'id="chunk-{chunks[0].pk}"') : html.index(f'id="chunk-{chunks[1].pk}"')]
    assert "<ul>\n<li>The 30 days start on delivery.</li>\n<li>The item must be complete.</li>\n</ul>" in policy
    assert "<p>No account? Ask us.</p>" in policy and "- The 30 days" not in policy
    assert "<h2>Policy</h2>" in policy  # the h1 names the document; its sections say only their own name
    timing = html[html.index(f'id="chunk-{chunks[1].pk}"') : html.index(f'id="chunk-{chunks[2].pk}"')]
    assert '<div class="table-wrap"><table>' in timing
    assert "<th>Payment method</th>" in timing and "<td>PayPal</td>" in timing and "<td>within 24 hours</td>" in timing
    assert " | " not in timing
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in timing
    pasted = html[html.index(f'id="chunk-{chunks[2].pk}"') :]
    assert "<th>Plan</th>" in pasted and "<td><strong>EUR 9</strong></td>" in pasted


def test_chunk_markdown_is_sanitised_and_plain_text_keeps_its_lines():
    from knowledge.document_text import chunk_html

    assert chunk_html("Rate card\nvalid from 1 March") == "<p>Rate card<br>\nvalid from 1 March</p>\n"
    assert "href" not in chunk_html("[click](javascript:alert(1))")
    assert chunk_html('<img src=x onerror="alert(1)">').startswith("<p>&lt;img")
    assert "<h2>" not in chunk_html("Prices\n---\nmore")  # a dash line under PDF text is not a heading
    assert chunk_html("A | B\n\nsolo line") == "<p>A | B</p>\n<p>solo line</p>\n"  # one row is not a table


def test_a_table_without_a_header_is_a_table_without_a_head_row():
    from knowledge.document_text import chunk_html

    # As the parsers write a headerless table (knowledge/ingest/parsers.py table_text): rows with outer pipes, no
    # rule; an escaped pipe is a pipe of its cell, an empty cell keeps its column.
    html = chunk_html("Limits:\n\n| ATM per day | €300 | €600 |\n| Online \\| in shops | €2,000 | |\n\nAsk us.")
    assert html.startswith('<p>Limits:</p>\n<div class="table-wrap"><table>\n<tbody>\n<tr>\n<td>ATM per day</td>')
    assert "<thead>" not in html and "<th>" not in html  # no empty head row above the rows
    assert "<td>Online | in shops</td>\n<td>€2,000</td>\n<td></td>" in html
    assert html.endswith("</table></div>\n<p>Ask us.</p>\n") and "| ATM" not in html
    # With its header line and rule the first line is the head; a line of text among the rows is not a table.
    assert "<th>Card</th>" in chunk_html("| Card | Limit |\n|---|---|\n| Basic | €300 |")
    assert chunk_html("| a | b |\nnot a row") == "<p>| a | b |<br>\nnot a row</p>\n"


def test_staff_see_a_console_link_in_the_menu_and_the_admin(client, alice):
    console = reverse("console:list")
    assert f'href="{console}"' not in client.get("/").text
    alice.is_staff = True
    alice.save()
    page = client.get("/").text
    assert f'<a class="nav-console" href="{console}">Console</a>' in page
    admin = client.get(reverse("admin:index"))
    assert admin.status_code == 200
    assert f'href="{console}"' in admin.text and ">Console</a>" in admin.text
    assert "View site" in admin.text and "Log out" in admin.text  # Django's own links are still there


def test_people_are_shown_by_their_display_name(client, alice):
    from conversations.inbox import display_name

    users = get_user_model().objects
    sam = users.create_user("staff", password="pw-staff-123", first_name="Sam", last_name="Taylor", is_staff=True)
    nameless = users.create_user("helper7", password="pw-helper-123", is_staff=True)
    assert display_name(sam) == "Sam Taylor" and display_name(nameless) == "helper7" and display_name(None) == ""
    alice.first_name, alice.last_name = "Alice", "Smith"
    alice.save()
    conversation = Conversation.objects.create(owner=alice, status="agent", assigned_agent=sam)
    Message.objects.create(conversation=conversation, role="agent", author=sam, text="Hi, I'm Sam.")
    Message.objects.create(conversation=conversation, role="agent", author=nameless, text="Hello.")
    page = client.get(reverse("conversations:detail", args=[conversation.pk])).text
    assert '<span class="who" title="Signed in as alice">Alice Smith</span>' in page  # the menu
    assert "Sam Taylor · Support team" in page and "helper7 · Support team" in page
    assert "staff · Support team" not in page

    client.force_login(sam)
    console = client.get(reverse("console:detail", args=[conversation.pk])).text
    assert "Held by Sam Taylor" in console and "Sam Taylor · Support team" in console
    assert '<span class="row-customer">Alice Smith</span>' in console
    assert "Welcome,\n  <strong>Sam Taylor</strong>" in client.get(reverse("admin:index")).text


def test_the_js_protocol_module_names_the_same_frames_as_the_server():
    """static/chat/protocol.js is the browser's copy of conversations/protocol.py's frame names."""
    from conversations import protocol
    from tests.chat_support import protocol_js_names

    js = protocol_js_names("FRAME")
    python = {name: getattr(protocol, name) for name in js}
    assert js == python
    server_types = set(protocol.CHAT.types) | set(protocol.CONSOLE.types) | set(protocol.STREAM_TYPES) | {
        protocol.ACK, protocol.QUESTION, protocol.PONG, protocol.CONVERSATION, protocol.FEEDBACK, protocol.ANSWER_VERSION,
        protocol.AGENT_MESSAGE, protocol.AGENT_JOINED, protocol.AGENT_LEFT, protocol.NUDGE, protocol.REMINDER,
        protocol.CONVERSATIONS, protocol.CONVERSATION_UPDATE, protocol.TRACE, protocol.PRESENCE, protocol.HOLDER,
        protocol.ASSIGNED, protocol.CONVERSATION_HIDDEN,
    }
    assert server_types == set(js.values())
