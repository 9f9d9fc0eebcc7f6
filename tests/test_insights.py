"""The insights (conversations/insights): the period table's figures on hand-counted data, its filters, days and
weeks, the knowledge gaps' grouping and links, the CSV, the 👎 review queue, and who may see and act."""

from __future__ import annotations

import csv
import datetime as dt
import io
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from conversations.access import AccessRevoked
from conversations.insights import charts, gaps, metrics, reviews
from conversations.insights.period import Period, PeriodForm
from conversations.models import Feedback
from tests.insights_data import D1, D2, D3, answer, at, conversation, gap, near, seed, seed_gaps, unit_vector

pytestmark = pytest.mark.django_db

STAFF_PASSWORD = "pw-for-the-insights-staff-1"


@pytest.fixture
def data():
    s = seed()
    seed_gaps(s)
    return s


@pytest.fixture
def staff():
    return get_user_model().objects.create_user("lead", password=STAFF_PASSWORD, is_staff=True)


@pytest.fixture
def staff_client(staff):
    client = Client()
    client.force_login(staff)
    return client


def by_day(rows):
    return {row.bucket: row for row in rows}


def test_the_period_table_per_day_counts_what_was_seeded(data):
    rows, total = metrics.table(Period.of(D1, D3))
    assert [row.bucket for row in rows] == [D1 + dt.timedelta(days=n) for n in range(9)]  # empty days are zeros
    day = by_day(rows)
    one = day[D1]
    assert (one.conversations, one.settled, one.bot_resolved, one.handed_off) == (4, 3, 2, 1)
    assert one.bot_resolution_rate == pytest.approx(2 / 3) and one.handoff_rate == 0.25
    assert (one.csat_bot, one.csat_bot_count, one.csat_person, one.csat_person_count) == (4.5, 2, 2.0, 1)
    assert (one.first_reply_median_s, one.first_reply_count) == (120.0, 1)
    assert (one.answers, one.timed_answers, one.first_token_p50_ms) == (4, 3, 200.0)
    assert one.first_token_p95_ms == pytest.approx(290.0)  # percentile_cont: 200 + 0.9 × 100
    assert (one.tool_calls, one.tool_failures) == (3, 1)
    assert one.outcomes == {"bot_resolved": 2, "handed_off": 0, "agent_resolved": 1, "abandoned": 0, "reopened": 0}

    two = day[D2]
    assert (two.conversations, two.settled, two.bot_resolution_rate, two.handoff_rate) == (2, 2, 0.0, 0.5)
    assert (two.csat_bot, two.csat_bot_count, two.csat_person, two.first_reply_median_s) == (None, 0, 5.0, 600.0)
    quiet = day[D1 + dt.timedelta(days=3)]
    assert (quiet.conversations, quiet.answers, quiet.bot_resolution_rate, quiet.first_token_p50_ms) == (0, 0, None, None)
    three = day[D3]
    assert (three.conversations, three.handed_off, three.first_reply_count, three.first_reply_median_s) == (2, 1, 0, None)
    assert (three.tool_calls, three.tool_failures, three.tool_failure_rate) == (1, 1, 1.0)

    # The whole period: its own percentiles and medians (not an average of the days'); Oct 1 is outside.
    assert (total.conversations, total.settled, total.bot_resolved, total.handed_off) == (8, 7, 3, 3)
    assert total.bot_resolution_rate == pytest.approx(3 / 7) and total.handoff_rate == pytest.approx(3 / 8)
    assert (total.csat_bot, total.csat_bot_count, total.csat_person, total.csat_person_count) == (4.0, 3, 3.5, 2)
    assert (total.first_reply_median_s, total.first_reply_count) == (360.0, 2)
    assert (total.answers, total.timed_answers, total.first_token_p50_ms) == (6, 5, 300.0)
    assert total.first_token_p95_ms == pytest.approx(880.0)  # 400 + 0.8 × 600
    assert (total.tool_calls, total.tool_failures, total.tool_failure_rate) == (4, 2, 0.5)


def test_filters_by_knowledge_base_and_by_site(data):
    _rows, kb_a = metrics.table(Period.of(D1, D3, knowledge_base_id=data.kb_a.pk))
    assert (kb_a.conversations, kb_a.settled, kb_a.bot_resolved, kb_a.handed_off) == (6, 5, 2, 2)
    assert (kb_a.csat_bot, kb_a.csat_person, kb_a.first_reply_median_s) == (4.5, 3.5, 360.0)
    assert (kb_a.answers, kb_a.first_token_p50_ms, kb_a.tool_calls) == (5, 250.0, 3)
    _rows, site = metrics.table(Period.of(D1, D3, site_id=data.site.pk))
    assert (site.conversations, site.settled, site.handed_off, site.answers, site.first_token_p50_ms) == (2, 2, 1, 1, 400.0)
    _rows, both = metrics.table(Period.of(D1, D3, knowledge_base_id=data.kb_b.pk, site_id=data.site.pk))
    assert (both.conversations, both.answers, both.bot_resolution_rate) == (0, 0, None)


