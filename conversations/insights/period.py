"""What the insights are asked for: a range of days, per day or per week, for one knowledge base and one site or all.

Days are the site's (``TIME_ZONE``): a conversation started at 23:30 belongs to that day there. Weeks run Monday to
Sunday, and a range asked per week is widened to whole weeks, so the first and last bars are not partial weeks that
look like a drop. The range is capped (``MAX_DAYS``) so one request cannot ask the server for years of buckets.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from urllib.parse import urlencode

from django import forms
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from conversations.models import Site
from knowledge.models import KnowledgeBase

DAY, WEEK = "day", "week"
DEFAULT_DAYS = 30
MAX_DAYS = 400


@dataclass(frozen=True)
class Period:
    """The range ``first``..``last`` (dates, both included), cut into ``unit`` buckets, and the filters."""

    first: dt.date
    last: dt.date
    unit: str = DAY
    knowledge_base_id: int | None = None
    site_id: int | None = None

    @classmethod
    def of(
        cls, first: dt.date, last: dt.date, unit: str = DAY, knowledge_base_id: int | None = None,
        site_id: int | None = None,
    ) -> Period:
        """The period as asked, widened to whole Monday-to-Sunday weeks when ``unit`` is a week."""
        if unit == WEEK:
            first -= dt.timedelta(days=first.weekday())
            last += dt.timedelta(days=6 - last.weekday())
        return cls(first, last, unit, knowledge_base_id, site_id)

    @property
    def bounds(self) -> tuple[dt.datetime, dt.datetime]:
        """[start, end): midnight of the first day to midnight after the last, in the site's time zone."""
        zone = timezone.get_current_timezone()
        start = dt.datetime.combine(self.first, dt.time.min, tzinfo=zone)
        end = dt.datetime.combine(self.last + dt.timedelta(days=1), dt.time.min, tzinfo=zone)
        return start, end

    @property
    def buckets(self) -> list[dt.date]:
        """Every bucket's first day, so a day without conversations is a zero, not a missing bar."""
        step = 7 if self.unit == WEEK else 1
        count = (self.last - self.first).days // step + 1
        return [self.first + dt.timedelta(days=step * n) for n in range(count)]

    def query_string(self, **changes: object) -> str:
        """This period as the page's GET parameters (with ``changes``), for links that keep the filters."""
        params = {
            "start": self.first.isoformat(), "end": self.last.isoformat(), "unit": self.unit,
            "kb": self.knowledge_base_id or "", "site": self.site_id or "",
        }
        params.update(changes)
        return urlencode({key: value for key, value in params.items() if value not in ("", None)})


class PeriodForm(forms.Form):
    """The page's filters (GET). Anything invalid falls back to the default: the last 30 days, per day, all."""

    start = forms.DateField(required=False, label=_("From"), widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(required=False, label=_("To"), widget=forms.DateInput(attrs={"type": "date"}))
    unit = forms.ChoiceField(choices=[(DAY, _("Per day")), (WEEK, _("Per week"))], required=False, label=_("Buckets"))
    kb = forms.ModelChoiceField(
        KnowledgeBase.objects.order_by("name"), required=False, label=_("Knowledge base"), empty_label=_("All")
    )
    site = forms.ModelChoiceField(Site.objects.order_by("name"), required=False, label=_("Site"), empty_label=_("All"))

    def period(self) -> Period:
        """The period the form asks for (call after ``is_valid()``; invalid fields take their defaults)."""
        data = self.cleaned_data if self.is_bound and self.is_valid() else {}
        today = timezone.localdate()
        last = data.get("end") or today
        first = data.get("start") or last - dt.timedelta(days=DEFAULT_DAYS - 1)
        if first > last:
            first, last = last, first
        first = max(first, last - dt.timedelta(days=MAX_DAYS - 1))
        kb, site = data.get("kb"), data.get("site")
        return Period.of(first, last, data.get("unit") or DAY, kb.pk if kb else None, site.pk if site else None)
