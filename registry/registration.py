"""Measuring an ``FHEModelDev`` export before it is registered.

One throwaway keygen gives the exact evaluation-key and ciphertext sizes the
model expects (they are the same for every keygen and input, DESIGN.md), and one
run proves that ``client.zip`` and ``server.zip`` belong together. A second run with
the same keys shows what their first use cost (jobs.warmup weighs it).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from base import exit_status
from base.tempdirs import tempfiles_in

# Keys that carry bootstrapping or key-switching material are megabytes and random;
# only tiny ones are worth a second keygen to see whether they are always the same.
SMALL_KEYS_BYTES = 4096


class BundleError(ValueError):
    """The folder is not a usable FHEModelDev export."""


@dataclass(frozen=True)
class BundleFacts:
    evaluation_keys_bytes: int
    input_ciphertext_bytes: int
    output_ciphertext_bytes: int
    input_features: int
    server_sha256: str
    # Some circuits (linear models: no bootstrapping) need no evaluation-key material:
    # every keygen then serializes to the same bytes, and keys cannot be told apart.
    evaluation_keys_constant: bool
    # The digest of those constant keys; "" when keys differ per keygen.
    evaluation_keys_sha256: str = ""
    # The zeros encrypted under the throwaway key (deleted with it): a session's warm-up input.
    warmup_input: bytes = b""
    # The constant keys themselves (b"" when keys differ per keygen): public, and the same for everyone.
    constant_keys: bytes = b""
    # The first run with fresh keys, which decompresses them, and the next run with the same
    # keys (ms): what a session's first job pays beyond a warm one, and what a warm-up costs.
    first_run_ms: float = 0.0
    warm_run_ms: float = 0.0


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _input_features(program_info_json: str) -> int:
    """Number of features of the one encrypted input, from the circuit's abstract shape (1, n)."""
    circuits = json.loads(program_info_json)["circuits"]
    inputs = circuits[0]["inputs"] if len(circuits) == 1 else []
    if len(inputs) != 1 or "lweCiphertext" not in inputs[0]["typeInfo"]:
        raise BundleError("only models with a single encrypted input are supported")
    shape = inputs[0]["typeInfo"]["lweCiphertext"]["abstractShape"]["dimensions"]
    if len(shape) != 2 or shape[0] != 1:
        raise BundleError(f"expected one sample per ciphertext (shape (1, n)), got {tuple(shape)}")
    return int(shape[1])


def measure_bundle(folder: Path) -> BundleFacts:
    for name in ("client.zip", "server.zip"):
        if not (folder / name).is_file():
            raise BundleError(f"{folder} has no {name}: pass a folder written by FHEModelDev(...).save()")
    import numpy as np
    from concrete import fhe
    from concrete.ml.deployment import FHEModelClient, FHEModelServer

    try:
        # Loading the server leaves folders of the runtime's own behind (base.tempdirs): in this one.
        with tempfile.TemporaryDirectory(prefix="moai-measure-") as scratch, tempfiles_in(Path(scratch)):
            server = FHEModelServer(str(folder))
            key_dir = tempfile.mkdtemp(prefix="moai-keygen-")
            client = FHEModelClient(str(folder), key_dir=key_dir)
            n_features = _input_features(client.client.specs.program_info.serialize())
            client.generate_private_and_evaluation_keys()
            keys = client.get_serialized_evaluation_keys()
            ciphertext = client.quantize_encrypt_serialize(np.zeros((1, n_features)))
            deserialized = fhe.EvaluationKeys.deserialize(keys)
            first_run_ms, output = _timed_ms(server.run, ciphertext, deserialized)
            warm_run_ms, _ = _timed_ms(server.run, ciphertext, deserialized)
            exit_status.ignore_sigpipe()
            constant = len(keys) <= SMALL_KEYS_BYTES and keys == _second_keygen(folder)
    except BundleError:
        raise
    except Exception as exc:
        raise BundleError(f"the bundle in {folder} cannot be loaded and run: {exc}") from exc
    if not isinstance(ciphertext, bytes) or not isinstance(output, bytes):
        raise BundleError("the model takes or returns several ciphertexts per sample; not supported")
    return BundleFacts(
        evaluation_keys_bytes=len(keys),
        input_ciphertext_bytes=len(ciphertext),
        output_ciphertext_bytes=len(output),
        input_features=n_features,
        server_sha256=sha256_file(folder / "server.zip"),
        evaluation_keys_constant=constant,
        evaluation_keys_sha256=hashlib.sha256(keys).hexdigest() if constant else "",
        warmup_input=ciphertext,
        constant_keys=keys if constant else b"",
        first_run_ms=first_run_ms,
        warm_run_ms=warm_run_ms,
    )


def _timed_ms(run: Callable[..., Any], *args: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = run(*args)
    return (time.perf_counter() - started) * 1000, result


def _second_keygen(folder: Path) -> bytes:
    from concrete.ml.deployment import FHEModelClient

    with tempfile.TemporaryDirectory(prefix="moai-keygen-") as key_dir:
        client = FHEModelClient(str(folder), key_dir=key_dir)
        client.generate_private_and_evaluation_keys()
        keys: bytes = client.get_serialized_evaluation_keys()
        return keys
