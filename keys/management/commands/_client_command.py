"""What the commands that act on one API client share: its name, a mandatory reason, the lookup."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from base.rules import refused_as_command_error
from keys.models import ApiClient
from keys.services import get_client


class ClientCommand(BaseCommand):
    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--reason", required=True, help="why; kept in the audit log")

    def client(self, options: dict[str, Any]) -> ApiClient:
        with refused_as_command_error():
            return get_client(options["name"])
