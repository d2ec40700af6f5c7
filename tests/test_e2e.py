"""End to end: gunicorn and a Celery worker as separate processes, driven over HTTP.

The data owner's side is the real client library with real keys; the server
side shares only the database, the broker and blob storage with this test.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from django.conf import settings
from django.core.files.storage import default_storage

from jobs.models import Job
from moai_client import MoaiClient, MoaiJobFailed
from sessions.models import KeySession
from tests.helpers import poll, session_with_wrong_keys

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_client_library_decrypts_correct_predictions_single_and_batch(stack, owner, logreg, tree, bundles):
    for model in ("iris-tree", "breast-cancer-logreg"):
        samples = bundles[model].samples
        session = owner.open_session(model)
        single = owner.predict(session, samples["X"][:1], timeout=120)
        assert single.job["status"] == "succeeded"
        assert single.labels.tolist() == samples["clear_prediction"][:1].tolist()
        batch = owner.predict(session, samples["X"], timeout=120)
        assert batch.job["inputs"] == len(samples["X"])
        assert batch.labels.tolist() == samples["clear_prediction"].tolist()
        assert np.allclose(batch.scores.sum(axis=1), 1.0, atol=0.05)  # class probabilities


def test_a_waiting_download_is_woken_when_its_job_ends(stack, owner, tree, bundles):
    """The worker's notice wakes the waiting request: no poll interval in the latency.

    Without it the request would re-check once a second (uniform 0-1 s after the end).
    """
    session = owner.open_session("iris-tree")
    rows = bundles["iris-tree"].samples["X"]
    owner.predict(session, rows[:1], timeout=120)  # keys and circuit warm
    delays = []
    for i in range(5):
        row = i % len(rows)
        job = owner.submit(session, session.encrypt(rows[row : row + 1]))
        asked = time.time()
        owner.outputs(job, timeout=60)
        answered = time.time()
        finished = Job.objects.get(pk=job["job_id"]).finished_at.timestamp()
        if finished > asked:  # the request was waiting when the job ended
            delays.append(answered - finished)
    assert delays, "every job ended before its download was asked for: nothing was measured"
    assert max(delays) < 0.35, delays


def test_another_clients_session_job_and_result_answer_404(stack, owner, make_tenant, logreg, bundles):
    session = owner.open_session("breast-cancer-logreg")
    done = owner.predict(session, bundles["breast-cancer-logreg"].samples["X"][:1], timeout=60)
    job_id = done.job["job_id"]
    intruder = {"Authorization": f"Bearer {make_tenant('intruder').api_key}"}
    base = f"{stack.url}/api/v1"
    for method, path in [
        ("GET", f"sessions/{session.context_id}"),
        ("DELETE", f"sessions/{session.context_id}"),
        ("POST", f"sessions/{session.context_id}/jobs"),
        ("GET", f"jobs/{job_id}"),
        ("GET", f"jobs/{job_id}/result"),
        ("DELETE", f"jobs/{job_id}"),
    ]:
        response = requests.request(method, f"{base}/{path}", headers=intruder, data=b"x", timeout=10)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"]["code"] in ("context_not_found", "job_not_found")
    assert owner.session_info(session.context_id)["status"] == "active"


def test_oversized_key_upload_is_refused_before_the_body_is_sent(stack, owner, logreg):
    api_key = owner.http.session.headers["Authorization"]
    with socket.create_connection(("127.0.0.1", stack.port), timeout=10) as sock:
        sock.sendall(
            (
                "POST /api/v1/models/breast-cancer-logreg/sessions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: {api_key}\r\nContent-Type: application/octet-stream\r\n"
                f"Content-Length: {settings.MOAI_MAX_KEY_BYTES + 1}\r\n\r\n"
            ).encode()
        )
        started = time.monotonic()
        reply = _read_response(sock)
    assert reply.startswith("HTTP/1.1 413"), reply[:200]
    assert '"payload_too_large"' in reply
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("request_head", "status", "code"),
    [
        (f"GET /api/v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {'a' * 9000}\r\n\r\n", 431,
         "request_headers_too_large"),
        (f"GET /api/v1/{'m' * 5000} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 414, "request_line_too_long"),
        ("GET /api/v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header: x\r\n\r\n", 400, "invalid_request"),
        ("NONSENSE\r\n\r\n", 400, "invalid_request"),
    ],
)  # fmt: skip
def test_requests_gunicorn_refuses_itself_get_the_json_error_format(stack, request_head, status, code):
    """Refused before Django by gunicorn's own limits and parser, and still in the API's error format."""
    with socket.create_connection(("127.0.0.1", stack.port), timeout=10) as sock:
        sock.sendall(request_head.encode())
        reply = _read_response(sock)
    head, _, body = reply.partition("\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} "), head
    assert "Content-Type: application/json" in head
    assert json.loads(body)["error"]["code"] == code


def test_a_circuit_that_aborts_fails_its_job_and_the_worker_goes_on(stack, owner, tree, bundles):
    opened = owner.open_session("iris-tree")
    session = session_with_wrong_keys(opened, bundles["breast-cancer-logreg"].evaluation_keys)
    job = owner.submit(session, session.encrypt(bundles["iris-tree"].samples["X"][:1]))
    with pytest.raises(MoaiJobFailed) as failed:
        owner.wait(job["job_id"], timeout=120)
    assert failed.value.code == "circuit_aborted"
    time.sleep(2)
    row = Job.objects.get(pk=job["job_id"])
    assert (row.status, row.attempts) == ("failed", 1)  # failed once, not re-run
    healthy = owner.open_session("iris-tree")
    again = owner.predict(healthy, bundles["iris-tree"].samples["X"][:2], timeout=120)
    assert again.labels.tolist() == bundles["iris-tree"].samples["clear_prediction"][:2].tolist()
    assert stack.processes["worker"].poll() is None


def _read_response(sock: socket.socket) -> str:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return (head + b"\r\n\r\n" + body).decode(errors="replace")


def _as_file(data: bytes):
    from django.core.files.base import ContentFile

    return ContentFile(data)


def test_health_and_schema_endpoints(stack):
    assert requests.get(f"{stack.url}/healthz", timeout=5).json()["status"] == "ok"
    ready = requests.get(f"{stack.url}/readyz", timeout=5)
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok"}
    assert "openapi" in requests.get(f"{stack.url}/api/schema", timeout=10).text
    assert os.environ.get("DJANGO_SETTINGS_MODULE") == "tests.settings"
    assert Path(settings.MOAI_DATA_DIR).is_dir()


def test_cli_predicts_with_a_new_and_with_a_resumed_session(stack, make_tenant, logreg, bundles, tmp_path):
    import json
    import subprocess
    import sys

    samples = bundles["breast-cancer-logreg"].samples
    np.save(tmp_path / "rows.npy", samples["X"][:3])
    env = {
        **os.environ,
        "MOAI_URL": stack.url,
        "MOAI_API_KEY": make_tenant("cli-user").api_key,
        "MOAI_KEY_DIR": str(tmp_path / "keys"),
    }

    def cli(*args: str) -> dict:
        done = subprocess.run(
            [sys.executable, "-m", "moai_client", "--quiet", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    expected = samples["clear_prediction"][:3].tolist()
    assert cli("predict", "breast-cancer-logreg", str(tmp_path / "rows.npy"))["labels"] == expected
    context_id = cli("session", "open", "breast-cancer-logreg")["context_id"]
    resumed = cli("predict", "breast-cancer-logreg", str(tmp_path / "rows.npy"), "--context", context_id)
    assert (resumed["labels"], resumed["context_id"]) == (expected, context_id)
    assert cli("session", "show", context_id)["status"] == "active"
    refused = subprocess.run(
        [sys.executable, "-m", "moai_client", "--quiet", "session", "show", "not-a-context"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 2
    assert "context_not_found" in refused.stderr


def _cached_sessions() -> set[str]:
    """Sessions whose keys some live worker process holds, from the processes' status files."""
    held: set[str] = set()
    for path in (Path(settings.MOAI_DATA_DIR) / "worker-status").glob("*.json"):
        status = json.loads(path.read_text())
        if _alive(status["pid"]):
            held.update(status["cached_sessions"])
    return held


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def test_invalidating_a_client_erases_its_keys_from_storage_and_every_worker(stack, owner, make_tenant, tree, bundles):
    import subprocess
    import sys

    bystander = MoaiClient(
        stack.url, make_tenant("bystander").api_key, Path(settings.MOAI_DATA_DIR) / "by", progress=False
    )
    rows = bundles["iris-tree"].samples["X"][:1]
    owned = [owner.open_session("iris-tree") for _ in range(2)]
    for session in owned:
        owner.predict(session, rows, timeout=120)
    other = bystander.open_session("iris-tree")
    bystander.predict(other, rows, timeout=120)
    ids = {session.context_id for session in owned}
    assert poll(lambda: ids <= _cached_sessions(), 20, 0.2), "the worker never reported holding the keys"
    key_files = {KeySession.objects.get(pk=i).keys_blob for i in ids}
    assert all(default_storage.exists(name) for name in key_files)

    done = subprocess.run(
        [sys.executable, "manage.py", "invalidate_sessions", "--client", "owner", "--reason", "e2e incident"],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert done.returncode == 0, done.stderr
    assert "invalidated 2 session(s)" in done.stdout
    assert not any(default_storage.exists(name) for name in key_files)
    assert not [name for name in default_storage.listdir("keys")[1] if name.split(".")[0] in ids]
    assert poll(lambda: not (ids & _cached_sessions()), 20, 0.2), "a worker still holds the invalidated keys"
    assert other.context_id in _cached_sessions()  # another client's keys stay warm
    with pytest.raises(Exception, match="context_invalidated"):
        owner.predict(owned[0], rows, timeout=30)


def test_one_input_is_submitted_run_and_answered_in_one_request(stack, owner, logreg, bundles):
    """``POST .../jobs?wait=`` on real processes: the worker ends the job while the request
    holds, and the answer is the output itself; the client library's single-row predict uses it."""
    bundle = bundles["breast-cancer-logreg"]
    session = owner.open_session("breast-cancer-logreg")
    ciphertext = session.encrypt(bundle.samples["X"][:1])[0]
    response = requests.post(
        f"{stack.url}/api/v1/sessions/{session.context_id}/jobs?wait=30",
        data=ciphertext,
        headers={**owner.http.session.headers, "Content-Type": "application/octet-stream", "Idempotency-Key": "one"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    job = Job.objects.get(pk=response.headers["X-Moai-Job-Id"])
    assert job.status == Job.Status.SUCCEEDED
    assert (
        session.decrypt([response.content]).argmax(axis=1).tolist() == bundle.samples["clear_prediction"][:1].tolist()
    )
    job_before, output = owner.run_one(session, ciphertext, idempotency_key="one")
    assert (job_before["job_id"], output) == (str(job.pk), response.content)
    assert Job.objects.count() == 1
