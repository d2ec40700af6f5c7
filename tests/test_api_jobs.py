"""POST /sessions/{id}/jobs, GET and DELETE /jobs/{id}, GET /jobs/{id}/result.

Jobs run inline here (Celery's eager mode) once the submitting transaction's
on-commit callbacks are executed; tests/test_e2e.py runs them on real workers.
"""

from __future__ import annotations

import os

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from jobs.models import Job
from tests.helpers import error_code, post_bytes

LOGREG = "breast-cancer-logreg"


@pytest.fixture
def context_id(alice, logreg, open_session):
    return open_session(alice, logreg)


def submit(tenant, context_id, body, **headers):
    return post_bytes(tenant.http, f"/api/v1/sessions/{context_id}/jobs", body, **headers)


def test_single_input_runs_and_decrypts_to_the_clear_prediction(
    alice, context_id, bundles, django_capture_on_commit_callbacks
):
    bundle = bundles[LOGREG]
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = submit(alice, context_id, bundle.encrypt(1))
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == "queued"
    assert body["inputs"] == 1
    job_id = body["job_id"]
    early = alice.http.get(f"/api/v1/jobs/{job_id}/result")
    assert early.status_code == 409
    assert error_code(early) == "job_not_finished"
    for callback in callbacks:
        callback()
    job = alice.http.get(f"/api/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded", job
    assert job["attempts"] == 1
    assert job["error"] is None
    assert job["latency_ms"] == Job.objects.get(pk=job_id).latency_ms > 0
    result = alice.http.get(f"/api/v1/jobs/{job_id}/result")
    assert result.status_code == 200
    assert result["Content-Type"] == "application/octet-stream"
    assert bundle.decrypt_label(b"".join(result.streaming_content)) == int(bundle.samples["clear_prediction"][1])


@pytest.mark.parametrize("parallelism", [1, 2, 3])
def test_batch_keeps_the_order_of_inputs(
    alice, context_id, bundles, django_capture_on_commit_callbacks, settings, parallelism
):
    # One after the other, two side by side, and three (4 inputs: an uneven last round).
    settings.MOAI_BATCH_PARALLELISM = parallelism
    bundle = bundles[LOGREG]
    rows = [0, 1, 2, 3]
    files = [SimpleUploadedFile(f"{i}.bin", bundle.encrypt(i), "application/octet-stream") for i in rows]
    with django_capture_on_commit_callbacks(execute=True):
        response = alice.http.post(f"/api/v1/sessions/{context_id}/jobs", {"inputs": files}, format="multipart")
    assert response.status_code == 202, response.content
    job_id = response.json()["job_id"]
    assert response.json()["inputs"] == 4
    assert alice.http.get(f"/api/v1/jobs/{job_id}").json()["status"] == "succeeded"
    labels = [
        bundle.decrypt_label(b"".join(alice.http.get(f"/api/v1/jobs/{job_id}/result?index={i}").streaming_content))
        for i in rows
    ]
    assert labels == [int(v) for v in bundle.samples["clear_prediction"][rows]]
    bad_index = alice.http.get(f"/api/v1/jobs/{job_id}/result?index=4")
    assert bad_index.status_code == 400
    assert error_code(bad_index) == "invalid_index"


def test_wrong_ciphertext_size_names_the_input(alice, logreg, context_id, bundles):
    good = bundles[LOGREG].encrypt(0)
    files = [
        SimpleUploadedFile("0.bin", good, "application/octet-stream"),
        SimpleUploadedFile("1.bin", good[:-1], "application/octet-stream"),
    ]
    response = alice.http.post(f"/api/v1/sessions/{context_id}/jobs", {"inputs": files}, format="multipart")
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["expected_bytes"], error["actual_bytes"], error["index"]) == (
        "ciphertext_size_mismatch",
        logreg.input_ciphertext_bytes,
        len(good) - 1,
        1,
    )
    assert not Job.objects.exists()


def test_another_models_ciphertext_is_a_size_mismatch(alice, context_id, bundles):
    response = submit(alice, context_id, bundles["iris-tree"].encrypt(0))
    assert response.status_code == 400
    assert error_code(response) == "ciphertext_size_mismatch"


@pytest.mark.parametrize("garbage", [lambda size: b"\x00" * size, os.urandom], ids=["zeros", "random"])
def test_garbage_ciphertext_of_the_right_size_is_invalid(alice, logreg, context_id, garbage):
    response = submit(alice, context_id, garbage(logreg.input_ciphertext_bytes))
    assert response.status_code == 400
    assert error_code(response) == "invalid_ciphertext"
    assert not Job.objects.exists()


