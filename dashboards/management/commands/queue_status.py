from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from dashboards.queue import as_dicts, queue_status


class Command(BaseCommand):
    help = "Queued, running and failed-in-the-last-hour jobs per model, and the age of the oldest queued job."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="machine-readable output")

    def handle(self, *args: Any, **options: Any) -> None:
        rows = queue_status()
        if options["json"]:
            self.stdout.write(json.dumps(as_dicts(rows), indent=2))
            return
        self.stdout.write(f"{'model':<28} {'queued':>7} {'running':>8} {'failed 1h':>10} {'oldest queued':>14}")
        for row in rows:
            oldest = f"{row.oldest_queued_seconds:.0f} s" if row.oldest_queued_seconds is not None else "-"
            self.stdout.write(
                f"{row.model:<28} {row.queued:>7} {row.running:>8} {row.failed_last_hour:>10} {oldest:>14}"
            )
        if not rows:
            self.stdout.write("(no queued, running or recently failed jobs)")
