from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from keys.services import ClientError, get_client, rotate_client_keys
from ops.audit import Actor


class Command(BaseCommand):
    help = "End all of a client's sessions; its next session needs freshly generated evaluation keys."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--reason", required=True)

    def handle(self, *args: Any, **options: Any) -> None:
        reason = options["reason"].strip()
        if not reason:
            raise CommandError("--reason must say why")
        try:
            client = get_client(options["name"])
        except ClientError as exc:
            raise CommandError(str(exc)) from exc
        ended = rotate_client_keys(client, Actor.operator("rotate_client_keys"), reason)
        self.stdout.write(f"rotated keys of {client.name}: ended {ended} session(s); earlier keys are refused")