def test_empty_and_oversized_bodies(alice, logreg, context_id, settings):
    empty = submit(alice, context_id, b"")
    assert (empty.status_code, error_code(empty)) == (400, "invalid_ciphertext")
    settings.MOAI_MAX_CIPHERTEXT_BYTES = logreg.input_ciphertext_bytes - 1
    big = submit(alice, context_id, b"x" * logreg.input_ciphertext_bytes)
    assert (big.status_code, error_code(big)) == (413, "payload_too_large")


def test_unsupported_content_type_is_415(alice, context_id):
    response = alice.http.post(f"/api/v1/sessions/{context_id}/jobs", {"x": 1}, format="json")
    assert (response.status_code, error_code(response)) == (415, "unsupported_media_type")


def test_idempotency_key_returns_the_same_job(alice, context_id, bundles):
    ciphertext = bundles[LOGREG].encrypt(0)
    first = submit(alice, context_id, ciphertext, HTTP_IDEMPOTENCY_KEY="order-17")
    second = submit(alice, context_id, ciphertext, HTTP_IDEMPOTENCY_KEY="order-17")
    assert first.status_code == second.status_code == 202
    assert first.json()["job_id"] == second.json()["job_id"]
    assert Job.objects.count() == 1
    other_body = submit(alice, context_id, bundles[LOGREG].encrypt(1), HTTP_IDEMPOTENCY_KEY="order-17")
    assert (other_body.status_code, error_code(other_body)) == (409, "idempotency_key_conflict")


