"""State changes of jobs. Each function writes its own audit record.

The worker's side of a job (claim, finish, fail) lives here too, so the Celery
task stays a thin caller and every transition is in one place.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import uuid
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypedDict

from django.conf import settings
from django.db import IntegrityError, connection, router, transaction
from django.db.models import BooleanField, Count, Exists, ExpressionWrapper, F, Max, Min, OuterRef, Q, QuerySet
from django.db.models.expressions import RawSQL
from django.utils import timezone
from django_stubs_ext import WithAnnotations

from base import audit, blobs, metrics, notify
from base.audit import Actor
from base.statements import Insert, Param, Statement, Update
from jobs import broker, cores
from jobs.models import Job
from keys.models import ApiClient
from registry.models import ModelVersion
from sessions.models import KeySession

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobInputs:
    """Ciphertexts already checked, in submission order: spooled to local files (``paths``), or
    held in memory (``contents``), as a small single input is (jobs.ciphertexts.received_inputs)."""

    paths: list[Path] = dataclasses.field(default_factory=list)
    contents: list[bytes] | None = None

    @property
    def count(self) -> int:
        return len(self.contents) if self.contents is not None else len(self.paths)

    def digest(self) -> str:
        if self.contents is not None:
            return inputs_digest(self.contents)
        return inputs_digest(path.read_bytes() for path in self.paths)

    def small_contents(self, bound: int) -> list[bytes] | None:
        """The ciphertexts' bytes when together they are at most ``bound`` bytes, else None."""
        if self.contents is not None:
            return self.contents if sum(map(len, self.contents)) <= bound else None
        if sum(path.stat().st_size for path in self.paths) > bound:
            return None
        return [path.read_bytes() for path in self.paths]

    def store(self, job: Job) -> list[str]:
        """Put each input in storage under the job's input names; returns the names."""
        if self.contents is not None:
            return [blobs.save_bytes(job.input_name(index), data) for index, data in enumerate(self.contents)]
        # The spooled files are ours: moved into storage, not copied (as for keys).
        return [blobs.save_local_file(job.input_name(index), path) for index, path in enumerate(self.paths)]


def inputs_digest(contents: Iterable[bytes]) -> str:
    """A job's ``inputs_sha256``: the digest of its ciphertexts' digests, in order."""
    digest = hashlib.sha256()
    for content in contents:
        digest.update(hashlib.sha256(content).digest())
    return digest.hexdigest()


class IdempotencyConflict(Exception):
    """The idempotency key was used before for a different body."""


class SessionEndedError(Exception):
    """The session ended while the job was being submitted."""


