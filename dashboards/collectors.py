"""The shared-state gauges (queue depth, sessions, running jobs, the audit log's head),
read from the database at scrape time, and the rendering of ``/metrics``.

Every web replica would read the same numbers, so one of them (the holder of a lease in
Redis) reports them and the others leave them out.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from base.metrics import process_registry
from registry.metric_series import initialise_model_series, model_names

logger = logging.getLogger(__name__)


class SharedStateCollector(Collector):
    """Queue depth and active sessions, read from the database when scraped."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from django.db.models import Count

        from jobs.models import Job
        from sessions.models import KeySession

        depth = GaugeMetricFamily("moai_queue_depth", "Jobs waiting to run, per model.", labels=["model"])
        queued = Job.objects.filter(status=Job.Status.QUEUED).values("model_version__name").annotate(n=Count("pk"))
        counts = {row["model_version__name"]: row["n"] for row in queued}
        for name in model_names():
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

    from base.models import AuditRecord

    head = GaugeMetricFamily("moai_audit_head_sequence", "Highest sequence number in the audit log (0: empty).")
    head.add_metric([], AuditRecord.objects.aggregate(head=Max("seq"))["head"] or 0)
    return head


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

    from base.redis_client import shared_redis

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
