"""Knowledge-base visibility (issue 9, point 7): public, staff-only and group-limited knowledge bases.

Every visibility against every kind of reader — an anonymous visitor (CHAT_ALLOW_ANONYMOUS, bound to its session),
a customer, a member of the knowledge base's group, a staff member — through the four doors a knowledge base has:
the chat socket's ``ask`` (Channels' WebsocketCommunicator over the real routing, and once a real Daphne),
retrieval, the document page and its download, and the chat page. What may be seen works; what may not is
``not_found`` / 404, exactly like something that does not exist, and none of its text shows up anywhere. The admin
sets it. Real PostgreSQL + pgvector and the real embedding model; nothing is mocked.
"""

from __future__ import annotations

import json
import uuid

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.sessions.backends.db import SessionStore
from django.core.files.base import ContentFile
from django.test import RequestFactory
from django.urls import reverse

from conversations.access import ensure_session
from conversations.models import Conversation, Message
from knowledge import retrieval
from knowledge.models import KnowledgeBase
from knowledge.visibility import EVERYTHING, visible_knowledge_bases
from tests.answering_kb import build_kb
from tests.chat_support import ChatClient, connect

VISIBILITIES = ["public", "staff", "groups"]
READERS = ["anonymous", "customer", "member", "staff"]

#: Each knowledge base holds one article with a code found nowhere else: seeing the code means seeing the KB.
ARTICLES = {
    "public": (
        "Gift wrapping",
        "Gift wrapping",
        "Gift wrapping with the code WRAP-3021 costs 4 euros per parcel, paid at checkout.",
    ),
    "staff": (
        "Warehouse override",
        "Warehouse override code",
        "The warehouse override code is ZEBRA-7731. Staff type it into the returns terminal to unlock a stuck return.",
    ),
    "groups": (
        "Partner rebate",
        "Partner rebate tier",
        "Partners get a rebate of twelve percent with the rebate tier code PLATINUM-4488 on every invoice.",
    ),
}
CODES = {"public": "WRAP-3021", "staff": "ZEBRA-7731", "groups": "PLATINUM-4488"}
QUESTIONS = {
    "public": "How much does gift wrapping cost?",
    "staff": "What is the warehouse override code?",
    "groups": "What is the partner rebate tier code?",
}
NAMES = {"public": "Help desk", "staff": "Staff handbook", "groups": "Partner desk"}


def may_see(visibility: str, reader: str) -> bool:
    """The rule under test, written out: public for all, staff-only for staff, group-limited for members and staff."""
    return visibility == "public" or reader == "staff" or (visibility == "groups" and reader == "member")


CASES = [pytest.param(v, r, id=f"{v}-kb-{r}") for v in VISIBILITIES for r in READERS]


def make_world() -> dict:
    """Three knowledge bases (one per visibility), the group, and one user per signed-in reader kind."""
    partners = Group.objects.create(name="Partners")
    other_group = Group.objects.create(name="Wholesale")
    kbs = {}
    for visibility in VISIBILITIES:
        kb = build_kb(NAMES[visibility], [ARTICLES[visibility]])
        kb.visibility = visibility
        kb.save()
        document = kb.documents.get()
        document.original_filename = f"{visibility}.txt"
        document.file.save(f"{visibility}.txt", ContentFile(ARTICLES[visibility][2].encode()))
        kbs[visibility] = kb
    kbs["groups"].groups.set([partners])
    users = get_user_model().objects
    customer = users.create_user("carla", password="pw-carla-123")
    customer.groups.add(other_group)  # in a group, just not the knowledge base's
    member = users.create_user("mia", password="pw-mia-123")
    member.groups.add(partners)
    staff = users.create_user("sam", password="pw-sam-123", is_staff=True)
    return {"kbs": kbs, "partners": partners, "users": {"customer": customer, "member": member, "staff": staff}}


@pytest.fixture
def world(db) -> dict:
    return make_world()


@pytest.fixture
def tx_world(transactional_db) -> dict:
    return make_world()


def reader_of(world: dict, kind: str):
    """What the visibility rule and retrieval take for a reader kind: the user, or None for an anonymous visitor."""
    return None if kind == "anonymous" else world["users"][kind]


# --- the rule itself -------------------------------------------------------------------------------------------