def submit_job(
    session: KeySession, inputs: JobInputs, idempotency_key: str | None, actor: Actor, claim_if_idle: bool = False
) -> tuple[Job, bool]:
    """Store the inputs, create the job and enqueue it once committed. Returns (job, created).

    ``claim_if_idle``: when no job is queued or running, the job is inserted claimed already
    (running, its first attempt, by its own message), and its worker runs it without a claim of
    its own (:func:`claimed_at_submission`). Used for a single input whose client waits for
    the output: on an idle service the queue has nothing to share out, and the claim was one
    database round trip on the worker's side of every such job.
    """
    # Small inputs are read once here, for the digest and for the broker message.
    contents = inputs.small_contents(settings.MOAI_INLINE_CIPHERTEXT_BYTES)
    inputs_sha256 = inputs_digest(contents) if contents is not None else inputs.digest()
    # No lookup of the idempotency key first: a repeated request is rare, and the unique
    # constraint finds it at insert time (below) for one query less on every submission.
    job = Job(
        id=uuid.uuid4(),
        session=session,
        client=session.client,
        model_version=session.model_version,
        input_count=inputs.count,
        inputs_sha256=inputs_sha256,
        # Set now, not after publishing: one write less per job. If publishing fails, the
        # recovery sweep still finds the job missing from the broker and sends it again.
        enqueued_at=timezone.now(),
        idempotency_key=idempotency_key or None,
    )
    stored = inputs.store(job)
    claim: SubmissionClaim | None = None
    try:
        with transaction.atomic():
            # Inserted only while the session is active, its row locked by the same statement so
            # that it cannot end between the check and the insert: ending it cancels queued jobs
            # and fails running ones, and this one must be among them or not exist. Claimed by its
            # insert only when no other job is queued or running: else it takes its turn.
            if claim_if_idle and _JOB_ROW.one_if(_claimed(job), _ACTIVE_SESSION_LOCKED_WHEN_IDLE, session.pk):
                claim = SubmissionClaim.of(job, session)
            elif not _JOB_ROW.one_if(_queued_again(job), _ACTIVE_SESSION_LOCKED, session.pk):
                raise SessionEndedError(str(session.pk))
            # Stored first all the same: a message delivered again, a requeue or the recovery
            # sweep sends the job without them, and its worker reads them from storage. Sent
            # before the audit record's checkpoint is handed on (hooks run in the order given):
            # the worker starts meanwhile.
            transaction.on_commit(lambda: enqueue(job.id, contents, claim))
            audit.record(actor, "job.submitted", "job", job.id, context_id=str(session.id), inputs=job.input_count)
    except (IntegrityError, SessionEndedError):
        for name in stored:
            blobs.delete(name)
        # A request with the same idempotency key came first (a retry, or a race): its job
        # is the answer, even if the session has ended since.
        earlier = idempotency_key and (
            Job.objects.filter(client_id=session.client_id, idempotency_key=idempotency_key).first()
        )
        if not earlier:
            raise
        return _same_request(earlier, inputs_sha256), False
    except BaseException:
        for name in stored:
            blobs.delete(name)
        raise
    event = "job queued" if claim is None else "job claimed at submission"
    logger.info(event, extra={**_log_fields(job), "inputs": job.input_count})
    return job, True


def _active_session_locked(session_id: uuid.UUID) -> QuerySet[KeySession]:
    return KeySession.objects.select_for_update().filter(pk=session_id, status=KeySession.Status.ACTIVE)


def _active_session_locked_when_idle(session_id: uuid.UUID) -> QuerySet[KeySession]:
    live = Job.objects.filter(status__in=[Job.Status.QUEUED, Job.Status.RUNNING])
    return _active_session_locked(session_id).filter(~Exists(live))


# Run on every submission: compiled once per thread (base.statements).
_ACTIVE_SESSION_LOCKED = Statement(_active_session_locked, Param(KeySession._meta.pk, uuid.UUID(int=1)))
_ACTIVE_SESSION_LOCKED_WHEN_IDLE = Statement(
    _active_session_locked_when_idle, Param(KeySession._meta.pk, uuid.UUID(int=1))
)
_JOB_ROW = Insert(Job)


def _claimed(job: Job) -> Job:
    """``job`` as its insert claims it: its first attempt, running under its own message's id."""
    job.status, job.attempts, job.claim_token = Job.Status.RUNNING, 1, str(uuid.uuid4())
    job.started_at = job.heartbeat_at = job.enqueued_at
    return job


def _queued_again(job: Job) -> Job:
    """``job`` as a queued one (what :func:`_claimed` set, undone when the service was not idle)."""
    job.status, job.attempts, job.claim_token = Job.Status.QUEUED, 0, ""
    job.started_at = job.heartbeat_at = None
    return job


