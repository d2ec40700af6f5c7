"""Blobs in an S3-compatible bucket (MOAI_BLOB_STORAGE=s3).

The bucket is served by moto's standalone S3 server on loopback (scripts/s3local.py):
no object store runs on these machines, and moto's server is what the Python
ecosystem tests S3 clients against. It is a real HTTP server speaking the S3 API;
the service reaches it through boto3 and django-storages exactly as it would reach a
cloud bucket, so the edge of the system is the only thing stood in for. These tests
switch the in-process settings to the bucket whatever backend the run uses; with
MOAI_TEST_BLOB_STORAGE=s3 the whole suite runs on it as well.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core import checks
from django.core.management import call_command

from base import audit_checkpoints, blobs
from base.audit_checkpoints import checkpoint_name
from base.models import AuditRecord
from jobs.models import Job
from scripts.s3local import BUCKET, LocalS3
from sessions.models import KeySession
from tests.helpers import error_code, post_bytes

LOGREG = "breast-cancer-logreg"
TREE = "iris-tree"  # its keys are megabytes (the linear model's are a few bytes)


@pytest.fixture(scope="module")
def server(s3_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalS3]:
    if s3_server is not None:  # the run's own bucket server (MOAI_TEST_BLOB_STORAGE=s3)
        yield s3_server
        return
    with LocalS3(tmp_path_factory.mktemp("s3") / "moto.log") as started:
        yield started


@pytest.fixture
def bucket(server: LocalS3, settings: Any, tmp_path: Path) -> Any:
    """In-process settings on the bucket, under a prefix of this test's own; the S3 client to look at it."""
    prefix = f"blob-tests/{tmp_path.name}"
    use_bucket(settings, server, prefix)
    client = server.client()
    client.prefix = prefix  # type: ignore[attr-defined]
    return client


def use_bucket(settings: Any, server: LocalS3, prefix: str) -> None:
    env = server.env()
    settings.MOAI_BLOB_STORAGE = "s3"
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": env["MOAI_S3_BUCKET"],
                "endpoint_url": env["MOAI_S3_ENDPOINT_URL"],
                "region_name": env["MOAI_S3_REGION"],
                "access_key": env["MOAI_S3_ACCESS_KEY_ID"],
                "secret_key": env["MOAI_S3_SECRET_ACCESS_KEY"],
                "addressing_style": "path",
                "location": prefix,
                "file_overwrite": False,
                "default_acl": None,
                "querystring_auth": False,
                "max_memory_size": 8 * 1024 * 1024,
            },
        },
    }


def listing(bucket: Any) -> dict[str, dict[str, Any]]:
    found = {}
    for page in bucket.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=bucket.prefix + "/"):
        for item in page.get("Contents", []):
            found[item["Key"].removeprefix(bucket.prefix + "/")] = item
    return found


def unfinished_uploads(bucket: Any) -> list[str]:
    answer = bucket.list_multipart_uploads(Bucket=BUCKET, Prefix=bucket.prefix + "/")
    return [upload["Key"] for upload in answer.get("Uploads", [])]


def test_keys_stream_to_the_bucket_as_a_multipart_upload(bucket, alice, tree, bundles, settings, tmp_path):
    keys = bundles[TREE].evaluation_keys
    assert len(keys) > blobs.PART_BYTES
    # Where web spools bodies: made unusable, so that an upload copied to local disk would fail.
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path / "no-such-folder")
    response = post_bytes(alice.http, f"/api/v1/models/{TREE}/sessions", keys)
    assert response.status_code == 201, response.content
    session = KeySession.objects.get(pk=response.json()["context_id"])
    assert session.keys_blob == f"keys/{session.pk}.bin"
    stored = listing(bucket)[session.keys_blob]
    # A multipart upload's ETag ends in "-<parts>": the body went up a part at a time.
    assert stored["ETag"].strip('"').endswith(f"-{max(1, math.ceil(len(keys) / blobs.PART_BYTES))}")
    assert stored["Size"] == len(keys)
    body = bucket.get_object(Bucket=BUCKET, Key=f"{bucket.prefix}/{session.keys_blob}")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == response.json()["key_fingerprint"] == hashlib.sha256(keys).hexdigest()
    assert unfinished_uploads(bucket) == []


