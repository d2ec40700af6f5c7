from __future__ import annotations

from typing import Any

from actions.services import rotate_client_keys
from base.audit import Actor
from base.rules import refused_as_command_error
from keys.management.commands._client_command import ClientCommand


class Command(ClientCommand):
    help = "End all of a client's sessions; its next session needs freshly generated evaluation keys."

    def handle(self, *args: Any, **options: Any) -> None:
        client = self.client(options)
        with refused_as_command_error():
            ended = rotate_client_keys(client, Actor.operator("rotate_client_keys"), options["reason"])
        self.stdout.write(f"rotated keys of {client.name}: ended {ended} session(s); earlier keys are refused")