def test_the_rule_in_one_place(world):
    for kind in READERS:
        visible = set(visible_knowledge_bases(reader_of(world, kind)).values_list("visibility", flat=True))
        assert visible == {v for v in VISIBILITIES if may_see(v, kind)}, kind
    assert visible_knowledge_bases(EVERYTHING).count() == 3
    # The rule reads the user as they are now: a user id works, and so do changes made after the object was loaded.
    member = world["users"]["member"]
    assert set(visible_knowledge_bases(member.pk).values_list("visibility", flat=True)) == {"public", "groups"}
    get_user_model().objects.filter(pk=member.pk).update(is_active=False)
    assert list(visible_knowledge_bases(member).values_list("visibility", flat=True)) == ["public"]
    staff = world["users"]["staff"]
    get_user_model().objects.filter(pk=staff.pk).update(is_staff=False)
    assert list(visible_knowledge_bases(staff).values_list("visibility", flat=True)) == ["public"]
    # A group-limited knowledge base without a group is for staff only.
    world["kbs"]["groups"].groups.clear()
    assert "groups" not in set(visible_knowledge_bases(world["users"]["customer"]).values_list("visibility", flat=True))


def test_existing_and_new_knowledge_bases_are_public(db):
    kb = KnowledgeBase.objects.create(name="Fresh")
    assert kb.visibility == KnowledgeBase.Visibility.PUBLIC
    assert list(visible_knowledge_bases(None)) == [kb]


# --- retrieval ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("visibility", "kind"), CASES)
def test_retrieval_returns_chunks_only_of_visible_knowledge_bases(world, visibility, kind):
    kb, reader, code = world["kbs"][visibility], reader_of(world, kind), CODES[visibility]
    question = QUESTIONS[visibility]
    everywhere = retrieval.search(question, kb=None, k=10, reader=reader).passages
    by_object = retrieval.search(question, kb=kb, reader=reader).passages
    by_id = retrieval.search(question, kb=kb.pk, reader=reader).passages
    keyword = retrieval.search(code, kb=kb, reader=reader, mode="keyword").passages
    if may_see(visibility, kind):
        assert code in by_object[0].text and code in by_id[0].text and code in keyword[0].text
        assert code in everywhere[0].text, "the best passage over every visible knowledge base is this one"
        assert retrieval.search(question, kb=kb.slug, reader=reader).passages[0].text == by_object[0].text
    else:
        assert by_object == [] and by_id == [] and keyword == []
        assert everywhere and all(code not in p.text and code not in p.snippet for p in everywhere)
        for name in (kb.slug, kb.name):
            with pytest.raises(retrieval.UnknownKnowledgeBase) as refused:
                retrieval.search(question, kb=name, reader=reader)
            with pytest.raises(retrieval.UnknownKnowledgeBase) as missing:
                retrieval.search(question, kb="no-such-kb", reader=reader)
            assert refused.value.available == missing.value.available, "the same list as for a missing one"
            assert kb.name not in refused.value.available


async def test_async_retrieval_and_the_operator_view(tx_world):
    world = tx_world
    staff_kb = world["kbs"]["staff"]
    customer = world["users"]["customer"]
    assert (await retrieval.asearch(QUESTIONS["staff"], kb=staff_kb, reader=customer)).passages == []
    assert (await retrieval.asearch(QUESTIONS["staff"], kb=staff_kb.pk)).passages == [], "default: anonymous"
    found = await retrieval.asearch(QUESTIONS["staff"], kb=staff_kb, reader=world["users"]["staff"])
    assert CODES["staff"] in found.passages[0].text
    operator = await database_sync_to_async(retrieval.search)(QUESTIONS["staff"], kb=staff_kb.name, reader=EVERYTHING)
    assert CODES["staff"] in operator.passages[0].text


# --- the document page and its download --------------------------------------------------------------------------


@pytest.mark.parametrize(("visibility", "kind"), CASES)
def test_document_page_and_download_follow_visibility(world, settings, visibility, kind, client):
    settings.CHAT_ALLOW_ANONYMOUS = True
    if kind != "anonymous":
        client.force_login(world["users"][kind])
    document = world["kbs"][visibility].documents.get()
    missing = client.get("/kb/documents/999999/")
    page = client.get(f"/kb/documents/{document.pk}/")
    download = client.get(f"/kb/documents/{document.pk}/download/")
    body = b"".join(download.streaming_content) if download.status_code == 200 else download.content
    code = CODES[visibility]
    if may_see(visibility, kind):
        assert page.status_code == 200 and code in page.text
        assert download.status_code == 200 and code.encode() in body
    else:
        assert page.status_code == 404 and download.status_code == 404 and missing.status_code == 404
        assert code not in page.text and code.encode() not in body
        assert document.title not in page.text
        assert page.content == missing.content, "a hidden document looks exactly like a missing one"


# --- the chat socket ---------------------------------------------------------------------------------------------


async def anonymous_socket() -> ChatClient:
    """A visitor's chat socket, with the session the chat page creates (ensure_session)."""

    def new_session() -> str:
        request = RequestFactory().get("/")
        request.session = SessionStore()
        return ensure_session(request)

    key = await database_sync_to_async(new_session)()
    return await connect(headers=[(b"cookie", f"sessionid={key}".encode())])


