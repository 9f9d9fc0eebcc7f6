"""The insights page in a real browser over seeded data (tests/insights_data.py), on a real Daphne: a staff member
signs in, reads the figures and the SVG charts, narrows to a knowledge base, and marks a 👎's reason; at desktop
width and at 390 px, light and dark. Screenshots: SCREENSHOT_DIR (default <tmp>/chat-screens/), insights-*.png."""

from __future__ import annotations

import os

import pytest
from django.contrib.auth import get_user_model

from conversations.models import Feedback
from tests.browser import new_page, sign_in
from tests.insights_data import seed, seed_gaps
from tests.test_chat_page import screenshot

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

STAFF_PASSWORD = "pw-for-the-insights-lead-1"
PERIOD = "start=2026-11-02&end=2026-11-10"


@pytest.fixture
def site(daphne_server):
    data = seed()
    seed_gaps(data)
    get_user_model().objects.create_user("lead", password=STAFF_PASSWORD, first_name="Lee", is_staff=True)
    return daphne_server(), data


def test_staff_read_the_insights_and_mark_a_thumbs_down(browser, site):
    node, data = site
    errors: list[str] = []
    context, page = new_page(browser, errors, width=1280)
    sign_in(page, f"{node.url}/console/", "lead", STAFF_PASSWORD)
    page.click("a.nav-insights")
    page.wait_for_url(f"{node.url}/console/insights/")
    page.goto(f"{node.url}/console/insights/?{PERIOD}")

    assert page.locator("[data-metric=conversations] .value").inner_text() == "8"
    assert page.locator("[data-metric=bot_resolution] .value").inner_text() == "42.9%"
    assert page.locator("[data-metric=first_reply] .value").inner_text() == "6.0 min"
    assert page.locator("[data-chart=conversations] svg rect.bar").count() == 9  # a bar a day, empty days too
    assert page.locator("[data-chart=rates] svg polyline").count() >= 2
    tallest = page.locator("[data-chart=conversations] svg rect.bar").first.bounding_box()
    assert tallest is not None and tallest["height"] > 50  # drawn, at a visible size
    assert page.locator("[data-period-table] tbody tr").count() == 9
    assert page.locator("[data-gap-group]").first.locator("[data-gap-count]").inner_text() == "4×"
    assert "Liefern Sie nach Island?" in page.locator("[data-gap-group]").first.inner_text()
    screenshot(page, "insights-desktop")

    # Mark the returns 👎 "Outdated article": it leaves the queue, the page says so.
    down = data.feedback["down"]
    item = page.locator(f'[data-review="{down.pk}"]')
    assert "That is not what I asked" in item.inner_text()
    item.locator("button[value=outdated_article]").click()
    page.wait_for_selector(".flash")
    assert "Outdated article" in page.locator(".flash").inner_text()
    assert page.locator(f'[data-review="{down.pk}"]').count() == 0
    assert page.locator("[data-waiting]").inner_text() == "1"
    assert page.url.endswith(f"?{PERIOD}#reviews")
    down.refresh_from_db()
    assert down.review_reason == Feedback.Reason.OUTDATED_ARTICLE and down.reviewed_by.username == "lead"

    # Narrow to knowledge base B with the form: its two conversations.
    page.select_option("#id_kb", str(data.kb_b.pk))
    page.click(".insights-filters button[type=submit]")
    page.wait_for_url(f"**kb={data.kb_b.pk}**")
    assert page.locator("[data-metric=conversations] .value").inner_text() == "2"
    context.close()

    for scheme in ("light", "dark"):
        context, phone = new_page(browser, errors, width=390, height=1600, color_scheme=scheme)
        sign_in(phone, f"{node.url}/console/insights/?{PERIOD}", "lead", STAFF_PASSWORD)
        width = phone.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the page scrolls sideways at 390 px ({width} px)"
        chart = phone.locator("[data-chart=conversations] svg").bounding_box()
        assert chart is not None and chart["width"] <= 390 and chart["height"] > 80
        if scheme == "dark":
            background = phone.evaluate("getComputedStyle(document.querySelector('.card')).backgroundColor")
            assert background == "rgb(24, 29, 36)", background  # --panel in dark mode
        phone.screenshot(path=str(screenshot(phone, f"insights-390-{scheme}")), full_page=True)
        context.close()
    assert errors == []
