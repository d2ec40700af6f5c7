"""The runbook's metrics (API.md "Metrics") and where they are served.

Counters and the latency histogram are kept by the process where the event
happens (a worker pool process, the worker's parent, a web process) and summed per
host by prometheus_client's multiprocess mode when ``PROMETHEUS_MULTIPROC_DIR`` is
set (gunicorn and the Celery worker set it). Gauges of shared state - queue depth,
active sessions, the audit log's head - are read from the database at scrape time, so every replica
reports the same value. No label carries a context id, job id or key.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

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


# Every code a job can fail with (inference/tasks.py, recovery.py, a session ending under a
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


def initialise_model_series() -> None:
    """Zero series per active model for the per-model counters and the latency histogram.

    Called at each scrape: a model registered after the process started gets its series
    then. Reads the database; a database that does not answer leaves them as they are.
    """
    from django.db import DatabaseError

    try:
        names = _model_names(active_only=True)
    except DatabaseError:
        logger.warning("cannot read the models for their metric series")
        return
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


class SharedStateCollector(Collector):
    """Queue depth and active sessions, read from the database when scraped."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from django.db.models import Count

        from inference.models import Job
        from sessions.models import KeySession

        depth = GaugeMetricFamily("moai_queue_depth", "Jobs waiting to run, per model.", labels=["model"])
        queued = Job.objects.filter(status=Job.Status.QUEUED).values("model_version__name").annotate(n=Count("pk"))
        counts = {row["model_version__name"]: row["n"] for row in queued}
        for name in _model_names():
            depth.add_metric([name], counts.get(name, 0))
        yield depth
        sessions = GaugeMetricFamily("moai_session_count", "Active key sessions.")
        sessions.add_metric([], KeySession.objects.filter(status=KeySession.Status.ACTIVE).count())
        yield sessions
        running = GaugeMetricFamily("moai_jobs_running", "Jobs running now.")
        running.add_metric([], Job.objects.filter(status=Job.Status.RUNNING).count())
        yield running
        yield _audit_head()


def _audit_head() -> GaugeMetricFamily:
    """The audit log's highest sequence number, read from the table at scrape time.

    Read, not counted by the writers: a count kept in the processes that write would never
    go down, and what this gauge is for is to show the table's head going down (records
    deleted by SQL, the table emptied), which the MoaiAuditLogShrank alert watches for.
    """
    from django.db.models import Max

    from ops.models import AuditRecord

    head = GaugeMetricFamily("moai_audit_head_sequence", "Highest sequence number in the audit log (0: empty).")
    head.add_metric([], AuditRecord.objects.aggregate(head=Max("seq"))["head"] or 0)
    return head


def _model_names(active_only: bool = False) -> list[str]:
    from inference.models import ModelVersion

    versions = ModelVersion.objects.all()
    if active_only:
        versions = versions.filter(status=ModelVersion.Status.ACTIVE)
    return sorted(set(versions.values_list("name", flat=True)))


def process_registry() -> CollectorRegistry:
    """This host's process metrics: every process's files in multiprocess mode, else this process's."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    from prometheus_client import REGISTRY

    return REGISTRY


SHARED_STATE_LEASE_KEY = "moai:metrics:shared-state-reporter"
# Longer than any sane scrape interval: the reporter renews it at each of its scrapes; when
# it stops being scraped (pod gone), another replica takes over within this many seconds.
SHARED_STATE_LEASE_SECONDS = 120


def reports_shared_state() -> bool:
    """Whether this web replica (its host name: a pod) reports the shared-state gauges now.

    Every replica would read the same numbers from the database, and a sum over
    replicas would count them N times. The replica holding a lease in Redis reports
    them; the others leave them out. Without Redis (one host), or when Redis does not
    answer, this replica reports: the gauges twice is better than not at all.
    """
    from django.conf import settings

    if not settings.REDIS_URL:
        return True
    import redis

    from ops.redis_client import shared_redis

    me = socket.gethostname().encode()
    try:
        client = shared_redis()
        if client.set(SHARED_STATE_LEASE_KEY, me, nx=True, ex=SHARED_STATE_LEASE_SECONDS):
            return True
        if client.get(SHARED_STATE_LEASE_KEY) == me:
            client.expire(SHARED_STATE_LEASE_KEY, SHARED_STATE_LEASE_SECONDS)
            return True
        return False
    except redis.RedisError:
        logger.warning("cannot reach Redis for the metrics lease; reporting shared state here")
        return True


def render(shared_state: bool) -> bytes:
    initialise_model_series()
    registry = process_registry()
    output = generate_latest(registry)
    if shared_state and reports_shared_state():
        shared = CollectorRegistry(auto_describe=False)
        shared.register(SharedStateCollector())
        output += generate_latest(shared)
    return output
