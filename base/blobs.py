"""Blob storage for model bundles, keys, ciphertexts and results.

Everything goes through Django's storage API (``STORAGES["default"]``): the local
filesystem by default, or an S3-compatible bucket (``MOAI_BLOB_STORAGE=s3``,
django-storages). The two differ only where a stream is worth having: a key upload
goes to the bucket as a multipart upload while it is read (:func:`receive`), and
checks read it back in chunks (:func:`chunks`), so that no full copy of it is ever
held in a web process's memory or written to its disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage

# S3 takes parts of 5 MiB at least (but the last); one part is what a web process holds of an upload.
PART_BYTES = 8 * 1024 * 1024
CHUNK = 1024 * 1024
# Connections one process keeps open to the store: a web process serves up to MOAI_WEB_THREADS
# requests at once (16 by default) and a batch runs a thread per input, all on one client.
POOL_CONNECTIONS = 32
CONNECT_SECONDS = 5


class StoreUnavailable(OSError):
    """The object store did not answer (refused, timed out, a 5xx): the service's state, not the caller's."""


def streams_uploads() -> bool:
    """True when uploads go straight to the store (S3) instead of through a local file."""
    return bool(settings.MOAI_BLOB_STORAGE == "s3")


def save(name: str, content: File) -> str:
    """Store ``content`` under exactly ``name``, replacing nothing: names are unique by construction."""
    if streams_uploads():
        # One conditional PUT instead of the storage's HEAD (is the name free?) and PUT: a job's
        # input and output are written on every job, and each round trip to the store is latency.
        content.seek(0)
        with _as_os_errors(name):
            try:
                _s3_client().put_object(Bucket=_bucket(), Key=_key(name), Body=content, IfNoneMatch="*")
            except Exception as exc:
                if getattr(exc, "response", {}).get("Error", {}).get("Code") == "PreconditionFailed":
                    raise FileExistsError(name) from None
                raise
        return name
    stored = _save_to_folder(name, content)
    if stored != name:
        # The backend chose another name: a file was already there. Never overwrite silently.
        default_storage.delete(stored)
        raise FileExistsError(name)
    return stored


def _save_to_folder(name: str, content: File, tries: int = 3) -> str:
    """The filesystem storage's save, again when a concurrent erasure took the blob's folder.

    The storage creates the folder and then the file. A session's end erases a running job's
    folder (``remove_empty_folders``), and when it does so in between, the worker's output
    would fail with ``FileNotFoundError`` and be logged as a crash. Saved into the folder made
    again, the output is then discarded by ``finish_job`` like any late output of an ended job.
    """
    while True:
        try:
            return str(default_storage.save(name, content))
        except FileNotFoundError:
            tries -= 1
            # The folder is there: what is missing is the source of a move, which no retry brings back.
            if tries == 0 or Path(default_storage.path(name)).parent.is_dir():
                raise
            content.seek(0)


class _LocalFile(File):
    """A file already on local disk: the filesystem backend moves it into place instead of copying it."""

    def temporary_file_path(self) -> str:
        return str(self.name)


def save_local_file(name: str, path: Path) -> str:
    """Store the local file at ``path`` under ``name``; it may be moved rather than copied."""
    with path.open("rb") as handle:
        return save(name, _LocalFile(handle, name=str(path)))


def save_bytes(name: str, data: bytes) -> str:
    from django.core.files.base import ContentFile

    return save(name, ContentFile(data))


def read_bytes(name: str) -> bytes:
    if streams_uploads():
        # Straight into memory: a storage file would spool anything past 8 MiB to local disk,
        # and evaluation keys read by a worker are to be held in memory only.
        with _as_os_errors(name):
            body = _s3_client().get_object(Bucket=_bucket(), Key=_key(name))["Body"]
            try:
                content: bytes = body.read()
            finally:
                body.close()
        return content
    with default_storage.open(name, "rb") as handle:
        data: bytes = handle.read()
    return data


def chunks(name: str, size: int = CHUNK) -> Iterator[bytes]:
    """The blob's bytes, ``size`` at a time, never all of them in memory."""
    if streams_uploads():
        with _as_os_errors(name):
            body = _s3_client().get_object(Bucket=_bucket(), Key=_key(name))["Body"]
            try:
                yield from body.iter_chunks(size)
            finally:
                body.close()
        return
    with default_storage.open(name, "rb") as handle:
        yield from handle.chunks(size)


