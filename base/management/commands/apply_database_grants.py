from __future__ import annotations

from typing import Any

import dj_database_url
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from base.database_roles import GrantsError, ServiceRole, apply_grants


class Command(BaseCommand):
    help = (
        "Run as the schema's owner after migrate: give the service's PostgreSQL role its privileges, "
        "which let it add audit records but not change or delete them."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--role",
            help="the service's role; default: the user of MOAI_SERVICE_DATABASE_URL (or _FILE)",
        )
        parser.add_argument(
            "--create-role",
            action="store_true",
            help="create the role if it is missing; with MOAI_SERVICE_DATABASE_URL, as a login role with its "
            "password (set again when the role exists)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            statements = apply_grants(_service_role(options["role"]), create=options["create_role"])
        except GrantsError as exc:
            raise CommandError(str(exc)) from None
        for statement in statements:
            # Passwords stay out of the job's log.
            self.stdout.write(statement.split(" PASSWORD ")[0] + (" PASSWORD ..." if " PASSWORD " in statement else ""))


def _service_role(name: str | None) -> ServiceRole:
    if name:
        return ServiceRole(name)
    url = settings.MOAI_SERVICE_DATABASE_URL
    if not url:
        raise CommandError("name the role with --role, or set MOAI_SERVICE_DATABASE_URL (or _FILE)")
    parsed = dj_database_url.parse(url)
    if not parsed.get("USER"):
        raise CommandError("MOAI_SERVICE_DATABASE_URL names no user")
    return ServiceRole(str(parsed["USER"]), str(parsed["PASSWORD"]) if parsed.get("PASSWORD") else None)
