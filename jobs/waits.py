"""Slots for held requests: each client holds at most ``MOAI_MAX_WAITS_PER_CLIENT`` waits.

A ``GET /jobs/{id}?wait=N`` (or ``.../result?wait=N``) holds a gunicorn thread for up to
30 s. Without a bound, one client with a few dozen held requests takes every thread of
the web tier from everybody else. A request that gets no slot is answered at once with
the job's current state, exactly as with ``wait=0``.

With Redis the slots are counted across every web process: a sorted set per client whose
members are the held requests, scored by the time each one's slot lapses by itself (its
wait plus a margin). A process that dies holding slots therefore leaks them only until
then. With the embedded defaults (one host, no Redis) a process-local count is used.

Each web process also holds at most ``MOAI_MAX_WAITS_PER_PROCESS`` waits in all (half its
threads by default), counted in the process: gunicorn keeps accepting requests while all of
a process's threads are busy and queues them there, so without this bound the waits of a
few clients landing on one process would stall every request sent to it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from base import notify
from base.errors import ApiError
from base.redis_client import shared_redis
from base.statements import Param, Statement
from jobs.models import Job
from sessions.models import KeySession

logger = logging.getLogger(__name__)

KEY = "moai:waits:{}"
# A held slot lapses this long after its wait should have ended, should its release be lost.
MARGIN_SECONDS = 30.0

# Drop lapsed slots, count the rest, take one if under the cap: atomic in Redis, so two
# processes cannot both take the last slot.
_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""

MAX_WAIT_SECONDS = 30.0

_local_lock = threading.Lock()
# Held waits counted in this process: per client id (no Redis) and, under PROCESS, in all.
_local_counts: dict[int | str, int] = {}
PROCESS = "process"


@contextlib.contextmanager
def wait_slot(client_id: int, seconds: float) -> Iterator[bool]:
    """Yield True while holding one of the client's wait slots, False when none is free."""
    cap = settings.MOAI_MAX_WAITS_PER_CLIENT
    if seconds <= 0 or cap <= 0:
        yield False
        return
    with _local_slot(PROCESS, settings.MOAI_MAX_WAITS_PER_PROCESS) as room:
        if not room:
            yield False
            return
        if settings.REDIS_URL:
            with _redis_slot(client_id, seconds, cap) as held:
                yield held
            return
        with _local_slot(client_id, cap) as held:
            yield held


@contextlib.contextmanager
def _redis_slot(client_id: int, seconds: float, cap: int) -> Iterator[bool]:
    key, token = KEY.format(client_id), uuid.uuid4().hex
    now = time.time()
    lapse = seconds + MARGIN_SECONDS
    try:
        held = bool(shared_redis().eval(_ACQUIRE, 1, key, now, now + lapse, cap, token, int(lapse) + 1))
    except Exception as exc:
        # Redis down: the request answers at once rather than holding a thread unbounded.
        logger.warning("wait slots unavailable", extra={"error": str(exc)[:200]})
        held = False
    try:
        yield held
    finally:
        if held:
            with contextlib.suppress(Exception):
                shared_redis().zrem(key, token)


@contextlib.contextmanager
def _local_slot(key: int | str, cap: int) -> Iterator[bool]:
    with _local_lock:
        held = _local_counts.get(key, 0) < cap
        if held:
            _local_counts[key] = _local_counts.get(key, 0) + 1
    try:
        yield held
    finally:
        if held:
            with _local_lock:
                _local_counts[key] -= 1


def wait_seconds(raw: str | None) -> float:
    """The ``wait`` query parameter: seconds from 0 to MAX_WAIT_SECONDS, 0 when absent."""
    if raw is None:
        return 0.0
    try:
        wait = float(raw)
    except ValueError:
        wait = -1.0
    if not 0 <= wait <= MAX_WAIT_SECONDS or wait != wait:  # NaN compares unequal to itself
        raise ApiError(400, "invalid_request", f"wait must be a number of seconds from 0 to {MAX_WAIT_SECONDS:g}.")
    return wait


def hold_until_ended(job: Job, seconds: float) -> bool | None:
    """Wait up to ``seconds`` for the job to end (woken by the worker), then reload it.

    None when there was nothing to wait for; False when the client already holds
    ``MOAI_MAX_WAITS_PER_CLIENT`` waits, so this one answers at once with the current state.
    """
    if not seconds or job.status in Job.FINISHED:
        return None
    with wait_slot(job.client_id, seconds) as held:
        if not held:
            return False
        wait_until_ended(job, seconds)
    return True


def wait_until_ended(job: Job, seconds: float) -> None:
    """Wait up to ``seconds`` for the job to end, in a wait slot the caller holds; ``job`` is then fresh
    if it ended (with the outputs its end notice brought, in ``job.delivered_outputs``)."""

    def ended() -> bool:
        if job.delivered_outputs is not None and _confirm_notice(job):
            return True  # the row was read, fresh, by the check that the outputs may be served
        job.refresh_from_db()  # one query per check, and the answer is the fresh row
        return job.status in Job.FINISHED

    def heard(message: bytes) -> None:
        job.delivered_outputs = notify.decoded_outputs(message) or job.delivered_outputs

    notify.wait_for(str(job.pk), ended, seconds, heard)


def delivered_output(job: Job, index: int) -> bytes | None:
    """Output ``index`` of the job as its end notice carried it, if it may still be served; else None (read storage)."""
    delivered = job.delivered_outputs
    if delivered is None or not 0 <= index < len(delivered.contents):
        return None
    if job.confirmed_outputs is not delivered and not _confirm_notice(job):
        return None
    return delivered.contents[index]


def _confirm_notice(job: Job) -> bool:
    """Whether the outputs the notice brought may be served; if so, ``job`` is refreshed from its row.

    The answer must never hold bytes that a read of storage would find erased. Erasure
    deletes the stored results before it marks the job (``services.erase_blobs``): when a
    session ends, inside the transaction that ends it, holding its row locked; past the
    retention, in the sweep. So the session's row is locked here as well: an end under
    way is waited for, and then the session reads as ended. Only a job that succeeded by
    the notice's attempt, in an active session, not erased and within its retention, is
    served from the notice; any other answer comes from storage, as before. One query,
    which also reads the job's row: the request needs it fresh anyway.
    """
    delivered = job.delivered_outputs
    if delivered is None:
        return False
    retained_since = timezone.now() - timedelta(seconds=settings.MOAI_RESULT_RETENTION_SECONDS)
    # One statement, run outside a transaction (it is one by itself): the session's row lock is
    # taken, waited for while an end holds it, and the rows read again after; no BEGIN and COMMIT.
    if not _SERVABLE.refresh(job, job.pk, delivered.attempt, retained_since):
        job.delivered_outputs = job.confirmed_outputs = None
        return False
    job.confirmed_outputs = delivered
    return True


def _servable(job_id: uuid.UUID, attempt: int, retained_since: datetime) -> QuerySet[Job]:
    return (
        Job.objects.select_for_update(no_key=True, of=("session",))
        .select_related("session")
        .filter(
            pk=job_id,
            session__status=KeySession.Status.ACTIVE,
            status=Job.Status.SUCCEEDED,
            result_attempt=attempt,
            blobs_erased=False,
            finished_at__gt=retained_since,
        )
    )


# Read by every held request that a notice woke: compiled once per thread (base.statements).
_SERVABLE = Statement(
    _servable,
    Param(Job._meta.pk, uuid.UUID(int=1)),
    Param(Job._meta.get_field("result_attempt"), 2_000_000_001),
    Param(Job._meta.get_field("finished_at"), datetime(1970, 1, 2, tzinfo=UTC)),
)