def test_weeks_run_monday_to_sunday_and_the_range_widens_to_whole_weeks(data):
    period = Period.of(D2, D3, unit="week")  # Tuesday to Tuesday
    assert (period.first, period.last) == (dt.date(2026, 11, 2), dt.date(2026, 11, 15))
    rows, total = metrics.table(period)
    assert [(row.bucket, row.conversations, row.answers) for row in rows] == [(D1, 6, 5), (dt.date(2026, 11, 9), 2, 1)]
    assert rows[0].first_reply_median_s == 360.0 and rows[0].first_token_p50_ms == 250.0
    assert total.conversations == 8


def test_days_are_the_sites_time_zone(data, settings):
    settings.TIME_ZONE = "Europe/Berlin"  # c4 started 23:30 UTC on D1: 00:30 on D2 in Berlin
    rows, _total = metrics.table(Period.of(D1, D2))
    assert [(row.bucket, row.conversations) for row in rows] == [(D1, 3), (D2, 3)]


def test_the_form_reads_the_filters_and_falls_back_to_the_last_30_days(data):
    form = PeriodForm({"start": "2026-11-03", "end": "2026-11-10", "unit": "week", "kb": str(data.kb_b.pk)})
    assert form.period() == Period(dt.date(2026, 11, 2), dt.date(2026, 11, 15), "week", data.kb_b.pk, None)
    fallback = PeriodForm({"start": "yesterday", "kb": "999999"}).period()
    assert (fallback.last - fallback.first).days == 29 and fallback.unit == "day" and fallback.knowledge_base_id is None
    swapped = PeriodForm({"start": "2026-11-10", "end": "2026-11-02"}).period()
    assert (swapped.first, swapped.last) == (D1, D3)


def test_gaps_group_by_embedding_with_every_language_as_examples_and_by_text_without(data):
    report = gaps.report(Period.of(D1, D3))
    assert (report.considered, report.total) == (8, 8)
    sizes = [(group.count, group.title) for group in report.groups]
    assert sizes == [(4, "Liefern Sie nach Island?"), (2, "do you ship to mars"), (1, "How long for returns?"),
                     (1, "Can I pay with bitcoin")]
    iceland = report.groups[0]
    assert iceland.examples == {
        "de": ["Liefern Sie nach Island?"], "zh-hans": ["你们发货到冰岛吗？"],
        "en": ["Can I get delivery to Iceland?", "Do you ship to Iceland?"],
    }
    assert iceland.reasons == {"nothing_found": 3, "thumbs_down": 1}
    link = urlsplit(iceland.write_url)
    assert link.path == "/admin/knowledge/curatedanswer/add/"
    query = parse_qs(link.query)
    assert query["knowledge_base"] == [str(data.kb_a.pk)]
    assert query["questions"][0].split("\n") == [
        "Liefern Sie nach Island?", "你们发货到冰岛吗？", "Can I get delivery to Iceland?", "Do you ship to Iceland?"
    ]
    # The article two of its answers cited; the returns answer cited nothing: no link.
    assert iceland.article_url == f"/admin/knowledge/document/{data.document.pk}/change/"
    assert iceland.article_title == "Shipping abroad"
    assert report.groups[2].article_url == ""
    mars = report.groups[1]
    assert mars.knowledge_base_id == data.kb_b.pk and mars.examples == {"en": ["do you ship to mars"]}  # one spelling


def test_gaps_follow_the_filters_and_the_cap_is_reported(data):
    only_site = gaps.report(Period.of(D1, D3, site_id=data.site.pk))
    assert [(g.count, g.title) for g in only_site.groups] == [(1, "How long for returns?")]
    capped = gaps.report(Period.of(D1, D3), limit=3)
    assert (capped.considered, capped.total) == (3, 8)
    assert sorted(g.count for g in capped.groups) == [1, 2]  # the three newest: the two Mars ones and the returns one


def test_cluster_keeps_different_questions_apart_at_the_threshold():
    vectors = np.array([[1.0, 0.0], [0.9, np.sqrt(1 - 0.81)], [0.0, 1.0], [0.5, 0.5]])
    # 1 is close to 0 (0.90) and to 3 (0.94), so it leads; 0 and 3 (0.71) are not close, but both follow their leader.
    assert gaps.cluster(vectors, threshold=0.86) == [[0, 1, 3], [2]]
    assert gaps.cluster(vectors, threshold=0.95) == [[0], [1], [2], [3]]
    assert gaps.normalised("  Do you ship to MARS?! ") == "do you ship to mars"


