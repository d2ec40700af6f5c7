"""The benchmark runs in a reduced mode in every test run, so that it cannot rot.

Figures are not asserted against targets here (this machine is shared and noisy);
the full run (`python -m bench`) reports them. What is checked is that every
measurement ran and produced a sane number.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.e2e
def test_reduced_benchmark_measures_everything(tmp_path):
    output = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--output", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env={k: v for k, v in __import__("os").environ.items() if k != "DJANGO_SETTINGS_MODULE"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(output.read_text())
    assert "svc/raw" in done.stdout
    for model in ("breast-cancer-logreg", "iris-tree"):
        raw = results["raw"][model]["threads_all"]
        service = results["service"][model]
        assert 0 < raw["raw_median_ms"] < service["warm_median_ms"]  # the service cannot beat its own limit
        assert raw["bytes_keys_median_ms"] > 0
        fhe_only = results["raw"][model]["fhe_only"]
        assert fhe_only["fhe_median_ms"] > 0
        assert fhe_only["concrete_ml_imported"] is False
        assert service["cold_ms"] >= service["warm_median_ms"] * 0.5
    assert results["throughput"]["jobs"] > 0
    assert 0 < results["throughput"]["ratio"] < 1.5
    assert results["upload"]["mb_per_s"] > 0
    assert results["upload"]["real_keys"]["bytes"] == 33_751_672
    near = results["upload"]["real_keys"]["near_copy"]
    assert 0 < near["before_s"] < near["after_s"]
    assert "near-copy check" in done.stdout
    for label in ("affinity", "oldest_first"):
        assert results["affinity"][label]["jobs"] > 0
        assert results["affinity"][label]["key_cache_misses"] >= 0
    batch = results["batch"]["iris-tree"]
    assert batch["side_by_side"]["median_ms"] > 0
    assert batch["one_after_the_other"]["median_ms"] > 0
    fhe, ml = results["imports"]["concrete-fhe"], results["imports"]["concrete-ml"]
    # concrete.fhe brings torch too (its extensions import it); concrete.ml adds scikit-learn.
    assert (fhe["sklearn_imported"], ml["sklearn_imported"]) == (False, True)
    assert fhe["import_and_load_s"] > 0
    assert "worker runtime import" in done.stdout
    assert results["sweep"]["expired"] == results["sweep"]["sessions"]
    assert results["sweep"]["key_files_left"] == 0
    assert all("met" in t for name, t in results["targets"].items() if name != "iris-tree")
    assert not any(isinstance(v, float) and math.isnan(v) for v in results["throughput"].values())
