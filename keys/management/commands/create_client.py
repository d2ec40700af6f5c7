from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.validators import validate_slug

from keys.services import ClientError, create_client
from ops.audit import Actor


class Command(BaseCommand):
    help = "Create an API client and print its API key once, alone on the last line of stdout."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="client name: letters, digits, '-' and '_'")

    def handle(self, *args: Any, **options: Any) -> None:
        name: str = options["name"]
        try:
            validate_slug(name)
        except ValidationError:
            raise CommandError(f"invalid client name {name!r}: use letters, digits, '-' and '_'") from None
        try:
            client, raw_key = create_client(name, Actor.operator("create_client"))
        except ClientError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"created client {client.name}; its API key is shown once, store it now:")
        self.stdout.write(raw_key)
