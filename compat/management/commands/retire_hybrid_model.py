from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from base.audit import Actor
from compat.models import HybridModule
from compat.services import retire_hybrid_model


class Command(BaseCommand):
    help = "Retire every module of a hybrid model (its newest active versions): the listings stop offering it."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--reason", required=True)

    def handle(self, *args: Any, **options: Any) -> None:
        if not options["reason"].strip():
            raise CommandError("--reason must say why")
        if not HybridModule.objects.filter(model_name=options["name"]).exists():
            raise CommandError(f"no hybrid model named {options['name']!r}")
        retired = retire_hybrid_model(options["name"], Actor.operator("retire_hybrid_model"), options["reason"])
        self.stdout.write(f"retired {retired} module version(s) of {options['name']}")