def test_csv_export_has_a_line_per_day_and_the_total(data, staff_client):
    response = staff_client.get("/console/insights/export.csv", {"start": "2026-11-02", "end": "2026-11-03"})
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    assert 'filename="insights-2026-11-02-2026-11-03-day.csv"' in response["Content-Disposition"]
    lines = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert [line["bucket"] for line in lines] == ["2026-11-02", "2026-11-03", "total"]
    first, total = lines[0], lines[2]
    assert (first["conversations"], first["with_outcome"], first["open"], first["outcome_bot_resolved"]) == ("4", "3", "1", "2")
    assert (first["bot_resolution_rate"], first["handoff_rate"], first["csat_bot_avg"]) == ("0.6667", "0.2500", "4.50")
    assert (first["first_token_p50_ms"], first["first_token_p95_ms"], first["tool_failure_rate"]) == ("200.0", "290.0", "0.3333")
    assert (lines[1]["csat_bot_avg"], lines[1]["csat_bot_count"], lines[1]["first_human_reply_median_s"]) == ("", "0", "600.0")
    assert (total["conversations"], total["first_human_reply_median_s"], total["answers"]) == ("6", "360.0", "5")
    same = staff_client.get("/console/insights/", {"start": "2026-11-02", "end": "2026-11-03", "format": "csv"})
    assert same.content == response.content


def test_the_page_shows_the_figures_the_charts_the_gaps_and_the_queue(data, staff_client):
    response = staff_client.get("/console/insights/", {"start": "2026-11-02", "end": "2026-11-10"})
    assert response.status_code == 200
    page = response.content.decode()
    assert page.count("<svg class=\"chart\"") == 2
    assert '<span class="value">8</span>' in page and "42.9%" in page and "37.5%" in page  # 3/7, 3/8
    assert "6.0 min" in page  # the median first human reply, 360 s
    assert "/admin/knowledge/curatedanswer/add/?knowledge_base=" in page
    assert "That is not what I asked" in page and "How long for returns?" in page
    assert f'data-review="{data.feedback["down"].pk}"' in page and f'data-review="{data.feedback["down_kb_b"].pk}"' in page
    assert f'data-review="{data.feedback["reviewed"].pk}"' not in page  # reviewed already
    assert f'data-review="{data.feedback["up"].pk}"' not in page  # a 👍
    filtered = staff_client.get("/console/insights/", {"start": "2026-11-02", "end": "2026-11-10", "kb": data.kb_a.pk})
    assert f'data-review="{data.feedback["down_kb_b"].pk}"' not in filtered.content.decode()


def test_the_queue_lists_unreviewed_thumbs_down_newest_first(data):
    items, waiting = reviews.queue(Period.of(D1, D3))
    assert waiting == 2
    assert [item.feedback_id for item in items] == [data.feedback["down_kb_b"].pk, data.feedback["down"].pk]
    assert (items[1].question, items[1].answer, items[1].comment) == (
        "How long for returns?", "Returns take 30 days.", "That is not what I asked"
    )


def test_staff_mark_a_reason_and_the_thumbs_down_leaves_the_queue(data, staff, staff_client):
    down = data.feedback["down"]
    response = staff_client.post(
        f"/console/insights/reviews/{down.pk}/", {"reason": "outdated_article", "next": "/console/insights/?kb=1"}
    )
    assert response.status_code == 302 and response["Location"] == "/console/insights/?kb=1#reviews"
    down.refresh_from_db()
    assert (down.review_reason, down.reviewed_by_id) == ("outdated_article", staff.pk) and down.reviewed_at is not None
    assert [item.feedback_id for item in reviews.queue(Period.of(D1, D3))[0]] == [data.feedback["down_kb_b"].pk]
    bad = staff_client.post(f"/console/insights/reviews/{data.feedback['down_kb_b'].pk}/", {"reason": "meh"})
    assert bad.status_code == 400
    elsewhere = staff_client.post(f"/console/insights/reviews/{data.feedback['up'].pk}/", {"reason": "wrong"})
    assert elsewhere.status_code == 404  # a 👍 is not reviewed
    offsite = staff_client.post(
        f"/console/insights/reviews/{data.feedback['down_kb_b'].pk}/", {"reason": "fine", "next": "https://evil.example/"}
    )
    assert offsite["Location"] == "/console/insights/#reviews"


