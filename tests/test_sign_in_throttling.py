"""Throttled sign-in (chatsite/sign_in.py): POST /api/token/, /accounts/login/ and /admin/login/ answer 429 with
Retry-After past the failures allowed per username and per client address, in Redis across nodes."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid

import pytest
import redis
from django.contrib.auth import get_user_model
from django.test import Client

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def prefix() -> str:
    """A Redis key prefix of this test alone (CHANNEL_PREFIX), its keys deleted afterwards."""
    name = f"test-signin-{uuid.uuid4().hex[:12]}"
    yield name
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(f"{name}:*"))
    if keys:
        client.delete(*keys)


@pytest.fixture
def limits(settings, prefix):
    """3 failures per username, 5 per address, a 60 s window, counted in the real Redis under this test's prefix."""
    settings.REDIS_URL = REDIS_URL
    settings.CHANNEL_PREFIX = prefix
    settings.SIGN_IN_MAX_FAILURES_PER_USERNAME = 3
    settings.SIGN_IN_MAX_FAILURES_PER_IP = 5
    settings.SIGN_IN_FAILURE_WINDOW_SECONDS = 60
    return settings


@pytest.fixture
def alice(db):
    return get_user_model().objects.create_user("alice", password="pw-alice-123")


@pytest.fixture
def bob(db):
    return get_user_model().objects.create_user("bob", password="pw-bob-123")


def token(username: str, password: str, address: str = "198.51.100.1"):
    return Client(REMOTE_ADDR=address).post(
        "/api/token/", data=json.dumps({"username": username, "password": password}), content_type="application/json"
    )


def assert_throttled(response, window: int = 60) -> int:
    assert response.status_code == 429, response.content
    wait = int(response["Retry-After"])
    assert 0 < wait <= window
    return wait


def test_wrong_passwords_then_the_right_one_the_api_answers_429_with_retry_after(limits, alice, bob, prefix):
    # The attack of the issue: wrong passwords, then the right one.
    assert [token("alice", f"guess-{n}").status_code for n in range(3)] == [401, 401, 401]
    blocked = token("alice", "guess-3")
    wait = assert_throttled(blocked)
    body = blocked.json()
    assert body["code"] == "throttled" and body["retry_after"] == wait and str(wait) in body["error"]
    assert_throttled(token("alice", "pw-alice-123"))  # even the right password waits: it is not even checked
    # The count is in Redis (every node reads it), ending with the window.
    keys = list(redis.Redis.from_url(REDIS_URL).scan_iter(f"{prefix}:signin:user:*"))
    assert len(keys) == 1 and 0 < redis.Redis.from_url(REDIS_URL).ttl(keys[0]) <= 60
    # Somebody else from the same address is not slowed (4 failures there, the address allows 5).
    assert token("bob", "pw-bob-123").status_code == 200
    # Her username stays blocked from any address until the window ends (the price of a per-username count).
    assert_throttled(token("alice", "pw-alice-123", address="192.0.2.44"))


def test_one_address_trying_many_usernames_is_throttled_and_others_are_not(limits, alice):
    attacker = "203.0.113.7"
    assert [token(f"user{n}", "x", attacker).status_code for n in range(5)] == [401] * 5
    assert_throttled(token("someone-new", "x", attacker))
    assert_throttled(token("alice", "pw-alice-123", attacker))
    assert token("alice", "pw-alice-123", "198.51.100.9").status_code == 200  # another address signs in as usual


def test_ipv6_clients_are_counted_by_their_64(limits, db):
    for n in range(5):
        assert token(f"user{n}", "x", f"2001:db8:1:2::{n + 1}").status_code == 401
    assert_throttled(token("other", "x", "2001:db8:1:2:ffff::1"))  # the same /64
    assert token("other", "x", "2001:db8:1:3::1").status_code == 401  # the next /64 is someone else


def test_a_successful_sign_in_clears_its_usernames_failures(limits, alice):
    assert [token("alice", "typo").status_code for _ in range(2)] == [401, 401]
    assert token("alice", "pw-alice-123").status_code == 200
    assert [token("alice", "typo", "192.0.2.1").status_code for _ in range(3)] == [401, 401, 401]  # 3 more allowed


def test_the_block_ends_with_the_window(limits, alice):
    limits.SIGN_IN_FAILURE_WINDOW_SECONDS = 2
    for _ in range(3):
        token("alice", "wrong")
    wait = assert_throttled(token("alice", "pw-alice-123"), window=2)
    time.sleep(wait + 0.1)
    assert token("alice", "pw-alice-123").status_code == 200