@pytest.mark.parametrize("model", [LOGREG, TREE])
def test_refused_keys_leave_no_object_and_no_parts(bucket, alice, register, bundles, model):
    register(model)
    keys = bundles[model].evaluation_keys
    # The right size, but its header claims far more than it holds: iris-tree's is refused as
    # soon as its header is in (the body is read, not stored), the linear model's few bytes after.
    not_framed = b"\xff" * len(keys)
    response = post_bytes(alice.http, f"/api/v1/models/{model}/sessions", not_framed)
    assert response.status_code == 400
    assert error_code(response) == "invalid_evaluation_keys"
    assert "segments" in response.json()["error"]["message"]
    assert not [name for name in listing(bucket) if name.startswith("keys/")]
    assert unfinished_uploads(bucket) == []
    refusal = AuditRecord.objects.get(action="session.refused")
    assert refusal.details["bytes"] == len(keys)


def test_keys_that_do_not_deserialize_are_refused_through_the_stream(bucket, alice, tree, bundles):
    # Well framed, the right size, but not keys: only the checker process can tell, and it
    # gets these bytes through its pipe from the bucket, not from a local file.
    keys = bytearray(bundles[TREE].evaluation_keys)
    head = 4 + 4 * (int.from_bytes(keys[:4], "little") + 1)
    head += -head % 8
    keys[head : head + 64] = b"\xff" * 64  # the root pointer and what follows: garbage
    response = post_bytes(alice.http, f"/api/v1/models/{TREE}/sessions", bytes(keys))
    assert response.status_code == 400, response.content
    assert error_code(response) == "invalid_evaluation_keys", response.content
    assert not [name for name in listing(bucket) if name.startswith("keys/")]


def test_invalidation_leaves_no_object_of_the_session(
    bucket, alice, logreg, open_session, bundles, django_capture_on_commit_callbacks
):
    context_id = open_session(alice, logreg)
    with django_capture_on_commit_callbacks(execute=True):
        response = post_bytes(alice.http, f"/api/v1/sessions/{context_id}/jobs", bundles[LOGREG].encrypt(0))
    job = Job.objects.get(pk=response.json()["job_id"])
    assert job.status == "succeeded", job.error_code
    ours = [name for name in listing(bucket) if context_id in name or str(job.pk) in name]
    assert f"keys/{context_id}.bin" in ours
    assert job.input_name(0) in ours
    assert job.output_name(0) in ours
    call_command("invalidate_sessions", "--context", context_id, "--reason", "erasure test", stdout=io.StringIO())
    left = listing(bucket)
    assert not [name for name in left if context_id in name or str(job.pk) in name]
    # Only the audit log's checkpoints (which name no session) and the model remain.
    assert {name.split("/")[0] for name in left} <= {"audit", "models"}


def _versioning_warnings() -> list[checks.CheckMessage]:
    return [m for m in checks.run_checks(include_deployment_checks=True) if m.id.startswith("moai.W20")]


def test_check_deploy_warns_about_a_versioned_bucket(bucket, settings):
    # A bucket of its own: versioning is a property of the whole bucket.
    bucket.create_bucket(Bucket="moai-versioned")
    default = settings.STORAGES["default"]
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {**default, "OPTIONS": {**default["OPTIONS"], "bucket_name": "moai-versioned"}},
    }
    assert _versioning_warnings() == []
    bucket.put_bucket_versioning(Bucket="moai-versioned", VersioningConfiguration={"Status": "Enabled"})
    [warning] = _versioning_warnings()
    assert warning.id == "moai.W200"
    assert "moai-versioned has versioning Enabled" in warning.msg
    # A rule that expires noncurrent versions soon enough settles it; a slower one does not.
    for days, warned in ((30, True), (1, False)):
        bucket.put_bucket_lifecycle_configuration(
            Bucket="moai-versioned",
            LifecycleConfiguration={
                "Rules": [
                    {
                        "ID": "erase-noncurrent",
                        "Status": "Enabled",
                        "Filter": {"Prefix": ""},
                        "NoncurrentVersionExpiration": {"NoncurrentDays": days},
                    }
                ]
            },
        )
        assert bool(_versioning_warnings()) is warned, days
    bucket.put_bucket_versioning(Bucket="moai-versioned", VersioningConfiguration={"Status": "Suspended"})
    bucket.delete_bucket_lifecycle(Bucket="moai-versioned")
    # Suspended still keeps the versions made while it was on.
    assert [w.id for w in _versioning_warnings()] == ["moai.W200"]