@dataclass(frozen=True)
class SubmissionClaim:
    """What a worker needs of a job its submission claimed, sent in the job's message.

    The web process read all of it under the session's lock as it inserted the job, moments
    before: the worker runs the job from this, without reading the row, as long as the message
    is fresh (:func:`claimed_at_submission`).
    """

    token: str
    session_id: str
    keys_blob: str
    key_fingerprint: str
    model_version_id: int
    client_id: int
    client_name: str
    inputs_sha256: str
    input_count: int
    submitted_at: str

    @classmethod
    def of(cls, job: Job, session: KeySession) -> SubmissionClaim:
        assert job.submitted_at is not None  # set by the insert (auto_now_add)
        return cls(
            token=job.claim_token,
            session_id=str(session.pk),
            keys_blob=session.keys_blob,
            key_fingerprint=session.key_fingerprint,
            model_version_id=session.model_version_id,
            client_id=session.client_id,
            client_name=session.client.name,
            inputs_sha256=job.inputs_sha256,
            input_count=job.input_count,
            submitted_at=job.submitted_at.isoformat(),
        )

    def message(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_message(cls, fields: object) -> tuple[SubmissionClaim, datetime] | None:
        """The claim a message carries and its submission time, parsed once; None when it is not
        one (from another version, or damaged)."""
        if not isinstance(fields, dict):
            return None
        try:
            claim = cls(**fields)
            return claim, datetime.fromisoformat(claim.submitted_at)
        except (TypeError, ValueError):
            return None


# A message that reaches its worker later than this after its job's submission (pool processes
# all busy, a turn put back by a worker's shutdown, clocks apart between hosts) is checked
# against the job's row before it runs: its job may have been requeued or ended since.
CLAIM_TRUSTED_SECONDS = 1.0


def claimed_at_submission(
    job_id: str,
    token: str,
    fields: object,
    loaded_version: Callable[[int], ModelVersion | None],
    warm_sessions: Collection[str] = (),
) -> Job | None:
    """The job a message's submission claimed for it; None when the job is no longer this message's.

    A fresh message is taken at its word: its job was inserted running under this message's
    id moments ago, with the session active and locked, so the session's state is the one
    it had at the claim, as a worker's own claim reads it. A stale one is checked against the
    row first. ``loaded_version``: the model versions the process holds, by id (no query);
    ``warm_sessions``: the sessions whose keys it holds (for the log line, as for a claim).
    """
    read = SubmissionClaim.from_message(fields)
    if read is None or read[0].token != token:
        return _claimed_row(job_id, token, warm_sessions)
    claim, submitted_at = read
    version = loaded_version(claim.model_version_id)
    if version is None or (timezone.now() - submitted_at).total_seconds() > CLAIM_TRUSTED_SECONDS:
        return _claimed_row(job_id, token, warm_sessions)
    session = KeySession(
        id=uuid.UUID(claim.session_id),
        client_id=claim.client_id,
        model_version=version,
        status=KeySession.Status.ACTIVE,
        keys_blob=claim.keys_blob,
        key_fingerprint=claim.key_fingerprint,
    )
    job = Job(
        id=uuid.UUID(job_id),
        session=session,
        client=ApiClient(id=claim.client_id, name=claim.client_name),
        model_version=version,
        status=Job.Status.RUNNING,
        input_count=claim.input_count,
        inputs_sha256=claim.inputs_sha256,
        attempts=1,
        claim_token=token,
        submitted_at=submitted_at,
        started_at=submitted_at,
        heartbeat_at=submitted_at,
    )
    job._state.adding, job._state.db = False, router.db_for_read(Job)
    _log_running(job, claim.session_id in warm_sessions)
    return job


def _claimed_row(job_id: str, token: str, warm_sessions: Collection[str]) -> Job | None:
    """The job row, if it still runs under this message's claim."""
    job = (
        Job.objects.select_related("session", "model_version", "client")
        .filter(pk=job_id, status=Job.Status.RUNNING, claim_token=token)
        .first()
    )
    if job is not None:
        _log_running(job, str(job.session_id) in warm_sessions)
    return job


def _same_request(job: Job, inputs_sha256: str) -> Job:
    if job.inputs_sha256 != inputs_sha256:
        raise IdempotencyConflict(str(job.id))
    return job


def enqueue(job_id: uuid.UUID, inputs: Sequence[bytes] | None = None, claim: SubmissionClaim | None = None) -> None:
    """Send the job's turn to the broker, with its ciphertexts when the web process holds them small.

    A failure here loses nothing: the job row is committed as queued, and the recovery
    sweep sends it again (jobs.recovery); or, claimed by its submission (``claim``), as
    running, and the sweep takes it back once the lease passes without heartbeats."""
    try:
        broker.send_job(str(job_id), inputs, claim.message() if claim is not None else None)
    except Exception:
        logger.exception("could not enqueue job; the recovery sweep will send it again", extra={"job_id": str(job_id)})


def requeue_job(job: Job, actor: Actor, reason: str) -> bool:
    """Put a running job whose worker was lost back in the queue and send it again.

    Fenced on the attempt: a worker that comes back late cannot finish it any more.
    False when the job is no longer running that attempt.
    """
    with transaction.atomic():
        moved = Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING, attempts=job.attempts).update(
            status=Job.Status.QUEUED, heartbeat_at=None, enqueued_at=timezone.now()
        )
        if moved:
            audit.record(actor, "job.requeued", "job", job.pk, reason, attempt=job.attempts)
            transaction.on_commit(partial(enqueue, job.pk))
    return bool(moved)


