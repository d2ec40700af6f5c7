"""The raw loop in a process that imported only ``concrete.fhe``, as a worker's pool process.

``python -m bench.raw_fhe FOLDER DUMP --runs N``: ``fhe.Server.load`` of FOLDER's
``server.zip``, the keys and ciphertexts ``bench.raw --dump DUMP`` wrote, deserialized
keys, one warm-up run, then N timed runs. Prints JSON. Set apart from ``bench.raw``
(``FHEModelServer`` in a process that imported ``concrete.ml``), so that the two limits
can be compared.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from bench.raw import _p95, _timed


def measure(folder: Path, dump: Path, runs: int) -> dict[str, float | bool]:
    from concrete import fhe

    server = fhe.Server.load(folder / "server.zip")
    keys = fhe.EvaluationKeys.deserialize((dump / "keys.bin").read_bytes())
    inputs = [path.read_bytes() for path in sorted(dump.glob("input-*.bin"))]

    def run(i: int) -> bytes:
        value = fhe.Value.deserialize(inputs[i % len(inputs)])
        output: bytes = server.run(value, evaluation_keys=keys).serialize()
        return output

    run(0)
    warm = _timed(run, runs)
    return {
        "fhe_median_ms": statistics.median(warm),
        "fhe_p95_ms": _p95(warm),
        "concrete_ml_imported": "concrete.ml" in sys.modules,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path)
    parser.add_argument("dump", type=Path)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    print(json.dumps(measure(args.folder, args.dump, args.runs)))


if __name__ == "__main__":
    main()
