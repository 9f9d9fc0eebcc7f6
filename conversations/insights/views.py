"""``/console/insights/``: the period's figures, charts, knowledge gaps and the 👎 review queue; its CSV export; the
review's POST. Staff only (``console_views.staff_only``); the review's action re-checks staff status itself.

No JavaScript: the filters are a GET form, the review a POST form per 👎 (CSRF), the charts SVG.
"""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.formats import date_format
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from conversations.access import AccessRevoked
from conversations.console_views import staff_only
from conversations.insights import charts, export, gaps, metrics, reviews
from conversations.insights.metrics import Row
from conversations.insights.period import WEEK, Period, PeriodForm
from conversations.models import Site
from knowledge.models import KnowledgeBase


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}" if value in (0, 1) else f"{value:.1%}"


def _number(value: float | None, digits: int = 1, unit: str = "") -> str:
    return "–" if value is None else f"{value:.{digits}f}{unit}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _display(row: Row, period: Period) -> dict:
    """A row's figures as the page shows them ("–" where undefined)."""
    if row.bucket is None:
        label = _("Whole period")
    elif period.unit == WEEK:
        label = _("Week of %(day)s") % {"day": date_format(row.bucket, "M j")}
    else:
        label = date_format(row.bucket, "D M j")
    return {
        "label": label,
        "conversations": row.conversations,
        "settled": row.settled,
        "bot_resolution": _percent(row.bot_resolution_rate),
        "handoff": _percent(row.handoff_rate),
        "csat_bot": _number(row.csat_bot, 2), "csat_bot_count": row.csat_bot_count,
        "csat_person": _number(row.csat_person, 2), "csat_person_count": row.csat_person_count,
        "p50": _number(row.first_token_p50_ms, 0, " ms"), "p95": _number(row.first_token_p95_ms, 0, " ms"),
        "answers": row.answers,
        "tool_calls": row.tool_calls, "tool_failure": _percent(row.tool_failure_rate),
        "first_reply": _duration(row.first_reply_median_s), "first_reply_count": row.first_reply_count,
    }


def _period(request: HttpRequest) -> tuple[PeriodForm, Period]:
    form = PeriodForm(request.GET or None)
    return form, form.period()


@require_GET
@staff_only
def insights(request: HttpRequest) -> HttpResponse:
    form, period = _period(request)
    if request.GET.get("format") == "csv":
        return export_csv(request)
    rows, total = metrics.table(period)
    buckets = [row.bucket for row in rows]
    gap_report = gaps.report(period)
    queue, waiting = reviews.queue(period)
    kb_names = dict(KnowledgeBase.objects.values_list("pk", "name"))
    for group in gap_report.groups:
        group.knowledge_base_name = kb_names.get(group.knowledge_base_id, "")
    context = {
        "form": form,
        "period": period,
        "filtered": period.knowledge_base_id is not None or period.site_id is not None,
        "kb_name": kb_names.get(period.knowledge_base_id, ""),
        "site_name": Site.objects.filter(pk=period.site_id).values_list("name", flat=True).first() or "",
        "total": _display(total, period),
        "rows": [_display(row, period) for row in rows],
        "conversations_chart": charts.bars(_("Conversations started"), buckets, [r.conversations for r in rows]),
        "rates_chart": charts.lines(
            _("Bot resolution and handoff rates"), buckets,
            [("resolution", _("Bot resolution rate"), [r.bot_resolution_rate for r in rows]),
             ("handoff", _("Handoff rate"), [r.handoff_rate for r in rows])],
        ),
        "gaps": gap_report,
        "gap_limit": gaps.GAP_LIMIT,
        "queue": queue,
        "waiting": f"{waiting}+" if waiting >= reviews.COUNT_CAP else waiting,
        "reasons": reviews.REASONS.choices,
        "csv_url": f"{reverse('console:insights_export')}?{period.query_string()}",
        "here": request.get_full_path(),
    }
    return render(request, "console/insights.html", context)


@require_GET
@staff_only
def export_csv(request: HttpRequest) -> HttpResponse:
    _form, period = _period(request)
    rows, total = metrics.table(period)
    response = HttpResponse(export.csv_text(rows, total), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{export.filename(period)}"'
    return response


@require_POST
@staff_only
def review(request: HttpRequest, feedback_id: int) -> HttpResponse:
    """Mark a 👎's reason, then back to the page it was marked on."""
    try:
        marked = reviews.mark(feedback_id, request.POST.get("reason", ""), request.user)
    except ValueError:
        return HttpResponseBadRequest(_("Choose one of the reasons."))
    except AccessRevoked as exc:
        raise PermissionDenied("The insights are for active staff only.") from exc
    if marked is None:
        raise Http404("No such 👎.")
    messages.success(request, _("Marked “%(reason)s”.") % {"reason": marked.get_review_reason_display()})
    back = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(back, {request.get_host()}, request.is_secure()):
        back = reverse("console:insights")
    return redirect(f"{back}#reviews")
