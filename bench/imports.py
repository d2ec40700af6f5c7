"""What the worker's choice of runtime import costs: ``concrete.fhe`` alone against
``concrete.ml.deployment``. Both bring torch (``concrete.fhe``'s extensions import it);
``concrete.ml`` adds scikit-learn, ONNX and the rest of its training stack.

Each way runs in a fresh interpreter, as a worker's pool process would start:
import, then load the model's ``server.zip``. ``python -m bench.imports FOLDER WAY``
prints JSON with the seconds and resident memory after each step.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import psutil

WAYS = ("concrete-fhe", "concrete-ml")


def measure(folder: Path, way: str) -> dict[str, float | bool]:
    process = psutil.Process()
    started = time.perf_counter()
    if way == "concrete-fhe":
        from concrete import fhe

        imported = time.perf_counter()
        rss_imported = process.memory_info().rss
        fhe.Server.load(folder / "server.zip")
    else:
        from concrete.ml.deployment import FHEModelServer

        imported = time.perf_counter()
        rss_imported = process.memory_info().rss
        FHEModelServer(str(folder)).load()
    loaded = time.perf_counter()
    return {
        "import_s": imported - started,
        "import_and_load_s": loaded - started,
        "rss_after_import_mib": rss_imported / 2**20,
        "rss_after_load_mib": process.memory_info().rss / 2**20,
        "torch_imported": "torch" in sys.modules,
        "sklearn_imported": "sklearn" in sys.modules,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path)
    parser.add_argument("way", choices=WAYS)
    args = parser.parse_args()
    print(json.dumps(measure(args.folder, args.way)))


if __name__ == "__main__":
    main()
