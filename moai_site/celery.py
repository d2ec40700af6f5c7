"""The Celery application shared by the worker and beat processes.

Configuration lives in Django settings as ``CELERY_*`` names. Nothing FHE-related
is imported here: OpenMP state must not exist in the parent before it forks its
pool processes (DESIGN.md), so the runtime is loaded lazily inside the task.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from celery import Celery

from base.env import env_data_dir, env_int


def _prepare_worker_environment() -> None:
    """Set, before anything imports them, what the worker's pool processes inherit.

    - ``OMP_NUM_THREADS``: the OpenMP threads of a pool process's background work
      (model loads, key warm-ups), its share of the cores; a job's circuit gets the
      threads that ``jobs.cores`` gives it when it starts (all cores when alone).
    - the board on which pool processes say they are busy (``jobs.cores``),
      made here so that every pool process inherits it.
    - ``PROMETHEUS_MULTIPROC_DIR``: every pool process writes its metrics there and
      the worker's metrics endpoint sums them.
    """
    from jobs import cores

    cpus = cores.host_cores()
    pool = env_int("MOAI_WORKER_POOL_SIZE", cpus)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, cpus // max(1, pool))))
    cores.create_board()
    data_dir = env_data_dir()
    metrics_dir = Path(os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(data_dir / "prometheus" / "worker")))
    # Files of a previous run would be summed in as if their processes still existed.
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True, exist_ok=True)


if "worker" in sys.argv[1:]:
    _prepare_worker_environment()

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "moai_site.settings")

app = Celery("moai_site")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def ready_to_publish() -> Callable[[], None]:
    """Do now what the first task sent by a process would do on a user's request.

    Celery finalizes the app (importing every app's tasks), imports its result backend
    (through package entry points), its task sender and the broker's transport, and connects
    to the broker lazily, on the first send: 25-40 ms on the first job a web process takes.
    gunicorn calls this as each worker process starts. The imports happen here, before the
    process serves: a thread importing modules while requests import them could catch a
    module half made. Returns the connecting, which may wait long on a broker that is away,
    for the caller to run in a thread.
    """
    app.finalize(auto=True)
    _ = app.backend
    _ = app.amqp.send_task_message
    _ = app.connection_for_write().transport
    return _connect_and_declare


def _connect_and_declare() -> None:
    from kombu.common import maybe_declare

    with app.producer_or_acquire() as producer:
        # Connected, and the queue declared as the first send would; the pool keeps the connection.
        maybe_declare(app.amqp.queues[app.conf.task_default_queue], producer.channel)
