from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from base.models import AuditRecord

FIELDS = [
    "id",
    "seq",
    "at",
    "actor_kind",
    "actor",
    "action",
    "target_type",
    "target_id",
    "reason",
    "source",
    "details",
    "key_id",
    "digest",
]


class Command(BaseCommand):
    help = "Write the audit log to stdout as JSON lines or CSV, oldest first."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--since", help="ISO 8601 time; records at or after it")
        parser.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")

    def handle(self, *args: Any, **options: Any) -> None:
        records = AuditRecord.objects.order_by("seq")
        if options["since"]:
            records = records.filter(at__gte=_parse(options["since"]))
        rows = (_row(record) for record in records.iterator(chunk_size=2000))
        if options["format"] == "csv":
            writer = csv.DictWriter(self.stdout, fieldnames=FIELDS, lineterminator="\n")
            writer.writeheader()
            for row in rows:
                writer.writerow({**row, "details": json.dumps(row["details"], sort_keys=True)})
        else:
            for row in rows:
                self.stdout.write(json.dumps(row, sort_keys=True))


def _parse(value: str) -> datetime:
    parsed = parse_datetime(value)
    if parsed is None:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise CommandError(f"--since {value!r} is not an ISO 8601 time") from None
    return parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed, UTC)


def _row(record: AuditRecord) -> dict[str, Any]:
    return {"id": record.pk, **record.content(), "key_id": record.key_id, "digest": record.digest}
