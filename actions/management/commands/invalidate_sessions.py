from __future__ import annotations

import uuid
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import QuerySet

from actions.services import end_selected_sessions
from base.audit import Actor
from base.rules import refused_as_command_error
from keys.models import ApiClient
from registry.models import ModelVersion
from sessions.models import KeySession


class Command(BaseCommand):
    help = "Incident response: end sessions now and erase their keys (by context, client, model, or all)."

    def add_arguments(self, parser: CommandParser) -> None:
        target = parser.add_mutually_exclusive_group(required=True)
        target.add_argument("--context", action="append", help="a context id (repeatable)")
        target.add_argument("--client", help="every session of this client")
        target.add_argument("--model", help="every session of any version of this model")
        target.add_argument("--all", action="store_true", help="every session")
        parser.add_argument("--reason", required=True, help="why; kept in the audit log")

    def handle(self, *args: Any, **options: Any) -> None:
        sessions, scope = _select(options)
        actor = Actor.operator("invalidate_sessions")
        with refused_as_command_error():
            matched, ended = end_selected_sessions(
                sessions, scope, KeySession.Status.INVALIDATED, actor, options["reason"] or ""
            )
        self.stdout.write(f"invalidated {ended} session(s); {matched - ended} had already ended")


def _select(options: dict[str, Any]) -> tuple[QuerySet[KeySession], str]:
    """The sessions the options name, and the scope as the audit record names it."""
    if options["context"]:
        try:
            ids = [uuid.UUID(value) for value in options["context"]]
        except ValueError:
            raise CommandError("--context takes context ids (UUIDs)") from None
        found = KeySession.objects.filter(pk__in=ids)
        missing = set(ids) - set(found.values_list("pk", flat=True))
        if missing:
            raise CommandError(f"no session with context id {', '.join(sorted(map(str, missing)))}")
        return found, "context:" + ",".join(sorted(map(str, ids)))
    if options["client"]:
        if not ApiClient.objects.filter(name=options["client"]).exists():
            raise CommandError(f"no client named {options['client']!r}")
        return KeySession.objects.filter(client__name=options["client"]), f"client:{options['client']}"
    if options["model"]:
        if not ModelVersion.objects.filter(name=options["model"]).exists():
            raise CommandError(f"no model named {options['model']!r}")
        return KeySession.objects.filter(model_version__name=options["model"]), f"model:{options['model']}"
    return KeySession.objects.all(), "all"