def record_heartbeats(claim_tokens: Collection[str]) -> int:
    """Mark the running jobs claimed by these broker messages as alive now; how many were.

    Not audited: a heartbeat is a lease renewal many times a minute, not a change of state.
    """
    if not claim_tokens:
        return 0
    return Job.objects.filter(claim_token__in=claim_tokens, status=Job.Status.RUNNING).update(
        heartbeat_at=timezone.now()
    )


def cancel_job(job: Job, actor: Actor, reason: str = "cancelled by request") -> bool:
    """Cancel a queued job; False when it is no longer queued."""
    with transaction.atomic():
        updated = Job.objects.filter(pk=job.pk, status=Job.Status.QUEUED).update(
            status=Job.Status.CANCELLED,
            finished_at=timezone.now(),
            error_code="cancelled",
            error_message="Cancelled by request.",
        )
        if updated:
            audit.record(actor, "job.cancelled", "job", job.id, reason)
    job.refresh_from_db()
    if updated:
        _job_ended(job, "job cancelled")
    return bool(updated)


def stop_for_sessions_end(session_ids: list[uuid.UUID], code: str, actor: Actor) -> int:
    """Cancel the queued jobs, and fail the running ones, of sessions that just ended."""
    jobs = list(
        Job.objects.select_for_update(of=("self",))
        .filter(session_id__in=session_ids)
        .exclude(status__in=Job.FINISHED)
        .select_related("model_version", "client")
    )
    now = timezone.now()
    outcomes = {
        Job.Status.QUEUED: (Job.Status.CANCELLED, "The session ended before the job ran."),
        Job.Status.RUNNING: (Job.Status.FAILED, "The session ended while the job ran; its result is discarded."),
    }
    entries = []
    for was, (new_status, message) in outcomes.items():
        batch = [job for job in jobs if job.status == was]
        Job.objects.filter(pk__in=[job.pk for job in batch], status=was).update(
            status=new_status, finished_at=now, error_code=code, error_message=message
        )
        for job in batch:
            job.status, job.finished_at = new_status, now
            entries.append(
                audit.Entry(actor, f"job.{new_status}", "job", job.id, "session ended", {"error_code": code})
            )
            _job_ended(job, f"job {new_status}: session ended", code, notice_on_commit=True)
    if entries:
        audit.record_many(entries)
    return len(entries)


def erase_blobs(job: Job) -> None:
    """Erase a job's ciphertexts and results from storage."""
    attempts = range(1, job.attempts + 1)
    names = [job.input_name(index) for index in range(job.input_count)]
    names += [job.output_name(index, attempt) for index in range(job.input_count) for attempt in attempts]
    blobs.delete_many(names)  # on S3, one request for the job rather than one a blob
    blobs.remove_empty_folders(job.blob_folder)
    Job.objects.filter(pk=job.pk).update(blobs_erased=True)


