"""The Celery task that runs a job. It takes a job id only; the job row is the truth."""

from __future__ import annotations

import base64
import logging
import re
import signal
import time
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

from billiard.exceptions import WorkerLostError
from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from celery.signals import task_failure, task_prerun
from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections

from base import blobs, metrics
from base.audit import Actor
from jobs import cores, runtime, services
from jobs.ending import count_circuit_abort
from jobs.models import Job
from sessions.models import KeySession
from sessions.status import ENDED

logger = logging.getLogger(__name__)
T = TypeVar("T")


@shared_task(name="inference.tasks.run_job", bind=True)
def run_job(self: Task, job_id: str, inputs: list[str] | None = None, claim: object = None) -> None:
    """``inputs``: the ciphertexts of job ``job_id``, base64, when they were small (none in messages
    sent before they were, nor in those of requeues and the recovery sweep). ``claim``: the job
    was claimed by its submission for this message (services.SubmissionClaim)."""
    token = self.request.id or job_id
    try:
        if claim is not None:
            job = services.claimed_at_submission(
                job_id, token, claim, runtime.models.loaded_version, runtime.keys.session_ids()
            )
        else:
            # The message is a turn to run a job: maybe another one, whose keys this process holds.
            job = services.claim_job(token, runtime.keys.session_ids())
    except (OperationalError, InterfaceError) as exc:
        # The database is away: keep the message alive and try again shortly, rather
        # than leave the job to the recovery sweep.
        close_old_connections()
        raise self.retry(exc=exc, countdown=2, max_retries=None) from exc
    if job is None:
        logger.info("no queued job left for this message", extra={"job_id": job_id})
        return
    fail = partial(
        _surviving_db_outage, partial(services.fail_job, str(job.pk), attempt=job.attempts, token=job.claim_token)
    )
    try:
        with metrics.WORKER_BUSY.track_inprogress():
            _run(job, _handed_inputs(job, job_id, inputs))
    except _AttemptTaken:
        # Only a message delivered twice runs an attempt twice: the other run owns the attempt.
        logger.warning("this attempt's outputs were written by another run; leaving the job to it",
                       extra={"job_id": str(job.pk), "attempt": job.attempts})  # fmt: skip
    except SoftTimeLimitExceeded:
        fail("time_limit_exceeded", "The job ran longer than the worker's time limit.")
    except runtime.CircuitInputError as exc:
        fail("invalid_ciphertext", f"The circuit rejected a ciphertext: {exc}")
    except _KeysUnavailable:
        fail("evaluation_keys_unavailable", "The session's evaluation keys cannot be read.")
    except _SessionEnded as exc:
        fail(exc.code, "The session ended before the job ran.")
    except Exception:
        logger.exception("job crashed", extra={"job_id": str(job.pk)})
        fail("internal_error", "The worker failed to run this job.")


@task_prerun.connect
def _reuse_healthy_connections(task: Task | None = None, **_: Any) -> None:
    """Keep database connections across tasks, as a web request does: drop the ones past
    CONN_MAX_AGE or broken (a PostgreSQL restart), and health-check the rest on first use
    when they sat idle (moai_site.postgresql). A task run inline (eager) shares its caller's
    connection and transaction: left alone."""
    if task is not None and not getattr(task.request, "is_eager", False):
        close_old_connections()


DB_RETRY_SECONDS = 60.0