def copy_to_local(name: str, target: Path, sha256: str) -> None:
    """Copy a blob to a local file in chunks, checking it against its digest; ``target`` appears whole or not at all."""
    partial = target.with_name(f"{target.name}.{threading.get_ident()}.part")
    digest = hashlib.sha256()
    try:
        with partial.open("wb") as out:
            for chunk in chunks(name):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != sha256:
            raise RuntimeError(f"{name} does not match its registered digest")
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)


def receive(name: str, stream: Iterable[bytes]) -> int:
    """Store the bytes of ``stream`` under ``name`` as they come; returns how many.

    On S3 each ``PART_BYTES`` goes up as one part of a multipart upload; an error
    raised by the stream (a size cap, a client gone) aborts the upload, so that no
    partial object and no orphaned parts stay behind.
    """
    if not streams_uploads():
        raise RuntimeError("receive() streams to object storage; the filesystem backend stores local files")
    client, bucket, key = _s3_client(), _bucket(), _key(name)
    with _as_os_errors(name):
        upload_id = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    parts: list[dict[str, Any]] = []
    total = 0
    try:
        with _as_os_errors(name):
            buffer = bytearray()
            for piece in stream:
                buffer += piece
                total += len(piece)
                if len(buffer) >= PART_BYTES:
                    parts.append(_upload_part(client, bucket, key, upload_id, len(parts) + 1, bytes(buffer)))
                    buffer.clear()
            if buffer or not parts:
                parts.append(_upload_part(client, bucket, key, upload_id, len(parts) + 1, bytes(buffer)))
            client.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
    except BaseException:
        # The original error matters more than a failed clean-up; parts left by a store that went
        # away meanwhile (or a process that died here) are aborted by sweep_orphans later.
        with contextlib.suppress(Exception):
            client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        raise
    return total


def _upload_part(client: Any, bucket: str, key: str, upload_id: str, number: int, data: bytes) -> dict[str, Any]:
    answer = client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data)
    return {"PartNumber": number, "ETag": answer["ETag"]}


def versioning_problem(max_days: int) -> str | None:
    """Why the bucket could keep erased blobs as noncurrent versions, or None when it cannot.

    Versioning "Suspended" still keeps the versions made while it was on, so only a
    bucket that never had it, or a rule that expires noncurrent versions of every
    object within ``max_days``, passes.
    """
    from botocore.exceptions import ClientError

    client, bucket = _s3_client(), _bucket()
    status = client.get_bucket_versioning(Bucket=bucket).get("Status")
    if not status:
        return None
    try:
        rules = client.get_bucket_lifecycle_configuration(Bucket=bucket).get("Rules", [])
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "NoSuchLifecycleConfiguration":
            raise
        rules = []
    for rule in rules:
        days = rule.get("NoncurrentVersionExpiration", {}).get("NoncurrentDays")
        whole_bucket = rule.get("Filter", {}) in ({}, {"Prefix": ""}) and not rule.get("Prefix")
        if rule.get("Status") == "Enabled" and whole_bucket and days is not None and days <= max_days:
            return None
    return (
        f"Bucket {bucket} has versioning {status}: deleted keys, ciphertexts and results stay as noncurrent "
        f"versions, and no lifecycle rule expires them within {max_days} days."
    )


def bucket_name() -> str:
    return _bucket()


