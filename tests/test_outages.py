"""Dependency outages against real processes and their own PostgreSQL and Redis servers.

While PostgreSQL or Redis is down the API answers 503 with a JSON error (never a 500)
and /readyz names the dependency; when it is back, everything works again by itself,
and every job that was accepted ends.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import requests

from scripts.stack import ROOT, Stack
from tests.helpers import wait_for
from tests.services import OwnPostgres, OwnRedis

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def outage_stack(tmp_path_factory, bundles):
    """gunicorn and a worker on their own PostgreSQL and Redis, with one client and the logreg model."""
    folder = tmp_path_factory.mktemp("outage")
    pg, rds = OwnPostgres(), OwnRedis(folder / "redis")
    pg.init()
    pg.start()
    rds.start()
    env = {
        "DJANGO_SETTINGS_MODULE": "moai_site.settings", "DATABASE_URL": pg.url, "REDIS_URL": rds.url,
        "MOAI_DATA_DIR": str(folder / "data"), "DEBUG": "1", "MOAI_WORKER_POOL_SIZE": "1",
        "MOAI_WORKER_METRICS_PORT": "0", "MOAI_REQUEUE_GRACE_SECONDS": "1", "MOAI_JOB_LEASE_SECONDS": "10",
    }  # fmt: skip
    full_env = {**{k: v for k, v in __import__("os").environ.items() if k != "DJANGO_SETTINGS_MODULE"}, **env}

    def manage(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=full_env, capture_output=True, text=True, check=True
        )
        return done.stdout

    manage("migrate", "--verbosity", "0")
    bundle = bundles["breast-cancer-logreg"]
    manage(
        "register_model", "breast-cancer-logreg", str(bundle.folder), "--preprocessing", str(bundle.preprocessing),
        "--feature-names", ",".join(bundle.feature_names),
    )  # fmt: skip
    api_key = manage("create_client", "outage").strip().splitlines()[-1]
    with Stack(env, folder / "logs", concurrency=1) as stack:
        yield stack, pg, rds, api_key, manage
    rds.stop()
    pg.remove()


def _owner(stack, api_key, tmp_path):
    from moai_client import MoaiClient

    return MoaiClient(stack.url, api_key, tmp_path / "keys", progress=False, timeout=30)


def _ended(owner, job_id: str, manage, timeout: float = 180) -> dict:
    """Wait for a job to end while running the recovery sweep every few seconds, as beat would."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = owner.http.json("GET", f"jobs/{job_id}", params={"wait": "5"})
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        manage("recover_jobs")
    raise AssertionError(f"job {job_id} did not end")


def _wait_ready(url: str, timeout: float = 60) -> None:
    wait_for(lambda: requests.get(f"{url}/readyz", timeout=5).status_code == 200, timeout, "ready again", 0.5)


def test_postgresql_stopped_during_submissions(outage_stack, bundles, tmp_path):
    stack, pg, _, api_key, manage = outage_stack
    owner = _owner(stack, api_key, tmp_path)
    session = owner.open_session("breast-cancer-logreg")
    ciphertext = session.encrypt(bundles["breast-cancer-logreg"].samples["X"][:1])[0]
    before = owner.submit(session, [ciphertext])
    pg.stop()
    try:
        headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/octet-stream"}
        during = requests.post(f"{stack.url}/api/v1/sessions/{session.context_id}/jobs", data=ciphertext,
                               headers=headers, timeout=30)  # fmt: skip
        assert during.status_code == 503, during.text
        assert during.json()["error"] == {
            "code": "service_unavailable", "message": during.json()["error"]["message"], "dependency": "database"
        }  # fmt: skip
        ready = requests.get(f"{stack.url}/readyz", timeout=10)
        assert (ready.status_code, ready.json()["checks"]["database"]) == (503, "unreachable")
        time.sleep(3)
    finally:
        pg.start()
    _wait_ready(stack.url)
    after = owner.submit(session, [ciphertext])
    for job in (before, after):
        assert _ended(owner, job["job_id"], manage)["status"] == "succeeded"


def test_redis_restarted_with_jobs_queued(outage_stack, bundles, tmp_path):
    stack, _, rds, api_key, manage = outage_stack
    owner = _owner(stack, api_key, tmp_path)
    session = owner.open_session("breast-cancer-logreg")
    stack.stop_process("worker")
    ciphertexts = session.encrypt(bundles["breast-cancer-logreg"].samples["X"][:3])
    ids = [owner.submit(session, [ct])["job_id"] for ct in ciphertexts]
    rds.stop()  # no persistence: the queued messages die with it
    try:
        down = requests.get(f"{stack.url}/readyz", timeout=10)
        assert (down.status_code, down.json()["checks"]["broker"]) == (503, "unreachable")
        refused = requests.post(f"{stack.url}/api/v1/models/breast-cancer-logreg/sessions", data=b"x" * 64,
                                headers={"Authorization": f"Bearer {api_key}"}, timeout=30)  # fmt: skip
        assert refused.status_code == 503, refused.text
    finally:
        rds.start()
    _wait_ready(stack.url)
    stack.restart_worker()
    time.sleep(1.5)
    assert "resent 3 job(s)" in manage("recover_jobs")
    assert [_ended(owner, job_id, manage)["status"] for job_id in ids] == ["succeeded"] * 3


def test_flushed_broker_with_jobs_queued(outage_stack, bundles, tmp_path):
    import redis

    stack, _, rds, api_key, manage = outage_stack
    owner = _owner(stack, api_key, tmp_path)
    session = owner.open_session("breast-cancer-logreg")
    stack.stop_process("worker")  # graceful: nothing is running
    ciphertexts = session.encrypt(bundles["breast-cancer-logreg"].samples["X"][:3])
    ids = [owner.submit(session, [ct])["job_id"] for ct in ciphertexts]
    redis.Redis.from_url(rds.url).flushall()  # Redis lost every message
    stack.restart_worker()
    time.sleep(2)
    statuses = [owner.job(job_id)["status"] for job_id in ids]
    assert statuses == ["queued"] * 3  # nothing left in the broker to deliver them
    assert "resent 3 job(s)" in manage("recover_jobs")
    finished = [_ended(owner, job_id, manage) for job_id in ids]
    assert [(job["status"], job["attempts"]) for job in finished] == [("succeeded", 1)] * 3
