"""PostgreSQL with django-prometheus's metrics, health-checking only connections that sat idle.

Django's ``CONN_HEALTH_CHECKS`` sends ``SELECT 1`` before the first query of every web
request and every task: one more database round trip on each side of every job. A
connection that served a query less than ``IDLE_SECONDS`` ago has just shown the check's
answer; one idle for longer (where a database restart or a dropped idle connection hides)
is checked as before. A restart in the middle of a busy second costs that process one
request answered 503 ``service_unavailable`` (base.errors), after which it reconnects.
"""

from __future__ import annotations

import time

from django_prometheus.db.backends.postgresql import base

IDLE_SECONDS = 1.0


class DatabaseWrapper(base.DatabaseWrapper):
    last_used = 0.0  # monotonic time this connection last opened a cursor

    def close_if_health_check_failed(self) -> None:
        if self.connection is not None and time.monotonic() - self.last_used < IDLE_SECONDS:
            self.health_check_done = True  # used moments ago: as good as a check
        super().close_if_health_check_failed()
        self.last_used = time.monotonic()
