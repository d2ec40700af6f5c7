"""Faults injected into real processes: every accepted job ends, once, with a result or a code.

The worker is killed or stopped for real; the recovery sweep runs as beat would run
it. Faults of PostgreSQL and Redis themselves are in tests/test_outages.py, on servers
of their own.
"""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest
import redis
from django.db import connection, transaction

from jobs.models import Job
from jobs.recovery import broker_job_ids, recover_jobs
from moai_site.celery import app as celery_app
from tests.helpers import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def real_broker(settings):
    """The recovery sweep in this process must publish to the real broker, not run jobs inline."""
    was = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = False
    settings.MOAI_JOB_LEASE_SECONDS = 5
    settings.MOAI_REQUEUE_GRACE_SECONDS = 1
    yield
    celery_app.conf.task_always_eager = was


def test_sigkill_of_the_whole_worker_mid_batch(stack, owner, tree, bundles, real_broker, settings):
    samples = bundles["iris-tree"].samples
    rows = samples["X"][[i % 4 for i in range(24)]]
    session = owner.open_session("iris-tree")
    job_id = owner.submit(session, session.encrypt(rows))["job_id"]
    wait_for(lambda: Job.objects.get(pk=job_id).status == "running", 60, "the batch to start")
    time.sleep(1.0)
    if settings.REDIS_URL:
        # Redis keeps no copy of the delivered turn (no acknowledgement emulation in
        # moai_site.settings): after the kill, only the job row can bring the job back.
        broker = redis.Redis.from_url(settings.REDIS_URL)
        assert broker.exists("unacked", "unacked_index") == 0
        assert str(job_id).encode() not in broker_job_ids()
    stack.stop_process("worker", signal.SIGKILL)  # the node is gone: parent and pool processes
    assert Job.objects.get(pk=job_id).status == "running"
    stack.restart_worker()
    wait_for(lambda: recover_jobs().requeued == 1, 30, "the lost job to be taken back")
    job = owner.wait(job_id, timeout=180)
    assert (job["status"], job["attempts"]) == ("succeeded", 2)
    labels = session.decrypt(owner.results(job)).argmax(axis=1).tolist()
    assert labels == [int(samples["clear_prediction"][i % 4]) for i in range(24)]


def test_a_turn_taken_by_a_worker_that_dies_before_its_claim_is_sent_again(stack, owner, tree, bundles, real_broker):
    """The worker took the job's turn from the broker and died before claiming the job: no copy of
    the turn is left in the broker (moai_site.settings), so the recovery sweep sends the job again."""
    if connection.vendor != "postgresql":
        pytest.skip("holds a table lock and reads pg_stat_activity (PostgreSQL)")
    session = owner.open_session("iris-tree")
    ciphertexts = session.encrypt(bundles["iris-tree"].samples["X"][:1])
    stack.stop_process("worker", signal.SIGKILL)
    job_id = owner.submit(session, ciphertexts)["job_id"]  # its turn waits in the broker
    with transaction.atomic(), connection.cursor() as cursor:
        # The claim (an UPDATE of the job's row) waits on this lock; reads do not.
        cursor.execute(f"LOCK TABLE {Job._meta.db_table} IN SHARE MODE")
        stack.restart_worker()
        wait_for(lambda: _waiting_on_a_lock(cursor), 60, "a pool process to take the turn and wait to claim")
        stack.stop_process("worker", signal.SIGKILL)  # the node is gone between the turn and the claim
        for pid in _waiting_on_a_lock(cursor):
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])  # and its connection with it
    assert Job.objects.get(pk=job_id).status == "queued"
    time.sleep(1.2)  # past MOAI_REQUEUE_GRACE_SECONDS (1 s here)
    assert recover_jobs().resent == 1
    stack.restart_worker()
    job = owner.wait(job_id, timeout=60)
    assert (job["status"], job["attempts"]) == ("succeeded", 1)
    assert session.decrypt(owner.results(job)).argmax(axis=1).tolist() == [
        int(bundles["iris-tree"].samples["clear_prediction"][0])
    ]


def _waiting_on_a_lock(cursor: Any) -> list[int]:
    """Backends of this database waiting for a lock on a statement that touches the jobs' table."""
    cursor.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' "
        "AND query LIKE %s AND pid <> pg_backend_pid()",
        [f"%{Job._meta.db_table}%"],
    )
    return [row[0] for row in cursor.fetchall()]


def test_sigterm_during_a_batch_finishes_it(stack, owner, tree, bundles):
    rows = bundles["iris-tree"].samples["X"][[i % 4 for i in range(12)]]
    session = owner.open_session("iris-tree")
    job_id = owner.submit(session, session.encrypt(rows))["job_id"]
    wait_for(lambda: Job.objects.get(pk=job_id).status == "running", 60, "the batch to start")
    # Kubernetes sends SIGTERM to the container's first process, the worker's parent:
    # Celery's warm shutdown lets the running job finish before it exits.
    stack.stop_process("worker", signal.SIGTERM, timeout=120, group=False)
    job = Job.objects.get(pk=job_id)
    assert (job.status, job.attempts) == ("succeeded", 1)
    stack.restart_worker()
