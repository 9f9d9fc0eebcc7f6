"""The curated answers' admin screen: staff write the answer the assistant should give, with the questions it answers.

The add form is pre-filled from its query string by field name (Django's ``get_changeform_initial_data``):
``/admin/knowledge/curatedanswer/add/?knowledge_base=<id>&questions=<newline-separated questions>`` is the link a
knowledge-gap group of the insights page gives ("Write the answer"); a question per line, newlines URL-encoded.
Saving indexes the answer at once (knowledge/curated/indexing.py, through the model's post_save).
"""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from knowledge.curated.indexing import language_of
from knowledge.models import CuratedAnswer


class CuratedAnswerForm(forms.ModelForm):
    class Meta:
        model = CuratedAnswer
        fields = ["knowledge_base", "questions", "answer", "active"]
        widgets = {
            "questions": forms.Textarea(attrs={"rows": 5, "cols": 80, "spellcheck": "true"}),
            "answer": forms.Textarea(attrs={"rows": 10, "cols": 80, "spellcheck": "true"}),
        }


@admin.register(CuratedAnswer)
class CuratedAnswerAdmin(admin.ModelAdmin):
    form = CuratedAnswerForm
    list_display = ["__str__", "knowledge_base", "active", "language", "updated_by", "updated_at"]
    list_filter = ["knowledge_base", "active"]
    search_fields = ["questions", "answer"]
    list_select_related = ["knowledge_base", "updated_by"]
    readonly_fields = ["in_knowledge_base", "created_by", "created_at", "updated_by", "updated_at"]
    fieldsets = [
        (
            None,
            {
                "fields": ["knowledge_base", "questions", "answer", "active"],
                "description": "The assistant gives this answer, cited as “Answer from the support team”, to the "
                "questions below and to questions asked in other words; the next answer already "
                "uses what you save. Write one curated answer per language.",
            },
        ),  # fmt: skip
        ("Indexing", {"fields": ["in_knowledge_base", "created_by", "created_at", "updated_by", "updated_at"]}),
    ]

    def save_model(self, request: HttpRequest, obj: CuratedAnswer, form, change: bool) -> None:
        """Who wrote and who last changed it; the save itself indexes it (post_save)."""
        if not change:
            obj.created_by = request.user
        obj.updated_by = request.user
        super().save_model(request, obj, form, change)

    @admin.display(description="Language")
    def language(self, obj: CuratedAnswer) -> str:
        return language_of(obj) or "–"

    @admin.display(description="In the knowledge base")
    def in_knowledge_base(self, obj: CuratedAnswer) -> str:
        if obj.document_id is None:
            return "No: inactive, or not saved yet" if obj.pk else "Once saved"
        url = reverse("knowledge:document", args=[obj.document_id])
        return format_html('Yes, as <a href="{}">document {}</a> (language: {})', url, obj.document_id,
                           language_of(obj) or "unknown")  # fmt: skip
