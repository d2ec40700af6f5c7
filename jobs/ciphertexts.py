"""Checks on submitted ciphertexts, done in the web process before a job exists.

No native code reads a ciphertext in the web process: its size must be the model's
and its Cap'n Proto framing must add up (base.streams), both checked in Python. A
well-framed ciphertext of the right size costs the native deserializer no more than
its own bytes; if its content is still not a ciphertext of this model, the worker's
runtime refuses it and the job fails with ``invalid_ciphertext``, ending that job only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings
from django.http import HttpRequest

from base import uploads
from base.errors import ApiError
from base.streams import HEAD_BYTES, file_framing_problem, framing_problem
from jobs.services import JobInputs
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
    if uploads.is_raw(request):
        if declared not in (0, model.input_ciphertext_bytes):
            raise _size_mismatch(0, declared, model)
        return model.input_ciphertext_bytes
    limit = min(cap, max_inputs * (model.input_ciphertext_bytes + PART_OVERHEAD_BYTES) + PART_OVERHEAD_BYTES)
    uploads.declared_length(request, limit)
    return limit


@contextlib.contextmanager
def received_inputs(request: HttpRequest, model: ModelVersion, max_inputs: int, cap: int) -> Iterator[JobInputs]:
    """A job body's ciphertexts, checked: one raw ciphertext, or a multipart batch in ``inputs``.

    A raw one no larger than ``MOAI_INLINE_CIPHERTEXT_BYTES`` is read into memory: spooled, it
    was a temporary file written, read back for its framing, its digest and the broker message,
    and moved into storage, on the path of every single-input job. Any other body is spooled to
    local files, removed when the block ends.
    """
    limit = body_limit(request, model, max_inputs, cap)
    if uploads.is_raw(request) and limit <= settings.MOAI_INLINE_CIPHERTEXT_BYTES:
        contents = [uploads.body_bytes(request, limit)]
        check_contents(contents, model, max_inputs)
        yield JobInputs(contents=contents)
        return
    with uploads.spooled_inputs(request, "inputs", limit) as paths:
        check_inputs(paths, model, max_inputs)
        yield JobInputs(paths)


def check_inputs(paths: list[Path], model: ModelVersion, max_inputs: int) -> None:
    """Spooled ciphertexts: their number, then each one's size and framing (its header read from its file)."""
    _check_count(len(paths), max_inputs)
    for index, path in enumerate(paths):
        _check_size(index, path.stat().st_size, model)
        _check_framing(index, file_framing_problem(path))


def check_contents(contents: list[bytes], model: ModelVersion, max_inputs: int) -> None:
    """Ciphertexts held in memory, checked as :func:`check_inputs` checks files."""
    _check_count(len(contents), max_inputs)
    for index, data in enumerate(contents):
        _check_size(index, len(data), model)
        _check_framing(index, framing_problem(data[:HEAD_BYTES], len(data)))


def _check_count(count: int, max_inputs: int) -> None:
    if not count:
        raise ApiError(400, "invalid_ciphertext", "No ciphertext was sent.")
    if count > max_inputs:
        raise ApiError(413, "payload_too_large", f"At most {max_inputs} inputs per job.", limit_inputs=max_inputs)


def _check_size(index: int, actual: int, model: ModelVersion) -> None:
    if actual == 0:
        raise ApiError(400, "invalid_ciphertext", f"Input {index} is empty.", index=index)
    if actual != model.input_ciphertext_bytes:
        raise _size_mismatch(index, actual, model)


def _check_framing(index: int, problem: str | None) -> None:
    if problem is not None:
        raise ApiError(
            400, "invalid_ciphertext", f"Input {index} is not a serialized Concrete ciphertext: {problem}.", index=index
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
