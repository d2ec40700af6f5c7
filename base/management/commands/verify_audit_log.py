from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Max

from base import audit_checkpoints
from base.audit import keyring, verify_chain
from base.models import AuditRecord


class Command(BaseCommand):
    help = (
        "Check that the audit log is complete and unaltered; exits non-zero naming the first bad sequence number. "
        "With --checkpoints, also against the signed checkpoints in blob storage, which catch a deleted tail."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--checkpoints",
            action="store_true",
            help="also check the table against the checkpoints in blob storage (audit/checkpoints/)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        keys = keyring()
        records = AuditRecord.objects.order_by("seq").iterator(chunk_size=2000)
        head = AuditRecord.objects.aggregate(head=Max("seq"))["head"] or 0
        if not options["checkpoints"]:
            fault = verify_chain(records, keys)
            summary = f"audit log intact: {head} record(s)"
        else:
            # Checkpoints of this process's own writes (a caller that wrote and then verifies) are
            # written by a thread of their own: in storage before they are read.
            audit_checkpoints.flush()
            try:
                checkpoints = audit_checkpoints.load_all(keys)
            except audit_checkpoints.BadCheckpoint as exc:
                raise CommandError(f"audit checkpoint not genuine: {exc}") from None
            if head and not checkpoints:
                raise CommandError(
                    f"no audit checkpoints in blob storage ({audit_checkpoints.FOLDER}/): the tail of the "
                    f"{head} record(s) cannot be checked"
                )
            fault = audit_checkpoints.verify_against(records, head, checkpoints, keys)
            last = f"#{checkpoints[-1].seq} of {checkpoints[-1].at}" if checkpoints else "none"
            summary = f"audit log intact: {head} record(s), {len(checkpoints)} checkpoint(s) agree (latest {last})"
        if fault is not None:
            raise CommandError(f"audit log broken at sequence number {fault.seq}: record #{fault.seq} {fault.problem}")
        self.stdout.write(summary)