def test_worker_copy_of_a_blob_is_checked_against_its_digest(bucket, tmp_path):
    blobs.save_bytes("models/x/server.zip", b"z" * 3_000_000)
    target = tmp_path / "server.zip"
    with pytest.raises(RuntimeError, match="digest"):
        blobs.copy_to_local("models/x/server.zip", target, hashlib.sha256(b"other").hexdigest())
    assert list(tmp_path.iterdir()) == []
    blobs.copy_to_local("models/x/server.zip", target, hashlib.sha256(b"z" * 3_000_000).hexdigest())
    assert target.read_bytes() == b"z" * 3_000_000


def test_a_stream_that_fails_midway_leaves_no_object_and_no_parts(bucket):
    def body() -> Iterator[bytes]:
        yield b"k" * blobs.PART_BYTES  # one whole part goes up first
        yield b"k" * 1000
        raise ConnectionResetError("the client went away")

    with pytest.raises(ConnectionResetError):
        blobs.receive("keys/broken.bin", body())
    assert "keys/broken.bin" not in listing(bucket)
    assert unfinished_uploads(bucket) == []


def test_a_missing_blob_reads_as_a_missing_file(bucket):
    # The worker turns a lost key blob into keys_unavailable by catching OSError, as on a filesystem.
    with pytest.raises(FileNotFoundError):
        blobs.read_bytes("keys/never-stored.bin")
    with pytest.raises(FileNotFoundError):
        b"".join(blobs.chunks("keys/never-stored.bin"))


def test_a_name_already_stored_is_never_overwritten(bucket):
    blobs.save_bytes("jobs/x/input-00000.bin", b"first")
    with pytest.raises(FileExistsError):
        blobs.save_bytes("jobs/x/input-00000.bin", b"second")
    assert blobs.read_bytes("jobs/x/input-00000.bin") == b"first"


def test_many_blobs_are_deleted_a_batch_to_a_request(bucket, server, monkeypatch):
    names = [f"audit/checkpoints/0000000000/{seq:020d}.json" for seq in range(5)]
    for name in names:
        blobs.save_bytes(name, b"{}")
    monkeypatch.setattr(blobs, "DELETE_BATCH", 2)
    assert server.log is not None
    time.sleep(0.3)
    since = len(server.log.read_text())
    blobs.delete_many([*names[:4], "audit/checkpoints/never-stored.json"])  # a missing one is no error
    assert [blobs.exists(name) for name in names] == [False, False, False, False, True]
    # Five names, two to a request: three POSTs of DeleteObjects, no DELETE of one object.
    assert server.log is not None
    time.sleep(0.3)  # the server logs a request just after answering it
    # Werkzeug colours the lines of answers other than 200 (a 204 DELETE).
    logged = re.sub(r"\x1b\[[0-9;]*m", "", server.log.read_text()[since:])
    requests = re.findall(r'"(\w+) /([^ ?]+)\??(\S*) HTTP', logged)
    assert [(method, query) for method, _path, query in requests if method != "HEAD"] == [("POST", "delete")] * 3


def store_requests(server: LocalS3, bucket: Any, since: int) -> list[str]:
    """The requests moto's server logged past line ``since`` for this test's prefix: "GET keys/x.bin", ...

    Counted where they arrive, at the store, so that a request made by any client (the
    service's shared one, django-storages' own per-thread one) is seen.
    """
    assert server.log is not None
    time.sleep(0.3)  # the server logs a request just after answering it
    lines = server.log.read_text().splitlines()[since:]
    marker = f"/{BUCKET}/{bucket.prefix}/"
    found = []
    for line in lines:
        # Werkzeug colours the lines of answers other than 200 (a 204 DELETE, a 404 HEAD).
        match = re.search(r'"(\w+) (\S+) HTTP', re.sub(r"\x1b\[[0-9;]*m", "", line))
        if match and marker in match.group(2):
            name = match.group(2).split(marker, 1)[1].split("?", 1)[0]
            found.append(f"{match.group(1)} {re.sub(r'[0-9a-f-]{36}', '<id>', name)}")
    return found


def log_length(server: LocalS3) -> int:
    assert server.log is not None
    time.sleep(0.3)
    return len(server.log.read_text().splitlines())


