"""Input rules that every entry point of a state change must meet, checked by the service itself.

Commands, admin actions and any later caller reach the same service function, so a rule
kept here cannot be skipped by a caller that forgot it; callers show the refusal's text.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError
from django.core.validators import validate_slug


class RuleError(ValueError):
    """An input that a service refuses before changing anything; its text is for the operator."""


def reason(text: str) -> str:
    """The reason as the audit log keeps it; an operator's action without one cannot be explained later."""
    stripped = text.strip()
    if not stripped:
        raise RuleError("a reason must say why: it goes into the audit log")
    return stripped


def slug_name(name: str, what: str) -> str:
    """Names end up in URLs, blob paths and metric labels: letters, digits, '-' and '_' only."""
    try:
        validate_slug(name)
    except ValidationError:
        raise RuleError(f"invalid {what} name {name!r}: use letters, digits, '-' and '_'") from None
    return name


@contextmanager
def refused_as_command_error() -> Iterator[None]:
    """In a management command: a service's refusal reads as a command error, not a traceback."""
    try:
        yield
    except RuleError as exc:
        raise CommandError(str(exc)) from exc
