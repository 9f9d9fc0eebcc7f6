"""Headless Chromium for the end-to-end tests: the pages they open and the sign-in they go through.

Debian's chromium (never ``playwright install``); the ``browser`` fixture is in tests/conftest.py. A page records
what would mean a broken page — console errors, uncaught exceptions, HTTP errors — for the test to assert empty.
"""

from __future__ import annotations

from collections.abc import Callable

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def new_page(
    browser,
    errors: list[str],
    *,
    width: int = 1100,
    height: int = 900,
    bypass_csp: bool = True,
    prepare: Callable | None = None,
    color_scheme: str = "light",
):
    """A fresh context and page (``(context, page)``; close the context) whose errors go to ``errors``.

    ``bypass_csp``: Playwright's ``wait_for_function`` evals its predicate, which our policy forbids (no
    'unsafe-eval'); the policy itself is tested without it (tests/test_page_security.py). ``prepare(context)``
    runs before the page opens (bindings, init scripts). ``color_scheme``: the system setting the pages see
    (``prefers-color-scheme``), "light" or "dark".
    """
    context = browser.new_context(
        viewport={"width": width, "height": height}, bypass_csp=bypass_csp, color_scheme=color_scheme
    )
    if prepare is not None:
        prepare(context)
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.on("console", lambda msg: msg.type == "error" and errors.append(f"{page.url}: {msg.text}"))
    page.on("pageerror", lambda exc: errors.append(f"{page.url}: {exc}"))
    page.on("response", lambda r: r.status >= 400 and errors.append(f"HTTP {r.status} {r.url}"))
    return context, page


def sign_in(page, url: str, username: str, password: str) -> None:
    """Open ``url`` signed out, sign in on the page it sends us to, and land back on ``url``."""
    page.goto(url)
    assert "/accounts/login/" in page.url, page.url
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_url(url)
