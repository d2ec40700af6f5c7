"""Session and key lifecycle: expiry, invalidation, rotation, disabling, retention, limits."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.files.storage import default_storage
from django.core.management.base import CommandError
from django.utils import timezone

from base import blobs
from base.models import AuditRecord
from jobs import services
from jobs.models import Job
from keys.throttling import ClientRateThrottle
from sessions.models import KeySession
from tests.helpers import error_code, post_bytes, run_command

LOGREG = "breast-cancer-logreg"


def submit(tenant, context_id, body):
    return post_bytes(tenant.http, f"/api/v1/sessions/{context_id}/jobs", body)


def folder_left(job_id: object) -> bool:
    """Whether the job's folder is still on the filesystem. A bucket has no folders: never."""
    return not blobs.streams_uploads() and Path(default_storage.path(f"jobs/{job_id}")).exists()


@pytest.fixture
def queued(alice, logreg, open_session, bundles, django_capture_on_commit_callbacks):
    context_id = open_session(alice, logreg)
    with django_capture_on_commit_callbacks(execute=False):
        job_id = submit(alice, context_id, bundles[LOGREG].encrypt(0)).json()["job_id"]
    return KeySession.objects.get(pk=context_id), Job.objects.get(pk=job_id)


def test_invalidation_cancels_a_queued_job_and_erases_keys_and_inputs(queued):
    session, job = queued
    assert default_storage.exists(session.keys_blob)
    assert default_storage.exists(job.input_name(0))
    assert "invalidated 1 session(s)" in run_command(
        "invalidate_sessions", "--context", str(session.pk), "--reason", "leak"
    )
    job.refresh_from_db()
    assert (job.status, job.error_code) == ("cancelled", "context_invalidated")
    assert not default_storage.exists(session.keys_blob)
    assert not default_storage.exists(job.input_name(0))
    assert not folder_left(job.pk)
    record = AuditRecord.objects.get(action="session.invalidated", target_id=str(session.pk))
    assert record.reason == "leak"
    assert record.actor.startswith("manage.py invalidate_sessions")


def test_invalidation_while_running_discards_the_result(queued, alice):
    _session, job = queued
    claimed = services.claim_job(str(job.pk))
    run_command("invalidate_sessions", "--client", "alice", "--reason", "incident 7")
    job.refresh_from_db()
    assert (job.status, job.error_code) == ("failed", "context_invalidated")
    # The worker finishes its circuit afterwards: its output must not survive, nor its folder.
    blobs.save_bytes(job.output_name(0), b"late output")
    assert services.finish_job(claimed) is False
    assert not folder_left(job.pk)
    assert not default_storage.exists(job.output_name(0))
    body = alice.http.get(f"/api/v1/jobs/{job.pk}").json()
    assert body["error"]["code"] == "context_invalidated"


def test_a_late_output_whose_folder_is_erased_while_it_is_saved_is_stored_then_discarded(queued, monkeypatch):
    if blobs.streams_uploads():
        pytest.skip("a bucket has no folders to erase")
    _session, job = queued
    claimed = services.claim_job(str(job.pk))
    run_command("invalidate_sessions", "--client", "alice", "--reason", "incident 8")
    folder = Path(default_storage.path(claimed.output_name(0))).parent
    real_makedirs, erased = os.makedirs, []

    def makedirs_then_erased(path: str, *args: object, **kwargs: object) -> None:
        real_makedirs(path, *args, **kwargs)
        if Path(path) == folder and not erased:
            # The session's end runs in another process: this is the one instant in which its
            # erasure can take the folder that the storage has just made for the output's file.
            blobs.remove_empty_folders(claimed.blob_folder)
            erased.append(path)

    monkeypatch.setattr(os, "makedirs", makedirs_then_erased)
    blobs.save_bytes(claimed.output_name(0), b"late output")
    monkeypatch.undo()
    assert erased
    assert default_storage.exists(claimed.output_name(0))
    assert services.finish_job(claimed) is False
    assert not default_storage.exists(claimed.output_name(0))
    assert not folder_left(job.pk)


