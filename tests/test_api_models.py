"""GET /models, /models/{name}, /models/{name}/client.zip and authentication."""

from __future__ import annotations

import io
import zipfile

from rest_framework.test import APIClient

from registry.models import ModelVersion
from tests.helpers import error_code, post_bytes


def test_list_shows_newest_active_version_with_its_sizes(alice, logreg, register):
    second = register("breast-cancer-logreg")
    response = alice.http.get("/api/v1/models")
    assert response.status_code == 200
    [listed] = response.json()
    assert listed["name"] == "breast-cancer-logreg"
    assert listed["version"] == second.version == 2
    assert listed["evaluation_keys_bytes"] == logreg.evaluation_keys_bytes
    assert listed["input_ciphertext_bytes"] == logreg.input_ciphertext_bytes
    assert set(listed) >= {"name", "version", "description", "status", "created_at"}


def test_retired_version_is_not_served(alice, logreg, register):
    second = register("breast-cancer-logreg")
    ModelVersion.objects.filter(pk=second.pk).update(status=ModelVersion.Status.RETIRED)
    assert alice.http.get("/api/v1/models/breast-cancer-logreg").json()["version"] == 1


def test_unknown_model_is_404_model_not_found(alice, logreg):
    for url in ("/api/v1/models/nope", "/api/v1/models/nope/client.zip", "/api/v1/models/nope/sessions"):
        response = alice.http.get(url) if "sessions" not in url else post_bytes(alice.http, url, b"")
        assert response.status_code == 404, url
        assert error_code(response) == "model_not_found"
    traversal = alice.http.get("/api/v1/models/..%2F..%2Fetc/client.zip")
    assert traversal.status_code == 404
    assert error_code(traversal) == "not_found"


def test_client_bundle_is_the_registered_client_zip(alice, logreg, bundles):
    response = alice.http.get("/api/v1/models/breast-cancer-logreg/client.zip")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/zip"
    body = b"".join(response.streaming_content)
    assert body == (bundles["breast-cancer-logreg"].folder / "client.zip").read_bytes()
    assert zipfile.ZipFile(io.BytesIO(body)).namelist()


def test_missing_or_wrong_api_key_is_401(db, logreg, alice):
    anonymous = APIClient()
    assert anonymous.get("/api/v1/models").status_code == 401
    assert error_code(anonymous.get("/api/v1/models")) == "unauthenticated"
    for header in ("Bearer nope", "Bearer abc.def", f"Token {alice.api_key}", "Bearer ", f"Bearer {alice.api_key}x"):
        wrong = APIClient()
        wrong.credentials(HTTP_AUTHORIZATION=header)
        response = wrong.get("/api/v1/models")
        assert response.status_code == 401, header
        assert error_code(response) == "unauthenticated"
        assert response["WWW-Authenticate"].startswith("Bearer")


def test_disabled_client_is_403(alice, logreg):
    alice.client.is_active = False
    alice.client.save()
    response = alice.http.get("/api/v1/models")
    assert response.status_code == 403
    assert error_code(response) == "client_disabled"


def test_api_key_is_stored_only_as_a_hash(alice):
    stored = alice.client.api_keys.get()
    assert alice.api_key not in stored.hashed_key
    assert alice.api_key.split(".")[1] not in stored.hashed_key


def test_unknown_path_and_method_answer_json_errors(alice, logreg):
    assert error_code(alice.http.get("/api/v1/nothing-here")) == "not_found"
    response = alice.http.put("/api/v1/models")
    assert response.status_code == 405
    assert error_code(response) == "method_not_allowed"
