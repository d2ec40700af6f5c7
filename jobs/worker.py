"""Life of a Celery pool process: its warm-up loop, its key-cache janitor and its status file.

From its start, each pool process loads the active models' circuits and warms new
sessions' keys in a thread of its own (``jobs.warmup``).

Each pool process holds warm evaluation keys in memory (jobs.runtime). When a
session ends anywhere (API, command, beat, admin), the keys must leave every
process's memory too, not only storage: a janitor thread in each process drops
cached keys of sessions that are no longer active, every
``MOAI_KEY_REVOCATION_SECONDS``. Jobs never wait for it: the task re-checks the
session before every input, so no job runs with keys of an ended session.

The status file (``MOAI_DATA_DIR/worker-status/<host>-<pid>.json``) says which
sessions' keys a process holds and when it had loaded the active circuits, for operators
and for the tests that prove erasure. The worker's main process keeps
``<host>-<pid>.ready`` there while it consumes: readiness that does not depend on the
log level (``scripts.stack`` waits for it).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from celery.signals import (
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)
from django.conf import settings
from django.db import close_old_connections, connection
from django.utils import timezone
from prometheus_client import CollectorRegistry, multiprocess, start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from base import audit_checkpoints, metrics, notify
from base.env import env_str
from base.folders import worker_status_path
from jobs import broker, cores, runtime, services, warmup
from registry import metric_series
from sessions.models import KeySession

logger = logging.getLogger(__name__)
_stop = threading.Event()
# The janitor and the warm-up thread both write the status file, through one temporary file.
_status_lock = threading.Lock()


def status_path() -> Path:
    return worker_status_path(Path(settings.MOAI_DATA_DIR), socket.gethostname(), os.getpid(), "json")


def ready_path() -> Path:
    """The file the worker's main process keeps while it consumes (scripts.stack waits for it)."""
    return worker_status_path(Path(settings.MOAI_DATA_DIR), socket.gethostname(), os.getpid(), "ready")


def drop_ended_sessions() -> list[str]:
    """Drop cached keys of sessions that are no longer active; returns the dropped ids."""
    cached = runtime.keys.session_ids()
    if not cached:
        return []
    active = {
        str(pk)
        for pk in KeySession.objects.filter(pk__in=cached, status=KeySession.Status.ACTIVE).values_list("pk", flat=True)
    }
    dropped = [session_id for session_id in cached if session_id not in active]
    for session_id in dropped:
        runtime.keys.drop(session_id)
    if dropped:
        logger.info("dropped cached keys of ended sessions", extra={"sessions": len(dropped)})
    return dropped


def write_status() -> None:
    # Read and written under the lock: a snapshot taken before another thread's write is never written after it.
    with _status_lock:
        status: dict[str, Any] = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "cached_sessions": runtime.keys.session_ids(),
            "cached_key_bytes_estimate": runtime.keys.used_bytes,
            "models_loaded_at": warmup.models_loaded_at,
            "updated_at": timezone.now().isoformat(),
        }
        path = status_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".tmp")
        partial.write_text(json.dumps(status))
        partial.replace(path)


def _janitor() -> None:
    while not _stop.wait(settings.MOAI_KEY_REVOCATION_SECONDS):
        try:
            close_old_connections()
            drop_ended_sessions()
            write_status()
        except Exception:  # a database blip must not kill the janitor; it tries again next round
            logger.exception("key cache janitor round failed")
            time.sleep(1)


@worker_process_init.connect
def _start_janitor(**_: Any) -> None:
    _stop.clear()
    cores.join_pool()
    runtime.sweep_load_folders()
    metrics.WORKER_PROCESSES.set(1)
    threading.Thread(target=_janitor, name="key-cache-janitor", daemon=True).start()
    threading.Thread(target=warmup.run, args=(_stop, write_status), name="warm-up", daemon=True).start()


@worker_init.connect
def _claim_ready_in_each_pool_process(**_: Any) -> None:
    # Connected now, not at import: Celery's Django fixup closes every database connection as a
    # pool process starts, in a handler it connects at worker_init; this one must run after it.
    worker_process_init.connect(_ready_to_claim, weak=False)


def _ready_to_claim(**_: Any) -> None:
    try:
        services.ready_to_claim()
    except Exception:  # the database away at start: the first job connects as before (and retries)
        logger.warning("could not reach the database ahead of the first job")
        close_old_connections()


class _HostMetrics(Collector):
    """The worker host's metrics: every pool process's files, after forgetting dead processes.

    A pool process killed by a circuit abort or by the OOM killer never says goodbye,
    so its live gauges (busy, processes) would otherwise be counted forever.
    """

    def collect(self) -> Iterator[Metric]:
        try:
            metric_series.initialise_model_series()
        finally:
            # Each scrape runs in a thread of its own (ThreadingHTTPServer): keep no connection.
            connection.close()
        folder = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
        for path in folder.glob("gauge_live*_*.db"):
            pid = int(path.stem.rsplit("_", 1)[-1])
            if not cores.process_alive(pid):
                multiprocess.mark_process_dead(pid, str(folder))
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, str(folder))
        yield from registry.collect()


def _heartbeats() -> None:
    """From the worker's parent: mark the jobs its pool processes are running as alive.

    The parent is never busy with a circuit, so a long job still gets heartbeats;
    when the whole worker dies they stop, and jobs.recovery takes the job back.
    """
    while not _stop.wait(settings.MOAI_JOB_HEARTBEAT_SECONDS):
        try:
            close_old_connections()
            _heartbeat_round()
        except Exception:  # a database blip must not stop the heartbeats for good
            logger.exception("job heartbeat round failed")


def _heartbeat_round() -> None:
    from celery.worker import state

    # A message runs the job that its claim marked with the message's id.
    services.record_heartbeats([r.id for r in list(state.active_requests) if r.name == broker.RUN_JOB])


@worker_ready.connect
def _start_heartbeats(**_: Any) -> None:
    threading.Thread(target=_heartbeats, name="job-heartbeats", daemon=True).start()


@worker_ready.connect
def _mark_ready(**_: Any) -> None:
    path = ready_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": os.getpid(), "ready_at": timezone.now().isoformat()}))


@worker_shutdown.connect
def _unmark_ready(**_: Any) -> None:
    ready_path().unlink(missing_ok=True)


@worker_init.connect
def _serve_metrics(**_: Any) -> None:
    """Serve this host's worker metrics on MOAI_WORKER_METRICS_PORT (0 turns it off)."""
    port = settings.MOAI_WORKER_METRICS_PORT
    if not port or not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_HostMetrics())
    start_http_server(port, addr=env_str("MOAI_WORKER_METRICS_ADDR") or "0.0.0.0", registry=registry)
    logger.info("worker metrics served", extra={"port": port})


@worker_process_shutdown.connect
def _stop_janitor(**_: Any) -> None:
    _stop.set()
    # Here, not when the warm-up thread ends: the process exits without waiting for it.
    notify.pool_process_gone(warmup.process_name())
    status_path().unlink(missing_ok=True)
    runtime.models.clear()  # removes the folders of the loaded models
    # A pool process leaves by os._exit (billiard), past the atexit hook that flushes elsewhere.
    audit_checkpoints.flush(timeout=10.0)
