"""Faults injected into real processes: every accepted job ends, once, with a result or a code.

The worker is killed or stopped for real; the recovery sweep runs as beat would run
it. Faults of PostgreSQL and Redis themselves are in tests/test_outages.py, on servers
of their own.
"""

from __future__ import annotations

import signal
import time

import pytest
import redis

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
