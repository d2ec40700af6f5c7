"""Checks on submitted ciphertexts, done in the web process before a job exists."""

from __future__ import annotations

from pathlib import Path

from inference.models import ModelVersion
from ops.errors import ApiError


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
            raise ApiError(
                400,
                "ciphertext_size_mismatch",
                f"Input {index} is {actual} bytes; {model} takes ciphertexts of exactly "
                f"{model.input_ciphertext_bytes} bytes.",
                expected_bytes=model.input_ciphertext_bytes,
                actual_bytes=actual,
                index=index,
            )
    from concrete import fhe  # deferred: importing the runtime takes seconds

    for index, path in enumerate(paths):
        try:
            fhe.Value.deserialize(path.read_bytes())
        except Exception:  # RuntimeError from the runtime; anything else means the same
            raise ApiError(
                400, "invalid_ciphertext", f"Input {index} is not a serialized Concrete ciphertext.", index=index
            ) from None