def _surviving_db_outage(action: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a database write, waiting out a short outage instead of abandoning finished work.

    Outputs already in storage are not thrown away because PostgreSQL restarted while
    the circuit ran; after DB_RETRY_SECONDS the error goes up and the recovery sweep
    takes the job back once its lease ends.
    """
    deadline = time.monotonic() + DB_RETRY_SECONDS
    delay = 0.5
    while True:
        try:
            return action(*args, **kwargs)
        except (OperationalError, InterfaceError):
            if time.monotonic() + delay > deadline:
                raise
            logger.warning("database unreachable; retrying", extra={"retry_in_s": delay})
            time.sleep(delay)
            close_old_connections()
            delay = min(delay * 2, 5.0)


class _KeysUnavailable(Exception):
    pass


class _AttemptTaken(Exception):
    """An output of this attempt is in storage already: another run of the same message wrote it."""


class _SessionEnded(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def _check_session(job: Job, session: KeySession | None = None) -> None:
    """Refuse to run with keys of a session that has ended (checked before each input).

    ``session`` is a row read moments ago (the claim reads it with the job); later
    rounds of a batch read it again.
    """
    if session is None:
        session = KeySession.objects.only("status", "keys_blob").get(pk=job.session_id)
    if session.status in (KeySession.Status.EXPIRED, KeySession.Status.SUSPENDED):
        raise _SessionEnded(ENDED[session.status].code)
    if session.status != KeySession.Status.ACTIVE or not session.keys_blob:
        runtime.keys.drop(str(job.session_id))
        raise _SessionEnded(ENDED[KeySession.Status.INVALIDATED].code)


def _handed_inputs(job: Job, job_id: str, inputs: list[str] | None) -> list[bytes] | None:
    """The ciphertexts the message carried, if they are the claimed job's; None: read them from storage.

    A message is a turn to run a job, and the claim may have taken another one (services.
    claim_job): its ciphertexts are in storage only. The bytes are checked against the digest
    the job row keeps, so that only the job's own ciphertexts are ever run for it.
    """
    if inputs is None or str(job.pk) != job_id:
        return None
    try:
        contents = [base64.b64decode(text, validate=True) for text in inputs]
    except (ValueError, TypeError):
        contents = []
    if len(contents) != job.input_count or services.inputs_digest(contents) != job.inputs_sha256:
        logger.warning("ciphertexts in the message do not match the job; reading them from storage",
                       extra={"job_id": job_id})  # fmt: skip
        return None
    return contents


def _run(job: Job, handed: list[bytes] | None = None) -> None:
    _check_session(job, job.session)
    model = runtime.models.get(job.model_version)
    try:
        keys, loaded = runtime.session_keys(job.session, job.model_version, model)
    except (OSError, RuntimeError) as exc:
        # Checked at upload, so only lost or damaged storage gets here.
        raise _KeysUnavailable(str(exc)) from exc
    with cores.job_running(job.queued_behind) as threads:
        # After the model load: the OpenMP runtime is in the process by now.
        reported = cores.set_openmp_threads(threads)
        logger.info(
            "job threads", extra={"job_id": str(job.pk), "openmp_threads": reported, "keys_loaded_by_job": loaded}
        )
        outputs = _run_inputs(job, model, keys, threads, handed)
    _surviving_db_outage(services.finish_job, job, outputs)


def _run_inputs(
    job: Job, model: runtime.LoadedModel, keys: Any, threads: int, handed: list[bytes] | None
) -> list[bytes] | None:
    """Run every input, storing each output; the outputs too when they are small enough for the end notice."""
    bound = settings.MOAI_INLINE_CIPHERTEXT_BYTES
    # Kept only when the model's outputs, all together, fit the bound: a big batch holds none in memory.
    kept: dict[int, bytes] | None = {} if job.input_count * job.model_version.output_ciphertext_bytes <= bound else None

    def run_input(index: int) -> None:
        ciphertext = handed[index] if handed is not None else blobs.read_bytes(job.input_name(index))
        output = model.run(ciphertext, keys)
        # Each claim numbers a new attempt (services.claim_job), so this name is new: a message
        # delivered again claims the job again under the next number, never this one. A job
        # claimed by its submission is the one exception: its message names the attempt, and a
        # second delivery of it (a worker's shutdown puts back what it was running) finds it taken.
        try:
            blobs.save_bytes(job.output_name(index, job.attempts), output)
        except FileExistsError:
            raise _AttemptTaken(job.output_name(index, job.attempts)) from None
        if kept is not None:
            kept[index] = output

    # The session may end while a batch runs: it is checked again between rounds.
    parallel = runtime.batch_parallelism(job.input_count, threads)
    runtime.run_side_by_side(run_input, range(job.input_count), parallel, partial(_check_session, job), threads)
    if kept is None or len(kept) != job.input_count or sum(map(len, kept.values())) > bound:
        return None
    return [kept[index] for index in range(job.input_count)]


@task_failure.connect
def _fail_job_of_lost_process(
    sender: Any = None, task_id: str | None = None, exception: BaseException | None = None, **_: Any
) -> None:
    """A pool process died under a job (a circuit abort or a kill): fail that job, never re-run it.

    Celery calls this in the parent process, which survives; the message is
    acknowledged (no requeue), so a job that aborts the runtime cannot loop. The job
    is the one this message claimed, found by its claim token.
    """
    if getattr(sender, "name", None) != run_job.name or not task_id:
        return
    if isinstance(exception, TimeLimitExceeded):
        code = "time_limit_exceeded"
    elif isinstance(exception, WorkerLostError):
        code = _lost_process_code(str(exception))
    else:
        return
    claimed = Job.objects.filter(claim_token=task_id, status=Job.Status.RUNNING).values_list(
        "pk", "attempts", "session_id"
    )
    for job_id, attempt, session_id in claimed:
        failed = services.fail_job(
            str(job_id), code, f"The worker process running this job died: {exception}", attempt=attempt
        )
        if failed and code == "circuit_aborted":
            count_circuit_abort(session_id, Actor.system("worker"))


def _lost_process_code(message: str) -> str:
    """``circuit_aborted`` when the process crashed by itself (abort, segfault), else ``worker_lost``.

    A SIGKILL or SIGTERM comes from outside (the OOM killer, an operator, a node
    going away); SIGABRT and SIGSEGV are what a Concrete runtime fault looks like.
    """
    match = re.search(r"signal (\d+)", message)
    if match and int(match.group(1)) not in (signal.SIGKILL, signal.SIGTERM):
        return "circuit_aborted"
    return "worker_lost"


@shared_task(name="inference.tasks.recover_jobs")
def recover_jobs() -> dict[str, int]:
    from jobs.recovery import recover_jobs as sweep

    done = sweep()
    return {"requeued": done.requeued, "failed": done.failed, "resent": done.resent}
