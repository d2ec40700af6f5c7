"""POST /models/{name}/sessions, GET and DELETE /sessions/{id}."""

from __future__ import annotations

import io
import os
from datetime import timedelta

import pytest
from django.core.files.storage import default_storage
from django.test import Client
from django.utils import timezone

from base.models import AuditRecord
from sessions.models import KeySession
from tests.helpers import error_code, post_bytes


def test_real_keys_open_a_session(alice, tree, bundles):
    keys = bundles["iris-tree"].evaluation_keys
    response = post_bytes(alice.http, "/api/v1/models/iris-tree/sessions", keys)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["model"] == "iris-tree"
    assert body["model_version"] == 1
    assert body["ttl_seconds"] == 3600
    assert len(body["key_fingerprint"]) == 64
    session = KeySession.objects.get(pk=body["context_id"])
    with default_storage.open(session.keys_blob, "rb") as stored:
        assert stored.read() == keys
    assert AuditRecord.objects.filter(action="session.created", target_id=body["context_id"], actor="alice").exists()


def test_ttl_comes_from_settings(alice, logreg, open_session, settings):
    settings.MOAI_SESSION_TTL_SECONDS = 120
    context_id = open_session(alice, logreg)
    assert alice.http.get(f"/api/v1/sessions/{context_id}").json()["ttl_seconds"] == 120


def test_keys_of_the_wrong_size_are_a_mismatch(alice, tree, bundles):
    other_model_keys = bundles["breast-cancer-logreg"].evaluation_keys
    response = post_bytes(alice.http, "/api/v1/models/iris-tree/sessions", other_model_keys)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "evaluation_keys_mismatch"
    assert error["expected_bytes"] == tree.evaluation_keys_bytes
    assert error["actual_bytes"] == len(other_model_keys)
    assert not KeySession.objects.exists()


@pytest.mark.parametrize("body", [b"", b"\x00" * 64, os.urandom(64)], ids=["empty", "zeros", "random"])
def test_garbage_keys_are_invalid(alice, logreg, body):
    response = post_bytes(alice.http, "/api/v1/models/breast-cancer-logreg/sessions", body)
    assert response.status_code == 400
    assert error_code(response) == "invalid_evaluation_keys"
    assert not KeySession.objects.exists()
    assert not default_storage.exists("keys") or not default_storage.listdir("keys")[1]


