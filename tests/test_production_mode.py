"""Production mode (issue 9): with DEBUG off the deploy check is clean, and a real node behaves as it says.

`manage.py check --deploy --fail-level WARNING` runs in a subprocess with a production environment and must
pass; with the development defaults, or with HTTPS_ONLY off, the same command must fail (so the first test could
fail). A node started with DEBUG off and the production defaults redirects plain http to https, answers the
load balancer's /healthz over plain http, and behind a proxy that says X-Forwarded-Proto: https sends HSTS and
Secure, HttpOnly cookies.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model

from tests.daphne_process import subprocess_database_url
from tests.web_client import WebClient

ROOT = Path(__file__).resolve().parent.parent


def production_env() -> dict[str, str]:
    """What an operator sets (docs/deployment.md, "Production mode"); everything else keeps its default."""
    return {
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "chat.example.com",
        "CSRF_TRUSTED_ORIGINS": "https://chat.example.com",
    }


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """manage.py in a clean environment: only PATH, the database and ``env`` (no DEBUG, HTTPS_ONLY… inherited)."""
    base = {name: os.environ[name] for name in ("PATH", "HOME", "LANG") if name in os.environ}
    base.update(DATABASE_URL=subprocess_database_url(), PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def warnings_of(result: subprocess.CompletedProcess) -> set[str]:
    return set(re.findall(r"\((security\.[WE]\d+)\)", result.stdout + result.stderr))


@pytest.mark.django_db
def test_deploy_check_is_clean_in_production():
    result = manage(production_env(), "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
    assert warnings_of(result) == set()


@pytest.mark.django_db
def test_deploy_check_fails_with_the_development_defaults():
    result = manage({}, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode != 0
    assert {"security.W018", "security.W009"} <= warnings_of(result)  # DEBUG on; the development key


@pytest.mark.django_db
def test_deploy_check_fails_with_https_only_off():
    """What HTTPS_ONLY=false (the plain-http test and bench nodes) gives up: exactly the four warnings of issue 9."""
    result = manage({**production_env(), "HTTPS_ONLY": "false"}, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode != 0
    assert warnings_of(result) == {"security.W004", "security.W008", "security.W012", "security.W016"}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("secret_key", "message"),
    [("", "SECRET_KEY must be set"), ("insecure-development-key-do-not-use-in-production", "development key")],
)
def test_no_development_key_with_debug_off(secret_key, message):
    result = manage({**production_env(), "SECRET_KEY": secret_key}, "check")
    assert result.returncode != 0
    assert message in result.stderr


@pytest.mark.django_db(transaction=True)
def test_a_production_node_redirects_to_https_and_marks_cookies_secure(daphne_server):
    # HTTPS_ONLY empty: its default (on, since DEBUG is off), overriding the plain-http default of the test nodes.
    node = daphne_server(DEBUG="false", SECRET_KEY=secrets.token_urlsafe(50), ALLOWED_HOSTS="127.0.0.1", HTTPS_ONLY="")
    client = WebClient(node.url)

    plain = client.get("/accounts/login/")
    assert plain.status == 301
    assert plain.header("Location") == f"https://127.0.0.1:{node.port}/accounts/login/"
    assert client.get("/healthz").status == 200  # health checks reach each node over plain http

    # Behind the TLS proxy (deploy/nginx.conf sets X-Forwarded-Proto): served, with HSTS and secure cookies.
    behind_proxy = {"X-Forwarded-Proto": "https"}
    page = client.get("/accounts/login/", headers=behind_proxy)
    assert page.status == 200
    assert page.header("Strict-Transport-Security") == "max-age=31536000; includeSubDomains"
    assert f"wss://127.0.0.1:{node.port}" in page.header("Content-Security-Policy")
    csrf_cookie = next(c for c in page.headers.get_all("Set-Cookie") if c.startswith("csrftoken="))
    assert "Secure" in csrf_cookie and "HttpOnly" in csrf_cookie

    # Signing in behind the proxy: the session cookie is Secure and HttpOnly too.
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    get_user_model().objects.create_user("customer", password="pw-production-1")
    signed_in = client.request(
        "POST",
        "/accounts/login/",
        {"csrfmiddlewaretoken": token, "username": "customer", "password": "pw-production-1", "next": "/"},
        headers={**behind_proxy, "Origin": f"https://127.0.0.1:{node.port}", "Cookie": f"csrftoken={_value(csrf_cookie)}"},
    )
    assert signed_in.status == 302, signed_in.text[:500]
    session_cookie = next(c for c in signed_in.headers.get_all("Set-Cookie") if c.startswith("sessionid="))
    assert "Secure" in session_cookie and "HttpOnly" in session_cookie and "SameSite=Lax" in session_cookie


def _value(set_cookie: str) -> str:
    return set_cookie.split(";", 1)[0].split("=", 1)[1]
