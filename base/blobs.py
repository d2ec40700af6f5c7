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
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage

# S3 takes parts of 5 MiB at least (but the last); one part is what a web process holds of an upload.
PART_BYTES = 8 * 1024 * 1024
CHUNK = 1024 * 1024


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
    stored = default_storage.save(name, content)
    if stored != name:
        # The backend chose another name: a file was already there. Never overwrite silently.
        default_storage.delete(stored)
        raise FileExistsError(name)
    return stored


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
    upload_id = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    parts: list[dict[str, Any]] = []
    total = 0
    try:
        buffer = bytearray()
        for piece in stream:
            buffer += piece
            total += len(piece)
            if len(buffer) >= PART_BYTES:
                parts.append(_upload_part(client, bucket, key, upload_id, len(parts) + 1, bytes(buffer)))
                buffer.clear()
        if buffer or not parts:
            parts.append(_upload_part(client, bucket, key, upload_id, len(parts) + 1, bytes(buffer)))
        client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts})
    except BaseException:
        with contextlib.suppress(Exception):  # the original error matters more than a failed clean-up
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
    """S3's errors as the filesystem's: callers handle a lost or unreachable blob as an OSError."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            raise FileNotFoundError(f"no blob {name}") from exc
        raise OSError(f"blob {name}: {exc}") from exc
    except BotoCoreError as exc:
        raise OSError(f"blob {name}: {exc}") from exc


def _s3_client() -> Any:
    return default_storage.connection.meta.client  # type: ignore[attr-defined]


def _bucket() -> str:
    return str(default_storage.bucket_name)  # type: ignore[attr-defined]


def _key(name: str) -> str:
    from storages.utils import clean_name

    # The storage's own mapping, with its location prefix: these objects are the ones it lists and deletes.
    return str(default_storage._normalize_name(clean_name(name)))  # type: ignore[attr-defined]


def delete(name: str) -> None:
    if name:
        with contextlib.suppress(FileNotFoundError):
            default_storage.delete(name)


def exists(name: str) -> bool:
    return bool(name) and default_storage.exists(name)
