"""The admin's "Try it": staff run a saved tool for a customer they choose and see what was sent and what came back.

The call is the real one (``calling.call``: every gate, the signed identity of the chosen customer), so what the
page shows is what a customer's question would cause. It is not counted in ``/metrics`` or against the rate limits
(``running.run`` does those), because staff trying a tool are not customers asking. The page shows the request as
``calling`` redacts it — configured header values and the signature as ``•••`` — and only the response's visible
fields: trying a tool shows staff nothing the assistant would not be allowed to show.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser

from knowledge.tools.calling import ToolSpec
from knowledge.tools.signing import Identity

#: What each outcome means, in the words the page uses for it.
OUTCOME_TEXT = {
    "ok": "The API answered with a JSON object.",
    "invalid_argument": "A value did not match its parameter; no request was made.",
    "refused_address": "The URL or its address is not allowed (off the base URL, or a private address); "
    "no request was made.",
    "timeout": "No answer within the tool's timeout.",
    "http_error": "The API answered with an error status.",
    "redirect": "The API answered with a redirect, which is never followed.",
    "malformed": "The answer was not a JSON object (or came compressed).",
    "too_large": "The answer was larger than TOOLS_MAX_RESPONSE_BYTES.",
    "unreachable": "The host could not be resolved or reached.",
}
PARAMETER_PREFIX = "parameter_"


def identity_of(user: AbstractBaseUser) -> Identity:
    """A signed-in user as the company's API receives them: the same identity a conversation of theirs signs."""
    return Identity(str(user.pk), user.email or "", user.get_full_name() or user.get_username(), "user")


class CustomerChoiceField(forms.ModelChoiceField):
    """An active user, shown by who they are to staff: username, name and e-mail."""

    def label_from_instance(self, user: Any) -> str:
        name = user.get_full_name()
        return " — ".join(part for part in (user.get_username(), name, user.email) if part)


class TryForm(forms.Form):
    """Who the call is made for, and one value per parameter, each checked against the parameter's type and
    pattern here (the call checks again), so a wrong value is a form error and no request is made."""

    def __init__(self, spec: ToolSpec, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.spec = spec
        User = get_user_model()
        self.fields["customer"] = CustomerChoiceField(
            queryset=User.objects.filter(is_active=True).order_by(User.USERNAME_FIELD),
            help_text="The call is made for this customer: their signed identity, as when they ask.",
        )
        for parameter in spec.parameters:
            shape = f"{parameter.type}, matching {parameter.pattern}" if parameter.pattern else parameter.type
            help_text = f"{parameter.description} ({shape})" if parameter.description else f"({shape})"
            self.fields[PARAMETER_PREFIX + parameter.name] = forms.CharField(
                label=parameter.name,
                strip=True,
                help_text=help_text,
                widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
            )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        for parameter in self.spec.parameters:
            key = PARAMETER_PREFIX + parameter.name
            value = cleaned.get(key)
            if value is not None and not parameter.accepts(value):
                self.add_error(key, f"Does not match the parameter's {parameter.type} pattern {parameter.pattern}.")
        return cleaned

    def arguments(self) -> dict[str, str]:
        """The parameters' values by name, once the form is valid."""
        return {p.name: self.cleaned_data[PARAMETER_PREFIX + p.name] for p in self.spec.parameters}


def shown(value: Any) -> str:
    """A response field's value as text: strings as they are, anything else as compact JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
