"""``python -m bench.audit``: audit writes per second with concurrent writers against PostgreSQL.

Every state change writes one audit record inside its own transaction, and writers are
serialised on the chain's head, so this is the ceiling of state changes per second the
whole service can reach. Each writer is a thread with its own database connection (as
gunicorn threads and Celery processes have); each write is one transaction with one record,
committed, as a session creation or a job submission makes it.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time

PG = "postgres://postgres@127.0.0.1:5432/moai_bench_audit"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.audit", description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("MOAI_BENCH_DATABASE_URL", PG))
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    _setup(args.database_url)
    rate, cpu_ms = measure(args.writers, args.seconds)
    print(
        f"{rate:.0f} audit writes/s with {args.writers} concurrent writers over {args.seconds:.0f} s "
        f"({cpu_ms:.2f} ms of this process's CPU per write)"
    )
    return 0


def _setup(database_url: str) -> None:
    import tempfile

    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "moai_site.settings")
    os.environ.setdefault("DEBUG", "1")
    os.environ.setdefault("MOAI_DATA_DIR", tempfile.mkdtemp(prefix="moai-bench-audit-"))
    os.environ.pop("REDIS_URL", None)
    _create_database(database_url)
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def _create_database(database_url: str) -> None:
    """A fresh database, so the figure does not depend on what an earlier run left."""
    from urllib.parse import urlparse

    import psycopg

    name = urlparse(database_url).path.lstrip("/")
    admin = database_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
        connection.execute(f'CREATE DATABASE "{name}"')


def measure(writers: int, seconds: float) -> tuple[float, float]:
    """Writes per second of wall time, and this process's CPU milliseconds per write.

    The CPU figure is the steadier one on a shared machine: it does not depend on what
    else runs, only on what a write costs the writing process (PostgreSQL's side excluded).
    """
    from django.db import connection, transaction

    from ops import audit

    actor = audit.Actor.system("bench")
    counts = [0] * writers
    start = threading.Barrier(writers + 1)
    deadline = 0.0

    def write(slot: int) -> None:
        start.wait()
        try:
            while time.monotonic() < deadline:
                with transaction.atomic():
                    audit.record(actor, "bench.write", "bench", slot, n=counts[slot])
                counts[slot] += 1
        finally:
            connection.close()

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    began, cpu_began = time.monotonic(), time.process_time()
    deadline = began + seconds
    start.wait()
    for thread in threads:
        thread.join()
    written = sum(counts)
    return written / (time.monotonic() - began), (time.process_time() - cpu_began) * 1000 / max(written, 1)


if __name__ == "__main__":
    sys.exit(main())
