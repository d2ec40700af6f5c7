"""Concrete-ML's own clients against MOAI on real processes (gunicorn, worker, PostgreSQL, Redis).

The hybrid client is Concrete-ML's ``HybridFHEModel`` as installed, unmodified; the
deployment client is written here exactly as Zama's example client speaks to its server
(``requests``, multipart files and form fields, no headers). Both are given a base URL
that carries a compatibility token, and nothing else.
"""

from __future__ import annotations

import io
import re
import zipfile

import numpy as np
import pytest
import requests
import torch

from base.audit import Actor
from base.models import AuditRecord
from compat import hybrid_demo
from compat.services import issue_token, register_hybrid_model, revoke_tokens
from jobs.models import Job
from keys.models import ApiClient
from sessions.models import KeySession

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

TESTS = Actor.system("tests")


@pytest.fixture
def token(make_tenant):
    tenant = make_tenant("concrete-user")
    return issue_token(tenant.client, TESTS, "tests")


def test_unmodified_hybrid_client_runs_its_layers_on_moai(stack, token, hybrid_build, tmp_path):
    register_hybrid_model("mlp", hybrid_build.server_folder, "", TESTS)
    samples = hybrid_build.samples()
    url = f"{stack.url}/compat/{token}/hybrid"
    remote = hybrid_demo.remote_model(hybrid_build, url, "mlp", tmp_path)
    outputs = remote(torch.tensor(samples["X"]), fhe="remote").detach().numpy()
    # The same quantized circuits as the local simulation: only FHE noise could differ, and these
    # linear layers have no table lookups, so the decrypted outputs are the simulation's.
    assert np.allclose(outputs, samples["simulated"], atol=1e-4), (outputs, samples["simulated"])
    # Against the clear torch model: within the quantization error of 8-bit layers.
    spread = np.ptp(samples["clear"])
    assert np.abs(outputs - samples["clear"]).max() < 0.05 * spread, (outputs, samples["clear"])
    assert (outputs.argmax(axis=1) == samples["clear"].argmax(axis=1)).all()
    # Each module's key upload opened a MOAI session; every forward of a layer was a job.
    sessions = KeySession.objects.filter(client__name="concrete-user")
    assert sorted(s.model_version.name for s in sessions) == ["mlp--seq-0--po_1_30_pc", "mlp--seq-2--po_1_16_pc"]
    assert Job.objects.filter(session__in=sessions, status="succeeded").count() == 2 * len(samples["X"])
    assert AuditRecord.objects.filter(action="session.created", actor="concrete-user").count() == 2


def test_deployment_protocol_as_zamas_example_client(stack, token, logreg, bundles, tmp_path):
    _zamas_deployment_client(f"{stack.url}/compat/{token}/deployment/breast-cancer-logreg", bundles, tmp_path)


def test_through_the_proxy_the_access_log_holds_no_token(proxied_stack, token, logreg, bundles, tmp_path):
    """nginx as deployed: the compat uploads pass its body limits, and its access log marks the token's place."""
    _zamas_deployment_client(f"{proxied_stack.url}/compat/{token}/deployment/breast-cancer-logreg", bundles, tmp_path)
    log = (proxied_stack.log_dir / "nginx" / "nginx-access.log").read_text()
    assert token.split("_", 1)[1] not in log
    assert '"POST /compat/[redacted]/deployment/breast-cancer-logreg/compute HTTP/1.1" 200' in log


def _zamas_deployment_client(url: str, bundles, folder) -> None:
    """Zama's deployment client (breast_cancer/client.py) step by step, against a demo model."""
    from concrete.ml.deployment import FHEModelClient

    zip_response = requests.get(f"{url}/get_client", timeout=30)
    assert zip_response.status_code == 200
    assert zip_response.headers["Content-Type"] == "application/zip"
    (folder / "client.zip").write_bytes(zip_response.content)
    client = FHEModelClient(path_dir=str(folder), key_dir=str(folder / "keys"))
    keys = client.get_serialized_evaluation_keys()
    response = requests.post(f"{url}/add_key", files={"key": io.BytesIO(initial_bytes=keys)}, timeout=60)
    assert response.status_code == 200, response.text
    uid = response.json()["uid"]
    samples = bundles["breast-cancer-logreg"].samples
    for row in range(len(samples["X_model"])):
        encrypted = client.quantize_encrypt_serialize(samples["X_model"][row : row + 1])
        result = requests.post(
            f"{url}/compute", files={"model_input": io.BytesIO(encrypted)}, data={"uid": uid}, timeout=120
        )
        assert result.status_code == 200, result.text
        label = int(np.argmax(client.deserialize_decrypt_dequantize(result.content)[0]))
        assert label == int(samples["clear_prediction"][row])


