"""Checks on submitted ciphertexts, done in the web process before a job exists.

No native code reads a ciphertext in the web process: its size must be the model's
and its Cap'n Proto framing must add up (base.streams), both checked in Python. A
well-framed ciphertext of the right size costs the native deserializer no more than
its own bytes; if its content is still not a ciphertext of this model, the worker's
runtime refuses it and the job fails with ``invalid_ciphertext``, ending that job only.
"""

from __future__ import annotations

from pathlib import Path

from django.http import HttpRequest

from base import uploads
from base.errors import ApiError
from base.streams import file_framing_problem
from registry.models import ModelVersion

# A multipart part's boundary and headers (name, filename, type) next to its ciphertext;
# clients send a few dozen bytes, this leaves room for long file names.
PART_OVERHEAD_BYTES = 1024


def body_limit(request: HttpRequest, model: ModelVersion, max_inputs: int, cap: int) -> int:
    """The most bytes a job body for ``model`` may have, refusing a declared length over it before reading.

    A single raw ciphertext must declare exactly the model's ciphertext size; a
    multipart batch at most ``max_inputs`` ciphertexts and their part headers.
    """
    declared = uploads.declared_length(request, cap)
    content_type = request.content_type or ""
    if content_type in ("application/octet-stream", ""):
        if declared not in (0, model.input_ciphertext_bytes):
            raise _size_mismatch(0, declared, model)
        return model.input_ciphertext_bytes
    limit = min(cap, max_inputs * (model.input_ciphertext_bytes + PART_OVERHEAD_BYTES) + PART_OVERHEAD_BYTES)
    uploads.declared_length(request, limit)
    return limit


def check_inputs(paths: list[Path], model: ModelVersion, max_inputs: int) -> None:
    if not paths:
        raise ApiError(400, "invalid_ciphertext", "No ciphertext was sent.")
    if len(paths) > max_inputs:
        raise ApiError(413, "payload_too_large", f"At most {max_inputs} inputs per job.", limit_inputs=max_inputs)
    for index, path in enumerate(paths):
        actual = path.stat().st_size
        if actual == 0:
            raise ApiError(400, "invalid_ciphertext", f"Input {index} is empty.", index=index)
        if actual != model.input_ciphertext_bytes:
            raise _size_mismatch(index, actual, model)
        problem = file_framing_problem(path)
        if problem is not None:
            raise ApiError(
                400,
                "invalid_ciphertext",
                f"Input {index} is not a serialized Concrete ciphertext: {problem}.",
                index=index,
            )


def _size_mismatch(index: int, actual: int, model: ModelVersion) -> ApiError:
    return ApiError(
        400,
        "ciphertext_size_mismatch",
        f"Input {index} is {actual} bytes; {model} takes ciphertexts of exactly {model.input_ciphertext_bytes} bytes.",
        expected_bytes=model.input_ciphertext_bytes,
        actual_bytes=actual,
        index=index,
    )
