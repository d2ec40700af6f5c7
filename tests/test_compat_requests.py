"""What the compatibility endpoints answer to requests the example clients would never send, and to some they do.

In-process (Django's test client), on the real database: every refusal is a 4xx
with MOAI's JSON error body, never a 500.
"""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from base.audit import Actor
from compat.services import issue_token, register_hybrid_model
from compat.tokens import client_for

TESTS = Actor.system("tests")
SEQ0 = {"model_name": "mlp", "module_name": "seq.0", "input_shape": "(1, 30)"}


@pytest.fixture
def base(alice):
    return f"/compat/{issue_token(alice.client, TESTS, 'tests')}"


@pytest.fixture
def mlp(db, hybrid_build):
    return register_hybrid_model("mlp", hybrid_build.server_folder, "", TESTS)


def get_form(http: Client, url: str, fields: dict[str, str]):
    """As the hybrid client does: GET with a form body (requests' ``data=``)."""
    body = "&".join(f"{k}={v}" for k, v in fields.items())
    return http.generic("GET", url, body, content_type="application/x-www-form-urlencoded")


def code(response) -> str:
    return response.json()["error"]["code"]


def test_listings_answer_from_the_registry_as_the_example_server_does(base, mlp):
    http = Client()
    listing = http.get(f"{base}/hybrid/list_models").json()
    assert set(listing["mlp"]) == {"seq.0", "seq.2"}
    assert set(listing["mlp"]["seq.0"]) == {"(1, 30)"}
    shapes = get_form(http, f"{base}/hybrid/list_shapes", {"model_name": "mlp", "module_name": "seq.2"})
    assert list(shapes.json()) == ["(1, 16)"]
    modules = get_form(http, f"{base}/hybrid/list_modules", {"model_name": "mlp"})
    assert set(modules.json()) == {"seq.0", "seq.2"}
    client_zip = get_form(http, f"{base}/hybrid/get_client", SEQ0)
    assert client_zip.status_code == 200
    assert client_zip["Content-Type"] == "application/zip"


@pytest.mark.parametrize(
    ("fields", "status", "error"),
    [
        ({}, 400, "invalid_request"),
        ({"model_name": "nothing", "module_name": "seq.0"}, 404, "model_not_found"),
        ({"model_name": "mlp", "module_name": "seq.9"}, 404, "module_not_found"),
        ({"model_name": "mlp", "module_name": "x" * 300}, 400, "invalid_request"),
    ],
)
def test_unknown_or_missing_names_are_4xx_with_a_code(base, mlp, fields, status, error):
    response = get_form(Client(), f"{base}/hybrid/list_shapes", fields)
    assert response.status_code == status
    assert code(response) == error


def test_a_shape_that_is_not_served_is_404(base, mlp):
    response = get_form(Client(), f"{base}/hybrid/get_client", {**SEQ0, "input_shape": "(1, 31)"})
    assert response.status_code == 404
    assert code(response) == "input_shape_not_found"


def test_retired_hybrid_model_leaves_the_listing(base, mlp):
    from compat.services import retire_hybrid_model

    assert retire_hybrid_model("mlp", TESTS, "tests") == 2
    assert Client().get(f"{base}/hybrid/list_models").json() == {}
    assert get_form(Client(), f"{base}/hybrid/list_modules", {"model_name": "mlp"}).status_code == 404


def test_add_key_refuses_wrong_keys_and_bodies(base, mlp, logreg):
    http = Client()
    not_multipart = http.post(f"{base}/hybrid/add_key", b"x" * 10, content_type="application/octet-stream")
    assert not_multipart.status_code == 415
    no_file = http.post(f"{base}/hybrid/add_key", SEQ0)
    assert no_file.status_code == 400
    assert code(no_file) == "invalid_request"
    wrong_size = http.post(f"{base}/hybrid/add_key", {**SEQ0, "key": SimpleUploadedFile("key", b"k" * 10)})
    assert wrong_size.status_code == 400
    assert code(wrong_size) == "evaluation_keys_mismatch"
    deployment = http.post(f"{base}/deployment/breast-cancer-logreg/add_key", {"key": SimpleUploadedFile("k", b"")})
    assert deployment.status_code == 400