def erase_blobs_of_sessions(session_ids: list[uuid.UUID]) -> None:
    for job in Job.objects.filter(session_id__in=session_ids, blobs_erased=False).only("id", "input_count"):
        erase_blobs(job)


def purge_expired_results(retention_seconds: int) -> int:
    """Erase the blobs of jobs that finished more than ``retention_seconds`` ago; returns how many."""
    cutoff = timezone.now() - timedelta(seconds=retention_seconds)
    done = Job.objects.filter(status__in=Job.FINISHED, finished_at__lte=cutoff, blobs_erased=False)
    count = 0
    for job in done.iterator():
        erase_blobs(job)
        count += 1
    return count


CLAIM_TRIES = 5


def claim_job(token: str, warm_sessions: Collection[str] = ()) -> Job | None:
    """Take the queued job this pool process should run next, atomically; None if none is left.

    A broker message is one turn to run a job, not a particular job: each job sends
    one message, and each message takes at most one job, so no job is left without a
    turn. The process takes the oldest queued job, or, while that one has waited less
    than MOAI_AFFINITY_MAX_WAIT_SECONDS, the oldest of a session whose keys it holds
    warm (``warm_sessions``): a session's jobs tend to stay where its keys are
    decompressed, and no job waits for that longer than the setting. ``token`` (the
    message's id) marks the claim, so the worker's parent can find the job it runs.
    A compare-and-set makes each claim one attempt; a job is never run twice at once.
    """
    warm = set(warm_sessions)
    # The head in one statement where PostgreSQL can (a data-modifying CTE); else, or when the head
    # is not this process's to take, the queue is read and then claimed.
    job = (_claim_head(warm, token) if connection.vendor == "postgresql" else None) or _claim_next(warm, token)
    if job is None:
        return None
    _log_running(job, str(job.session_id) in warm)
    return job


def _log_running(job: Job, keys_warm: bool) -> None:
    assert job.started_at is not None  # set by the claim (_set_claimed, _claimed)
    waited_ms = int((job.started_at - job.submitted_at).total_seconds() * 1000)
    logger.info(
        "job running",
        extra={**_log_fields(job), "attempt": job.attempts, "queued_ms": waited_ms, "keys_warm": keys_warm},
    )


def _claim_next(warm: set[str], token: str) -> Job | None:
    """The job ``_next_job`` picks, claimed by a compare-and-set; tried again when another process took it first."""
    for _ in range(CLAIM_TRIES):
        job = _next_job(warm)
        if job is None:
            # The client whose turn it was may have had its last job taken meanwhile by another
            # process: only an empty queue ends this message's turn.
            if not Job.objects.filter(status=Job.Status.QUEUED).exists():
                return None
            continue
        now = timezone.now()
        # ``attempts`` as read: the row is ours only if nobody claimed (or requeued) it since.
        if _CLAIM.run(job.pk, job.attempts, now, now, token):
            _set_claimed(job, now, token)
            return job
    return None  # others keep taking the jobs first; their messages remain for the rest


def _set_claimed(job: Job, now: datetime, token: str) -> None:
    """The row as the claim left it, without reading it back: one query less per job."""
    job.status, job.started_at, job.heartbeat_at, job.claim_token = Job.Status.RUNNING, now, now, token
    job.attempts += 1


def _claimed_head_sql(read: str, column: Callable[[str], str]) -> str:
    """The head's read with the claim's compare-and-set beside it (``_claim_head``'s statement)."""
    return (
        f"{read}, claimed AS (UPDATE {connection.ops.quote_name(Job._meta.db_table)} SET status = %s, "
        f"started_at = %s, heartbeat_at = %s, attempts = attempts + 1, claim_token = %s "
        f"WHERE id = (SELECT {column('id')} FROM read WHERE NOT {column('others_waiting')} AND "
        f"(cardinality(%s::uuid[]) = 0 OR {column('keys_everywhere')} OR {column('session_id')} = ANY(%s::uuid[]) "
        f"OR {column('submitted_at')} <= %s)) "
        f"AND status = %s AND attempts = (SELECT {column('attempts')} FROM read) RETURNING 1) "
        "SELECT read.*, EXISTS (SELECT 1 FROM claimed) FROM read"
    )


