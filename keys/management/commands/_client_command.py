"""What the commands that act on one API client share: its name, a mandatory reason, the lookup."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from keys.models import ApiClient
from keys.services import ClientError, get_client


class ClientCommand(BaseCommand):
    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--reason", required=True, help="why; kept in the audit log")

    def client_and_reason(self, options: dict[str, Any]) -> tuple[ApiClient, str]:
        reason = options["reason"].strip()
        if not reason:
            raise CommandError("--reason must say why")
        try:
            return get_client(options["name"]), reason
        except ClientError as exc:
            raise CommandError(str(exc)) from exc
