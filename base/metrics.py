"""The runbook's metrics (API.md "Metrics"): their definitions and the process's registry.

Counters and the latency histogram are kept by the process where the event
happens (a worker pool process, the worker's parent, a web process) and summed per
host by prometheus_client's multiprocess mode when ``PROMETHEUS_MULTIPROC_DIR`` is
set (gunicorn and the Celery worker set it). Gauges of shared state - queue depth,
active sessions, the audit log's head - are read from the database at scrape time, so every replica
reports the same value (dashboards.collectors). No label carries a context id, job id or key.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess

# From 10 ms (a warm linear model) to 15 minutes (a deep tree ensemble), with a bound
# at exactly 5000 ms so that the runbook's p99 > 5000 ms alert is exact.
LATENCY_BUCKETS_MS = (
    10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 120000, 300000, 600000, 900000,
)  # fmt: skip

JOB_LATENCY = Histogram(
    "moai_job_latency",
    "Milliseconds from submission to the end of each job (succeeded or failed), per model.",
    ["model"],
    buckets=LATENCY_BUCKETS_MS,
)
JOB_FAILED = Counter("moai_job_failed", "Jobs that failed, by error code.", ["reason"])
JOBS_FINISHED = Counter("moai_jobs_finished", "Jobs that ended, per model and final status.", ["model", "status"])
WORKER_BUSY = Gauge("moai_worker_busy", "Worker pool processes running a job now.", multiprocess_mode="livesum")
KEY_CACHE = Counter("moai_worker_key_cache", "Evaluation-key lookups by a job in its pool process's cache.", ["result"])
for _result in ("hit", "miss"):  # both series exist from the start, so rate() and ratios work at once
    KEY_CACHE.labels(_result)
WORKER_PROCESSES = Gauge("moai_worker_processes", "Live worker pool processes.", multiprocess_mode="livesum")


# Every code a job can fail with (jobs/tasks.py, recovery.py, a session ending under a
# running job). Their series exist at 0 from the first scrape: a rate over a series that
# does not exist yet reads "no data", which an alert cannot tell from "metric gone".
JOB_FAILURE_CODES = (
    "circuit_aborted",
    "context_expired",
    "context_invalidated",
    "context_suspended",
    "evaluation_keys_unavailable",
    "internal_error",
    "invalid_ciphertext",
    "time_limit_exceeded",
    "worker_lost",
)
for _code in JOB_FAILURE_CODES:
    JOB_FAILED.labels(reason=_code)
FINISHED_STATUSES = ("succeeded", "failed", "cancelled")


def initialise_model_series(names: Iterable[str]) -> None:
    """Zero series for these models in the per-model counters and the latency histogram."""
    for name in names:
        JOB_LATENCY.labels(model=name)
        for status in FINISHED_STATUSES:
            JOBS_FINISHED.labels(model=name, status=status)


def observe_job_end(model: str, status: str, latency_ms: int | None, reason: str = "") -> None:
    JOBS_FINISHED.labels(model=model, status=status).inc()
    if latency_ms is not None and status in ("succeeded", "failed"):
        JOB_LATENCY.labels(model=model).observe(latency_ms)
    if status == "failed":
        JOB_FAILED.labels(reason=reason or "unknown").inc()


def process_registry() -> CollectorRegistry:
    """This host's process metrics: every process's files in multiprocess mode, else this process's."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    from prometheus_client import REGISTRY

    return REGISTRY