def _claim_head(warm: set[str], token: str) -> Job | None:
    """Read the queue's head and claim it in one statement, when the head is the job this process
    would take anyway (``_next_job``'s first answer: no other client waiting, and no warm session
    of its client to prefer); else None, and the claim goes the longer way.

    One round trip instead of two on every job that finds the queue with one client's jobs in it
    (the common case): the head's read, with its related rows, and the same compare-and-set as
    ``_CLAIM``. The update runs in a data-modifying CTE, so the read's columns are the row as it
    was before (queued); what the update set is written into the instance here.
    """
    now = timezone.now()
    oldest_preferred = now - timedelta(seconds=settings.MOAI_AFFINITY_MAX_WAIT_SECONDS)
    sessions = [uuid.UUID(session_id) for session_id in warm]
    found = _QUEUE_HEAD.first_within(
        _claimed_head_sql,
        [Job.Status.RUNNING.value, now, now, token, sessions, sessions, oldest_preferred, Job.Status.QUEUED.value],
    )
    if found is None or not found[1][0]:
        return None
    job, _ = found
    job.queued_behind = max(0, job.queued_now - 1)
    _set_claimed(job, now, token)
    return job


# An update's rows and what it sets in them (base.statements.Update).
_Change = tuple[QuerySet[Job], dict[str, Any]]


def _claim(job_id: uuid.UUID, attempts: int, started_at: datetime, heartbeat_at: datetime, token: str) -> _Change:
    queued = Job.objects.filter(pk=job_id, status=Job.Status.QUEUED, attempts=attempts)
    changes = {"status": Job.Status.RUNNING, "started_at": started_at, "heartbeat_at": heartbeat_at,
               "attempts": F("attempts") + 1, "claim_token": token}  # fmt: skip
    return queued, changes


def _finish(job_id: uuid.UUID, attempts: int, finished_at: datetime, result_attempt: int) -> _Change:
    running = Job.objects.filter(pk=job_id, status=Job.Status.RUNNING, attempts=attempts)
    return running, {"status": Job.Status.SUCCEEDED, "finished_at": finished_at, "result_attempt": result_attempt}


_JOB_ID = Param(Job._meta.pk, uuid.UUID(int=1))
_ATTEMPTS = Param(Job._meta.get_field("attempts"), 2_000_000_001)
_SAMPLE_TIME = datetime(1970, 1, 2, tzinfo=UTC)
# Every job's claim and end, compiled once per thread (base.statements). Each parameter has a
# sample of its own, even where two take the same value in a run, so that each is found.
_CLAIM = Update(
    _claim,
    _JOB_ID,
    _ATTEMPTS,
    Param(Job._meta.get_field("started_at"), _SAMPLE_TIME),
    Param(Job._meta.get_field("heartbeat_at"), _SAMPLE_TIME + timedelta(seconds=1)),
    Param(Job._meta.get_field("claim_token"), "moai-statement-sample"),
)
_FINISH = Update(
    _finish,
    _JOB_ID,
    _ATTEMPTS,
    Param(Job._meta.get_field("finished_at"), _SAMPLE_TIME),
    Param(Job._meta.get_field("result_attempt"), 2_000_000_002),
)


def ready_to_claim() -> None:
    """Connect to the database and read the queue's head once, as a pool process's first claim would.

    Called as a pool process starts, in the thread that runs its jobs (Django's connections
    are per thread), so that its first job does not wait for the connection. Reads only:
    the job it finds, if any, is left for its message.
    """
    _next_job(set())