def test_a_warm_job_makes_four_requests_to_the_store(
    server, bucket, alice, logreg, open_session, bundles, django_capture_on_commit_callbacks
):
    context_id = open_session(alice, logreg)
    url = f"/api/v1/sessions/{context_id}/jobs"
    with django_capture_on_commit_callbacks(execute=True):
        first = post_bytes(alice.http, url, bundles[LOGREG].encrypt(0))  # keys and model files fetched here
    assert Job.objects.get(pk=first.json()["job_id"]).status == "succeeded"
    assert audit_checkpoints.flush()
    since = log_length(server)
    with django_capture_on_commit_callbacks(execute=True):
        submitted = post_bytes(alice.http, url, bundles[LOGREG].encrypt(1))
    job = Job.objects.get(pk=submitted.json()["job_id"])
    assert job.status == "succeeded", job.error_code
    result = alice.http.get(f"/api/v1/jobs/{job.pk}/result")
    assert result.status_code == 200
    output = b"".join(result.streaming_content)
    assert int(result["Content-Length"]) == len(output) > 0
    assert audit_checkpoints.flush()
    checkpoint = checkpoint_name(AuditRecord.objects.get(action="job.submitted", target_id=str(job.pk)).seq)
    # Each one written or read once: no HEAD before a read or a write, no delete before a
    # write of a name that is new by construction, and no key or model file (the worker's caches).
    assert sorted(store_requests(server, bucket, since)) == sorted(
        [
            "PUT jobs/<id>/input-00000.bin",  # web: the submitted ciphertext (also in the task message)
            f"PUT {checkpoint}",  # web's checkpoint writer: the audit chain's head after job.submitted
            "PUT jobs/<id>/attempt-1/output-00000.bin",  # worker: the result, once per attempt
            "GET jobs/<id>/attempt-1/output-00000.bin",  # web: the result, asked for without waiting
        ]
    )


def test_a_warm_job_answered_to_a_held_request_makes_three_requests_to_the_store(
    server, bucket, alice, logreg, open_session, bundles, transactional_db, monkeypatch, settings
):
    """``POST .../jobs?wait=N``: the worker's end notice brings the output to the waiting request."""
    if not settings.REDIS_URL:
        pytest.skip("job-end notices travel over Redis; without it the output is read from the store")
    from django.db import connection

    from jobs import services

    context_id = open_session(alice, logreg)
    url = f"/api/v1/sessions/{context_id}/jobs"
    bundle = bundles[LOGREG]
    assert post_bytes(alice.http, url, bundle.encrypt(0)).status_code == 202  # run at commit: keys warm now
    # The job runs in a thread of its own, as a worker would, once the request holds its wait.
    send = services.enqueue
    workers: list[threading.Thread] = []

    def worker(*args: Any) -> None:
        try:
            time.sleep(0.3)
            send(*args)
        finally:
            connection.close()

    monkeypatch.setattr(
        services,
        "enqueue",
        lambda *args: workers.append(threading.Thread(target=worker, args=args)) or workers[-1].start(),
    )
    assert audit_checkpoints.flush()
    since = log_length(server)
    answer = post_bytes(alice.http, f"{url}?wait=20", bundle.encrypt(1))
    for thread in workers:
        thread.join()
    assert answer.status_code == 200, answer.content
    assert bundle.decrypt_label(b"".join(answer.streaming_content)) == int(bundle.samples["clear_prediction"][1])
    job = Job.objects.get(pk=answer["X-Moai-Job-Id"])
    assert job.status == "succeeded"
    assert audit_checkpoints.flush()
    checkpoint = checkpoint_name(AuditRecord.objects.get(action="job.submitted", target_id=str(job.pk)).seq)
    assert sorted(store_requests(server, bucket, since)) == sorted(
        [
            "PUT jobs/<id>/input-00000.bin",
            f"PUT {checkpoint}",
            "PUT jobs/<id>/attempt-1/output-00000.bin",  # written all the same: GET .../result reads it later
        ]
    )


# Outages: the store is stopped for real (moto's server terminated: connections refused).
# The store is the edge of the system, and a store that stops answering is what an outage
# is from the service's side; one of this test's own, since the shared one must stay up.
@pytest.fixture
def own_server(settings: Any, tmp_path: Path) -> Iterator[LocalS3]:
    with LocalS3(tmp_path / "moto.log") as started:
        use_bucket(settings, started, "outage")
        yield started


def assert_store_unavailable(response: Any) -> None:
    assert response.status_code == 503, response.content
    assert response.json()["error"]["code"] == "service_unavailable"
    assert response.json()["error"]["dependency"] == "blob storage"
    assert response["Retry-After"] == "5"


