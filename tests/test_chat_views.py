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