def _next_job(warm_sessions: set[str]) -> Job | None:
    """The job to claim, read with its session, model and client in the same query.

    The common case, every queued job being one client's, takes one query: the oldest
    queued job, with whether any other client has one waiting. Only then is the
    fair-share turn worked out (``_client_whose_turn_it_is``).
    """
    head = _QUEUE_HEAD.first()
    if head is None:
        return None
    oldest: Job | None = head
    if head.others_waiting:
        client_id = _client_whose_turn_it_is()
        if client_id is None:
            return None
        if client_id != head.client_id:
            oldest = _queued().filter(client_id=client_id).order_by("submitted_at").first()
    if oldest is None:
        return None
    oldest.queued_behind = max(0, head.queued_now - 1)
    waited = (timezone.now() - oldest.submitted_at).total_seconds()
    if not warm_sessions or str(oldest.session_id) in warm_sessions or _keys_warm_everywhere(oldest):
        return oldest
    if waited >= settings.MOAI_AFFINITY_MAX_WAIT_SECONDS:
        return oldest
    warm = (
        _queued()
        .filter(client_id=oldest.client_id, session_id__in=[uuid.UUID(s) for s in warm_sessions])
        .order_by("submitted_at")
        .first()
    )
    if warm is not None:
        warm.queued_behind = oldest.queued_behind
    return warm or oldest


def _keys_warm_everywhere(job: Job) -> bool:
    """Whether the job's session uploaded its version's constant keys, which every pool process
    that loaded the circuit holds warm (runtime.session_keys): no other job is to be preferred to
    it for its keys. The head's read says the same in SQL (``keys_everywhere``)."""
    return job.model_version.kept_constant_keys(job.session.key_fingerprint)


def _queued() -> QuerySet[Job]:
    return Job.objects.filter(status=Job.Status.QUEUED).select_related("session", "model_version", "client")


class _HeadAnnotations(TypedDict):
    others_waiting: bool
    queued_now: int
    keys_everywhere: bool


def _queue_head() -> QuerySet[WithAnnotations[Job, _HeadAnnotations]]:
    """The oldest queued job, with whether another client has one queued and how many are."""
    others = Job.objects.filter(status=Job.Status.QUEUED).exclude(client_id=OuterRef("client_id"))
    # How many are queued, counted only up to a bound: the pool processes that may take them.
    counted = RawSQL(
        f"SELECT count(*) FROM (SELECT 1 FROM {Job._meta.db_table} WHERE status = %s LIMIT %s) AS queued",
        [Job.Status.QUEUED.value, cores.MAX_POOL_PROCESSES + 1],
    )
    # ModelVersion.kept_constant_keys, in SQL: the session's keys are the ones its version kept.
    constant = ExpressionWrapper(
        Q(session__key_fingerprint=F("model_version__evaluation_keys_sha256"))
        & ~Q(model_version__evaluation_keys_sha256="")
        & ~Q(model_version__constant_keys=""),
        output_field=BooleanField(),
    )
    return (
        _queued()
        .annotate(others_waiting=Exists(others), queued_now=counted, keys_everywhere=constant)
        .order_by("submitted_at")[:1]
    )


# Read on every claim with the same SQL each time: compiled once per thread (base.statements).
_QUEUE_HEAD: Statement[WithAnnotations[Job, _HeadAnnotations]] = Statement(_queue_head)


def _client_whose_turn_it_is() -> int | None:
    """The client with queued jobs whose turn it is: fewest jobs running, then least recently served.

    Jobs are shared out between clients, not claimed oldest first for everyone: a client
    flooding the queue gets one turn per round like any other, so another client's job
    waits for at most about one job per pool process, whatever the flood's size. Within
    a client's turn, session affinity (``_next_job_id``) picks which of its jobs runs.
    """
    waiting = [
        (row["client_id"], row["oldest"])
        for row in Job.objects.filter(status=Job.Status.QUEUED).values("client_id").annotate(oldest=Min("submitted_at"))
    ]
    if len(waiting) <= 1:
        return waiting[0][0] if waiting else None
    ids = [client_id for client_id, _ in waiting]
    running = dict(
        Job.objects.filter(status=Job.Status.RUNNING, client_id__in=ids)
        .values_list("client_id")
        .annotate(n=Count("pk"))
        .values_list("client_id", "n")
    )
    # Served within the last hour: a client idle for longer is simply the least recently served.
    since = timezone.now() - timedelta(hours=1)
    served = dict(
        Job.objects.filter(client_id__in=ids, started_at__gte=since)
        .values("client_id")
        .annotate(last=Max("started_at"))
        .values_list("client_id", "last")
    )

    def turn(entry: tuple[int, datetime]) -> tuple[int, datetime, datetime]:
        client_id, oldest = entry
        return running.get(client_id, 0), served.get(client_id, since), oldest

    return min(waiting, key=turn)[0]


