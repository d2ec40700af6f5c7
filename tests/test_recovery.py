"""Recovering jobs that a worker or the broker lost: requeue with fencing, resend, give up."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.utils import timezone

from base.models import AuditRecord
from jobs import services
from jobs.models import Job
from jobs.recovery import broker_job_ids, recover_jobs
from tests.helpers import post_bytes

LOGREG = "breast-cancer-logreg"


@pytest.fixture
def queued(alice, logreg, open_session, bundles, django_capture_on_commit_callbacks):
    context_id = open_session(alice, logreg)
    with django_capture_on_commit_callbacks(execute=False):
        response = post_bytes(alice.http, f"/api/v1/sessions/{context_id}/jobs", bundles[LOGREG].encrypt(2))
    return Job.objects.get(pk=response.json()["job_id"])


def test_a_running_job_without_heartbeats_runs_again_and_the_lost_attempt_cannot_finish(
    queued, bundles, settings, django_capture_on_commit_callbacks
):
    lost_attempt = services.claim_job(str(queued.pk))
    Job.objects.filter(pk=queued.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=120))
    settings.MOAI_JOB_LEASE_SECONDS = 60
    with django_capture_on_commit_callbacks(execute=True):  # the resend runs the job inline (eager mode)
        done = recover_jobs()
    assert (done.requeued, done.failed) == (1, 0)
    queued.refresh_from_db()
    assert (queued.status, queued.attempts, queued.result_attempt) == ("succeeded", 2, 2)
    # The first worker comes back late with its own output: it is refused, the real result stays.
    from base import blobs

    blobs.save_bytes(queued.output_name(0, 1), b"stale")
    assert services.finish_job(lost_attempt) is False
    assert not default_storage.exists(queued.output_name(0, 1))
    with default_storage.open(queued.output_name(0), "rb") as result:
        label = bundles[LOGREG].decrypt_label(result.read())
    assert label == int(bundles[LOGREG].samples["clear_prediction"][2])
    assert AuditRecord.objects.filter(action="job.requeued", target_id=str(queued.pk)).count() == 1


def test_a_job_that_keeps_losing_its_worker_fails_with_worker_lost(queued, settings):
    settings.MOAI_JOB_MAX_ATTEMPTS = 1
    services.claim_job(str(queued.pk))
    Job.objects.filter(pk=queued.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    assert recover_jobs().failed == 1
    queued.refresh_from_db()
    assert (queued.status, queued.error_code) == ("failed", "worker_lost")


def test_a_queued_job_missing_from_the_broker_is_sent_again(queued, settings, django_capture_on_commit_callbacks):
    settings.MOAI_REQUEUE_GRACE_SECONDS = 1
    Job.objects.filter(pk=queued.pk).update(submitted_at=timezone.now() - timedelta(seconds=5), enqueued_at=None)
    assert str(queued.pk).encode() not in broker_job_ids()
    out = io.StringIO()
    call_command("recover_jobs", stdout=out)
    assert "resent 1 job(s) missing from the broker" in out.getvalue()
    queued.refresh_from_db()
    assert queued.status == "succeeded"  # eager mode ran the resent message
    assert "resent 0" in _run_command()


def test_a_recent_or_live_job_is_left_alone(queued, settings):
    services.claim_job(str(queued.pk))
    assert recover_jobs() == type(recover_jobs())(0, 0, 0)
    queued.refresh_from_db()
    assert (queued.status, queued.attempts) == ("running", 1)


def _run_command() -> str:
    out = io.StringIO()
    call_command("recover_jobs", stdout=out)
    return out.getvalue()
