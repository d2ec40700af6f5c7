from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from ops.audit import Actor
from sessions.services import expire_due_sessions


class Command(BaseCommand):
    help = "End every session whose TTL has passed and erase its keys (Celery beat also runs this)."

    def handle(self, *args: Any, **options: Any) -> None:
        ended = expire_due_sessions(Actor.system("manage.py expire_sessions"))
        self.stdout.write(f"expired {ended} session(s)")
