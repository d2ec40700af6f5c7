from __future__ import annotations

from typing import Any

from actions.services import set_client_active
from base.audit import Actor
from base.rules import refused_as_command_error
from keys.management.commands._client_command import ClientCommand


class Command(ClientCommand):
    help = "Disable an API client (its requests answer 403) and end its sessions."

    enable = False

    def handle(self, *args: Any, **options: Any) -> None:
        client = self.client(options)
        verb = "enable" if self.enable else "disable"
        with refused_as_command_error():
            changed = set_client_active(client, self.enable, Actor.operator(f"{verb}_client"), options["reason"])
        self.stdout.write(f"{client.name} {verb}d" if changed else f"{client.name} was already {verb}d")