def test_wrong_or_revoked_token_is_refused_and_reaches_nothing_else(stack, token, logreg, hybrid_build, make_tenant):
    register_hybrid_model("mlp", hybrid_build.server_folder, "", TESTS)
    base = f"{stack.url}/compat/{token}"
    assert requests.get(f"{base}/hybrid/list_models", timeout=10).status_code == 200
    # The token is not an API key: the REST API does not take it, in any header.
    for headers in ({"Authorization": f"Bearer {token}"}, {"Authorization": f"Token {token}"}):
        response = requests.get(f"{stack.url}/api/v1/models", headers=headers, timeout=10)
        assert response.status_code == 401
    assert requests.get(f"{stack.url}/compat/{token}/api/v1/models", timeout=10).status_code == 404
    # Its last characters changed: the same prefix finds the live row, and the hash must not match.
    wrong = token[:-4] + ("aaaa" if not token.endswith("aaaa") else "bbbb")
    for bad in (wrong, "nonsense", "moaic_"):
        _assert_refused_everywhere(stack.url, bad)
    revoke_tokens(ApiClient.objects.get(name="concrete-user"), TESTS, "tests")
    _assert_refused_everywhere(stack.url, token)
    # A new token works; the revoked one stays refused.
    fresh = issue_token(ApiClient.objects.get(name="concrete-user"), TESTS, "tests")
    assert requests.get(f"{stack.url}/compat/{fresh}/hybrid/list_models", timeout=10).json()["mlp"]
    assert requests.get(f"{base}/hybrid/list_models", timeout=10).status_code == 401


def _assert_refused_everywhere(url: str, bad: str) -> None:
    for method, path, fields in [
        ("GET", "hybrid/list_models", {}),
        ("GET", "hybrid/list_shapes", {"model_name": "mlp", "module_name": "seq.0"}),
        ("GET", "hybrid/get_client", {"model_name": "mlp", "module_name": "seq.0", "input_shape": "(1, 30)"}),
        ("POST", "hybrid/add_key", {"model_name": "mlp", "module_name": "seq.0", "input_shape": "(1, 30)"}),
        ("POST", "hybrid/compute", {"model_name": "mlp", "module_name": "seq.0", "input_shape": "(1, 30)"}),
        ("GET", "deployment/breast-cancer-logreg/get_client", {}),
        ("POST", "deployment/breast-cancer-logreg/add_key", {}),
        ("POST", "deployment/breast-cancer-logreg/compute", {"uid": "x"}),
    ]:
        files = {"key": io.BytesIO(b"k")} if method == "POST" else None
        response = requests.request(method, f"{url}/compat/{bad}/{path}", data=fields, files=files, timeout=10)
        assert response.status_code == 401, (path, response.text)
        assert response.json()["error"]["code"] == "unauthenticated"


def test_no_log_line_or_metric_holds_a_token(stack, token, logreg, bundles):
    """Requests that succeed, fail and miss, then every log the stack wrote is searched."""
    url = f"{stack.url}/compat/{token}"
    assert requests.get(f"{url}/deployment/breast-cancer-logreg/get_client", timeout=10).status_code == 200
    assert requests.get(f"{url}/deployment/nothing/get_client", timeout=10).status_code == 404
    assert requests.get(f"{url}/no/such/path", timeout=10).status_code == 404
    key = {"key": io.BytesIO(b"x")}
    response = requests.post(f"{url}/deployment/breast-cancer-logreg/add_key", files=key, timeout=10)
    assert response.status_code == 400
    typo = token.replace(token[10], "Z" if token[10] != "Z" else "Y")
    assert requests.get(f"{stack.url}/compat/{typo}/hybrid/list_models", timeout=10).status_code == 401
    metrics = requests.get(f"{stack.url}/metrics", timeout=10).text
    logs = "".join(path.read_text(errors="replace") for path in stack.log_dir.glob("*.log"))
    secret = token.split("_", 1)[1]
    assert secret not in logs
    assert typo.split("_", 1)[1] not in logs
    assert secret not in metrics
    # The requests were logged (access log and refusals), with the token's place marked.
    assert re.search(r"GET /compat/\[redacted\]/deployment/breast-cancer-logreg/get_client", logs)
    assert re.search(r'"path": "/compat/\[redacted\]/deployment/nothing/get_client"', logs)


def test_client_zip_is_the_registered_one(stack, token, hybrid_build):
    register_hybrid_model("mlp", hybrid_build.server_folder, "", TESTS)
    response = requests.get(
        f"{stack.url}/compat/{token}/hybrid/get_client",
        data={"model_name": "mlp", "module_name": "seq.2", "input_shape": "(1, 16)"},
        timeout=10,
    )
    assert response.status_code == 200
    served = zipfile.ZipFile(io.BytesIO(response.content)).namelist()
    expected = zipfile.ZipFile(hybrid_build.server_folder / "seq.2" / "po_1_16_pc" / "client.zip").namelist()
    assert served == expected