def test_without_redis_the_counts_are_kept_in_the_process(settings, prefix, alice):
    settings.REDIS_URL = ""
    settings.CHANNEL_PREFIX = prefix
    settings.SIGN_IN_MAX_FAILURES_PER_USERNAME = 2
    assert [token("alice", "wrong").status_code for _ in range(2)] == [401, 401]
    assert_throttled(token("alice", "pw-alice-123"), window=settings.SIGN_IN_FAILURE_WINDOW_SECONDS)
    assert not list(redis.Redis.from_url(REDIS_URL).scan_iter(f"{prefix}:*"))


def test_malformed_requests_are_not_counted_as_failures(limits, alice):
    browser = Client(REMOTE_ADDR="198.51.100.1")
    for _ in range(10):
        assert browser.post("/api/token/", data="{nope", content_type="application/json").status_code == 400
    assert token("alice", "pw-alice-123").status_code == 200


@pytest.mark.parametrize("store", ["redis", "in-process"])
def test_guesses_sent_at_once_cannot_all_pass_the_check(limits, store):
    """The check and the count are one atomic step: 40 attempts at once, 3 allowed, exactly 3 go ahead."""
    from concurrent.futures import ThreadPoolExecutor

    from django.test import RequestFactory

    from chatsite import sign_in

    if store == "in-process":
        limits.REDIS_URL = ""
    request = RequestFactory().post("/api/token/", REMOTE_ADDR="198.51.100.50")
    with ThreadPoolExecutor(40) as pool:
        waits = list(pool.map(lambda _: sign_in.attempt("zoe", request), range(40)))
    assert waits.count(0) == 3
    assert all(0 < wait <= 60 for wait in waits if wait) and len(waits) == 40


def test_the_login_page_is_throttled_and_says_why(limits, alice):
    browser = Client(REMOTE_ADDR="198.51.100.2")
    for _ in range(3):
        page = browser.post("/accounts/login/", {"username": "alice", "password": "wrong"})
        assert page.status_code == 200 and b"correct username and password" in page.content
    page = browser.post("/accounts/login/", {"username": "alice", "password": "pw-alice-123"})
    wait = assert_throttled(page)
    text = page.content.decode()
    assert f"Too many failed sign-in attempts. Try again in {wait} seconds." in text
    assert 'name="username"' in text and 'value="alice"' in text  # the form, re-rendered, keeps the name
    assert browser.get("/").status_code == 302  # not signed in
    # The API shares the count: it is the same password guessed another way.
    assert_throttled(token("alice", "pw-alice-123", "192.0.2.9"))


def test_the_admin_login_page_shares_the_throttle(limits, db):
    get_user_model().objects.create_superuser("root", password="pw-root-123")
    browser = Client(REMOTE_ADDR="198.51.100.3")
    for _ in range(3):
        assert browser.post("/admin/login/", {"username": "root", "password": "wrong"}).status_code == 200
    page = browser.post("/admin/login/", {"username": "root", "password": "pw-root-123"})
    assert_throttled(page)
    assert b"Too many failed sign-in attempts" in page.content
    assert browser.get("/admin/").status_code == 302  # not signed in


def test_the_login_page_signs_in_under_the_limit(limits, alice):
    browser = Client(REMOTE_ADDR="198.51.100.4")
    assert browser.post("/accounts/login/", {"username": "alice", "password": "wrong"}).status_code == 200
    assert browser.post("/accounts/login/", {"username": "alice", "password": "pw-alice-123"}).status_code == 302
    assert browser.get("/").status_code == 200


def post_token(node, username: str, password: str) -> tuple[int, dict, dict]:
    request = urllib.request.Request(
        node.url + "/api/token/",
        data=json.dumps({"username": username, "password": password}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


@pytest.mark.multinode
@pytest.mark.django_db(transaction=True)
def test_failures_on_one_node_throttle_the_other(daphne_server, prefix):
    """Two real Daphne nodes sharing Redis: guesses spread over both are counted once, cluster-wide."""
    get_user_model().objects.create_user("carol", password="pw-carol-123")
    env = {"REDIS_URL": REDIS_URL, "CHANNEL_PREFIX": prefix, "SIGN_IN_MAX_FAILURES_PER_USERNAME": "4",
           "SIGN_IN_MAX_FAILURES_PER_IP": "100", "SIGN_IN_FAILURE_WINDOW_SECONDS": "120"}
    node_a, node_b = daphne_server(**env), daphne_server(**env)
    statuses = [post_token(node, "carol", "wrong")[0] for node in (node_a, node_b, node_a, node_b)]
    assert statuses == [401, 401, 401, 401]
    for node in (node_a, node_b):
        status, headers, body = post_token(node, "carol", "pw-carol-123")
        assert status == 429 and 0 < int(headers["Retry-After"]) <= 120 and body["code"] == "throttled"
    status, _, body = post_token(node_b, "dave-does-not-exist", "x")
    assert status == 401  # another username from the same address is still answered
