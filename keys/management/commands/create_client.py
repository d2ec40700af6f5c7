from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from base.audit import Actor
from base.rules import refused_as_command_error
from keys.services import create_client


class Command(BaseCommand):
    help = "Create an API client and print its API key once, alone on the last line of stdout."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="client name: letters, digits, '-' and '_'")

    def handle(self, *args: Any, **options: Any) -> None:
        with refused_as_command_error():
            client, raw_key = create_client(options["name"], Actor.operator("create_client"))
        self.stdout.write(f"created client {client.name}; its API key is shown once, store it now:")
        self.stdout.write(raw_key)