async def socket_for(world: dict, kind: str) -> ChatClient:
    return await anonymous_socket() if kind == "anonymous" else await connect(world["users"][kind])


async def refusal(client: ChatClient, text: str, kb: str) -> dict:
    ask_id = str(uuid.uuid4())
    await client.send({"type": "ask", "id": ask_id, "text": text, "kb": kb})
    frame = await client.recv_type("error")
    assert frame["id"] == ask_id
    return frame


def same_refusal(refused: dict, missing: dict, name: str) -> None:
    """An invisible knowledge base's refusal is a nonexistent one's, but for the name the client sent and the id."""
    assert refused["code"] == missing["code"] == "not_found"
    assert set(refused) == set(missing)
    assert refused["detail"] == missing["detail"].replace("'no-such-kb'", repr(name))


def every_text(frames: list[dict]) -> str:
    return json.dumps(frames, ensure_ascii=False)


@pytest.mark.parametrize(("visibility", "kind"), CASES)
async def test_ask_a_knowledge_base_over_the_socket(tx_world, settings, fast_answers, cleanup, visibility, kind):
    settings.CHAT_ALLOW_ANONYMOUS = True
    kb = tx_world["kbs"][visibility]
    client = await socket_for(tx_world, kind)
    code = CODES[visibility]
    if may_see(visibility, kind):
        ack = await client.ask(QUESTIONS[visibility], kb=kb.slug)
        frames = await client.until_final(ack["message"])
        final = frames[-1]
        assert final["state"] == "complete" and code in final["text"]
        sources = next(f for f in frames if f["type"] == "sources")["items"]
        assert sources and sources[0]["document"] == (await kb.documents.aget()).pk
        conversation = await Conversation.objects.aget(pk=ack["conversation"])
        assert conversation.knowledge_base_id == kb.pk
    else:
        missing = await refusal(client, QUESTIONS[visibility], "no-such-kb")
        for name in (kb.slug, kb.name):
            refused = await refusal(client, QUESTIONS[visibility], name)
            same_refusal(refused, missing, name)
            assert code not in every_text([refused])
        assert await Conversation.objects.acount() == 0, "nothing was saved"
        assert await client.quiet(0.3), "no answer is on its way"
        await client.ping_roundtrip()
    await client.close()


async def test_an_existing_conversation_on_a_now_hidden_kb_gets_nothing_from_it(
    tx_world, fast_answers, cleanup
):
    """A conversation made before its knowledge base turned staff-only: the next answer searches nothing of it."""
    customer = tx_world["users"]["customer"]
    staff_kb = tx_world["kbs"]["staff"]
    conversation = await Conversation.objects.acreate(owner=customer, knowledge_base=staff_kb)
    client = await connect(customer)
    ack = await client.ask(QUESTIONS["staff"], conversation=str(conversation.pk))
    frames = await client.until_final(ack["message"])
    assert frames[-1]["state"] == "complete"
    assert next(f for f in frames if f["type"] == "sources")["items"] == []
    assert frames[-1]["offer_handoff"] is True, "the nothing-found answer offers a person"
    answer = await Message.objects.aget(pk=ack["message"])
    stored = every_text([answer.text, answer.html, answer.sources, answer.trace, answer.frames])
    assert CODES["staff"] not in every_text(frames) and CODES["staff"] not in stored
    assert "Warehouse" not in every_text(frames)
    await client.close()

    staff_client = await connect(tx_world["users"]["staff"])  # the same knowledge base, asked by staff: answered
    ack = await staff_client.ask(QUESTIONS["staff"], kb=staff_kb.slug)
    assert CODES["staff"] in (await staff_client.until_final(ack["message"]))[-1]["text"]
    await staff_client.close()


async def test_leaving_the_group_hides_the_knowledge_base_at_the_next_ask(tx_world, fast_answers, cleanup):
    member, partners = tx_world["users"]["member"], tx_world["partners"]
    slug = tx_world["kbs"]["groups"].slug
    client = await connect(member)
    ack = await client.ask(QUESTIONS["groups"], kb=slug)
    assert CODES["groups"] in (await client.until_final(ack["message"]))[-1]["text"]
    await database_sync_to_async(member.groups.remove)(partners)
    refused = await refusal(client, QUESTIONS["groups"], slug)  # the same socket, no reconnect
    assert refused["code"] == "not_found"
    # ...and a follow-up in the conversation already open on that knowledge base finds nothing of it.
    follow_up = await client.ask(QUESTIONS["groups"], conversation=ack["conversation"])
    frames = await client.until_final(follow_up["message"])
    assert CODES["groups"] not in every_text(frames)
    assert next(f for f in frames if f["type"] == "sources")["items"] == []
    await client.close()


