from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from keys.services import ClientError, get_client, set_client_active
from ops.audit import Actor


class Command(BaseCommand):
    help = "Disable an API client (its requests answer 403) and end its sessions."

    enable = False

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
        verb = "enable" if self.enable else "disable"
        changed = set_client_active(client, self.enable, Actor.operator(f"{verb}_client"), reason)
        self.stdout.write(f"{client.name} {verb}d" if changed else f"{client.name} was already {verb}d")
