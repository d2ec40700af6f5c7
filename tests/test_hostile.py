"""Hostile input over HTTP: every endpoint without, with a wrong and with another client's key;
keys and ciphertexts at every size boundary; injection strings in every name and id field."""

from __future__ import annotations

import os
from urllib.parse import quote

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from jobs.models import Job
from sessions.models import KeySession
from tests.helpers import error_code, post_bytes

LOGREG = "breast-cancer-logreg"


@pytest.fixture
def world(alice, logreg, open_session, bundles, django_capture_on_commit_callbacks):
    context_id = open_session(alice, logreg)
    with django_capture_on_commit_callbacks(execute=True):
        job_id = post_bytes(alice.http, f"/api/v1/sessions/{context_id}/jobs", bundles[LOGREG].encrypt(0)).json()[
            "job_id"
        ]
    return context_id, job_id


def endpoints(context_id: str, job_id: str) -> list[tuple[str, str, bool]]:
    """(method, path, owned): owned endpoints answer another client's key exactly as unknown ones."""
    return [
        ("GET", "/api/v1/models", False),
        ("GET", f"/api/v1/models/{LOGREG}", False),
        ("GET", f"/api/v1/models/{LOGREG}/client.zip", False),
        ("GET", f"/api/v1/models/{LOGREG}/preprocessing.skops", False),
        ("POST", f"/api/v1/models/{LOGREG}/sessions", False),
        ("GET", f"/api/v1/sessions/{context_id}", True),
        ("DELETE", f"/api/v1/sessions/{context_id}", True),
        ("POST", f"/api/v1/sessions/{context_id}/jobs", True),
        ("GET", f"/api/v1/jobs/{job_id}", True),
        ("GET", f"/api/v1/jobs/{job_id}/result", True),
        ("DELETE", f"/api/v1/jobs/{job_id}", True),
    ]


def call(http: APIClient, method: str, path: str):
    return http.generic(method, path, b"x", content_type="application/octet-stream")


def test_every_endpoint_without_with_a_wrong_and_with_another_clients_key(world, mallory):
    context_id, job_id = world
    anonymous, wrong = APIClient(), APIClient()
    wrong.credentials(HTTP_AUTHORIZATION="Bearer AAAAAAAA.BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB")
    for method, path, owned in endpoints(context_id, job_id):
        for http in (anonymous, wrong):
            response = call(http, method, path)
            assert (response.status_code, error_code(response)) == (401, "unauthenticated"), (method, path)
        if owned:
            response = call(mallory.http, method, path)
            assert response.status_code == 404, (method, path)
            assert error_code(response) in ("context_not_found", "job_not_found")
    assert KeySession.objects.get(pk=context_id).status == "active"
    assert Job.objects.get(pk=job_id).status == "succeeded"


@pytest.mark.parametrize(
    ("size", "code"),
    [(0, "invalid_evaluation_keys"), (1, "evaluation_keys_mismatch"), (63, "evaluation_keys_mismatch"),
     (65, "evaluation_keys_mismatch"), (64, "invalid_evaluation_keys")],
)  # fmt: skip
def test_keys_at_every_size_boundary(alice, logreg, size, code):
    response = post_bytes(alice.http, f"/api/v1/models/{LOGREG}/sessions", os.urandom(size))
    assert (response.status_code, error_code(response)) == (400, code)


