"""The tools' admin screen: staff define the company's APIs the assistant may call.

Header values and the signing secret are write-only: the form never renders them (not even masked, so the page's
HTML holds nothing to copy), shows only which headers are set, and keeps them unless new values are typed.

"Try it" (a saved tool's change page) runs the tool for a customer staff choose and shows the redacted request
and the visible response fields (``trying.py``).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from asgiref.sync import async_to_sync
from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path

from knowledge.models import Tool
from knowledge.tools import calling, trying

logger = logging.getLogger(__name__)

#: What the admin shows in place of a stored secret value.
HIDDEN = "•••"


def parse_headers(text: str) -> dict[str, str]:
    """ "Name: value" lines -> {name: value}; a line without a colon or with an empty name is an error."""
    headers: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        name, colon, value = line.partition(":")
        if not colon or not name.strip() or any(c.isspace() for c in name.strip()):
            raise forms.ValidationError(f"Line {number}: write one header per line as “Name: value”.")
        headers[name.strip()] = value.strip()
    return headers


class ToolForm(forms.ModelForm):
    """``Tool`` with write-only secrets: ``new_headers`` replaces the headers when filled (one "Name: value" per
    line), ``clear_headers`` removes them, ``new_secret`` replaces the signing secret when filled."""

    base_url = forms.URLField(
        assume_scheme="https",
        widget=forms.URLInput(attrs={"size": 60}),
        help_text=Tool._meta.get_field("base_url").help_text,
    )
    new_headers = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "autocomplete": "off", "spellcheck": "false"}),
        help_text="One per line, “Authorization: Bearer …”. Replaces every header; left empty, the headers stay.",
    )
    clear_headers = forms.BooleanField(required=False, help_text="Remove every header.")
    new_secret = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Signs who is asking (docs/tools.md). Left empty, the secret stays.",
    )

    class Meta:
        model = Tool
        fields = [
            "name",
            "enabled",
            "description",
            "examples",
            "knowledge_bases",
            "needs_signed_in",
            "method",
            "base_url",
            "path_template",
            "parameters",
            "timeout_seconds",
            "visible_fields",
            "answer_templates",
        ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        stored = self.instance.headers if self.instance.pk else {}
        if stored:
            names = ", ".join(f"{name}: {HIDDEN}" for name in sorted(stored))
            self.fields["new_headers"].help_text = f"Set: {names}. " + self.fields["new_headers"].help_text
        if self.instance.pk and self.instance.secret:
            self.fields["new_secret"].help_text = f"Set ({HIDDEN}). " + self.fields["new_secret"].help_text

    def clean_new_headers(self) -> dict[str, str] | None:
        text = self.cleaned_data.get("new_headers") or ""
        return parse_headers(text) if text.strip() else None

    def _post_clean(self) -> None:
        # The write-only values go on the instance before the model's own validation (Tool.clean) runs.
        if self.cleaned_data.get("clear_headers"):
            self.instance.headers = {}
        elif self.cleaned_data.get("new_headers") is not None:
            self.instance.headers = self.cleaned_data["new_headers"]
        if self.cleaned_data.get("new_secret"):
            self.instance.secret = self.cleaned_data["new_secret"]
        super()._post_clean()


@admin.register(Tool)
class ToolAdmin(admin.ModelAdmin):
    form = ToolForm
    list_display = ["name", "method", "base_url", "path_template", "enabled", "needs_signed_in", "headers_set"]
    list_filter = ["enabled", "needs_signed_in", "knowledge_bases"]
    search_fields = ["name", "description", "examples"]
    filter_horizontal = ["knowledge_bases"]
    fieldsets = [
        (None, {"fields": ["name", "enabled", "description", "examples", "knowledge_bases", "needs_signed_in"]}),
        ("Request", {"fields": ["method", "base_url", "path_template", "parameters", "timeout_seconds"]}),
        ("Secrets (write-only)", {"fields": ["new_headers", "clear_headers", "new_secret"]}),
        ("Answer", {"fields": ["visible_fields", "answer_templates"]}),
    ]

    @admin.display(description="headers")
    def headers_set(self, tool: Tool) -> str:
        """Which headers are set, never their values."""
        return ", ".join(sorted(tool.headers)) or "—"

    def get_urls(self):
        urls = [path("<int:pk>/try/", self.admin_site.admin_view(self.try_view), name="knowledge_tool_try")]
        return urls + super().get_urls()

    def try_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """ "Try it": the form (GET), or the call for the chosen customer and what it sent and got (POST)."""
        tool = self.get_object(request, str(pk))
        if tool is None:
            raise Http404("No such tool.")
        if not self.has_change_permission(request, tool):
            raise PermissionDenied
        try:
            spec = tool.spec()
        except ValueError as exc:  # saved before a check existed: say why it cannot be called
            spec, problem = None, str(exc)
        else:
            problem = ""
        form = trying.TryForm(spec, request.POST if request.method == "POST" else None) if spec else None
        result = identity = None
        if form is not None and form.is_valid():
            customer = form.cleaned_data["customer"]
            identity = trying.identity_of(customer)
            result = async_to_sync(calling.call)(spec, form.arguments(), identity)
            outcome = f"{result.outcome} (HTTP {result.status})" if result.status else result.outcome
            self.log_change(request, tool, f"Tried it for {customer.get_username()} (user {customer.pk}): {outcome}.")
            logger.info(
                "tool %r tried by %s for user %s: %s", tool.name, request.user.get_username(), customer.pk, outcome
            )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Try {tool.name}",
            "tool": tool,
            "problem": problem,
            "form": form,
            "result": result,
            "identity": identity,
            "outcome_text": trying.OUTCOME_TEXT.get(result.outcome, "") if result else "",
            "fields": [(name, trying.shown(value)) for name, value in result.fields.items()] if result else [],
            "body": json.dumps(result.request["body"], indent=2, ensure_ascii=False)
            if result and "body" in result.request
            else "",
        }
        return render(request, "admin/knowledge/tool/try.html", context)
