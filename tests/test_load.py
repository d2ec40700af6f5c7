"""A short bounded load on loopback against real gunicorn and Celery: nothing lost, nothing wrong."""

from __future__ import annotations

import pytest

from bench.load import run_load

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_short_load_loses_and_corrupts_nothing(stack, make_tenant, logreg, bundles, tmp_path):
    keys = [make_tenant(f"load-{i}").api_key for i in range(4)]
    samples = tmp_path / "samples.npz"
    import numpy as np

    np.savez(samples, **bundles["breast-cancer-logreg"].samples)
    result = run_load(stack.url, keys, samples, tmp_path / "keys", seconds=6)
    assert result["accepted"] > 0
    assert result["errors"] == 0, result["error_samples"]
    assert result["completed"] == result["accepted"] - result["failed"]
    assert (result["lost"], result["wrong"], result["failed"]) == (0, 0, 0)
    assert result["sessions"] >= 4
    assert result["latency_ms"]["p50"] > 0
