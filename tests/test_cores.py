"""Cores follow the load: a job alone on the worker's host runs its circuit on every core,
jobs that run at the same time share them (jobs.cores), on a real Celery worker
with two pool processes. The worker logs the OpenMP team size the runtime reports for
the job's thread after setting it, so this reads what the circuit really gets."""

from __future__ import annotations

import json
import os
import time

import pytest

from jobs.models import Job
from moai_client import MoaiClient

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _logged(stack, job_id: str, message: str, timeout: float = 30.0) -> tuple[int, dict]:
    """The worker log's line ``message`` for ``job_id``, and its position in the log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = (stack.log_dir / "worker.log").read_text(errors="replace").splitlines()
        for position, line in enumerate(lines):
            if line.startswith("{") and f'"{message}"' in line:
                entry = json.loads(line)
                if entry.get("job_id") == job_id and entry.get("message") == message:
                    return position, entry
        time.sleep(0.05)
    raise AssertionError(f"no {message!r} line for job {job_id}")


def _wait_until_warmed(stack, context_id: str, timeout: float = 60.0) -> int:
    """How many pool processes logged that they warmed the session's keys, once all have (or time is up)."""

    def warmed() -> int:
        text = (stack.log_dir / "worker.log").read_text(errors="replace")
        return sum(
            1
            for line in text.splitlines()
            if '"session keys warmed"' in line and json.loads(line).get("context_id") == context_id
        )

    deadline = time.monotonic() + timeout
    while warmed() < stack.concurrency and time.monotonic() < deadline:
        time.sleep(0.05)
    return warmed()


def _threads_logged(stack, job_id: str) -> int:
    return int(_logged(stack, job_id, "job threads")[1]["openmp_threads"])


def test_a_lone_job_gets_every_core_and_a_concurrent_one_its_share(stack, owner, make_tenant, tree, bundles, tmp_path):
    cores = len(os.sched_getaffinity(0))
    rows = bundles["iris-tree"].samples["X"]
    session = owner.open_session("iris-tree")
    lone = owner.predict(session, rows[:1], timeout=120)
    assert _threads_logged(stack, lone.job["job_id"]) == cores

    other = MoaiClient(stack.url, make_tenant("second").api_key, tmp_path / "second", progress=False, timeout=30)
    other_session = other.open_session("iris-tree")
    ciphertext = other_session.encrypt(rows[1:2])[0]
    # Its keys warm first: its job then starts as soon as it is claimed.
    assert _wait_until_warmed(stack, other_session.context_id) == stack.concurrency
    # A batch long enough to be still running when the second client's job starts.
    long_job = owner.submit(session, session.encrypt(rows[:1]) * 24)
    deadline = time.monotonic() + 60
    while Job.objects.get(pk=long_job["job_id"]).status == Job.Status.QUEUED and time.monotonic() < deadline:
        time.sleep(0.02)
    assert Job.objects.get(pk=long_job["job_id"]).status == Job.Status.RUNNING
    second, _ = other.run_one(other_session, ciphertext, timeout=120)
    owner.outputs(long_job, timeout=120)
    # Its threads were set while the batch ran (both processes append to one log, in time
    # order): had the batch ended first, this test would prove nothing.
    assert _logged(stack, second["job_id"], "job threads")[0] < _logged(stack, long_job["job_id"], "job succeeded")[0]
    assert _threads_logged(stack, long_job["job_id"]) == cores  # it started alone
    assert _threads_logged(stack, second["job_id"]) == max(1, cores // 2)


def test_a_sessions_first_job_finds_its_keys_warm_and_its_circuit_loaded(stack, owner, tree, bundles):
    """Every pool process loads the active circuits at start and warms a new session's keys
    when it opens (jobs.warmup): the first job loads nothing (its log line says whether
    it had to deserialize the keys), and its answer is still right."""
    bundle = bundles["iris-tree"]
    session = owner.open_session("iris-tree")
    # Opening answered once every pool process held the keys warm (each logs that before saying
    # so): whichever process the first job goes to, it does not wait for a warm-up still running.
    assert _wait_until_warmed(stack, session.context_id, timeout=0) == stack.concurrency
    job, output = owner.run_one(session, session.encrypt(bundle.samples["X"][:1])[0], timeout=120)
    # Whichever process runs it, the job finds the keys warm, or waits for that process's warm-up.
    assert _logged(stack, job["job_id"], "job threads")[1]["keys_loaded_by_job"] is False
    assert _wait_until_warmed(stack, session.context_id) == stack.concurrency  # every pool process, once
    assert session.decrypt([output]).argmax(axis=1).tolist() == bundle.samples["clear_prediction"][:1].tolist()
