from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.validators import validate_slug

from base.audit import Actor
from compat.services import register_hybrid_model
from registry.registration import BundleError


class Command(BaseCommand):
    help = (
        "Register every module and input shape of a HybridFHEModel.save_and_clear_private_info folder "
        "as model versions grouped under NAME, served to HybridFHEModel clients at /compat/<token>/hybrid."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="the model_name its clients pass to HybridFHEModel")
        parser.add_argument("path", type=Path)
        parser.add_argument("--description", default="")

    def handle(self, *args: Any, **options: Any) -> None:
        name: str = options["name"]
        try:
            validate_slug(name)
        except ValidationError:
            raise CommandError(f"invalid model name {name!r}: use letters, digits, '-' and '_'") from None
        if len(name) > 60:
            raise CommandError("the model name is longer than 60 characters")
        try:
            rows = register_hybrid_model(
                name, options["path"], options["description"], Actor.operator("register_hybrid_model")
            )
        except BundleError as exc:
            raise CommandError(str(exc)) from exc
        for row in rows:
            self.stdout.write(
                f"registered {name} module {row.module_name} input {row.input_shape} as {row.version_name}"
            )