def test_a_job_submitted_while_the_store_is_away_is_a_503(own_server, alice, logreg, open_session, bundles):
    context_id = open_session(alice, logreg)
    own_server.stop()
    started = time.monotonic()
    response = post_bytes(alice.http, f"/api/v1/sessions/{context_id}/jobs", bundles[LOGREG].encrypt(0))
    assert_store_unavailable(response)
    assert time.monotonic() - started < 10  # a few quick retries, not botocore's 60 s timeouts
    assert not Job.objects.exists()  # the input was never stored, so no job either


@pytest.mark.parametrize("when", ["before the upload", "during the check"])
def test_keys_uploaded_while_the_store_is_away_are_a_503(own_server, alice, tree, bundles, monkeypatch, when):
    if when == "before the upload":
        own_server.stop()
    else:
        # Stopped once the body is in the bucket, before the checks read it back from there.
        from base import uploads

        stored = blobs.receive

        def receive_then_outage(name: str, stream: Iterator[bytes]) -> int:
            size = stored(name, stream)
            own_server.stop()
            return size

        monkeypatch.setattr(uploads.blobs, "receive", receive_then_outage)
    response = post_bytes(alice.http, f"/api/v1/models/{TREE}/sessions", bundles[TREE].evaluation_keys)
    assert_store_unavailable(response)
    assert not KeySession.objects.exists()
    assert not AuditRecord.objects.filter(action__startswith="session.").exists()  # nothing was decided


def test_the_sweep_removes_keys_of_no_open_session_and_unfinished_uploads(
    bucket, alice, logreg, open_session, settings
):
    settings.MOAI_ORPHAN_KEYS_SECONDS = 2
    held = f"keys/{open_session(alice, logreg)}.bin"
    ended = open_session(alice, logreg)
    # A session whose erasure the store failed: its row ended, its keys object stayed.
    orphan_of_ended = f"keys/{ended}.bin"
    KeySession.objects.filter(pk=ended).update(status=KeySession.Status.INVALIDATED, keys_blob="")
    # What a web process that died mid-upload leaves: keys of no session, and parts of no object.
    died_after_upload = "keys/00000000-0000-4000-8000-000000000001.bin"
    blobs.save_bytes(died_after_upload, b"k" * 100)
    died_in_upload = f"{bucket.prefix}/keys/00000000-0000-4000-8000-000000000002.bin"
    upload_id = bucket.create_multipart_upload(Bucket=BUCKET, Key=died_in_upload)["UploadId"]
    bucket.upload_part(Bucket=BUCKET, Key=died_in_upload, UploadId=upload_id, PartNumber=1, Body=b"p" * 100)
    time.sleep(3)  # all of them older than the bound now
    in_flight = "keys/00000000-0000-4000-8000-000000000003.bin"  # an upload whose session is being opened
    blobs.save_bytes(in_flight, b"k" * 100)
    not_keys = "jobs/x/input-00000.bin"
    blobs.save_bytes(not_keys, b"c" * 100)

    out = io.StringIO()
    call_command("expire_sessions", stdout=out)
    assert "removed 3 orphaned key blob(s) or upload(s)" in out.getvalue()
    left = listing(bucket)
    assert {held, in_flight, not_keys} <= set(left)
    assert not {orphan_of_ended, died_after_upload} & set(left)
    assert unfinished_uploads(bucket) == []
    audited = set(AuditRecord.objects.filter(action__startswith="keys.").values_list("action", "target_id"))
    assert audited == {
        ("keys.orphan_deleted", orphan_of_ended),
        ("keys.orphan_deleted", died_after_upload),
        ("keys.upload_aborted", died_in_upload.removeprefix(bucket.prefix + "/")),
    }
    # Once done, nothing more: a second sweep finds nothing to remove.
    out = io.StringIO()
    call_command("expire_sessions", stdout=out)
    assert "removed 0 orphaned" in out.getvalue()


def test_one_client_serves_every_thread_of_a_process(bucket):
    # django-storages makes a boto3 session and client per thread; a web request thread or a
    # batch's input thread would each load boto3's service model and open connections anew.
    here = blobs._s3_client()
    seen: list[Any] = []
    thread = threading.Thread(target=lambda: seen.append(blobs._s3_client()))
    thread.start()
    thread.join()
    assert seen == [here]
    for index in range(4):  # and its connections are kept: one, for requests one after the other
        blobs.save_bytes(f"jobs/x/input-{index:05d}.bin", b"c")
        blobs.read_bytes(f"jobs/x/input-{index:05d}.bin")
    pools = here._endpoint.http_session._manager.pools
    assert sum(pool.num_connections for pool in pools._container.values()) == 1