def test_truncated_real_keys_are_refused(alice, tree, bundles):
    # (A byte changed inside keys of the right size can still deserialize: nothing without
    # the secret key can tell. Such keys reach a worker, where a fault ends one job only.)
    keys = bundles["iris-tree"].evaluation_keys
    for body in (keys[:-1], keys[: len(keys) // 2], keys[1:] + b"\x00"):
        response = post_bytes(alice.http, "/api/v1/models/iris-tree/sessions", body)
        assert response.status_code == 400
        assert error_code(response) in ("evaluation_keys_mismatch", "invalid_evaluation_keys")


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (lambda exact: 0, "invalid_ciphertext"),
        (lambda exact: 1, "ciphertext_size_mismatch"),
        (lambda exact: exact - 1, "ciphertext_size_mismatch"),
        (lambda exact: exact + 1, "ciphertext_size_mismatch"),
        (lambda exact: exact, "invalid_ciphertext"),
    ],
    ids=["empty", "one byte", "one short", "one over", "exact"],
)
def test_ciphertexts_at_every_size_boundary(world, alice, logreg, size, expected):
    context_id, _ = world
    body = os.urandom(size(logreg.input_ciphertext_bytes))
    response = post_bytes(alice.http, f"/api/v1/sessions/{context_id}/jobs", body)
    assert response.status_code == 400
    assert error_code(response) == expected


def test_damaged_ciphertexts_in_a_batch_are_refused_or_end_the_job_cleanly(
    world, alice, logreg, bundles, django_capture_on_commit_callbacks
):
    context_id, _ = world
    good = bundles[LOGREG].encrypt(1)
    damaged = os.urandom(logreg.input_ciphertext_bytes)
    garbage = [SimpleUploadedFile(f"{i}.bin", body) for i, body in enumerate([good, good, damaged])]
    response = alice.http.post(f"/api/v1/sessions/{context_id}/jobs", {"inputs": garbage}, format="multipart")
    assert (response.status_code, error_code(response), response.json()["error"]["index"]) == (
        400, "invalid_ciphertext", 2,
    )  # fmt: skip
    # A truncated ciphertext padded back to size still parses; it must end its job, not a worker.
    padded = [SimpleUploadedFile(f"{i}.bin", body) for i, body in enumerate([good, good[:500] + b"\0" * 484])]
    with django_capture_on_commit_callbacks(execute=True):
        response = alice.http.post(f"/api/v1/sessions/{context_id}/jobs", {"inputs": padded}, format="multipart")
    if response.status_code == 400:
        assert error_code(response) == "invalid_ciphertext"
    else:
        job = alice.http.get(f"/api/v1/jobs/{response.json()['job_id']}").json()
        assert job["status"] in ("succeeded", "failed")
        assert job["error"] is None or job["error"]["code"] == "invalid_ciphertext"


@pytest.mark.parametrize(
    "value",
    ["'; DROP TABLE inference_job; --", "<script>alert(1)</script>", "..\\..\\etc\\passwd", "%00", "ünïcødé",
     "a" * 500, "${jndi:ldap://x}", "1 OR 1=1"],
)  # fmt: skip
def test_injection_strings_in_names_and_ids_answer_json_404(world, alice, value):
    encoded = quote(value, safe="")
    for path, code in [
        (f"/api/v1/models/{encoded}", "model_not_found"),
        (f"/api/v1/models/{encoded}/client.zip", "model_not_found"),
        (f"/api/v1/models/{encoded}/preprocessing.skops", "model_not_found"),
        (f"/api/v1/sessions/{encoded}", "context_not_found"),
        (f"/api/v1/jobs/{encoded}", "job_not_found"),
        (f"/api/v1/jobs/{encoded}/result", "job_not_found"),
    ]:
        response = alice.http.get(path)
        assert response.status_code == 404, path
        assert error_code(response) in (code, "not_found"), path
    assert Job.objects.count() == 1


def test_oversized_idempotency_key_and_query_values(world, alice, bundles):
    context_id, job_id = world
    response = post_bytes(
        alice.http, f"/api/v1/sessions/{context_id}/jobs", bundles[LOGREG].encrypt(0), HTTP_IDEMPOTENCY_KEY="k" * 201
    )
    assert (response.status_code, error_code(response)) == (400, "invalid_request")
    for index in ("-1", "1", "x", "9" * 40):
        response = alice.http.get(f"/api/v1/jobs/{job_id}/result?index={index}")
        assert (response.status_code, error_code(response)) == (400, "invalid_index"), index
