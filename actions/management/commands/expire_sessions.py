from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from actions.services import sweep
from base.audit import Actor


class Command(BaseCommand):
    help = (
        "End every session whose TTL has passed, erase its keys, erase results past retention, and remove keys "
        "that no open session holds (beat runs it too)."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        expired, purged, orphans = sweep(Actor.operator("expire_sessions"))
        self.stdout.write(
            f"expired {expired} session(s); erased the results of {purged} job(s) past retention; "
            f"removed {orphans} orphaned key blob(s) or upload(s)"
        )
