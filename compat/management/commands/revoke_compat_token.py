from __future__ import annotations

from typing import Any

from base.audit import Actor
from base.rules import refused_as_command_error
from compat.services import revoke_tokens
from keys.management.commands._client_command import ClientCommand


class Command(ClientCommand):
    help = "Revoke a client's compatibility token: its /compat/ URLs answer 401 from the next request on."

    def handle(self, *args: Any, **options: Any) -> None:
        client = self.client(options)
        with refused_as_command_error():
            revoked = revoke_tokens(client, Actor.operator("revoke_compat_token"), options["reason"])
        self.stdout.write(f"revoked {revoked} compatibility token(s) of {client.name}")
