from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from base.audit import Actor
from registry.demo_models import DEMO_MODELS, build
from registry.services import register_model


class Command(BaseCommand):
    help = "Train, compile and register the demo models from scikit-learn's bundled data sets."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--only", action="append", default=[], help="build only this model (repeatable)")
        parser.add_argument("--output", type=Path, default=None, help="folder for the exports (default: DATA_DIR/demo)")

    def handle(self, *args: Any, **options: Any) -> None:
        known = {model.name: model for model in DEMO_MODELS}
        unknown = sorted(set(options["only"]) - set(known))
        if unknown:
            raise CommandError(f"unknown demo model(s) {', '.join(unknown)}; known: {', '.join(known)}")
        chosen = [known[name] for name in options["only"]] or DEMO_MODELS
        output: Path = options["output"] or Path(settings.MOAI_DATA_DIR) / "demo"
        for model in chosen:
            folder = build(model, output / model.name).folder
            registered = register_model(
                model.name,
                folder,
                model.description,
                Actor.operator("build_demo_models"),
                preprocessing=model.preprocessing(folder),
                feature_names=model.feature_names(),
            )
            self.stdout.write(
                f"{registered.name} v{registered.version}: keys {registered.evaluation_keys_bytes} B, "
                f"input {registered.input_ciphertext_bytes} B, "
                f"clear pipeline's test accuracy {_accuracy(folder):.3f} ({folder})"
            )


def _accuracy(folder: Path) -> float:
    import numpy as np

    return float(np.load(folder / "samples.npz")["test_accuracy"])
