from __future__ import annotations

from typing import Any

from base.audit import Actor
from base.rules import refused_as_command_error
from keys.management.commands._client_command import ClientCommand
from keys.services import rotate_api_key


class Command(ClientCommand):
    help = "Revoke a client's API key and issue a new one, printed once on the last line."

    def handle(self, *args: Any, **options: Any) -> None:
        client = self.client(options)
        with refused_as_command_error():
            raw_key = rotate_api_key(client, Actor.operator("rotate_api_key"), options["reason"])
        self.stdout.write(f"new API key for {client.name}; the old one is refused from now on. Store it now:")
        self.stdout.write(raw_key)