def test_double_invalidation_changes_nothing_the_second_time(queued):
    session, _ = queued
    run_command("invalidate_sessions", "--model", LOGREG, "--reason", "first")
    assert "invalidated 0 session(s); 1 had already ended" in run_command(
        "invalidate_sessions", "--all", "--reason", "second"
    )
    assert AuditRecord.objects.filter(action="session.invalidated", target_id=str(session.pk)).count() == 1


@pytest.mark.parametrize(
    "args",
    [
        ["--context", "00000000-0000-0000-0000-000000000000"],
        ["--context", "nope"],
        ["--client", "nobody"],
        ["--model", "nothing"],
    ],
)
def test_invalidate_unknown_targets_fail_clearly(db, args):
    with pytest.raises(CommandError):
        run_command("invalidate_sessions", *args, "--reason", "x")


def test_invalidate_needs_a_reason(queued):
    with pytest.raises(CommandError, match="reason"):
        run_command("invalidate_sessions", "--all", "--reason", "  ")
    assert KeySession.objects.filter(status="active").count() == 1


def test_rotation_ends_sessions_and_refuses_the_old_keys(alice, tree, open_session, bundles, tmp_path):
    context_id = open_session(alice, tree)
    assert "ended 1 session(s)" in run_command("rotate_client_keys", "alice", "--reason", "laptop stolen")
    assert KeySession.objects.get(pk=context_id).status == "invalidated"
    old_keys = bundles["iris-tree"].evaluation_keys
    refused = post_bytes(alice.http, "/api/v1/models/iris-tree/sessions", old_keys)
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "evaluation_keys_revoked"
    assert refused.json()["error"]["revoked"] == 1
    from concrete.ml.deployment import FHEModelClient

    fresh = FHEModelClient(str(bundles["iris-tree"].folder), key_dir=str(tmp_path / "new-keys"))
    fresh.generate_private_and_evaluation_keys()
    new_keys = fresh.get_serialized_evaluation_keys()
    assert new_keys != old_keys
    assert post_bytes(alice.http, "/api/v1/models/iris-tree/sessions", new_keys).status_code == 201
    assert AuditRecord.objects.filter(action="client.keys_rotated", reason="laptop stolen").count() == 1
    assert AuditRecord.objects.filter(action="session.refused", details__error_code="evaluation_keys_revoked").exists()


def test_models_without_key_material_are_measured_as_such(logreg, tree):
    # Linear circuits need no bootstrapping keys: every keygen gives the same bytes,
    # so a rotation cannot demand fresh ones; trees carry real key material.
    assert logreg.evaluation_keys_constant is True
    assert tree.evaluation_keys_constant is False


def test_rotating_an_unknown_client_fails(db):
    with pytest.raises(CommandError, match="no client named"):
        run_command("rotate_client_keys", "ghost", "--reason", "x")


def test_disable_and_enable_client(alice, logreg, open_session):
    context_id = open_session(alice, logreg)
    assert "alice disabled" in run_command("disable_client", "alice", "--reason", "unpaid")
    assert alice.http.get("/api/v1/models").status_code == 403
    assert KeySession.objects.get(pk=context_id).status == "invalidated"
    assert "already disabled" in run_command("disable_client", "alice", "--reason", "again")
    assert "alice enabled" in run_command("enable_client", "alice", "--reason", "paid")
    assert alice.http.get("/api/v1/models").status_code == 200
    with pytest.raises(CommandError):
        run_command("enable_client", "ghost", "--reason", "x")


def test_a_clock_moved_forward_does_not_resurrect_an_expired_session(alice, logreg, open_session, bundles):
    context_id = open_session(alice, logreg)
    KeySession.objects.filter(pk=context_id).update(expires_at=timezone.now() - timedelta(seconds=1))
    run_command("expire_sessions")
    KeySession.objects.filter(pk=context_id).update(expires_at=timezone.now() + timedelta(hours=1))
    response = submit(alice, context_id, bundles[LOGREG].encrypt(0))
    assert (response.status_code, error_code(response)) == (410, "context_expired")
    assert alice.http.get(f"/api/v1/sessions/{context_id}").json()["status"] == "expired"


