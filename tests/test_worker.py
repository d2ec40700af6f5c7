"""The Celery task's contract with the job row: claim once, refuse ended sessions, fail lost jobs."""

from __future__ import annotations

import pytest
from billiard.exceptions import WorkerLostError
from django.core.files.storage import default_storage

from inference import services, tasks
from inference.models import Job
from ops.audit import Actor
from sessions import services as session_services
from sessions.models import KeySession
from tests.helpers import post_bytes


@pytest.fixture
def queued_job(alice, logreg, open_session, bundles, django_capture_on_commit_callbacks):
    context_id = open_session(alice, logreg)
    with django_capture_on_commit_callbacks(execute=False):
        response = post_bytes(
            alice.http, f"/api/v1/sessions/{context_id}/jobs", bundles["breast-cancer-logreg"].encrypt(0)
        )
    return Job.objects.get(pk=response.json()["job_id"])


def test_a_redelivered_message_does_not_run_a_job_twice(queued_job):
    tasks.run_job(str(queued_job.id))
    tasks.run_job(str(queued_job.id))
    queued_job.refresh_from_db()
    assert (queued_job.status, queued_job.attempts) == ("succeeded", 1)
    assert services.claim_job(str(queued_job.id)) is None
    assert default_storage.exists(queued_job.output_name(0))


def test_a_job_of_an_ended_session_is_cancelled_and_never_runs(queued_job):
    session_services.end_session(queued_job.session, KeySession.Status.INVALIDATED, Actor.system("t"), "incident")
    tasks.run_job(str(queued_job.id))
    queued_job.refresh_from_db()
    assert (queued_job.status, queued_job.error_code, queued_job.attempts) == ("cancelled", "context_invalidated", 0)
    assert not default_storage.exists(queued_job.output_name(0))


def test_a_running_job_fails_if_its_session_ends_before_it_runs(queued_job):
    services.claim_job(str(queued_job.id))
    KeySession.objects.filter(pk=queued_job.session_id).update(status=KeySession.Status.INVALIDATED, keys_blob="")
    Job.objects.filter(pk=queued_job.pk).update(status=Job.Status.QUEUED)
    tasks.run_job(str(queued_job.id))
    queued_job.refresh_from_db()
    assert (queued_job.status, queued_job.error_code) == ("failed", "context_invalidated")


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("Worker exited prematurely: signal 6 (SIGABRT) Job: 3.", "circuit_aborted"),
        ("Worker exited prematurely: signal 11 (SIGSEGV) Job: 3.", "circuit_aborted"),
        ("Worker exited prematurely: signal 9 (SIGKILL) Job: 3.", "worker_lost"),
        ("Worker exited prematurely: exitcode 1 Job: 3.", "worker_lost"),
    ],
)
def test_a_lost_process_fails_its_running_job_with_a_code(queued_job, message, code):
    services.claim_job(str(queued_job.id))
    # Celery sends this signal from the parent process when a pool process dies.
    tasks._fail_job_of_lost_process(
        sender=tasks.run_job, exception=WorkerLostError(message), args=(str(queued_job.id),)
    )
    queued_job.refresh_from_db()
    assert (queued_job.status, queued_job.error_code) == ("failed", code)
