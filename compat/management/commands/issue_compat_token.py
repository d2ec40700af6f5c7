from __future__ import annotations

from typing import Any

from base.audit import Actor
from base.rules import refused_as_command_error
from compat.services import issue_token
from keys.management.commands._client_command import ClientCommand


class Command(ClientCommand):
    help = (
        "Issue a compatibility token (the credential of Concrete-ML's example clients, carried in the URL), "
        "revoking the client's earlier one; printed once on the last line."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        client = self.client(options)
        with refused_as_command_error():
            raw = issue_token(client, Actor.operator("issue_compat_token"), options["reason"])
        self.stdout.write(f"new compatibility token for {client.name}; any earlier one is refused. Store it now:")
        self.stdout.write(raw)