@contextlib.contextmanager
def _as_os_errors(name: str) -> Iterator[None]:
    """S3's errors as the filesystem's: callers handle a lost or unreachable blob as an OSError.

    A store that cannot be reached, times out or answers 5xx is :class:`StoreUnavailable`
    (the API answers 503 ``service_unavailable``); anything else it refuses (access denied,
    no such bucket) is a configuration fault, a plain OSError.
    """
    from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
    from botocore.exceptions import ConnectionError as BotoConnectionError

    try:
        yield
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            raise FileNotFoundError(f"no blob {name}") from exc
        if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) >= 500:
            raise StoreUnavailable(f"blob {name}: {exc}") from exc
        raise OSError(f"blob {name}: {exc}") from exc
    except (BotoConnectionError, HTTPClientError) as exc:
        raise StoreUnavailable(f"blob {name}: {exc}") from exc
    except BotoCoreError as exc:
        raise OSError(f"blob {name}: {exc}") from exc


_client_lock = threading.Lock()


def _s3_client() -> Any:
    """One S3 client per process (and storage configuration), shared by its threads.

    django-storages keeps a boto3 session and resource per thread: every new thread (a
    web request thread's first use, each thread of a batch) would load boto3's service
    model again and open connections of its own. boto3 clients are thread-safe, so one
    client with one connection pool serves them all. Made again after a fork: a pool's
    sockets are not to be shared between processes.
    """
    storage: Any = default_storage
    made = getattr(storage, "_moai_s3_client", None)
    if made is not None and made[0] == os.getpid():
        return made[1]
    with _client_lock:
        made = getattr(storage, "_moai_s3_client", None)
        if made is None or made[0] != os.getpid():
            from botocore.config import Config

            client = storage._create_session().client(
                "s3",
                region_name=storage.region_name,
                use_ssl=storage.use_ssl,
                endpoint_url=storage.endpoint_url,
                config=storage.client_config.merge(
                    Config(
                        max_pool_connections=POOL_CONNECTIONS,
                        # A store that is away answers within seconds as StoreUnavailable (a 503)
                        # instead of holding a request thread through botocore's 60 s connect
                        # timeout and legacy retries: three tries, jittered backoff.
                        connect_timeout=CONNECT_SECONDS,
                        retries={"mode": "standard", "total_max_attempts": 3},
                    )
                ),
                verify=storage.verify,
            )
            made = (os.getpid(), client)
            storage._moai_s3_client = made
    return made[1]


def _bucket() -> str:
    return str(default_storage.bucket_name)  # type: ignore[attr-defined]


def _key(name: str) -> str:
    from storages.utils import clean_name

    # The storage's own mapping, with its location prefix: these objects are the ones it lists and deletes.
    return str(default_storage._normalize_name(clean_name(name)))  # type: ignore[attr-defined]


def open_read(name: str) -> tuple[IO[bytes], int]:
    """The blob as a stream to answer a request with, and its size; FileNotFoundError if there is none.

    One request to the store: asking first whether it exists (HEAD), as the storage API's
    ``open`` does too, would double the round trips of every result download.
    """
    if streams_uploads():
        with _as_os_errors(name):
            answer = _s3_client().get_object(Bucket=_bucket(), Key=_key(name))
        return answer["Body"], int(answer["ContentLength"])
    handle = default_storage.open(name, "rb")
    return handle, int(handle.size)


def delete(name: str) -> None:
    """Remove the blob; nothing to remove is not an error."""
    if not name:
        return
    if streams_uploads():
        with _as_os_errors(name):  # S3 answers a delete of a missing key with success
            _s3_client().delete_object(Bucket=_bucket(), Key=_key(name))
        return
    with contextlib.suppress(FileNotFoundError):
        default_storage.delete(name)


# S3's DeleteObjects takes at most this many keys a request.
DELETE_BATCH = 1000


