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

from ops.errors import ApiError

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
    """A request body copied to a local file, with its size and SHA-256 taken on the way."""

    path: Path
    size: int
    sha256: str


@contextlib.contextmanager
def spooled_body(request: HttpRequest, cap: int) -> Iterator[Spooled]:
    """Copy the raw body to a temporary file, yield it, and remove the file afterwards (if still there)."""
    declared_length(request, cap)
    with tempfile.NamedTemporaryFile(dir=settings.FILE_UPLOAD_TEMP_DIR, prefix="upload-", delete=False) as handle:
        path = Path(handle.name)
    try:
        digest = hashlib.sha256()
        written = 0
        with path.open("wb") as out:
            # HttpRequest.read stops at Content-Length, so this never reads past the cap.
            for chunk in iter(lambda: request.read(CHUNK), b""):
                written += len(chunk)
                if written > cap:
                    raise ApiError(
                        413, "payload_too_large", f"The body exceeds the limit of {cap} bytes.", limit_bytes=cap
                    )
                digest.update(chunk)
                out.write(chunk)
        yield Spooled(path, written, digest.hexdigest())
    finally:
        path.unlink(missing_ok=True)


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
    content_type = request.content_type or ""
    if content_type == "multipart/form-data":
        with spooled_multipart(request, field, cap) as paths:
            yield paths
    elif content_type in ("application/octet-stream", ""):
        with spooled_body(request, cap) as body:
            yield [body.path]
    else:
        raise ApiError(
            415, "unsupported_media_type", f"Send application/octet-stream or multipart/form-data (field {field!r})."
        )
