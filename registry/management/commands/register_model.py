from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from base import rules
from base.audit import Actor
from base.rules import refused_as_command_error
from registry.registration import BundleError
from registry.services import register_model


class Command(BaseCommand):
    help = (
        "Register an FHEModelDev folder (client.zip + server.zip) as the next version of NAME, "
        "with the preprocessing its data owners apply to raw rows before encrypting."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("path", type=Path)
        parser.add_argument("--description", default="")
        parser.add_argument(
            "--preprocessing",
            type=Path,
            default=None,
            help="skops file (skops.io.dump) of the fitted scaler or pipeline of scalers the model was trained behind",
        )
        parser.add_argument(
            "--feature-names",
            default=None,
            help="the raw features' names, comma-separated, in the order data owners send them "
            "(default: those the preprocessing was fitted with, if any)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        # register_model does not check the name itself yet (jobs/services.py is being
        # reworked elsewhere); the rule is the services' one so the refusal reads the same.
        with refused_as_command_error():
            name = rules.slug_name(options["name"], "model")
        try:
            model = register_model(
                name,
                options["path"],
                options["description"],
                Actor.operator("register_model"),
                preprocessing=options["preprocessing"],
                feature_names=_names(options["feature_names"]),
            )
        except BundleError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"registered {model.name} v{model.version}: evaluation keys {model.evaluation_keys_bytes} B, "
            f"input ciphertext {model.input_ciphertext_bytes} B, output {model.output_ciphertext_bytes} B, "
            f"preprocessing {'yes' if model.preprocessing else 'none'}, "
            f"features {', '.join(model.feature_names) if model.feature_names else model.input_features}"
        )


def _names(value: str | None) -> list[str] | None:
    return [name.strip() for name in value.split(",")] if value is not None else None