def test_cancel_only_while_queued(alice, context_id, bundles, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        job_id = submit(alice, context_id, bundles[LOGREG].encrypt(0)).json()["job_id"]
    cancelled = alice.http.delete(f"/api/v1/jobs/{job_id}")
    assert cancelled.status_code == 202
    assert cancelled.json()["status"] == "cancelled"
    again = alice.http.delete(f"/api/v1/jobs/{job_id}")
    assert (again.status_code, error_code(again)) == (409, "job_not_cancellable")
    result = alice.http.get(f"/api/v1/jobs/{job_id}/result")
    assert (result.status_code, error_code(result)) == (409, "job_failed")


def test_failed_job_has_no_result(alice, context_id, bundles, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        job_id = submit(alice, context_id, bundles[LOGREG].encrypt(0)).json()["job_id"]
    from jobs import services

    services.fail_job(job_id, "invalid_ciphertext", "test")
    job = alice.http.get(f"/api/v1/jobs/{job_id}").json()
    assert job["error"] == {"code": "invalid_ciphertext", "message": "test"}
    result = alice.http.get(f"/api/v1/jobs/{job_id}/result")
    assert (result.status_code, error_code(result)) == (409, "job_failed")


def test_jobs_and_results_of_another_client_are_not_found(
    alice, mallory, context_id, bundles, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        job_id = submit(alice, context_id, bundles[LOGREG].encrypt(0)).json()["job_id"]
    for response in (
        mallory.http.get(f"/api/v1/jobs/{job_id}"),
        mallory.http.get(f"/api/v1/jobs/{job_id}/result"),
        mallory.http.delete(f"/api/v1/jobs/{job_id}"),
        mallory.http.get("/api/v1/jobs/not-a-uuid"),
    ):
        assert response.status_code == 404
        assert error_code(response) == "job_not_found"
    assert alice.http.get(f"/api/v1/jobs/{job_id}/result").status_code == 200


def test_wait_parameter_is_bounded_and_returns_a_finished_job_at_once(alice, context_id, bundles):
    import time

    job_id = submit(alice, context_id, bundles[LOGREG].encrypt(0)).json()["job_id"]
    from jobs import services

    services.fail_job(job_id, "invalid_ciphertext", "test")
    started = time.monotonic()
    assert alice.http.get(f"/api/v1/jobs/{job_id}?wait=30").json()["status"] == "failed"
    assert time.monotonic() - started < 1
    for bad in ("31", "-1", "soon", "nan"):
        response = alice.http.get(f"/api/v1/jobs/{job_id}?wait={bad}")
        assert (response.status_code, error_code(response)) == (400, "invalid_request"), bad


def test_wait_returns_when_the_time_is_up(alice, context_id, bundles, django_capture_on_commit_callbacks):
    import time

    with django_capture_on_commit_callbacks(execute=False):
        job_id = submit(alice, context_id, bundles[LOGREG].encrypt(0)).json()["job_id"]
    started = time.monotonic()
    assert alice.http.get(f"/api/v1/jobs/{job_id}?wait=0.5").json()["status"] == "queued"
    assert 0.45 <= time.monotonic() - started < 3


def test_a_result_download_can_wait_for_the_end(alice, context_id, bundles, django_capture_on_commit_callbacks):
    import time

    with django_capture_on_commit_callbacks(execute=False):
        job_id = submit(alice, context_id, bundles[LOGREG].encrypt(0)).json()["job_id"]
    started = time.monotonic()
    response = alice.http.get(f"/api/v1/jobs/{job_id}/result?wait=0.5")
    assert (response.status_code, error_code(response)) == (409, "job_not_finished")
    assert 0.45 <= time.monotonic() - started < 3
    for bad in ("31", "-1", "soon", "nan"):
        response = alice.http.get(f"/api/v1/jobs/{job_id}/result?wait={bad}")
        assert (response.status_code, error_code(response)) == (400, "invalid_request"), bad
    from jobs import services

    services.fail_job(job_id, "invalid_ciphertext", "test")
    started = time.monotonic()
    response = alice.http.get(f"/api/v1/jobs/{job_id}/result?wait=30")
    assert (response.status_code, error_code(response)) == (409, "job_failed")
    assert time.monotonic() - started < 1


def test_a_client_holds_at_most_its_wait_slots_and_lost_ones_lapse(
    alice, mallory, context_id, bundles, settings, django_capture_on_commit_callbacks
):
    """Past MOAI_MAX_WAITS_PER_CLIENT held waits, a wait answers at once with the current state;
    another client keeps its own slots; a slot left by a process that died lapses by itself."""
    import time

    from jobs import waits

    settings.MOAI_MAX_WAITS_PER_CLIENT = 2
    with django_capture_on_commit_callbacks(execute=False):
        job_id = submit(alice, context_id, bundles[LOGREG].encrypt(0)).json()["job_id"]
    with waits.wait_slot(alice.client.pk, 30) as first, waits.wait_slot(alice.client.pk, 30) as second:
        assert (first, second) == (True, True)
        started = time.monotonic()
        status = alice.http.get(f"/api/v1/jobs/{job_id}?wait=30")
        result = alice.http.get(f"/api/v1/jobs/{job_id}/result?wait=30")
        assert time.monotonic() - started < 1
        assert (status.status_code, status.json()["status"], status["Retry-After"]) == (200, "queued", "1")
        assert (result.status_code, error_code(result), result["Retry-After"]) == (409, "job_not_finished", "1")
        with waits.wait_slot(mallory.client.pk, 30) as others:
            assert others
    # Both slots are free again once their requests end.
    started = time.monotonic()
    assert "Retry-After" not in alice.http.get(f"/api/v1/jobs/{job_id}?wait=0.3")
    assert time.monotonic() - started >= 0.25
    if settings.REDIS_URL:
        from base.redis_client import shared_redis

        # Slots of a process that died without releasing them: one lapsed, one still live.
        key = waits.KEY.format(alice.client.pk)
        shared_redis().zadd(key, {"crashed-long-ago": time.time() - 1, "crashed-just-now": time.time() + 60})
        with waits.wait_slot(alice.client.pk, 30) as held, waits.wait_slot(alice.client.pk, 30) as over:
            assert (held, over) == (True, False)
        shared_redis().delete(key)


def test_a_web_process_holds_at_most_its_share_of_waits_whoever_sends_them(alice, mallory, settings):
    """MOAI_MAX_WAITS_PER_PROCESS bounds the waits one process holds across clients, so that
    gunicorn threads stay free for requests queued to that process; freed slots come back."""
    from jobs import waits

    settings.MOAI_MAX_WAITS_PER_CLIENT = 4
    settings.MOAI_MAX_WAITS_PER_PROCESS = 3
    with waits.wait_slot(alice.client.pk, 30) as a1, waits.wait_slot(alice.client.pk, 30) as a2:
        with waits.wait_slot(mallory.client.pk, 30) as m1, waits.wait_slot(mallory.client.pk, 30) as m2:
            # Each client is under its own cap of 4; the process is at its 3.
            assert (a1, a2, m1, m2) == (True, True, True, False)
        with waits.wait_slot(mallory.client.pk, 30) as m3:
            assert m3
    assert waits._local_counts.get(waits.PROCESS, 0) == 0


def test_submission_with_wait_answers_202_when_the_job_outlasts_it_then_the_output_on_repeat(
    alice, context_id, bundles, django_capture_on_commit_callbacks
):
    """``POST .../jobs?wait=N``: the job cannot run during the first request here (its message
    is only sent once the callbacks run), so the wait runs out and the answer is the job (202:
    running, claimed by its submission on this idle service); the same Idempotency-Key repeated
    after the job ended answers with its output, not a second job."""
    bundle = bundles[LOGREG]
    ciphertext = bundle.encrypt(2)
    path = f"/api/v1/sessions/{context_id}/jobs"
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        waited = post_bytes(alice.http, f"{path}?wait=0.2", ciphertext, HTTP_IDEMPOTENCY_KEY="once")
    assert waited.status_code == 202, waited.content
    assert waited.json()["status"] == "running"
    for callback in callbacks:
        callback()
    repeat = post_bytes(alice.http, f"{path}?wait=5", ciphertext, HTTP_IDEMPOTENCY_KEY="once")
    assert repeat.status_code == 200, repeat.content
    assert repeat["Content-Type"] == "application/octet-stream"
    assert repeat["X-Moai-Job-Id"] == waited.json()["job_id"]
    assert bundle.decrypt_label(b"".join(repeat.streaming_content)) == int(bundle.samples["clear_prediction"][2])
    assert Job.objects.count() == 1


def test_submission_with_wait_refuses_batches_bad_waits_and_reports_a_failed_job(
    alice, context_id, bundles, django_capture_on_commit_callbacks
):
    path = f"/api/v1/sessions/{context_id}/jobs"
    two = [SimpleUploadedFile(f"{i}.bin", bundles[LOGREG].encrypt(i)) for i in range(2)]
    batch = alice.http.post(f"{path}?wait=5", {"inputs": two}, format="multipart")
    assert (batch.status_code, error_code(batch)) == (400, "invalid_request")
    for bad in ("31", "-1", "soon", "nan"):
        response = post_bytes(alice.http, f"{path}?wait={bad}", bundles[LOGREG].encrypt(0))
        assert (response.status_code, error_code(response)) == (400, "invalid_request"), bad
    assert Job.objects.count() == 0
    ciphertext = bundles[LOGREG].encrypt(0)  # encryption is randomized: a repeat sends the same bytes
    with django_capture_on_commit_callbacks(execute=False):
        job_id = post_bytes(alice.http, path, ciphertext, HTTP_IDEMPOTENCY_KEY="k").json()["job_id"]
    from jobs import services

    services.fail_job(job_id, "invalid_ciphertext", "test")
    failed = post_bytes(alice.http, f"{path}?wait=5", ciphertext, HTTP_IDEMPOTENCY_KEY="k")
    assert (failed.status_code, error_code(failed)) == (409, "job_failed")
    assert failed.json()["error"]["job_id"] == job_id


def test_the_job_path_costs_a_fixed_few_queries(
    alice, context_id, bundles, django_capture_on_commit_callbacks, django_assert_max_num_queries
):
    """Measured 2026-11-27: submitting costs 9 queries (API key, session, the job, its audit
    record with the chain's lock and head, savepoints) and running it 3 (the oldest queued job
    read with its session, model and client, the claim, the finish; it was 6 before the claim
    read all it needs in one query). A change that adds a query per job shows up here first."""
    ciphertext = bundles[LOGREG].encrypt(0)
    submit(alice, context_id, ciphertext)  # the first request of a test warms caches and checks
    with django_assert_max_num_queries(9), django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert submit(alice, context_id, ciphertext).status_code == 202
    with django_assert_max_num_queries(3):
        for callback in callbacks:
            callback()
    assert Job.objects.filter(status=Job.Status.SUCCEEDED).count() == 1


def test_a_waiting_single_input_on_an_idle_service_is_claimed_by_its_submission(
    alice, context_id, bundles, django_capture_on_commit_callbacks, django_assert_max_num_queries, monkeypatch
):
    """No job queued or running: the insert claims the job for its own message (running, first
    attempt, the message's id as its token), and its worker runs it without reading the queue or
    the row: the finish is its one query. With a job queued, a waiting submission takes its turn."""
    from jobs import services

    sent: list[object] = []
    real_send = services.broker.send_job
    # A spy, not a stand-in: the message is sent as it would be, and its claim is noted.
    monkeypatch.setattr(services.broker, "send_job", lambda *args: (sent.append(args[2]), real_send(*args))[1])
    bundle = bundles[LOGREG]
    path = f"/api/v1/sessions/{context_id}/jobs"
    labels = [int(label) for label in bundle.samples["clear_prediction"]]
    for sample in (0, 1):
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            answer = post_bytes(alice.http, f"{path}?wait=0.1", bundle.encrypt(sample))
        assert (answer.status_code, answer.json()["status"]) == (202, "running"), answer.content
        job = Job.objects.get(pk=answer.json()["job_id"])
        assert (job.status, job.attempts, job.started_at) == ("running", 1, job.enqueued_at)
        assert job.claim_token
        # The first job of the test process reads its model version (not loaded yet) and its row.
        with django_assert_max_num_queries(1 if sample else 3):
            for callback in callbacks:
                callback()
        assert isinstance(sent[-1], dict)
        assert sent[-1]["token"] == job.claim_token
        job.refresh_from_db()
        assert (job.status, job.result_attempt, job.error_code) == ("succeeded", 1, "")
        result = alice.http.get(f"/api/v1/jobs/{job.pk}/result")
        assert bundle.decrypt_label(b"".join(result.streaming_content)) == labels[sample]

    with django_capture_on_commit_callbacks(execute=False):
        queued = submit(alice, context_id, bundle.encrypt(0)).json()
        waiting = post_bytes(alice.http, f"{path}?wait=0.1", bundle.encrypt(1)).json()
    assert (queued["status"], waiting["status"]) == ("queued", "queued")
    assert Job.objects.get(pk=waiting["job_id"]).attempts == 0


def _claimed_with_its_message_held(tenant, context_id, bundle, capture):
    """A waiting submission that this idle service claimed, and its message (the on-commit
    callbacks), not sent yet. The model is held as a pool process holds it after its warm-up,
    so that the worker takes a fresh message at its word."""
    from jobs import runtime

    with capture(execute=False) as message:
        answer = post_bytes(tenant.http, f"/api/v1/sessions/{context_id}/jobs?wait=0.1", bundle.encrypt(0))
    job = Job.objects.select_related("model_version").get(pk=answer.json()["job_id"])
    assert job.status == "running"
    runtime.models.get(job.model_version)
    return job, message


def test_a_claimed_message_that_arrives_late_runs_only_if_its_job_still_waits_for_it(
    alice, context_id, bundles, django_capture_on_commit_callbacks, monkeypatch
):
    """A message claimed at submission but delivered late (here: taken as late at once) is checked
    against the row: once its job was put back in the queue (its lease lapsed) it runs nothing and
    fails nothing, and the requeue's own turn runs the job under the next attempt."""
    from base.audit import Actor
    from jobs import services

    monkeypatch.setattr(services, "CLAIM_TRUSTED_SECONDS", -1.0)
    finished: list[int] = []
    real_finish = services.finish_job
    # A spy, not a stand-in: the finish runs as it would, and each attempt that reached it is noted.
    monkeypatch.setattr(
        services, "finish_job", lambda job, outputs=None: (finished.append(job.attempts), real_finish(job, outputs))[1]
    )
    bundle = bundles[LOGREG]
    job, submitted = _claimed_with_its_message_held(alice, context_id, bundle, django_capture_on_commit_callbacks)
    job_id = str(job.pk)
    with django_capture_on_commit_callbacks(execute=False) as requeued:
        assert services.requeue_job(job, Actor.system("test"), "lease lapsed")
    # Nor could its worker fail the job it no longer holds, whatever went wrong.
    assert not services.fail_job(job_id, "internal_error", "a late worker's error", attempt=1, token=job.claim_token)
    for callback in submitted:
        callback()
    job.refresh_from_db()
    assert (job.status, job.attempts, job.error_code, finished) == ("queued", 1, "", [])
    for callback in requeued:
        callback()
    job.refresh_from_db()
    assert (job.status, job.attempts, job.result_attempt, finished) == ("succeeded", 2, 2, [2])
    result = alice.http.get(f"/api/v1/jobs/{job_id}/result")
    assert bundle.decrypt_label(b"".join(result.streaming_content)) == int(bundle.samples["clear_prediction"][0])


def test_a_claimed_message_delivered_twice_leaves_the_attempt_to_the_run_that_wrote_it(
    alice, context_id, bundles, django_capture_on_commit_callbacks
):
    """A worker's shutdown can put back a message whose job it was running. The job's first
    attempt is named by its message, so a second delivery finds that attempt's output written
    already (here, written as the first run would have): it leaves the job to that run instead of
    failing it, and the job ends as the first run's finish (or the lease) decides."""
    from base import blobs

    bundle = bundles[LOGREG]
    job, submitted = _claimed_with_its_message_held(alice, context_id, bundle, django_capture_on_commit_callbacks)
    blobs.save_bytes(job.output_name(0, 1), b"the first run's output")
    for callback in submitted:
        callback()
    job.refresh_from_db()
    assert (job.status, job.attempts, job.error_code) == ("running", 1, "")
    assert blobs.read_bytes(job.output_name(0, 1)) == b"the first run's output"


def test_a_claim_the_worker_cannot_read_is_checked_against_the_row(
    alice, context_id, bundles, django_capture_on_commit_callbacks
):
    """A message whose claim does not parse (another release's fields, damage) runs its job only
    as the row allows: under the message's own id it runs; under another id it runs nothing."""
    from jobs import services
    from jobs.tasks import run_job

    bundle = bundles[LOGREG]
    for task_id, ends in (("another message", "running"), ("own", "succeeded")):
        job, _held = _claimed_with_its_message_held(alice, context_id, bundle, django_capture_on_commit_callbacks)
        token = job.claim_token if task_id == "own" else "another-message-id"
        run_job.apply(args=(str(job.pk),), kwargs={"claim": {"fields": "of another release"}}, task_id=token)
        job.refresh_from_db()
        assert (job.status, job.error_code) == (ends, ""), task_id
        if ends == "running":
            # Left to its own message, which was never sent here: end it before the next submission.
            assert services.fail_job(str(job.pk), "internal_error", "test", attempt=1, token=job.claim_token)


def _labels_apart(bundle) -> tuple[int, int]:
    """Two samples the model tells apart: a job run on the wrong one answers the wrong label."""
    labels = [int(label) for label in bundle.samples["clear_prediction"]]
    first = 0
    other = next(i for i, label in enumerate(labels) if label != labels[first])
    return first, other


def test_ciphertexts_in_the_message_are_used_only_when_they_are_the_jobs(
    alice, context_id, bundles, django_capture_on_commit_callbacks
):
    """The worker checks the bytes a message carries against the job's digest, and reads the
    stored ones when they differ; a message without them (sent before they were) still runs."""
    import base64

    from jobs.tasks import run_job

    bundle = bundles[LOGREG]
    mine, other = _labels_apart(bundle)
    for carried in ("another ciphertext", "none"):
        with django_capture_on_commit_callbacks(execute=False):
            job_id = submit(alice, context_id, bundle.encrypt(mine)).json()["job_id"]
        kwargs = {"inputs": [base64.b64encode(bundle.encrypt(other)).decode()]} if carried != "none" else {}
        run_job.apply(args=(job_id,), kwargs=kwargs)
        job = Job.objects.get(pk=job_id)
        assert job.status == "succeeded", (carried, job.error_code)
        result = alice.http.get(f"/api/v1/jobs/{job_id}/result")
        assert bundle.decrypt_label(b"".join(result.streaming_content)) == int(bundle.samples["clear_prediction"][mine])


def test_the_message_carries_small_ciphertexts_only(
    alice, context_id, bundles, django_capture_on_commit_callbacks, monkeypatch, settings
):
    from jobs import services

    sent: list[tuple[object, object]] = []
    monkeypatch.setattr(services, "enqueue", lambda job_id, inputs=None, claim=None: sent.append((job_id, inputs)))
    ciphertext = bundles[LOGREG].encrypt(0)
    for bound in (len(ciphertext), len(ciphertext) - 1):
        settings.MOAI_INLINE_CIPHERTEXT_BYTES = bound
        with django_capture_on_commit_callbacks(execute=True):
            submit(alice, context_id, ciphertext)
    assert [inputs for _, inputs in sent] == [[ciphertext], None]


def test_a_small_single_input_is_read_into_memory_and_a_larger_one_spooled(
    alice, context_id, bundles, django_capture_on_commit_callbacks, settings, tmp_path
):
    from base import blobs
    from jobs.services import inputs_digest

    # No folder for temporary files: a body that is spooled cannot be received at all.
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path / "no-such-folder")
    ciphertext = bundles[LOGREG].encrypt(0)
    settings.MOAI_INLINE_CIPHERTEXT_BYTES = len(ciphertext)
    with django_capture_on_commit_callbacks(execute=True):
        response = submit(alice, context_id, ciphertext)
    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["job_id"])
    assert job.inputs_sha256 == inputs_digest([ciphertext])
    assert blobs.read_bytes(job.input_name(0)) == ciphertext
    assert alice.http.get(f"/api/v1/jobs/{job.pk}").json()["status"] == "succeeded"
    # One byte over the bound, the same body is spooled, and needs the folder.
    settings.MOAI_INLINE_CIPHERTEXT_BYTES = len(ciphertext) - 1
    with pytest.raises(FileNotFoundError):
        submit(alice, context_id, ciphertext)


def test_an_output_brought_by_the_notice_is_not_served_once_erased(
    alice, context_id, bundles, django_capture_on_commit_callbacks, settings
):
    """Served from the notice only while a read of storage would still find it."""
    from actions.services import end_session
    from base.audit import Actor
    from base.notify import Outputs
    from jobs import waits
    from sessions.models import KeySession

    with django_capture_on_commit_callbacks(execute=True):
        job_id = submit(alice, context_id, bundles[LOGREG].encrypt(0)).json()["job_id"]
    job = Job.objects.get(pk=job_id)
    assert job.status == "succeeded"
    job.delivered_outputs = Outputs(job.result_attempt, [b"output"])
    assert waits.delivered_output(job, 0) == b"output"
    assert waits.delivered_output(job, 1) is None
    job.delivered_outputs = Outputs(job.result_attempt + 1, [b"output"])  # another attempt's
    assert waits.delivered_output(job, 0) is None
    job.delivered_outputs = Outputs(job.result_attempt, [b"output"])
    settings.MOAI_RESULT_RETENTION_SECONDS = 0  # the sweep may be erasing it: storage answers
    assert waits.delivered_output(job, 0) is None
    settings.MOAI_RESULT_RETENTION_SECONDS = 3600
    end_session(KeySession.objects.get(pk=context_id), KeySession.Status.INVALIDATED, Actor.system(), "test")
    assert waits.delivered_output(job, 0) is None


def test_an_output_brought_by_the_notice_waits_for_a_session_end_under_way(
    alice, context_id, bundles, transactional_db
):
    """A session ends in one transaction that deletes the stored results before it commits: an
    answer given meanwhile must wait for it, and then serve nothing, as a read of storage would."""
    import threading
    import time

    from django.db import connection, transaction

    from base.notify import Outputs
    from jobs import waits
    from sessions.models import KeySession

    job_id = submit(alice, context_id, bundles[LOGREG].encrypt(0)).json()["job_id"]  # runs at commit
    job = Job.objects.get(pk=job_id)
    assert job.status == "succeeded"
    job.delivered_outputs = Outputs(job.result_attempt, [b"output"])
    locked = threading.Event()

    def ending() -> None:
        try:
            with transaction.atomic():
                KeySession.objects.select_for_update().filter(pk=context_id).update(
                    status=KeySession.Status.INVALIDATED
                )
                locked.set()
                time.sleep(0.5)  # deleting the stored results, as actions.services._end_batch does
        finally:
            connection.close()

    thread = threading.Thread(target=ending)
    thread.start()
    assert locked.wait(10)
    try:
        assert waits.delivered_output(job, 0) is None
    finally:
        thread.join()


def test_a_web_process_is_connected_to_the_broker_before_its_first_job(settings):
    """gunicorn calls ready_to_publish as each worker starts: the first submission then finds a
    connected producer instead of finalizing Celery and connecting (25-40 ms, seen in the bench)."""
    from kombu import pools

    from moai_site.celery import app, ready_to_publish

    if not settings.REDIS_URL:
        pytest.skip("needs the Redis broker")
    # As in a fresh process: no pool of connections yet (kombu keeps producer pools globally).
    pools.reset()
    app._pool = app.amqp._producer_pool = None
    with app.producer_or_acquire() as producer:
        assert not producer.connection.connected
    connect = ready_to_publish()  # the imports; gunicorn runs the connecting in a thread
    connect()
    with app.producer_or_acquire() as producer:
        assert producer.connection.connected


def test_a_held_wait_reads_the_job_only_when_it_may_have_ended(settings):
    """With Redis, a held request reads the job's row when its end notice comes, when the end
    was announced before it subscribed (the mark), or once a second should a notice be lost;
    not as it starts (a query on every ``?wait`` request before)."""
    import threading
    import time

    from base import notify

    if not settings.REDIS_URL:
        pytest.skip("the embedded defaults poll the row; there is no subscription")
    checks: list[float] = []

    def ended() -> bool:
        checks.append(time.monotonic() - started)
        return True

    started = time.monotonic()
    threading.Timer(0.3, notify.job_ended, args=("held-wait-test",)).start()
    notify.wait_for("held-wait-test", ended, 5)
    assert len(checks) == 1
    assert 0.25 <= checks[0] < 0.9  # read on the notice, not as the wait began nor on a poll

    # Ended before the request subscribed: the mark says so, and the row is read at once.
    checks.clear()
    started = time.monotonic()
    notify.wait_for("held-wait-test", ended, 5)
    assert len(checks) == 1
    assert checks[0] < 0.2

    checks.clear()
    started = time.monotonic()
    notify.wait_for("held-wait-test-no-notice", lambda: bool(checks.append(time.monotonic() - started)), 1.5)
    # Without a notice: read once a second, and once more as the wait runs out.
    assert len(checks) == 2, checks
    assert notify.RECHECK_SECONDS <= checks[0] < 1.4 <= checks[1], checks


def test_a_held_wait_leaves_the_shared_redis_connections_connected(settings):
    """A subscription's connection is dropped when the wait ends (redis-py disconnects it on close):
    taken from the shared pool, it left the next command there (the wait slot's release, before
    the answer goes out) to connect again first. Subscriptions have a pool of their own."""
    from base import notify
    from base.redis_client import shared_redis

    if not settings.REDIS_URL:
        pytest.skip("the embedded defaults poll the row; there is no subscription")
    connection_before = shared_redis().client_id()
    notify.wait_for("held-wait-connection-test", lambda: True, 1)
    assert shared_redis().client_id() == connection_before


def test_a_threads_waits_share_one_subscription_and_skip_what_an_earlier_one_left(settings):
    """A thread keeps its subscription connection from one held wait to the next (one per wait
    cost a connect, a SELECT and a disconnect). What the earlier wait left on it, the reply to its
    unsubscription and a notice that crossed it, must not pass for the next wait's notice."""
    import threading

    from base import notify
    from base.redis_client import shared_redis

    if not settings.REDIS_URL:
        pytest.skip("the embedded defaults poll the row; there is no subscription")
    notify.wait_for("shared-subscription-first", lambda: True, 1)
    subscriber = notify._subscriber()
    connection = subscriber.connection
    assert connection is not None
    # A notice for the first wait's job, sent after that wait ended: it sits on the connection.
    first = notify.CHANNEL.format("shared-subscription-first")
    subscriber.subscribe(first)
    assert shared_redis().publish(first, b"late") == 1
    subscriber.unsubscribe(first)
    heard: list[bytes] = []
    checks: list[float] = []
    notify.wait_for("shared-subscription-second", lambda: bool(checks.append(1.0)), 0.4, heard.append)
    assert heard == []  # the late notice was another wait's
    assert len(checks) == 1  # read once, as the wait ran out: nothing woke it
    assert notify._subscriber() is subscriber
    assert subscriber.connection is connection

    # A channel still subscribed on the connection (redis-py subscribes again, after a reconnect,
    # to one whose unsubscription it had not heard back): its notices during a wait are not this one's.
    subscriber.subscribe(first)
    threading.Timer(0.15, shared_redis().publish, args=(first, b"stray")).start()
    checks.clear()
    notify.wait_for("shared-subscription-third", lambda: bool(checks.append(1.0)), 0.4, heard.append)
    subscriber.unsubscribe(first)
    assert heard == []
    assert len(checks) == 1


def test_the_queue_head_read_compiled_once_answers_as_its_queryset(
    alice, mallory, context_id, logreg, open_session, bundles, django_capture_on_commit_callbacks,
    django_assert_num_queries,
):  # fmt: skip
    """The claim's read of the queue's head is compiled once per thread (base.statements): it
    must find what the queryset finds, with its related rows and annotations, as the queue changes."""
    from jobs import services

    ciphertext = bundles[LOGREG].encrypt(0)
    with django_capture_on_commit_callbacks(execute=False):
        first = submit(alice, context_id, ciphertext).json()["job_id"]
        submit(alice, context_id, ciphertext)
        submit(mallory, open_session(mallory, logreg), ciphertext)

    def compare() -> None:
        expected = services._queue_head().first()
        with django_assert_num_queries(1):
            head = services._QUEUE_HEAD.first()
            assert head is not None
            assert expected is not None
            # The related rows came with it: reading them costs no query.
            seen = (head.session.status, head.model_version.name, head.client.name)
        assert head.pk == expected.pk
        assert (head.others_waiting, head.queued_now) == (expected.others_waiting, expected.queued_now)
        assert seen == (expected.session.status, expected.model_version.name, expected.client.name)
        assert head.submitted_at == expected.submitted_at

    compare()
    assert str(services._QUEUE_HEAD.first().pk) == first
    Job.objects.filter(pk=first).update(status=Job.Status.CANCELLED)
    compare()
    assert services._QUEUE_HEAD.first().queued_now == 2
    Job.objects.filter(status=Job.Status.QUEUED).update(status=Job.Status.CANCELLED)
    assert services._QUEUE_HEAD.first() is None
