from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from ops.audit import verify_chain
from ops.models import AuditRecord


class Command(BaseCommand):
    help = "Check that the audit log is complete and unaltered; exits non-zero naming the first bad record."

    def handle(self, *args: Any, **options: Any) -> None:
        fault = verify_chain(AuditRecord.objects.order_by("id").iterator(chunk_size=2000))
        if fault is not None:
            raise CommandError(f"audit log broken at record #{fault.record_id}: {fault.problem}")
        self.stdout.write(f"audit log intact: {AuditRecord.objects.count()} record(s)")
