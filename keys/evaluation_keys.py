"""Checks on uploaded evaluation keys, before any worker sees them.

Keys made for another model can abort the Concrete runtime (a Rust panic, not an
exception; DESIGN.md), so keys are accepted only when their size is exactly the
one recorded for the model at registration and they deserialize as Concrete
evaluation keys. Neither check needs, nor could use, a secret key.
"""

from __future__ import annotations

from pathlib import Path

from keys.validator import validator


class KeyCheckError(ValueError):
    def __init__(self, code: str, message: str, **details: int) -> None:
        super().__init__(message)
        self.code = code
        self.details = details


def check_evaluation_keys(path: Path, expected_bytes: int) -> None:
    actual = path.stat().st_size
    if actual == 0:
        raise KeyCheckError("invalid_evaluation_keys", "The body is empty; send the serialized evaluation keys.")
    if actual != expected_bytes:
        raise KeyCheckError(
            "evaluation_keys_mismatch",
            "These evaluation keys were not made for this model version (wrong size).",
            expected_bytes=expected_bytes,
            actual_bytes=actual,
        )
    problem = validator.check(path)
    if problem is not None:
        raise KeyCheckError("invalid_evaluation_keys", "The body is not serialized Concrete evaluation keys.")