@pytest.mark.django_db(transaction=True)
def test_over_a_real_daphne_node(tx_world, daphne_server):
    """The same refusal from a real `daphne` process, with a token from /api/token/."""
    import asyncio

    from tests.node_client import Client as NodeClient
    from tests.node_client import get_token

    node = daphne_server(ANSWER_WORDS_PER_SECOND="0")
    token = get_token(node, "carla", "pw-carla-123")

    async def scenario() -> tuple[dict, dict, list[dict]]:
        client = await NodeClient.open(node, token)
        try:
            await client.send({"type": "ask", "id": "a1", "text": QUESTIONS["staff"], "kb": tx_world["kbs"]["staff"].slug})
            refused = await client.recv_type("error")
            await client.send({"type": "ask", "id": "a2", "text": QUESTIONS["staff"], "kb": "no-such-kb"})
            missing = await client.recv_type("error")
            ack = await client.ask(QUESTIONS["public"], kb=tx_world["kbs"]["public"].slug)
            return refused, missing, await client.until_final(ack["message"])
        finally:
            await client.close()

    refused, missing, frames = asyncio.run(scenario())
    same_refusal(refused, missing, tx_world["kbs"]["staff"].slug)
    assert CODES["public"] in frames[-1]["text"]
    assert CODES["staff"] not in every_text([refused, *frames])


# --- the chat page -----------------------------------------------------------------------------------------------


def test_chat_page_names_only_a_visible_knowledge_base(world, client):
    customer = world["users"]["customer"]
    client.force_login(customer)
    for visibility in VISIBILITIES:
        kb = world["kbs"][visibility]
        conversation = Conversation.objects.create(owner=customer, knowledge_base=kb)
        page = client.get(reverse("conversations:detail", args=[conversation.pk]))
        assert page.status_code == 200
        config = json.loads(page.text.split('id="chat-config" type="application/json">')[1].split("</script>")[0])
        assert config["kb"] == (kb.slug if visibility == "public" else "")
        if visibility != "public":
            assert kb.slug not in page.text and kb.name not in page.text


# --- the admin ---------------------------------------------------------------------------------------------------


@pytest.fixture
def admin_client_(client, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("boss", "boss@example.com", "pw-boss-123"))
    return client


def test_admin_sets_visibility_and_groups(world, admin_client_):
    kb, partners = world["kbs"]["public"], world["partners"]
    url = reverse("admin:knowledge_knowledgebase_change", args=[kb.pk])
    form = admin_client_.get(url)
    assert form.status_code == 200
    assert 'name="visibility"' in form.text and 'name="groups"' in form.text
    fields = {"name": kb.name, "slug": kb.slug, "description": "", "visibility": "groups"}

    refused = admin_client_.post(url, fields)  # group-limited without a group: refused with a reason
    assert refused.status_code == 200 and "Choose at least one group" in refused.text
    kb.refresh_from_db()
    assert kb.visibility == "public"

    response = admin_client_.post(url, {**fields, "groups": [partners.pk]})
    assert response.status_code == 302
    kb.refresh_from_db()
    assert kb.visibility == "groups" and list(kb.groups.all()) == [partners]
    # ...and it takes effect: a customer no longer sees it, a member does.
    assert not retrieval.search(QUESTIONS["public"], kb=kb, reader=world["users"]["customer"]).passages
    assert retrieval.search(QUESTIONS["public"], kb=kb, reader=world["users"]["member"]).passages

    response = admin_client_.post(url, {**fields, "visibility": "staff", "groups": []})
    assert response.status_code == 302
    kb.refresh_from_db()
    assert kb.visibility == "staff"

    added = admin_client_.post(
        reverse("admin:knowledge_knowledgebase_add"), {"name": "Brand new", "slug": "brand-new", "visibility": "public"}
    )
    assert added.status_code == 302 and KnowledgeBase.objects.get(slug="brand-new").visibility == "public"


def test_admin_list_shows_and_filters_visibility(world, admin_client_):
    changelist = reverse("admin:knowledge_knowledgebase_changelist")
    page = admin_client_.get(changelist)
    assert "Visible to" in page.text
    assert "Everyone" in page.text and "Staff only" in page.text and "Groups: Partners" in page.text
    only_staff = admin_client_.get(changelist, {"visibility__exact": "staff"})
    assert "Staff handbook" in only_staff.text and "Help desk" not in only_staff.text
    assert "Partner desk" not in only_staff.text


def test_staff_try_a_search_in_the_admin_sees_every_knowledge_base(world, admin_client_):
    staff_kb = world["kbs"]["staff"]
    query = {"q": QUESTIONS["staff"], "kb": staff_kb.pk, "mode": "hybrid", "k": 3}
    page = admin_client_.get(reverse("admin:knowledge_search"), query)
    assert page.status_code == 200 and CODES["staff"] in page.text
