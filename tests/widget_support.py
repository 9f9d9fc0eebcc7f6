"""What the widget's tests share: a demo host (conversations/demo_host.py, a real HTTP server on another origin with
the widget's tag on its pages), the demo ``Site`` that allows it, and the frame inside a host page."""

from __future__ import annotations

from conversations import demo_host
from conversations.models import Site
from knowledge.models import KnowledgeBase
from tests.local_http import LocalHTTPServer

SECRET = "widget-test-identity-secret-0123456789abcdef"


class DemoHost(LocalHTTPServer):
    """The demo company site in front of the support site at ``support`` (``localhost``: another site than the
    support site's 127.0.0.1, as a company's pages are)."""

    def __init__(self, support: str, slug: str = "demo", secret: str = SECRET) -> None:
        super().__init__(demo_host.handler(support, slug, secret))

    @property
    def origin(self) -> str:
        return f"http://localhost:{self.port}"


def make_site(kb: KnowledgeBase, origins: str, *, slug: str = "demo", **fields) -> Site:
    site = Site(name=fields.pop("name", "Northwind Outfitters"), slug=slug, allowed_origins=origins,
                identity_secret=SECRET, **fields)  # fmt: skip
    site.full_clean()
    site.save()
    site.knowledge_bases.add(kb)
    return site


def open_widget(page, url: str):
    """Open a host page, click the launcher and wait for the chat inside the frame to connect; the frame."""
    page.goto(url)
    launcher = page.locator("[data-support-widget]").locator("button")  # in the (closed) shadow root
    launcher.click()
    page.wait_for_selector("iframe")
    frame = page.frame_locator("iframe")
    frame.locator("[data-chat][data-connection=open]").wait_for()
    return widget_frame(page)


def widget_frame(page):
    """The widget's frame (a Playwright Frame: waits and evals run inside it)."""
    return next(f for f in page.frames if "/widget/" in f.url)