def test_anonymous_and_customers_are_refused(data):
    anonymous = Client()
    assert anonymous.get("/console/insights/").status_code == 302
    assert anonymous.get("/console/insights/export.csv").status_code == 302
    down = data.feedback["down"]
    assert anonymous.post(f"/console/insights/reviews/{down.pk}/", {"reason": "wrong"}).status_code == 302
    customer = Client()
    customer.force_login(data.customer)
    assert customer.get("/console/insights/").status_code == 403
    assert customer.get("/console/insights/export.csv").status_code == 403
    assert customer.post(f"/console/insights/reviews/{down.pk}/", {"reason": "wrong"}).status_code == 403
    down.refresh_from_db()
    assert down.reviewed_at is None


def test_staff_who_lost_their_rights_cannot_mark(data, staff, staff_client):
    down = data.feedback["down"]
    type(staff).objects.filter(pk=staff.pk).update(is_staff=False)  # after the page was loaded
    assert staff_client.post(f"/console/insights/reviews/{down.pk}/", {"reason": "wrong"}).status_code == 403
    type(staff).objects.filter(pk=staff.pk).update(is_staff=True, is_active=False)
    response = staff_client.post(f"/console/insights/reviews/{down.pk}/", {"reason": "wrong"})
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    # The action itself re-reads the user: a user object loaded while they were still active staff is refused.
    with pytest.raises(AccessRevoked):
        reviews.mark(down.pk, "wrong", staff)
    down.refresh_from_db()
    assert (down.reviewed_at, down.review_reason) == (None, "")


def test_the_review_needs_its_csrf_token(data, staff):
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff)
    down = data.feedback["down"]
    assert client.post(f"/console/insights/reviews/{down.pk}/", {"reason": "wrong"}).status_code == 403
    assert Feedback.objects.get(pk=down.pk).reviewed_at is None


def test_the_console_links_to_the_insights(staff_client):
    assert 'href="/console/insights/"' in staff_client.get("/console/").content.decode()


def test_charts_escape_their_labels_and_break_lines_where_there_is_no_value():
    svg = charts.lines("<b>rates</b>", [D1, D2, D3], [("resolution", "R&D", [0.5, None, 1.0])])
    assert "<b>" not in svg and "&lt;b&gt;rates&lt;/b&gt;" in svg and "R&amp;D" in svg
    assert svg.count("<polyline") == 2 and svg.count("<circle") == 2
    assert charts.bars("c", [D1, D2], [0, 3]).count('<rect class="bar"') == 2


def test_an_empty_period_is_all_zeros_and_dashes(db, staff_client):
    rows, total = metrics.table(Period.of(D1, D1))
    assert len(rows) == 1 and (total.conversations, total.answers, total.first_token_p50_ms) == (0, 0, None)
    page = staff_client.get("/console/insights/", {"start": "2026-11-02", "end": "2026-11-02"}).content.decode()
    assert "No knowledge gaps in this period." in page and "Nothing to review." in page


def test_a_long_queue_is_counted_up_to_a_cap(data, monkeypatch):
    Feedback.objects.create(message=data.answers["a2"], user=data.customer, rating=-1)  # a third one waiting
    monkeypatch.setattr(reviews, "COUNT_CAP", 2)
    items, waiting = reviews.queue(Period.of(D1, D3), size=1)
    assert (len(items), waiting) == (1, 2)  # "2+" on the page
    assert reviews.queue(Period.of(D1, D3), size=5)[1] == 3  # a queue shorter than a page is counted exactly


def test_the_page_costs_a_fixed_number_of_queries_however_many_rows(data, staff_client):
    params = {"start": "2026-11-02", "end": "2026-11-10"}
    staff_client.get("/console/insights/", params)  # the session and the user, read once like any page
    with CaptureQueriesContext(connection) as small:
        staff_client.get("/console/insights/", params)
    seed_more = [conversation_copy(data, n) for n in range(5)]
    assert all(seed_more)
    with CaptureQueriesContext(connection) as larger:
        staff_client.get("/console/insights/", params)
    assert len(larger) == len(small), [q["sql"][:120] for q in larger.captured_queries]
    table = [q for q in small.captured_queries if "ROLLUP" in q["sql"]]
    assert len(small) <= 14, [q["sql"][:120] for q in small.captured_queries]
    assert len(table) == 2  # the period table: one statement for conversations, one for answers


def conversation_copy(data, n: int):
    """Another conversation with an answer, a gap and a 👎 on D2 (more rows, same page)."""
    conv = conversation(data.customer, data.kb_a, at(D2, 14, n), outcome="bot_resolved", rating=4)
    reply = answer(conv, at(D2, 14, n), first_token_ms=50 + n, question=f"Extra question {n}?")
    gap(reply, data.kb_a, f"Extra question {n}?", "fr", near(unit_vector(100 + n), n), at(D2, 14, n))
    return Feedback.objects.create(message=reply, user=data.customer, rating=-1)