def test_results_are_erased_when_the_session_ends(
    alice, logreg, open_session, bundles, django_capture_on_commit_callbacks
):
    context_id = open_session(alice, logreg)
    with django_capture_on_commit_callbacks(execute=True):
        job_id = submit(alice, context_id, bundles[LOGREG].encrypt(0)).json()["job_id"]
    assert alice.http.get(f"/api/v1/jobs/{job_id}/result").status_code == 200
    assert folder_left(job_id) is not blobs.streams_uploads()
    alice.http.delete(f"/api/v1/sessions/{context_id}")
    gone = alice.http.get(f"/api/v1/jobs/{job_id}/result")
    assert (gone.status_code, error_code(gone)) == (410, "result_erased")
    assert not folder_left(job_id)  # nor its folders, on the filesystem: an inode each, for good


def test_results_are_erased_after_retention(
    alice, logreg, open_session, bundles, settings, django_capture_on_commit_callbacks
):
    context_id = open_session(alice, logreg)
    with django_capture_on_commit_callbacks(execute=True):
        job_id = submit(alice, context_id, bundles[LOGREG].encrypt(0)).json()["job_id"]
    settings.MOAI_RESULT_RETENTION_SECONDS = 60
    assert "results of 0 job(s)" in run_command("expire_sessions")
    Job.objects.filter(pk=job_id).update(finished_at=timezone.now() - timedelta(seconds=61))
    assert "results of 1 job(s)" in run_command("expire_sessions")
    gone = alice.http.get(f"/api/v1/jobs/{job_id}/result")
    assert (gone.status_code, error_code(gone)) == (410, "result_erased")
    assert not folder_left(job_id)


def test_job_submission_is_rate_limited_per_client(alice, mallory, logreg, open_session, bundles, monkeypatch):
    monkeypatch.setattr(ClientRateThrottle, "THROTTLE_RATES", {"sessions": "100/min", "jobs": "2/min"})
    alices, mallorys = open_session(alice, logreg), open_session(mallory, logreg)
    ciphertext = bundles[LOGREG].encrypt(0)
    assert [submit(alice, alices, ciphertext).status_code for _ in range(2)] == [202, 202]
    limited = submit(alice, alices, ciphertext)
    assert (limited.status_code, error_code(limited)) == (429, "rate_limited")
    assert int(limited["Retry-After"]) > 0
    assert submit(mallory, mallorys, ciphertext).status_code == 202  # another client has its own budget


def test_every_endpoint_is_rate_limited_per_client(alice, mallory, logreg, open_session, bundles, monkeypatch):
    monkeypatch.setattr(ClientRateThrottle, "THROTTLE_RATES", {"requests": "6/min", "sessions": "100/min"})
    context_id = open_session(alice, logreg)  # 1 of alice's 6 calls
    job_id = submit(alice, context_id, bundles[LOGREG].encrypt(0)).json()["job_id"]  # 2
    calls = [
        lambda: alice.http.get("/api/v1/models"),
        lambda: alice.http.get(f"/api/v1/models/{LOGREG}"),
        lambda: alice.http.get(f"/api/v1/sessions/{context_id}"),
        lambda: alice.http.get(f"/api/v1/jobs/{job_id}"),
    ]
    assert [call().status_code for call in calls] == [200, 200, 200, 200]
    for call in [*calls, lambda: alice.http.get(f"/api/v1/jobs/{job_id}/result")]:
        limited = call()
        assert (limited.status_code, error_code(limited)) == (429, "rate_limited")
        assert int(limited["Retry-After"]) > 0
    assert mallory.http.get("/api/v1/models").status_code == 200  # another client has its own budget


def test_concurrent_calls_of_a_client_pass_its_limit_no_more_often_than_it_allows(alice, settings, monkeypatch):
    """The window is checked and counted in one step: calls arriving together on many threads
    (or web processes) cannot all read a window with room left and all pass."""
    import threading
    from concurrent.futures import ThreadPoolExecutor
    from types import SimpleNamespace

    if not settings.REDIS_URL:
        pytest.skip("one host without Redis: DRF's throttle on the file cache")
    monkeypatch.setattr(ClientRateThrottle, "THROTTLE_RATES", {"jobs": "5/min"})
    request, view = SimpleNamespace(user=alice.client), SimpleNamespace(throttle_scope="jobs")
    together = threading.Barrier(20)

    def call(_: int) -> bool:
        together.wait()
        return ClientRateThrottle().allow_request(request, view)  # type: ignore[arg-type]

    with ThreadPoolExecutor(20) as pool:
        passed = list(pool.map(call, range(20)))
    assert passed.count(True) == 5
    refused = ClientRateThrottle()
    assert not refused.allow_request(request, view)  # type: ignore[arg-type]
    assert 55 < (refused.wait() or 0) <= 60  # the oldest of the five leaves the window in about a minute


