"""Blob storage side by side: the filesystem against an S3 bucket (moto's server on loopback).

For each backend, a web and worker stack on the same database: a key upload of
``plan.upload_bytes`` that is read whole (a model version registered for keys of that
size; the body is framed as a key set but is not one, so it goes through every check,
the checker process included, and is refused at the end), the web processes' peak
memory growth meanwhile (after the same path has run on small bodies, so that what a process
loads once is not counted), and warm job latency (keys from the worker's cache).
"""

from __future__ import annotations

import struct
import time
from pathlib import Path
from typing import Any

import psutil
import requests
from django.conf import settings

BIG_KEYS_MODEL = "bench-big-keys"
WARM_UP_MODEL = "bench-warm-up-keys"
WARM_UP_BYTES = 1024 * 1024


def side_by_side(plan: Any, api_key: str, folders: dict[str, Path], data_dir: Path) -> dict[str, Any]:
    from bench.measure import _PeakRss, _service_latency, _stack
    from scripts.s3local import LocalS3

    _register_keys_model(BIG_KEYS_MODEL, plan.models[0], plan.upload_bytes)
    _register_keys_model(WARM_UP_MODEL, plan.models[0], WARM_UP_BYTES)
    body = _framed_body(plan.upload_bytes)
    model = plan.models[0]
    results: dict[str, Any] = {}
    with LocalS3(data_dir / "moto.log") as s3:
        _copy_blobs(s3, Path(settings.MOAI_DATA_DIR) / "blobs")
        for backend, env in (("filesystem", {}), ("s3", s3.env())):
            with _stack(data_dir / f"logs-storage-{backend}", pool=1, **env) as stack:
                web = psutil.Process(stack.processes["web"].pid)
                workers = [child.pid for child in web.children()]
                headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/octet-stream"}
                url = f"{stack.url}/api/v1/models/{BIG_KEYS_MODEL}/sessions"
                # The same path on a small body first, a few times so that every gunicorn process
                # has loaded what it uses once for good (boto3's service models: tens of MiB).
                small = _framed_body(WARM_UP_BYTES)
                for _ in range(4):
                    requests.post(
                        f"{stack.url}/api/v1/models/{WARM_UP_MODEL}/sessions", data=small, headers=headers, timeout=60
                    )
                with _PeakRss(workers) as rss:
                    started = time.perf_counter()
                    response = requests.post(url, data=body, headers=headers, timeout=900)
                    seconds = time.perf_counter() - started
                if response.status_code != 400 or response.json()["error"]["code"] != "invalid_evaluation_keys":
                    raise RuntimeError(f"the {backend} upload was not read and checked whole: {response.text[:200]}")
                latency = _service_latency(stack.url, api_key, model, folders[model], plan, data_dir)
            results[backend] = {
                "upload_bytes": len(body),
                "upload_seconds": seconds,
                "upload_mb_per_s": len(body) / 1e6 / seconds,
                "web_peak_growth_mib": rss.growth_mib(),
                "model": model,
                "warm_median_ms": latency["warm_median_ms"],
                "warm_p95_ms": latency["warm_p95_ms"],
            }
        left = s3.client().list_objects_v2(Bucket="moai-blobs", Prefix="keys/").get("KeyCount", 0)
        results["s3"]["keys_objects_left"] = left
    return results


def run_alone(plan: Any, data_dir: Path) -> dict[str, Any]:
    """``python -m bench --only storage``: what :func:`side_by_side` needs (one demo model, a client), then it."""
    import io

    from django.core.management import call_command

    model = plan.models[0]
    call_command("migrate", verbosity=0)
    call_command("build_demo_models", f"--only={model}", stdout=io.StringIO())
    out = io.StringIO()
    call_command("create_client", "bench", stdout=out)
    api_key = out.getvalue().strip().splitlines()[-1]
    results = side_by_side(plan, api_key, {model: data_dir / "demo" / model}, data_dir)
    return {"storage": results, "targets": {"storage": targets(results)}}


def _register_keys_model(name: str, template: str, key_bytes: int) -> None:
    """A copy of a demo model's registration that takes keys of ``key_bytes``: only admission reads it."""
    from registry.models import ModelVersion

    source = ModelVersion.objects.filter(name=template).order_by("-version").first()
    assert source is not None
    ModelVersion.objects.filter(name=name).delete()
    source.pk = None
    source.name = name
    source.version = 1
    source.evaluation_keys_bytes = key_bytes
    source.evaluation_keys_constant = False
    source.evaluation_keys_sha256 = ""
    source.constant_keys = ""
    source.save()


def _framed_body(size: int) -> bytes:
    """``size`` bytes that pass the Cap'n Proto framing check (one segment filling the body) but hold no keys."""
    if size % 8:
        raise ValueError("a framed body is a whole number of 8-byte words")
    return struct.pack("<II", 0, (size - 8) // 8) + b"\xa5" * (size - 8)


def _copy_blobs(s3: Any, folder: Path) -> None:
    """The registered models' files, put in the bucket under the names the database has for them."""
    client = s3.client()
    for path in sorted((folder / "models").rglob("*")):
        if path.is_file():
            client.upload_file(str(path), "moai-blobs", path.relative_to(folder).as_posix())


def targets(results: dict[str, Any]) -> dict[str, Any]:
    s3, fs = results["s3"], results["filesystem"]
    return {
        "met": s3["web_peak_growth_mib"] < 64 and s3["keys_objects_left"] == 0,
        "target": "S3 key upload: web growth < 64 MiB, nothing left in the bucket",
        "warm_s3_over_filesystem": s3["warm_median_ms"] / fs["warm_median_ms"],
    }


def print_lines(results: dict[str, Any]) -> None:
    for backend in ("filesystem", "s3"):
        row = results[backend]
        print(
            f"blobs on {backend:<10}: {row['upload_bytes'] / 2**20:.0f} MiB key upload read and checked in "
            f"{row['upload_seconds']:.2f} s ({row['upload_mb_per_s']:.0f} MB/s), web peak growth "
            f"{row['web_peak_growth_mib']:.1f} MiB; warm {row['model']} jobs median {row['warm_median_ms']:.1f} ms, "
            f"p95 {row['warm_p95_ms']:.1f} ms"
        )
    ratio = results["s3"]["warm_median_ms"] / results["filesystem"]["warm_median_ms"]
    left = results["s3"]["keys_objects_left"]
    print(f"warm jobs on S3 / on the filesystem: {ratio:.3f}; key objects left in the bucket: {left}")
