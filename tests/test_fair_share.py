"""Every tenant gets its share, and a rotation means new keys: against gunicorn and a Celery
worker (two pool processes) on the test PostgreSQL and Redis."""

from __future__ import annotations

import io
import random

import pytest
import requests
from django.core.management import call_command

from base.models import AuditRecord
from jobs.models import Job
from moai_client import MoaiJobFailed
from sessions.models import KeySession
from tests.helpers import poll, session_with_wrong_keys

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _api(stack, tenant, method: str, path: str, **kwargs):
    headers = {"Authorization": f"Bearer {tenant.api_key}", **kwargs.pop("headers", {})}
    return requests.request(method, f"{stack.url}/api/v1{path}", headers=headers, timeout=60, **kwargs)


def _open(stack, tenant, model: str, keys: bytes):
    return _api(stack, tenant, "POST", f"/models/{model}/sessions", data=keys,
                headers={"Content-Type": "application/octet-stream"})  # fmt: skip


def test_near_copies_of_revoked_keys_are_refused_and_fresh_keys_accepted(stack, make_tenant, tree, bundles, tmp_path):
    tenant = make_tenant("rotating")
    keys = bundles["iris-tree"].evaluation_keys
    assert _open(stack, tenant, "iris-tree", keys).status_code == 201
    call_command("rotate_client_keys", "rotating", "--reason", "laptop stolen", stdout=io.StringIO())

    flipped = bytearray(keys)
    flipped[33_751_608 % len(keys)] ^= 0x01
    scattered = bytearray(keys)
    for position in random.Random(7).sample(range(len(keys) // 10, len(keys)), 100):
        scattered[position] ^= 0xFF
    for near_copy in (bytes(flipped), bytes(scattered)):
        refused = _open(stack, tenant, "iris-tree", near_copy)
        assert refused.status_code == 400
        assert refused.json()["error"]["code"] == "evaluation_keys_revoked"
    # A cut copy has the wrong size for the model: refused before any comparison.
    cut = _open(stack, tenant, "iris-tree", keys[:-4096])
    assert cut.status_code == 400
    assert cut.json()["error"]["code"] == "evaluation_keys_mismatch"

    from concrete.ml.deployment import FHEModelClient

    fresh = FHEModelClient(str(bundles["iris-tree"].folder), key_dir=str(tmp_path / "fresh"))
    fresh.generate_private_and_evaluation_keys()
    assert _open(stack, tenant, "iris-tree", fresh.get_serialized_evaluation_keys()).status_code == 201


def test_rotate_api_key_gives_a_working_key_and_refuses_the_old_one_at_once(stack, make_tenant, logreg):
    tenant = make_tenant("leaky")
    assert _api(stack, tenant, "GET", "/models").status_code == 200
    out = io.StringIO()
    call_command("rotate_api_key", "leaky", "--reason", "key pasted in a public issue", stdout=out)
    new_key = out.getvalue().strip().splitlines()[-1]
    assert new_key != tenant.api_key
    old = _api(stack, tenant, "GET", "/models")
    assert old.status_code == 401
    assert old.json()["error"]["code"] == "unauthenticated"
    tenant.api_key = new_key
    assert _api(stack, tenant, "GET", "/models").status_code == 200
    record = AuditRecord.objects.get(action="client.api_key_rotated", target_id="leaky")
    assert record.reason == "key pasted in a public issue"
    assert record.details["revoked_keys"] == 1


def test_a_single_job_waits_for_at_most_one_job_per_pool_process_behind_a_flood(stack, make_tenant, logreg, bundles):
    bundle = bundles["breast-cancer-logreg"]
    flooder, other = make_tenant("flooder"), make_tenant("patient")
    flood_session = _open(stack, flooder, "breast-cancer-logreg", bundle.evaluation_keys).json()["context_id"]
    other_session = _open(stack, other, "breast-cancer-logreg", bundle.evaluation_keys).json()["context_id"]
    ciphertext = bundle.encrypt(0)
    batch = [("inputs", (f"{i}.bin", ciphertext, "application/octet-stream")) for i in range(16)]
    flood = []
    for _ in range(50):
        submitted = _api(stack, flooder, "POST", f"/sessions/{flood_session}/jobs", files=batch)
        assert submitted.status_code == 202, submitted.content
        flood.append(submitted.json()["job_id"])
    single = _api(stack, other, "POST", f"/sessions/{other_session}/jobs", data=ciphertext,
                  headers={"Content-Type": "application/octet-stream"}).json()["job_id"]  # fmt: skip
    poll(lambda: Job.objects.get(pk=single).status not in ("queued", "running"), 120)
    mine = Job.objects.get(pk=single)
    assert mine.status == "succeeded"
    # The bound, counted rather than timed: flood jobs that started after the single job was
    # submitted and before it started. Oldest-first would start nearly all 50 of them first.
    overtook = Job.objects.filter(
        pk__in=flood, started_at__gt=mine.submitted_at, started_at__lt=mine.started_at
    ).count()
    assert overtook <= int(stack.env["MOAI_WORKER_POOL_SIZE"])
    assert Job.objects.filter(pk__in=flood, status="queued").count() > 0  # the flood was still waiting
    for job_id in flood:  # the rest of the flood is of no further use to this test
        _api(stack, flooder, "DELETE", f"/jobs/{job_id}")


def test_a_session_whose_jobs_abort_the_runtime_is_suspended_and_spares_others_warm_keys(
    stack, make_tenant, tree, bundles, settings
):
    rows = bundles["iris-tree"].samples["X"]
    from moai_client import MoaiClient

    tenant = make_tenant("crasher")
    owner = MoaiClient(stack.url, tenant.api_key, settings.MOAI_DATA_DIR / "crasher-keys", progress=False, timeout=30)
    # Keys made for another model, put in place behind the upload checks: the runtime aborts.
    bad = session_with_wrong_keys(owner.open_session("iris-tree"), bundles["breast-cancer-logreg"].evaluation_keys)
    for _ in range(3):  # MOAI_MAX_CIRCUIT_ABORTS, default 3
        job = owner.submit(bad, bad.encrypt(rows[:1]))
        with pytest.raises(MoaiJobFailed) as failed:
            owner.wait(job["job_id"], timeout=120)
        assert failed.value.code == "circuit_aborted"
    poll(lambda: KeySession.objects.get(pk=bad.context_id).status == "suspended", 10)
    assert KeySession.objects.get(pk=bad.context_id).status == "suspended"
    assert AuditRecord.objects.filter(action="session.suspended", target_id=bad.context_id).count() == 1

    good = owner.open_session("iris-tree")
    owner.predict(good, rows[:1], timeout=120)
    # Warm keys live in the pool processes: that the same processes still run is what matters.
    pool = _pool_processes(stack)
    misses = _key_cache_misses(stack)
    for _ in range(3):
        refused = _api(stack, tenant, "POST", f"/sessions/{bad.context_id}/jobs", data=bad.encrypt(rows[:1])[0],
                       headers={"Content-Type": "application/octet-stream"})  # fmt: skip
        assert refused.status_code == 409
        assert refused.json()["error"]["code"] == "context_suspended"
    for _ in range(4):
        owner.predict(good, rows[:1], timeout=120)
    assert _pool_processes(stack) == pool  # no pool process was lost meanwhile
    assert _key_cache_misses(stack) - misses <= 1  # at most the other process's first load
    assert owner.session_info(bad.context_id)["status"] == "suspended"


def _pool_processes(stack) -> set[int]:
    import psutil

    return {child.pid for child in psutil.Process(stack.processes["worker"].pid).children(recursive=True)}


def _key_cache_misses(stack) -> float:
    text = requests.get(f"http://127.0.0.1:{stack.env['MOAI_WORKER_METRICS_PORT']}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith('moai_worker_key_cache_total{result="miss"}'):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError("no key cache miss series")