def test_compute_refuses_unknown_uids_and_wrong_ciphertexts(base, mlp, logreg, bundles):
    http = Client()
    url = f"{base}/deployment/breast-cancer-logreg"
    keys = SimpleUploadedFile("key", bundles["breast-cancer-logreg"].evaluation_keys)
    uid = http.post(f"{url}/add_key", {"key": keys}).json()["uid"]
    ciphertext = bundles["breast-cancer-logreg"].encrypt(0)
    unknown = http.post(f"{url}/compute", {"uid": "not-a-uid", "model_input": SimpleUploadedFile("x", ciphertext)})
    assert unknown.status_code == 404
    assert code(unknown) == "context_not_found"
    short = http.post(f"{url}/compute", {"uid": uid, "model_input": SimpleUploadedFile("x", ciphertext[:-1])})
    assert short.status_code == 400
    assert code(short) == "ciphertext_size_mismatch"
    missing_uid = http.post(f"{url}/compute", {"model_input": SimpleUploadedFile("x", ciphertext)})
    assert missing_uid.status_code == 400
    # A uid of this model's session used for a hybrid module: another model's keys.
    hybrid = http.post(
        f"{base}/hybrid/compute", {**SEQ0, "uid": uid, "model_input": SimpleUploadedFile("x", ciphertext)}
    )
    assert hybrid.status_code == 400
    assert code(hybrid) == "uid_model_mismatch"


def test_another_clients_uid_is_unknown(base, logreg, bundles, make_tenant):
    http = Client()
    url = f"{base}/deployment/breast-cancer-logreg"
    uid = http.post(f"{url}/add_key", {"key": SimpleUploadedFile("k", bundles["breast-cancer-logreg"].evaluation_keys)})
    other = f"/compat/{issue_token(make_tenant('other').client, TESTS, 'tests')}/deployment/breast-cancer-logreg"
    ciphertext = SimpleUploadedFile("x", bundles["breast-cancer-logreg"].encrypt(0))
    response = http.post(f"{other}/compute", {"uid": uid.json()["uid"], "model_input": ciphertext})
    assert response.status_code == 404
    assert code(response) == "context_not_found"


def test_tokens_are_stored_hashed_and_rotation_revokes_the_old_one(alice):
    first = issue_token(alice.client, TESTS, "tests")
    row = alice.client.compat_tokens.get()
    assert first not in (row.prefix, row.token_sha256)
    assert client_for(first) == alice.client
    second = issue_token(alice.client, TESTS, "tests")
    assert client_for(first) is None
    assert client_for(second) == alice.client
    assert client_for(second[:-1]) is None
    assert client_for("moaic_" + "0" * 60) is None


def test_a_disabled_client_gets_403(base, alice):
    from actions.services import set_client_active

    set_client_active(alice.client, False, TESTS, "tests")
    response = Client().get(f"{base}/hybrid/list_models")
    assert response.status_code == 403
    assert code(response) == "client_disabled"


def test_a_compute_over_the_clients_wait_cap_is_429_and_makes_no_job(base, logreg, bundles, settings):
    from jobs.models import Job

    http = Client()
    url = f"{base}/deployment/breast-cancer-logreg"
    uid = http.post(f"{url}/add_key", {"key": SimpleUploadedFile("k", bundles["breast-cancer-logreg"].evaluation_keys)})
    settings.MOAI_MAX_WAITS_PER_CLIENT = 0  # every wait slot taken
    ciphertext = SimpleUploadedFile("x", bundles["breast-cancer-logreg"].encrypt(0))
    response = http.post(f"{url}/compute", {"uid": uid.json()["uid"], "model_input": ciphertext})
    assert response.status_code == 429
    assert code(response) == "rate_limited"
    assert response["Retry-After"] == "1"
    # Nobody could fetch its result through this protocol: refused before any job exists.
    assert not Job.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_compute_on_an_idle_service_is_claimed_by_its_submission(base, logreg, bundles, monkeypatch):
    """Its client waits for the output in the request, as with ``POST .../jobs?wait=N``: on an idle
    service the job's insert claims it (running, first attempt) for its own message, and the
    message carries the claim, so that the worker runs it without a claim of its own."""
    from jobs import services
    from jobs.models import Job

    sent: list[object] = []
    real_send = services.broker.send_job
    # A spy, not a stand-in: the message is sent as it would be (run in place here), and its claim noted.
    monkeypatch.setattr(services.broker, "send_job", lambda *args: (sent.append(args[2]), real_send(*args))[1])
    bundle = bundles["breast-cancer-logreg"]
    http = Client()
    url = f"{base}/deployment/breast-cancer-logreg"
    uid = http.post(f"{url}/add_key", {"key": SimpleUploadedFile("k", bundle.evaluation_keys)}).json()["uid"]
    response = http.post(f"{url}/compute", {"uid": uid, "model_input": SimpleUploadedFile("x", bundle.encrypt(1))})
    assert response.status_code == 200, response.content
    assert bundle.decrypt_label(b"".join(response.streaming_content)) == int(bundle.samples["clear_prediction"][1])
    job = Job.objects.get()
    assert (job.status, job.attempts, job.started_at) == ("succeeded", 1, job.enqueued_at)
    assert isinstance(sent[-1], dict)
    assert sent[-1]["token"] == job.claim_token
