"""Checks on uploaded evaluation keys, before any worker sees them.

Keys made for another model can abort the Concrete runtime (a Rust panic, not an
exception; DESIGN.md), so keys are accepted only when their size is exactly the
one recorded for the model at registration, their Cap'n Proto framing adds up
(checked in Python, base.streams), and they deserialize as Concrete evaluation keys
in a checker process under memory and time limits (keys.validator). None of the
checks needs, nor could use, a secret key.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from django.conf import settings

from base.streams import HEAD_BYTES, framing_problem
from base.uploads import Spooled
from keys.validator import CheckerBusy, KeyChecker

__all__ = [
    "CheckerBusy",
    "KeyCheckError",
    "check_declared_size",
    "check_evaluation_keys",
    "check_uploaded_keys",
    "checker",
    "chunk_fingerprints",
    "fingerprints_of",
    "shared_share",
]

logger = logging.getLogger(__name__)
checker = KeyChecker(settings.MOAI_KEY_CHECKS)

# Near-duplicates of revoked keys: a key set is fingerprinted per fixed-size chunk, and one
# sharing at least NEAR_DUPLICATE_SHARE of its chunks, in place, with a revoked set of the
# same model is refused. A fresh keygen shares none (its bytes are new randomness); a
# revoked set with a bit flipped or a few hundred bytes changed shares nearly all.
CHUNK_BYTES = 64 * 1024
DIGEST_BYTES = 8
NEAR_DUPLICATE_SHARE = 0.5


class KeyCheckError(ValueError):
    def __init__(self, code: str, message: str, **details: int) -> None:
        super().__init__(message)
        self.code = code
        self.details = details


def check_declared_size(actual: int, expected_bytes: int) -> None:
    """Refuse keys of the wrong size: from the declared Content-Length before reading, or the file after."""
    if actual == 0:
        raise KeyCheckError("invalid_evaluation_keys", "The body is empty; send the serialized evaluation keys.")
    if actual != expected_bytes:
        raise KeyCheckError(
            "evaluation_keys_mismatch",
            "These evaluation keys were not made for this model version (wrong size).",
            expected_bytes=expected_bytes,
            actual_bytes=actual,
        )


def check_evaluation_keys(path: Path, expected_bytes: int) -> None:
    """:func:`check_uploaded_keys` of a local file."""
    with path.open("rb") as handle:
        head = handle.read(HEAD_BYTES)
    check_uploaded_keys(Spooled(path.stat().st_size, "", head, path=path), expected_bytes)


def check_uploaded_keys(upload: Spooled, expected_bytes: int, constant_sha256: str = "") -> None:
    """Raises :class:`KeyCheckError` unless the upload holds this model's evaluation keys, and
    :class:`CheckerBusy` when every checker slot of this process stayed taken.

    ``constant_sha256`` is the digest of the keys every keygen makes for a model whose keys
    are constant: an upload with that digest is those very bytes (made by Concrete itself at
    registration), so no checker process is started for it. Anything else is checked in full.
    """
    check_declared_size(upload.size, expected_bytes)
    problem = framing_problem(upload.head, upload.size)
    if problem is not None:
        message = f"The body is not serialized Concrete evaluation keys: {problem}."
        raise KeyCheckError("invalid_evaluation_keys", message)
    if constant_sha256 and hmac.compare_digest(upload.sha256, constant_sha256):
        return
    memory = settings.MOAI_KEY_CHECK_MEMORY_FACTOR * expected_bytes + settings.MOAI_KEY_CHECK_BASE_MB * 1024 * 1024
    if upload.path is not None:
        verdict = checker.check(upload.path, memory, settings.MOAI_KEY_CHECK_SECONDS)
    else:
        # In object storage: the checker gets the bytes through a pipe, straight from the store;
        # only its capped stderr is a local file.
        verdict = checker.check_stream(
            upload.chunks(), upload.size, Path(tempfile.gettempdir()), memory, settings.MOAI_KEY_CHECK_SECONDS
        )
    if verdict.problem is not None or verdict.stderr_lines:
        # One line whatever the runtime printed: hostile bytes must not flood the logs.
        logger.warning(
            "evaluation key check",
            extra={
                "problem": verdict.problem,
                "stderr_lines": verdict.stderr_lines,
                "stderr_first": verdict.stderr_first,
            },
        )
    if verdict.problem is not None:
        raise KeyCheckError("invalid_evaluation_keys", "The body is not serialized Concrete evaluation keys.")


def chunk_fingerprints(path: Path) -> bytes:
    """One short digest per CHUNK_BYTES of the file, concatenated (8 bytes per 64 KiB)."""
    with path.open("rb") as stream:
        return fingerprints_of(iter(lambda: stream.read(CHUNK_BYTES), b""))


def fingerprints_of(pieces: Iterable[bytes]) -> bytes:
    """:func:`chunk_fingerprints` of bytes that come in pieces of any size."""
    digests = bytearray()
    pending = bytearray()
    for piece in pieces:
        pending += piece
        whole = len(pending) - len(pending) % CHUNK_BYTES
        for start in range(0, whole, CHUNK_BYTES):
            digests += hashlib.blake2b(pending[start : start + CHUNK_BYTES], digest_size=DIGEST_BYTES).digest()
        del pending[:whole]
    if pending:
        digests += hashlib.blake2b(pending, digest_size=DIGEST_BYTES).digest()
    return bytes(digests)


def shared_share(ours: bytes, theirs: bytes) -> float:
    """The share of chunks two key sets have in common at the same place (0.0 to 1.0)."""
    chunks = max(len(ours), len(theirs)) // DIGEST_BYTES
    common = min(len(ours), len(theirs)) // DIGEST_BYTES * DIGEST_BYTES
    if not chunks:
        return 0.0
    same = np.frombuffer(ours[:common], dtype=np.uint64) == np.frombuffer(theirs[:common], dtype=np.uint64)
    return float(same.sum()) / chunks