def test_a_call_is_counted_in_all_of_its_limits_or_in_none(alice, settings, monkeypatch):
    """Every call's limits (all calls, and the view's scope) are checked and counted together:
    with Redis in one script, one round trip; a call refused by one limit uses none of the other."""
    from types import SimpleNamespace

    from keys import throttling

    if not settings.REDIS_URL:
        pytest.skip("one host without Redis: DRF's throttle on the file cache, one limit after the other")
    monkeypatch.setattr(ClientRateThrottle, "THROTTLE_RATES", {"requests": "3/min", "jobs": "1/min"})
    real = throttling.shared_redis()
    scripts: list[int] = []

    class Counting:  # the real client, with its scripts counted
        def eval(self, *args: object) -> object:
            scripts.append(1)
            return real.eval(*args)

    monkeypatch.setattr(throttling, "shared_redis", lambda: Counting())
    request = SimpleNamespace(user=alice.client)
    submit, read = SimpleNamespace(throttle_scope="jobs"), SimpleNamespace()

    def allowed(view: object) -> bool:
        return ClientRateThrottle().allow_request(request, view)  # type: ignore[arg-type]

    assert allowed(submit)
    assert len(scripts) == 1  # both limits in one round trip
    refused = ClientRateThrottle()
    assert not refused.allow_request(request, submit)  # type: ignore[arg-type]
    assert 55 < (refused.wait() or 0) <= 60
    # The refused submission was not counted among all calls: two more of them fit in the three.
    assert [allowed(read), allowed(read), allowed(read)] == [True, True, False]


def test_active_sessions_per_client_are_capped(alice, logreg, open_session, bundles, settings):
    settings.MOAI_MAX_ACTIVE_SESSIONS_PER_CLIENT = 2
    first = open_session(alice, logreg)
    open_session(alice, logreg)
    refused = post_bytes(alice.http, f"/api/v1/models/{LOGREG}/sessions", bundles[LOGREG].evaluation_keys)
    assert (refused.status_code, error_code(refused)) == (429, "rate_limited")
    assert 0 < int(refused["Retry-After"]) <= 3601
    alice.http.delete(f"/api/v1/sessions/{first}")
    assert open_session(alice, logreg)


def test_queue_status_counts_per_model(queued):
    _, job = queued
    # Ten minutes old, so that the age read is told apart from a fresh job's, whatever the clock does meanwhile.
    Job.objects.filter(pk=job.pk).update(submitted_at=timezone.now() - timedelta(seconds=600))
    output = run_command("queue_status")
    assert LOGREG in output
    import json

    [row] = json.loads(run_command("queue_status", "--json"))
    assert (row["model"], row["queued"], row["running"]) == (LOGREG, 1, 0)
    assert 600 <= row["oldest_queued_seconds"] < 1200


@pytest.mark.parametrize(("behind_proxy", "recorded"), [(True, "203.0.113.9"), (False, "127.0.0.1")])
def test_the_audit_names_the_address_the_proxy_saw_only_behind_the_proxy(
    alice, logreg, open_session, settings, behind_proxy, recorded
):
    """Behind the service's nginx (MOAI_BEHIND_PROXY) the client's address is nginx's X-Real-IP;
    reachable directly, a client could write any address there, so it is ignored."""
    from rest_framework.test import APIClient

    settings.MOAI_BEHIND_PROXY = behind_proxy
    http = APIClient()  # a fresh client: its handler reads the setting when it first runs
    http.credentials(HTTP_AUTHORIZATION=f"Bearer {alice.api_key}", HTTP_X_REAL_IP="203.0.113.9")
    alice.http = http
    context_id = open_session(alice, logreg)
    record = AuditRecord.objects.filter(target_id=context_id).order_by("pk").first()
    assert record is not None
    assert record.source == recorded