def test_oversized_keys_are_refused_before_the_body_is_read(alice, logreg, settings):
    settings.MOAI_MAX_KEY_BYTES = 1000
    stream = io.BytesIO(b"x" * 5000)
    client = Client(HTTP_AUTHORIZATION=f"Bearer {alice.api_key}")
    response = client.generic(
        "POST",
        "/api/v1/models/breast-cancer-logreg/sessions",
        b"",
        content_type="application/octet-stream",
        CONTENT_LENGTH="5000",
        **{"wsgi.input": stream},
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert stream.tell() == 0


def test_session_of_another_client_is_not_found(alice, mallory, logreg, open_session):
    context_id = open_session(alice, logreg)
    for response in (
        mallory.http.get(f"/api/v1/sessions/{context_id}"),
        mallory.http.delete(f"/api/v1/sessions/{context_id}"),
        post_bytes(mallory.http, f"/api/v1/sessions/{context_id}/jobs", b"x" * logreg.input_ciphertext_bytes),
    ):
        assert response.status_code == 404
        assert error_code(response) == "context_not_found"
    assert KeySession.objects.get(pk=context_id).status == "active"


@pytest.mark.parametrize("context_id", ["00000000-0000-0000-0000-000000000000", "not-a-uuid", "1' OR '1'='1"])
def test_unknown_context_is_not_found(alice, context_id):
    response = alice.http.get(f"/api/v1/sessions/{context_id}")
    assert response.status_code == 404
    assert error_code(response) == "context_not_found"


def test_delete_erases_keys_and_ends_the_session(alice, logreg, open_session):
    context_id = open_session(alice, logreg)
    keys_blob = KeySession.objects.get(pk=context_id).keys_blob
    assert default_storage.exists(keys_blob)
    assert alice.http.delete(f"/api/v1/sessions/{context_id}").status_code == 204
    assert not default_storage.exists(keys_blob)
    body = alice.http.get(f"/api/v1/sessions/{context_id}").json()
    assert body["status"] == "invalidated"
    response = post_bytes(alice.http, f"/api/v1/sessions/{context_id}/jobs", b"x" * logreg.input_ciphertext_bytes)
    assert response.status_code == 410
    assert error_code(response) == "context_invalidated"
    # Ending it again changes nothing and writes no second record.
    assert alice.http.delete(f"/api/v1/sessions/{context_id}").status_code == 204
    assert AuditRecord.objects.filter(action="session.invalidated", target_id=context_id).count() == 1


def test_expired_session_refuses_jobs_before_any_sweep(alice, logreg, open_session, bundles):
    context_id = open_session(alice, logreg)
    KeySession.objects.filter(pk=context_id).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = post_bytes(alice.http, f"/api/v1/sessions/{context_id}/jobs", bundles["breast-cancer-logreg"].encrypt())
    assert response.status_code == 410
    assert error_code(response) == "context_expired"
    session = KeySession.objects.get(pk=context_id)
    assert session.status == "expired"
    assert session.keys_blob == ""
    assert alice.http.get(f"/api/v1/sessions/{context_id}").json()["status"] == "expired"


def test_keys_are_deserialized_in_a_process_of_their_own_and_a_crash_costs_one_upload(alice, tree, bundles):
    import struct

    from keys.evaluation_keys import checker

    keys = bundles["iris-tree"].evaluation_keys
    # Well framed, right size, and it makes the runtime abort (SIGABRT) while deserializing.
    aborting = bytearray(keys)
    struct.pack_into("<Q", aborting, 96, 2**64 - 1)
    response = post_bytes(alice.http, "/api/v1/models/iris-tree/sessions", bytes(aborting))
    assert (response.status_code, error_code(response)) == (400, "invalid_evaluation_keys")
    crashed = checker.recent[-1]
    assert crashed.exit_code == -6  # the abort ended the checker process, not this one
    assert post_bytes(alice.http, "/api/v1/models/iris-tree/sessions", keys).status_code == 201
    fine = checker.recent[-1]
    assert (fine.problem, fine.exit_code) == (None, 0)
    assert len({crashed.pid, fine.pid, os.getpid()}) == 3  # one process per check


def test_keys_every_keygen_makes_alike_need_no_checker_process_and_others_still_get_one(
    alice, logreg, bundles, monkeypatch
):
    """A linear model's keys are the same bytes for every keygen: registration keeps their
    digest, and an upload with that digest is those very bytes, made by Concrete, so no checker
    process is started for it (the first upload to a fresh web process pays no process start).
    Any other body of that size is checked in a process as before."""
    from keys.evaluation_keys import checker

    assert logreg.evaluation_keys_constant
    assert len(logreg.evaluation_keys_sha256) == 64
    checks: list[str] = []
    for method in ("check", "check_stream"):
        real = getattr(checker, method)
        monkeypatch.setattr(checker, method, lambda *a, _real=real, _m=method, **k: checks.append(_m) or _real(*a, **k))
    keys = bundles[logreg.name].evaluation_keys
    response = post_bytes(alice.http, f"/api/v1/models/{logreg.name}/sessions", keys)
    assert response.status_code == 201, response.content
    assert checks == []
    altered = keys[:-1] + bytes([keys[-1] ^ 1])
    post_bytes(alice.http, f"/api/v1/models/{logreg.name}/sessions", altered)
    assert len(checks) == 1


def test_an_opening_waits_for_every_present_pool_process_and_no_longer(settings, monkeypatch):
    """A session's opening holds until every pool process alive has warmed its keys, or given up
    on them; a process that stopped saying it is alive is not waited for."""
    import time
    import uuid

    from base import notify
    from base.redis_client import shared_redis

    if not settings.REDIS_URL:
        pytest.skip("the embedded defaults have no warm-up notices")
    # A registry of this test's own: the test stack's real pool processes are not part of it.
    monkeypatch.setattr(notify, "POOL_PROCESSES", f"moai:test-pool-processes:{uuid.uuid4().hex}")
    notify.pool_process_present("host:1")
    notify.pool_process_present("host:2")
    redis_now = shared_redis().time()[0]  # the registry is kept on Redis's clock
    shared_redis().zadd(notify.POOL_PROCESSES, {"host:gone": redis_now - notify.PRESENCE_SECONDS - 1})

    def held(session_id: str) -> tuple[bool, float]:
        started = time.monotonic()
        ready = notify.wait_until_warmed(session_id, 0.5)
        return ready, time.monotonic() - started

    session = str(uuid.uuid4())
    notify.session_warmed(session, 60, "host:1")
    ready, seconds = held(session)
    assert ready  # warm on one process,
    assert seconds >= 0.5  # but held for the other until the wait ran out
    notify.session_warmed(session, 60, "host:2", warm=False)  # the other gave up on the keys
    ready, seconds = held(session)
    assert ready
    assert seconds < 0.2

    nobody = str(uuid.uuid4())
    notify.session_warmed(nobody, 60, "host:1", warm=False)
    notify.session_warmed(nobody, 60, "host:2", warm=False)
    assert held(nobody)[0] is False  # done everywhere, warm nowhere

    notify.pool_process_gone("host:2")
    left_alone = str(uuid.uuid4())
    notify.session_warmed(left_alone, 60, "host:1")
    ready, seconds = held(left_alone)
    assert ready
    assert seconds < 0.2
    shared_redis().delete(notify.POOL_PROCESSES)