def finish_job(job: Job, outputs: list[bytes] | None = None) -> bool:
    """Mark a running job succeeded; False if it was ended meanwhile (its outputs are then dropped).

    ``outputs``: the attempt's outputs, stored already, when small enough to send to the
    requests waiting on the job with its end notice.
    """
    now = timezone.now()
    # Only the attempt that holds the job may finish it: one that lost its lease and
    # was overtaken by a newer attempt produces no second result.
    updated = _FINISH.run(job.pk, job.attempts, now, job.attempts)
    if updated:
        job.status, job.finished_at, job.result_attempt = Job.Status.SUCCEEDED, now, job.attempts
    else:
        for index in range(job.input_count):
            blobs.delete(job.output_name(index, job.attempts))
        job.refresh_from_db()
        if job.blobs_erased:  # the session's end erased the rest: its folder goes with this attempt's outputs
            blobs.remove_empty_folders(job.blob_folder)
    if updated:
        _job_ended(job, "job succeeded", outputs=notify.Outputs(job.attempts, outputs) if outputs else None)
    else:
        logger.info("job output discarded (job ended meanwhile)", extra=_log_fields(job))
    return bool(updated)


def _job_ended(
    job: Job,
    event: str,
    code: str = "",
    level: int = logging.INFO,
    notice_on_commit: bool = False,
    outputs: notify.Outputs | None = None,
) -> None:
    """What follows every end of a job: its metrics, the notice to requests waiting on it, the log line.

    ``notice_on_commit``: the job ended inside a transaction still open, and a waiting request
    woken before it commits would read the job as it was.
    """
    metrics.observe_job_end(job.model_version.name, job.status, job.latency_ms, code)
    if notice_on_commit:
        transaction.on_commit(partial(notify.job_ended, str(job.id), outputs))
    else:
        notify.job_ended(str(job.id), outputs)
    logger.log(level, event, extra={**_log_fields(job), "error_code": code} if code else _log_fields(job))


def _log_fields(job: Job) -> dict[str, object]:
    return {
        "job_id": str(job.id),
        "context_id": str(job.session_id),
        "model": job.model_version.name,
        "client": job.client.name,
        "status": job.status,
        "latency_ms": job.latency_ms,
    }


def fail_job(
    job_id: str,
    code: str,
    message: str,
    actor: Actor | None = None,
    attempt: int | None = None,
    token: str | None = None,
) -> bool:
    """Mark a running (or queued) job failed with an error code; False if it had already ended.

    A worker passes its ``attempt`` and its claim's ``token``: a worker whose attempt was
    overtaken, or whose job was put back in the queue meanwhile, fails nothing.
    """
    live = Job.objects.filter(pk=job_id, status__in=[Job.Status.RUNNING, Job.Status.QUEUED])
    if attempt is not None:
        live = live.filter(attempts=attempt)
    if token is not None:
        live = live.filter(status=Job.Status.RUNNING, claim_token=token)
    with transaction.atomic():
        updated = live.update(
            status=Job.Status.FAILED, finished_at=timezone.now(), error_code=code, error_message=message
        )
        if updated:
            audit.record(actor or Actor.system("worker"), "job.failed", "job", job_id, message, error_code=code)
    if updated:
        job = Job.objects.select_related("model_version", "client").get(pk=job_id)
        _job_ended(job, "job failed", code, level=logging.WARNING)
    return bool(updated)
