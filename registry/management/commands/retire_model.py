from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from base import rules
from base.audit import Actor
from base.rules import refused_as_command_error
from registry.models import ModelVersion
from registry.services import retire_model


class Command(BaseCommand):
    help = "Retire a model version: new sessions get the newest remaining active version (open ones keep running)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--model-version", type=int, help="default: the newest active version")
        parser.add_argument("--reason", required=True)

    def handle(self, *args: Any, **options: Any) -> None:
        # retire_model does not check the reason itself yet (jobs/services.py is being
        # reworked elsewhere); the rule is the services' one so the refusal reads the same.
        with refused_as_command_error():
            reason = rules.reason(options["reason"])
        versions = ModelVersion.objects.filter(name=options["name"])
        if options["model_version"] is not None:
            versions = versions.filter(version=options["model_version"])
        else:
            versions = versions.filter(status=ModelVersion.Status.ACTIVE)
        model = versions.order_by("-version").first()
        if model is None:
            raise CommandError(f"no such model version: {options['name']} {options['model_version'] or '(active)'}")
        changed = retire_model(model, Actor.operator("retire_model"), reason)
        self.stdout.write(f"{model} retired" if changed else f"{model} was already retired")
