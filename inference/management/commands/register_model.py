from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.validators import validate_slug

from inference.registration import BundleError
from inference.services import register_model
from ops.audit import Actor


class Command(BaseCommand):
    help = "Register an FHEModelDev folder (client.zip + server.zip) as the next version of NAME."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("path", type=Path)
        parser.add_argument("--description", default="")

    def handle(self, *args: Any, **options: Any) -> None:
        name: str = options["name"]
        try:
            validate_slug(name)
        except ValidationError:
            raise CommandError(f"invalid model name {name!r}: use letters, digits, '-' and '_'") from None
        try:
            model = register_model(name, options["path"], options["description"], Actor.operator("register_model"))
        except BundleError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"registered {model.name} v{model.version}: evaluation keys {model.evaluation_keys_bytes} B, "
            f"input ciphertext {model.input_ciphertext_bytes} B, output {model.output_ciphertext_bytes} B"
        )