def delete_many(names: list[str]) -> None:
    """Remove the blobs; missing ones are not an error. On S3 a thousand go in one request.

    Raises ``OSError`` naming the first blob the store refused to delete (an object lock,
    a policy): whoever calls it must not record as removed what is still there.
    """
    if not streams_uploads():
        for name in names:
            delete(name)
        return
    client, bucket = _s3_client(), _bucket()
    for start in range(0, len(names), DELETE_BATCH):
        batch = names[start : start + DELETE_BATCH]
        with _as_os_errors(batch[0]):
            answer = client.delete_objects(
                Bucket=bucket, Delete={"Objects": [{"Key": _key(name)} for name in batch], "Quiet": True}
            )
        refused = answer.get("Errors") or []
        if refused:
            first = refused[0]
            raise OSError(
                f"{len(refused)} of {len(batch)} blobs not deleted; {first.get('Key')}: {first.get('Code')} "
                f"{first.get('Message', '')}".rstrip()
            )


def remove_empty_folders(prefix: str) -> None:
    """Remove the folder ``prefix`` and every folder under it that holds no file.

    On the filesystem, deleting a blob leaves its folder behind: every erased job left two
    empty ones (its own and its attempt's) for good, an inode each, until the disk ran out
    of them. An object store has no folders to remove.
    """
    if streams_uploads():
        return
    for folder, _, _ in os.walk(default_storage.path(prefix), topdown=False):
        # Not empty (a blob still there, or written meanwhile), or gone already: left as it is.
        with contextlib.suppress(OSError):
            os.rmdir(folder)


def exists(name: str) -> bool:
    if not name:
        return False
    if streams_uploads():
        from botocore.exceptions import ClientError

        with _as_os_errors(name):
            try:
                _s3_client().head_object(Bucket=_bucket(), Key=_key(name))
            except ClientError as exc:
                if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                    return False
                raise
        return True
    return bool(default_storage.exists(name))


def stored_before(prefix: str, before: datetime) -> Iterator[str]:
    """Names of the blobs under ``prefix`` (a folder, such as ``keys/``) last written before ``before``."""
    if streams_uploads():
        client, bucket, base = _s3_client(), _bucket(), _key(prefix).rstrip("/") + "/"
        with _as_os_errors(prefix):
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=base):
                for item in page.get("Contents", []):
                    if item["LastModified"] < before:
                        yield prefix.rstrip("/") + "/" + item["Key"].removeprefix(base)
        return
    try:
        _, files = default_storage.listdir(prefix)
    except FileNotFoundError:
        return
    for file in files:
        name = prefix.rstrip("/") + "/" + file
        with contextlib.suppress(FileNotFoundError):  # removed meanwhile: nothing to sweep
            if default_storage.get_modified_time(name) < before:
                yield name


def unfinished_uploads(prefix: str, before: datetime) -> Iterator[tuple[str, str]]:
    """(name, upload id) of the multipart uploads under ``prefix`` begun before ``before``; none on a filesystem.

    An upload is aborted by :func:`receive` when it fails; one stays only if the process
    died in it (or the store was away when it tried), and its parts are stored and billed
    until it is aborted.
    """
    if not streams_uploads():
        return
    client, bucket, base = _s3_client(), _bucket(), _key(prefix).rstrip("/") + "/"
    with _as_os_errors(prefix):
        for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=base):
            for upload in page.get("Uploads", []):
                if upload["Initiated"] < before:
                    yield prefix.rstrip("/") + "/" + upload["Key"].removeprefix(base), upload["UploadId"]


def abort_upload(name: str, upload_id: str) -> None:
    """Abort a multipart upload, dropping its parts; one already gone is not an error."""
    from botocore.exceptions import ClientError

    with _as_os_errors(name):
        try:
            _s3_client().abort_multipart_upload(Bucket=_bucket(), Key=_key(name), UploadId=upload_id)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "NoSuchUpload":
                raise
