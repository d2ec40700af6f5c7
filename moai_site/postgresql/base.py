"""PostgreSQL with django-prometheus's metrics, health-checking only connections that sat idle,
and a cursor for statements that run on every request or job, prepared on the server.

Django's ``CONN_HEALTH_CHECKS`` sends ``SELECT 1`` before the first query of every web
request and every task: one more database round trip on each side of every job. A
connection that served a query less than ``IDLE_SECONDS`` ago has just shown the check's
answer; one idle for longer (where a database restart or a dropped idle connection hides)
is checked as before. A restart in the middle of a busy second costs that process one
request answered 503 ``service_unavailable`` (base.errors), after which it reconnects.
"""

from __future__ import annotations

import time
from typing import Any

from django.db.backends.postgresql.base import ServerBindingCursor
from django.utils.asyncio import async_unsafe
from django.utils.functional import cached_property
from django_prometheus.db.backends.postgresql import base
from django_prometheus.db.common import ExportingCursorWrapper

IDLE_SECONDS = 1.0


class DatabaseWrapper(base.DatabaseWrapper):
    last_used = 0.0  # monotonic time this connection last opened a cursor

    def close_if_health_check_failed(self) -> None:
        if self.connection is not None and time.monotonic() - self.last_used < IDLE_SECONDS:
            self.health_check_done = True  # used moments ago: as good as a check
        super().close_if_health_check_failed()
        self.last_used = time.monotonic()

    @async_unsafe
    def prepared_cursor(self) -> Any:
        """A cursor whose statements are prepared on the server once they have run a few times.

        Django's cursors bind parameters on the client, so PostgreSQL parses and plans every
        statement anew: 0.2-0.5 ms of planning for a read that then runs in 0.1 (the queue's
        head, a request's session; EXPLAIN ANALYZE on this machine). This cursor binds on the
        server, and psycopg prepares a statement on the connection after ``prepare_threshold``
        (5) runs of the same SQL, then only sends its parameters. It is for the statements
        base.statements compiles, whose SQL is the same on every run; any other statement
        keeps Django's cursor. Queries are counted in the metrics as on Django's cursor.
        """
        # What Django's cursor() does, with the other cursor class.
        self.close_if_health_check_failed()
        self.ensure_connection()
        with self.wrap_database_errors:
            return self._prepare_cursor(self._prepared_cursor_class(self.connection))

    @cached_property
    def _prepared_cursor_class(self) -> Any:
        # Django's server-binding cursor, counted in the metrics as django-prometheus counts its own.
        return ExportingCursorWrapper(ServerBindingCursor, self.alias, self.vendor)
