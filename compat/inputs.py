"""Reading the example clients' requests: form fields (in GET bodies too) and multipart files."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from pathlib import Path

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, QueryDict

from base import uploads
from base.errors import ApiError
from base.streams import HEAD_BYTES
from base.uploads import Spooled

MAX_FIELD_CHARS = 200
# Form fields and part headers next to the one uploaded file.
FORM_OVERHEAD_BYTES = 4096


def form_fields(request: HttpRequest, *names: str) -> list[str]:
    """The named fields, required. The hybrid client sends them as a form body even on GET
    (requests' ``data=``), which Django does not parse for GET: it is parsed here."""
    if request.method == "POST":
        form = request.POST
    elif request.content_type == "application/x-www-form-urlencoded":
        try:
            form = QueryDict(request.body, encoding=request.encoding)
        except RequestDataTooBig:
            raise ApiError(413, "payload_too_large", "The form body is too large.") from None
    else:
        form = request.GET
    values = []
    for name in names:
        value = form.get(name)
        if value is None or not value.strip():
            raise ApiError(400, "invalid_request", f"The form field {name!r} is required.", field=name)
        if len(value) > MAX_FIELD_CHARS:
            raise ApiError(400, "invalid_request", f"The form field {name!r} is too long.", field=name)
        values.append(value)
    return values


@contextlib.contextmanager
def one_file(request: HttpRequest, field: str, cap: int) -> Iterator[Spooled]:
    """The one file of a multipart field, spooled to a local file (refused over ``cap`` before it is read)."""
    if request.content_type != "multipart/form-data":
        raise ApiError(415, "unsupported_media_type", f"Send multipart/form-data with the file in {field!r}.")
    with uploads.spooled_multipart(request, field, cap + FORM_OVERHEAD_BYTES) as paths:
        if len(paths) != 1:
            raise ApiError(400, "invalid_request", f"Send exactly one file in the field {field!r}.", field=field)
        yield _spooled(paths[0])


def _spooled(path: Path) -> Spooled:
    """The spooled file with its size, SHA-256 and first bytes (the key check reads its framing there)."""
    digest = hashlib.sha256()
    head = b""
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(uploads.CHUNK), b""):
            digest.update(chunk)
            if len(head) < HEAD_BYTES:
                head += chunk[: HEAD_BYTES - len(head)]
    return Spooled(path.stat().st_size, digest.hexdigest(), head, path=path)
