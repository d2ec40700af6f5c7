"""Spooling request bodies to temporary files with a byte cap.

Key uploads reach hundreds of megabytes: they are copied from the socket to a
file in fixed-size chunks and never held whole in memory. A declared length over
the cap is refused with 413 before a single body byte is read.
"""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation, TooManyFilesSent
from django.http import HttpRequest
from django.http.multipartparser import MultiPartParserError

from base import blobs
from base.errors import ApiError
from base.streams import HEAD_BYTES, framing_problem

CHUNK = 1024 * 1024


def declared_length(request: HttpRequest, cap: int) -> int:
    """The body's Content-Length, refused with 413 when over ``cap``."""
    if request.META.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked" and not request.META.get("CONTENT_LENGTH"):
        raise ApiError(411, "length_required", "Send a Content-Length header; chunked bodies are not accepted.")
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise ApiError(400, "invalid_request", "Content-Length is not a number.") from None
    if length > cap:
        raise ApiError(
            413,
            "payload_too_large",
            f"The body is {length} bytes; the limit is {cap}.",
            limit_bytes=cap,
            actual_bytes=length,
        )
    return length


@dataclass(frozen=True)
class Spooled:
    """A request body received whole, with its size, SHA-256 and first bytes taken on the way.

    It is in a local temporary file (``path``), or already in blob storage under
    ``blob`` when the store takes streams (S3): then no local copy exists at all.
    """

    size: int
    sha256: str
    head: bytes
    path: Path | None = None
    blob: str = ""

    def chunks(self) -> Iterator[bytes]:
        """The body again, a chunk at a time, from wherever it was received."""
        if self.path is not None:
            with self.path.open("rb") as handle:
                yield from iter(lambda: handle.read(CHUNK), b"")
        else:
            yield from blobs.chunks(self.blob, CHUNK)


class _Tally:
    """Counts, hashes and caps the chunks of a body as they pass, keeping its first bytes."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.size = 0
        self.digest = hashlib.sha256()
        self.head = b""

    def through(self, request: HttpRequest) -> Iterator[bytes]:
        # HttpRequest.read stops at Content-Length, so this never reads past the cap.
        for chunk in iter(lambda: request.read(CHUNK), b""):
            self.size += len(chunk)
            if self.size > self.cap:
                raise ApiError(
                    413, "payload_too_large", f"The body exceeds the limit of {self.cap} bytes.", limit_bytes=self.cap
                )
            self.digest.update(chunk)
            if len(self.head) < HEAD_BYTES:
                self.head += chunk[: HEAD_BYTES - len(self.head)]
            yield chunk


@contextlib.contextmanager
def spooled_body(request: HttpRequest, cap: int) -> Iterator[Spooled]:
    """Copy the raw body to a temporary file, yield it, and remove the file afterwards (if still there)."""
    declared_length(request, cap)
    with tempfile.NamedTemporaryFile(dir=settings.FILE_UPLOAD_TEMP_DIR, prefix="upload-", delete=False) as handle:
        path = Path(handle.name)
    try:
        tally = _Tally(cap)
        with path.open("wb") as out:
            for chunk in tally.through(request):
                out.write(chunk)
        yield Spooled(tally.size, tally.digest.hexdigest(), tally.head, path=path)
    finally:
        path.unlink(missing_ok=True)


def body_bytes(request: HttpRequest, cap: int) -> bytes:
    """The raw body read into memory, refused with 413 past ``cap``: for bodies capped small."""
    declared_length(request, cap)
    return b"".join(_Tally(cap).through(request))


def is_raw(request: HttpRequest) -> bool:
    """Whether the body is one raw stream (octet-stream, or no type given), not a multipart form."""
    return (request.content_type or "") in ("application/octet-stream", "")


@contextlib.contextmanager
def received_body(request: HttpRequest, cap: int, blob: str) -> Iterator[Spooled]:
    """A Cap'n Proto body (evaluation keys), stored under ``blob`` when the store takes
    streams, else spooled to a local file.

    Streamed, the body goes to the store as it is read and checked, and the object is
    removed again if the block raises (keys that fail their checks are not kept). A body
    whose header cannot add up to its declared length is read to its end but not stored
    (``blob`` is then empty): the block's checks refuse it from its first bytes.
    """
    if not blobs.streams_uploads():
        with spooled_body(request, cap) as body:
            yield body
        return
    declared = declared_length(request, cap)
    tally = _Tally(cap)
    try:
        blobs.receive(blob, _framed_or_drained(tally.through(request), tally, declared))
    except _Unframed:
        blob = ""
    try:
        yield Spooled(tally.size, tally.digest.hexdigest(), tally.head, blob=blob)
    except BaseException:
        blobs.delete(blob)
        raise


class _Unframed(Exception):
    """A streamed body's header does not add up: the store's upload is abandoned."""


def _framed_or_drained(chunks: Iterator[bytes], tally: _Tally, declared: int) -> Iterator[bytes]:
    # Checked as soon as the header is in: a lying header costs the liar a read of its body at
    # memory speed, not an upload to the store (the filesystem path spools to local disk instead).
    for chunk in chunks:
        if len(tally.head) >= HEAD_BYTES and framing_problem(tally.head, declared) is not None:
            for _ in chunks:  # the rest of the body, read so that the answer can be sent whole
                pass
            raise _Unframed
        yield chunk


@contextlib.contextmanager
def spooled_multipart(request: HttpRequest, field: str, cap: int) -> Iterator[list[Path]]:
    """Yield the files of a multipart field as temporary paths, in the order sent."""
    declared_length(request, cap)
    paths: list[Path] = []
    try:
        try:
            uploads = request.FILES.getlist(field)
        except TooManyFilesSent:
            raise ApiError(
                413,
                "payload_too_large",
                f"At most {settings.DATA_UPLOAD_MAX_NUMBER_FILES} inputs per job.",
                limit_inputs=settings.DATA_UPLOAD_MAX_NUMBER_FILES,
            ) from None
        except RequestDataTooBig:
            raise ApiError(413, "payload_too_large", "The form fields are too large.") from None
        except (MultiPartParserError, SuspiciousOperation, ValueError) as exc:
            raise ApiError(400, "invalid_request", f"The multipart body cannot be parsed: {exc}") from None
        for upload in uploads:
            with tempfile.NamedTemporaryFile(dir=settings.FILE_UPLOAD_TEMP_DIR, prefix="input-", delete=False) as out:
                paths.append(Path(out.name))
                for chunk in upload.chunks(CHUNK):
                    out.write(chunk)
            upload.close()
        yield paths
    finally:
        for path in paths:
            path.unlink(missing_ok=True)


@contextlib.contextmanager
def spooled_inputs(request: HttpRequest, field: str, cap: int) -> Iterator[list[Path]]:
    """A job body: one raw ciphertext, or a multipart batch in ``field``."""
    if request.content_type == "multipart/form-data":
        with spooled_multipart(request, field, cap) as paths:
            yield paths
    elif is_raw(request):
        with spooled_body(request, cap) as body:
            assert body.path is not None  # spooled_body always keeps a local file
            yield [body.path]
    else:
        raise ApiError(
            415, "unsupported_media_type", f"Send application/octet-stream or multipart/form-data (field {field!r})."
        )
