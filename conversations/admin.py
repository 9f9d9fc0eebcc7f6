"""The sites' admin screen: staff list the company websites the chat widget may be embedded on (``Site``); and the
saved replies agents insert in the console with "/" (``SavedReply``).

The identity secret is write-only, as a tool's is (``knowledge/tools/admin.py``): the form never renders it, not
even masked, and keeps it unless a new one is typed. A secret the server generates (a new site, or "generate a new
secret") is shown exactly once, in the message on the next page, for staff to copy into the host site's server;
after that no page holds it.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import Model
from django.forms import ModelForm
from django.http import HttpRequest
from django.utils.html import format_html

from conversations.models import SavedReply, Site, new_identity_secret
from conversations.models.saved_replies import PLACEHOLDERS
from knowledge.tools.admin import HIDDEN


class SiteForm(forms.ModelForm):
    """``Site`` with a write-only identity secret: ``new_identity_secret`` replaces it when typed,
    ``generate_identity_secret`` replaces it with a random one (as a new site without a typed one gets);
    ``generated_secret`` is that value, for the admin to show once."""

    new_identity_secret = forms.CharField(
        required=False,
        min_length=Site.MIN_SECRET_LENGTH,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Signs the host site's signed-in customer (docs/widget.md). Left empty, the secret stays.",
    )
    generate_identity_secret = forms.BooleanField(
        required=False,
        label="Generate a new secret",
        help_text="Replaces the secret with a random one, shown once on the next page. Customers signed by the old "
        "one are refused from then on.",
    )

    class Meta:
        model = Site
        fields = [
            "name",
            "slug",
            "enabled",
            "allowed_origins",
            "knowledge_bases",
            "tools",
            "greeting",
            "business_hours",
            "time_zone",
        ]
        widgets = {
            "allowed_origins": forms.Textarea(attrs={"rows": 4, "cols": 60, "spellcheck": "false"}),
            "greeting": forms.Textarea(attrs={"rows": 3, "cols": 60}),
            "business_hours": forms.Textarea(attrs={"rows": 4, "cols": 60, "spellcheck": "false"}),
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.generated_secret = ""
        field = self.fields["new_identity_secret"]
        if self.instance.pk and self.instance.identity_secret:
            field.help_text = f"Set ({HIDDEN}). " + field.help_text
        else:
            field.help_text = "Left empty, one is generated and shown once. " + field.help_text.split(" Left")[0]

    def clean(self) -> dict[str, Any]:
        """A typed secret and "generate" at once is ambiguous; a tool none of the site's knowledge bases uses
        would never be called here, which staff should hear now rather than wonder why."""
        cleaned = super().clean()
        if cleaned.get("new_identity_secret") and cleaned.get("generate_identity_secret"):
            self.add_error("generate_identity_secret", "Either type a secret or generate one, not both.")
        tools, bases = cleaned.get("tools"), cleaned.get("knowledge_bases")
        if tools is not None and bases is not None:
            unused = sorted(tool.name for tool in tools.exclude(knowledge_bases__in=bases))
            if unused:
                self.add_error(
                    "tools",
                    f"Not used by any of the chosen knowledge bases: {', '.join(unused)}. Add one of the tool's "
                    "knowledge bases, or the knowledge base to the tool.",
                )
        return cleaned

    def _post_clean(self) -> None:
        # The write-only secret goes on the instance before the model's own validation (Site.clean) runs.
        if self.cleaned_data.get("new_identity_secret"):
            self.instance.identity_secret = self.cleaned_data["new_identity_secret"]
        elif self.cleaned_data.get("generate_identity_secret") or not self.instance.identity_secret:
            self.generated_secret = self.instance.identity_secret = new_identity_secret()
        super()._post_clean()


@admin.register(Site)
class SiteAdmin(admin.ModelAdmin):
    form = SiteForm
    list_display = ["name", "slug", "enabled", "origins_count"]
    list_filter = ["enabled"]
    search_fields = ["name", "slug", "allowed_origins"]
    prepopulated_fields = {"slug": ["name"]}
    filter_horizontal = ["knowledge_bases", "tools"]
    readonly_fields = ["created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["name", "slug", "enabled"]}),
        ("Where it may be embedded", {"fields": ["allowed_origins"]}),
        ("What the assistant may use there", {"fields": ["knowledge_bases", "tools"]}),
        ("Widget", {"fields": ["greeting"]}),
        ("Business hours", {"fields": ["business_hours", "time_zone"]}),
        ("Identity verification (write-only)", {"fields": ["new_identity_secret", "generate_identity_secret"]}),
        (None, {"fields": ["created_at", "updated_at"]}),
    ]

    @admin.display(description="origins")
    def origins_count(self, site: Site) -> int:
        return len(site.origins)

    def save_model(self, request: HttpRequest, obj: Model, form: ModelForm, change: bool) -> None:
        """Saves the site and, when the server made its secret, shows it this once."""
        super().save_model(request, obj, form, change)
        if getattr(form, "generated_secret", ""):
            messages.warning(
                request,
                format_html(
                    "The identity secret of “{}” is <code>{}</code>. Copy it into the host site’s server now: "
                    "it is not shown again (docs/widget.md).",
                    obj,
                    form.generated_secret,
                ),
            )


class SavedReplyForm(forms.ModelForm):
    class Meta:
        model = SavedReply
        fields = ["shortcut", "title", "text", "language", "enabled"]
        widgets = {"text": forms.Textarea(attrs={"rows": 6, "cols": 70})}
        help_texts = {
            "text": "The reply as inserted. Placeholders, filled in when inserted (left out when unknown for that "
            "conversation): " + "; ".join(f"{{{name}}} — {meaning}" for name, meaning in PLACEHOLDERS.items()) + ".",
        }


@admin.register(SavedReply)
class SavedReplyAdmin(admin.ModelAdmin):
    """Saved replies for the console's reply box (docs/architecture.md, "Saved replies"); ``SavedReply.clean``
    refuses an unknown placeholder."""

    form = SavedReplyForm
    list_display = ["shortcut", "title", "language", "enabled", "updated_at"]
    list_filter = ["enabled", "language"]
    search_fields = ["shortcut", "title", "text"]
    readonly_fields = ["created_at", "updated_at"]
