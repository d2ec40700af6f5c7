from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from base.audit import Actor
from jobs.recovery import recover_jobs


class Command(BaseCommand):
    help = "Requeue jobs whose worker was lost and resend queued jobs the broker lost (beat runs this every 15 s)."

    def handle(self, *args: Any, **options: Any) -> None:
        done = recover_jobs(Actor.operator("recover_jobs"))
        self.stdout.write(
            f"requeued {done.requeued} job(s) of lost workers, failed {done.failed} after too many attempts, "
            f"resent {done.resent} job(s) missing from the broker"
        )
