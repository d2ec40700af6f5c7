"""The physical limit: one process calling FHEModelServer.run in a loop.

Run as a separate process per setting, because OpenMP reads OMP_NUM_THREADS once
when the runtime starts: ``python -m bench.raw FOLDER --runs N`` prints JSON.
``--dump DIR`` also writes the keys and ciphertexts it used to DIR, for
``bench.raw_fhe``: the same loop in a process that imported only ``concrete.fhe``,
as a worker does.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def measure(folder: Path, runs: int, dump: Path | None = None) -> dict[str, float]:
    from concrete import fhe
    from concrete.ml.deployment import FHEModelClient, FHEModelServer

    server = FHEModelServer(str(folder))
    with tempfile.TemporaryDirectory() as key_dir:
        client = FHEModelClient(str(folder), key_dir=key_dir)
        client.generate_private_and_evaluation_keys()
        key_bytes = client.get_serialized_evaluation_keys()
        # Rows as the circuit takes them (already preprocessed): FHEModelClient alone applies no scaler.
        rows = np.load(folder / "samples.npz")["X_model"]
        inputs = [client.quantize_encrypt_serialize(rows[i % len(rows) : i % len(rows) + 1]) for i in range(runs)]
    if dump is not None:
        dump.mkdir(parents=True, exist_ok=True)
        (dump / "keys.bin").write_bytes(key_bytes)
        for i, ciphertext in enumerate(inputs):
            (dump / f"input-{i:05d}.bin").write_bytes(ciphertext)
    keys = fhe.EvaluationKeys.deserialize(key_bytes)
    server.run(inputs[0], keys)  # the first run decompresses the keys; the limit is the warm loop
    warm = _timed(lambda i: server.run(inputs[i], keys), runs)
    as_bytes = _timed(lambda i: server.run(inputs[i], key_bytes), runs)
    return {
        "raw_median_ms": statistics.median(warm),
        "raw_p95_ms": _p95(warm),
        "raw_jobs_per_s": 1000 / statistics.median(warm),
        "bytes_keys_median_ms": statistics.median(as_bytes),
    }


def _timed(call: object, runs: int) -> list[float]:
    times = []
    for i in range(runs):
        started = time.perf_counter()
        call(i)  # type: ignore[operator]
        times.append((time.perf_counter() - started) * 1000)
    return times


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--dump", type=Path, help="write the keys and ciphertexts used here")
    args = parser.parse_args()
    print(json.dumps(measure(args.folder, args.runs, args.dump)))


if __name__ == "__main__":
    main()
