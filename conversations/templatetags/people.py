"""``{{ user|display_name }}``: how a person is shown on every page (the same rule as the live frames)."""

from django import template

from conversations.inbox import display_name as _display_name

register = template.Library()


@register.filter
def display_name(user) -> str:
    """The full name, else the username (``conversations.inbox.display_name``)."""
    return _display_name(user)
