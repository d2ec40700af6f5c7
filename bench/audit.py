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
from typing import Any

PG = "postgres://postgres@127.0.0.1:5432/moai_bench_audit"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.audit", description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("MOAI_BENCH_DATABASE_URL", PG))
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--processes", action="store_true", help="writers are processes (as gunicorn workers are), not threads"
    )
    parser.add_argument("--verify", action="store_true", help="then time verify_audit_log --checkpoints")
    args = parser.parse_args()
    _setup(args.database_url)
    if args.processes:
        rate = measure_processes(args.writers, args.seconds)
        print(f"{rate:.0f} audit writes/s with {args.writers} writer processes over {args.seconds:.0f} s")
    else:
        rate, cpu_ms = measure(args.writers, args.seconds)
        print(
            f"{rate:.0f} audit writes/s with {args.writers} writer threads over {args.seconds:.0f} s "
            f"({cpu_ms:.2f} ms of this process's CPU per write)"
        )
    if args.verify:
        print(time_verification())
    return 0


def measure_processes(writers: int, seconds: float) -> float:
    """Writes per second with each writer in its own process, so no writer waits for another's GIL."""
    import multiprocessing

    from django.db import connections

    # Children must open their own connections, not share the parent's socket.
    connections.close_all()
    context = multiprocessing.get_context("fork")
    counts = context.Array("i", writers)
    start = context.Barrier(writers + 1)
    children = [context.Process(target=_write_for, args=(slot, seconds, start, counts)) for slot in range(writers)]
    for child in children:
        child.start()
    start.wait()
    began = time.monotonic()
    for child in children:
        child.join()
    return sum(counts[:]) / (time.monotonic() - began)


def _write_for(slot: int, seconds: float, start: Any, counts: Any) -> None:
    from django.db import transaction

    from base import audit

    actor = audit.Actor.system("bench")
    start.wait()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with transaction.atomic():
            audit.record(actor, "bench.write", "bench", slot, n=counts[slot])
        counts[slot] += 1


def time_verification() -> str:
    """How long `verify_audit_log --checkpoints` takes over what the run wrote (one checkpoint per write)."""
    import io

    from django.core.management import call_command

    out = io.StringIO()
    began = time.monotonic()
    call_command("verify_audit_log", "--checkpoints", stdout=out)
    return f"{out.getvalue().strip()}: checked in {time.monotonic() - began:.1f} s"


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

    from base import audit

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
