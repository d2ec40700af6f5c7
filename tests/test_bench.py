"""The benchmark runs in a reduced mode in every test run, so that it cannot rot.

Figures are not asserted against timing targets here (this machine is shared and
noisy, and a quick run is too short for its ratios to mean anything); the full run
(`python -m bench`) fails on a missed target. What is checked is that every
measurement ran and produced a sane number, that each target's verdict says what
its figures say, and the one target that is not a speed: the web process streams
uploads instead of holding them.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.e2e
def test_reduced_benchmark_measures_everything(tmp_path, bundles):
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
        assert raw["raw_median_ms"] > 0
        assert service["warm_median_ms"] > 0
        if model == "breast-cancer-logreg":
            # The service cannot beat its own limit. Asserted where the service's own costs are
            # ten times the circuit's (3 ms); iris-tree's three runs of a 150-250 ms circuit on
            # two shared cores were seen below the raw loop's median at load 6.
            assert raw["raw_median_ms"] < service["warm_median_ms"]
        assert raw["bytes_keys_median_ms"] > 0
        fhe_only = results["raw"][model]["fhe_only"]
        assert fhe_only["fhe_median_ms"] > 0
        assert fhe_only["concrete_ml_imported"] is False
        assert service["cold_ms"] >= service["warm_median_ms"] * 0.5
    assert results["throughput"]["jobs"] > 0
    # The service cannot run more circuits at once than the host has cores, each at most as fast
    # as the one-thread raw loop (the pool's layout: a process per core, one thread each). The
    # ratio is against the raw loop's best thread setting, so up to the core count is possible
    # where a circuit scales poorly over threads (1.86 seen on 2 cores); 25% for a 3-s loop's noise.
    one_thread = results["raw"][results["throughput"]["model"]]["threads_1"]["raw_jobs_per_s"]
    assert 0 < results["throughput"]["service_jobs_per_s"] < 1.25 * (os.cpu_count() or 1) * one_thread
    assert results["upload"]["mb_per_s"] > 0
    real_keys = results["upload"]["real_keys"]
    assert real_keys["bytes"] == bundles[real_keys["model"]].facts.evaluation_keys_bytes
    near = results["upload"]["real_keys"]["near_copy"]
    assert 0 < near["before_s"] < near["after_s"]
    assert "near-copy check" in done.stdout
    for label in ("affinity", "oldest_first"):
        measured = results["affinity"][label]
        assert measured["jobs"] > 0
        # Read from the worker's metrics: a job loads its keys at most once, so more loads than jobs is a miscount.
        assert 0 <= measured["key_cache_misses"] <= measured["jobs"]
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
    targets, upload = results["targets"], results["upload"]
    assert targets["breast-cancer-logreg"]["met"] == (targets["breast-cancer-logreg"]["added_ms"] <= 30)
    assert targets["throughput"]["met"] == (results["throughput"]["ratio"] >= 0.9)
    assert targets["upload"]["met"] == (upload["web_peak_growth_mib"] < 64 and upload["mb_per_s"] >= 200)
    assert targets["sweep"]["met"] == (results["sweep"]["seconds"] < 10)
    assert upload["web_peak_growth_mib"] < 64
    assert not any(isinstance(v, float) and math.isnan(v) for v in results["throughput"].values())


def test_the_publish_comparison_sends_both_ways_and_leaves_no_queue(settings):
    """``python -m bench.publish`` on the tests' Redis: both ways measured, its queue gone after."""
    if not settings.REDIS_URL:
        pytest.skip("the direct push needs Redis as the broker")
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["MOAI_BENCH_REDIS_URL"] = settings.REDIS_URL
    done = subprocess.run(
        [sys.executable, "-m", "bench.publish", "--messages", "40"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    assert measured["messages_each_way"] == 40
    assert measured["celery_delay_cpu_ms"] > 0
    assert measured["direct_push_cpu_ms"] > 0
    assert measured["cpu_ratio"] == measured["direct_push_cpu_ms"] / measured["celery_delay_cpu_ms"]
    from base.redis_client import shared_redis

    assert not shared_redis().exists("moai-bench-publish")


def test_the_latency_targets_judge_logreg_by_raw_plus_ten_ms_and_the_rest_by_the_bare_server():
    """The verdicts of ``bench.versus.targets`` on figures made up for the purpose (no run)."""
    from bench import versus

    def run(logreg_ms: float, iris_ms: float, first_ms: float) -> dict:
        measured = {
            "models": {
                "breast-cancer-logreg": {
                    "bare_warm_median_ms": 5.0,
                    "moai_warm_median_ms": logreg_ms,
                    "moai_first_median_ms": first_ms,
                },
                "iris-tree": {
                    "bare_warm_median_ms": 1000.0,
                    "moai_warm_median_ms": iris_ms,
                    "moai_first_median_ms": iris_ms,
                },
            },
            "first_upload": {"max_ms": 20.0},
            "web_pss_mib": 300.0,
        }
        raw = {"breast-cancer-logreg": {"threads_all": {"raw_median_ms": 4.0}}}
        return versus.targets(measured, raw, 9.0)

    # 2.75x the bare server but 9 ms over raw: logreg's bar is raw + 10 ms.
    checks = run(13.0, 150.0, 13.0)
    assert checks["versus_bare_breast-cancer-logreg"]["met"] is True
    assert checks["versus_bare_breast-cancer-logreg"]["added_over_raw_ms"] == 9.0
    assert checks["versus_bare_iris-tree"]["met"] is True
    assert run(14.5, 150.0, 14.5)["versus_bare_breast-cancer-logreg"]["met"] is False  # 10.5 ms over raw
    assert run(13.0, 150.0, 19.6)["versus_bare_breast-cancer-logreg"]["met"] is False  # first job 1.51x warm
    assert run(13.0, 1001.0, 13.0)["versus_bare_iris-tree"]["met"] is False  # 1.001x the bare server
