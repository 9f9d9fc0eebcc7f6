"""Forms behind the knowledge-base admin screens: bulk upload, pasted text and "try a search".

Validation of the files themselves (type, size, empty) is the pipeline's job, not the form's: the form only
collects the files so that one refused file never stops the others in the same upload.
"""

from __future__ import annotations

from dataclasses import dataclass

from django import forms
from django.conf import settings
from django.contrib import messages
from django.core.files.uploadedfile import UploadedFile

from knowledge import tasks
from knowledge.ingest import pipeline
from knowledge.models import Document, KnowledgeBase


class MultipleFileInput(forms.ClearableFileInput):
    """A file input that lets the browser select several files (Django 5.2 needs this opt-in)."""

    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    """Returns every selected file; refusing individual files is left to the pipeline (per-file messages)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("widget", MultipleFileInput())
        super().__init__(*args, **kwargs)

    def clean(self, data, initial=None) -> list[UploadedFile]:
        files = data if isinstance(data, list | tuple) else ([data] if data else [])
        files = [f for f in files if f]
        if self.required and not files:
            raise forms.ValidationError(self.error_messages["required"], code="required")
        return files


@dataclass(frozen=True)
class Outcome:
    """What happened to one submitted item, as the manager should read it."""

    level: int  # a django.contrib.messages level
    message: str
    document: Document | None = None


def _allowed_types_hint() -> str:
    return ", ".join(settings.UPLOAD_ALLOWED_EXTENSIONS)


class KnowledgeBaseForm(forms.ModelForm):
    """The knowledge base's change form: a group-limited knowledge base names at least one group."""

    class Meta:
        model = KnowledgeBase
        fields = ["name", "slug", "description", "visibility", "groups"]

    def clean(self) -> dict:
        data = super().clean()
        if data.get("visibility") == KnowledgeBase.Visibility.GROUPS and not data.get("groups"):
            self.add_error("groups", "Choose at least one group, or another visibility.")
        return data


class UploadForm(forms.Form):
    """One or many files and/or one pasted text into an existing or a new knowledge base."""

    knowledge_base = forms.ModelChoiceField(
        queryset=KnowledgeBase.objects.all(), required=False, empty_label="— choose —"
    )
    new_knowledge_base = forms.CharField(
        max_length=200, required=False, label="…or a new knowledge base", help_text="Created if it does not exist."
    )
    files = MultipleFileField(required=False, label="Files")
    title = forms.CharField(max_length=300, required=False, label="Pasted text: title")
    text = forms.CharField(widget=forms.Textarea(attrs={"rows": 8, "cols": 80}), required=False, label="Pasted text")
    source_url = forms.URLField(max_length=500, required=False, assume_scheme="https", label="Pasted text: source URL")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        max_mb = settings.UPLOAD_MAX_BYTES / (1024 * 1024)
        self.fields["files"].help_text = f"Allowed: {_allowed_types_hint()}; up to {max_mb:g} MB each."
        self.fields["files"].widget.attrs["accept"] = ",".join(settings.UPLOAD_ALLOWED_EXTENSIONS)

    def clean(self) -> dict:
        data = super().clean()
        if not data.get("knowledge_base") and not (data.get("new_knowledge_base") or "").strip():
            raise forms.ValidationError("Choose a knowledge base or name a new one.")
        has_text = bool((data.get("text") or "").strip())
        if not data.get("files") and not has_text:
            raise forms.ValidationError("Choose at least one file or paste some text.")
        if has_text and not (data.get("title") or "").strip():
            self.add_error("title", "Pasted text needs a title.")
        return data

    def target_knowledge_base(self) -> KnowledgeBase:
        name = (self.cleaned_data.get("new_knowledge_base") or "").strip()
        if name:
            return pipeline.get_or_create_knowledge_base(name)
        return self.cleaned_data["knowledge_base"]

    def save(self, *, uploaded_by=None) -> list[Outcome]:
        """Store every acceptable item, queue its ingestion, and say what happened to each one."""
        kb = self.target_knowledge_base()
        outcomes = [self._add_file(kb, f, uploaded_by) for f in self.cleaned_data["files"]]
        if (self.cleaned_data.get("text") or "").strip():
            outcomes.append(self._add_text(kb, uploaded_by))
        return outcomes

    def _add_file(self, kb: KnowledgeBase, upload: UploadedFile, uploaded_by) -> Outcome:
        name = upload.name or "unnamed file"
        try:
            document, created = pipeline.add_document(kb, filename=name, data=upload.read(), uploaded_by=uploaded_by)
        except pipeline.ValidationError as exc:
            return Outcome(messages.ERROR, refusal_message(name, exc))
        except OSError as exc:  # storage full or unwritable: report it, keep going with the other files
            return Outcome(messages.ERROR, f"Could not store '{name}': {exc.strerror or exc}. Please try again.")
        return _queued(document, created, name)

    def _add_text(self, kb: KnowledgeBase, uploaded_by) -> Outcome:
        title = self.cleaned_data["title"].strip()
        try:
            document, created = pipeline.add_text(
                kb,
                title=title,
                text=self.cleaned_data["text"],
                source_url=self.cleaned_data.get("source_url") or "",
                uploaded_by=uploaded_by,
            )
        except pipeline.ValidationError as exc:
            return Outcome(messages.ERROR, refusal_message(title, exc))
        return _queued(document, created, title)


def refusal_message(name: str, exc: Exception) -> str:
    """ "refused 'x.exe': <reason>" unless the pipeline's reason already names the file."""
    reason = str(exc).strip() or "the file was refused"
    if any(f"{left}{name}{right}" in reason for left, right in ("''", '""', "“”")):
        return f"Refused: {reason}"
    return f"Refused '{name}': {reason}"


def _queued(document: Document, created: bool, name: str) -> Outcome:
    if not created and document.status == Document.Status.FAILED:
        tasks.enqueue_ingestion(document)
        return Outcome(
            messages.WARNING,
            f"'{name}' is already in the knowledge base as '{document}', whose indexing failed; indexing it again.",
            document,
        )
    if not created and tasks.is_stuck(document):
        tasks.enqueue_ingestion(document)
        return Outcome(
            messages.WARNING,
            f"'{name}' is already in the knowledge base as '{document}', whose indexing stopped unfinished; "
            f"indexing it again.",
            document,
        )
    if not created:
        return Outcome(
            messages.WARNING,
            f"'{name}' is already in the knowledge base as '{document}'; nothing was added.",
            document,
        )
    tasks.enqueue_ingestion(document)
    return Outcome(
        messages.SUCCESS, f"'{name}' was added to '{document.knowledge_base}' and queued for indexing.", document
    )


class SearchForm(forms.Form):
    """The manager's probe: what would the assistant find for this question?"""

    MODES = [("hybrid", "Hybrid (vector + keyword, RRF)"), ("vector", "Vector only"), ("keyword", "Keyword only")]

    q = forms.CharField(max_length=500, label="Query", widget=forms.TextInput(attrs={"size": 60, "autofocus": True}))
    kb = forms.ModelChoiceField(
        queryset=KnowledgeBase.objects.all(), required=False, empty_label="All knowledge bases", label="Knowledge base"
    )
    mode = forms.ChoiceField(choices=MODES, initial="hybrid")
    k = forms.IntegerField(min_value=1, max_value=50, label="Results", required=False)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["k"].initial = settings.RETRIEVAL_TOP_K
