"""A bounded load test on loopback: many clients open sessions and submit jobs for a fixed time.

``python -m bench.load [--clients N] [--seconds S]`` starts its own web and worker on
a fresh database and prints JSON: jobs accepted, completed, failed, rate-limited,
lost (accepted but never ended: must be 0), wrong results (must be 0) and latency
percentiles. Requests go only to 127.0.0.1, and every loop stops by itself.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MODEL = "breast-cancer-logreg"
DRAIN_SECONDS = 60.0


def run_load(url: str, api_keys: list[str], samples: Path, key_root: Path, seconds: float) -> dict[str, Any]:
    from moai_client import MoaiApiError, MoaiClient, MoaiJobFailed

    data = np.load(samples)
    rows, expected = data["X"], [int(v) for v in data["clear_prediction"]]
    lock = threading.Lock()
    tally = {"accepted": 0, "completed": 0, "failed": 0, "rate_limited": 0, "wrong": 0, "sessions": 0}
    latencies: list[float] = []
    accepted_ids: list[str] = []
    errors: list[str] = []
    stop_at = time.monotonic() + seconds

    def client_loop(index: int) -> None:
        client = MoaiClient(url, api_keys[index], key_root / f"client-{index}", progress=False, timeout=60)
        session = None
        done = 0
        while time.monotonic() < stop_at:
            try:
                if session is None or done % 10 == 0:  # a fresh session now and then, as real owners do
                    if session is not None:
                        client.close_session(session.context_id)
                    session = client.open_session(MODEL)
                    with lock:
                        tally["sessions"] += 1
                row = done % len(rows)
                started = time.perf_counter()
                job = client.submit(session, session.encrypt(rows[row : row + 1]))
                with lock:
                    tally["accepted"] += 1
                    accepted_ids.append(job["job_id"])
                label = int(session.decrypt(client.outputs(job, timeout=120)).argmax(axis=1)[0])
                with lock:
                    tally["completed"] += 1
                    tally["wrong"] += label != expected[row]
                    latencies.append((time.perf_counter() - started) * 1000)
            except MoaiJobFailed:
                with lock:
                    tally["failed"] += 1
            except MoaiApiError as exc:
                if exc.code != "rate_limited":
                    raise
                with lock:
                    tally["rate_limited"] += 1
                time.sleep(float(exc.details.get("retry_after", 0.5) or 0.5))
            except Exception as exc:  # counted and shown, not lost with a dead thread
                with lock:
                    errors.append(f"client {index}: {exc!r}"[:300])
                time.sleep(0.5)
            done += 1

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(len(api_keys))]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + DRAIN_SECONDS + 120)
    elapsed = time.monotonic() - started
    tally["lost"] = _lost(url, api_keys, accepted_ids)
    tally["errors"] = len(errors)
    ordered = sorted(latencies)
    return {
        **tally,
        "error_samples": errors[:5],
        "clients": len(api_keys),
        "seconds": round(elapsed, 1),
        "jobs_per_s": tally["completed"] / elapsed,
        "latency_ms": {
            "p50": statistics.median(ordered) if ordered else None,
            "p95": ordered[int(0.95 * (len(ordered) - 1))] if ordered else None,
            "p99": ordered[int(0.99 * (len(ordered) - 1))] if ordered else None,
        },
    }


def _lost(url: str, api_keys: list[str], job_ids: list[str]) -> int:
    """Accepted jobs that have not ended once the load stopped and a drain period passed."""
    import requests

    deadline = time.monotonic() + DRAIN_SECONDS
    pending = set(job_ids)
    while pending and time.monotonic() < deadline:
        for job_id in list(pending):
            for key in api_keys:  # the job belongs to one of the clients; the others get 404
                response = requests.get(
                    f"{url}/api/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {key}"}, timeout=10
                )
                if response.status_code == 200:
                    if response.json()["status"] in ("succeeded", "failed", "cancelled"):
                        pending.discard(job_id)
                    break
        if pending:
            time.sleep(1)
    return len(pending)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--output", type=Path, default=ROOT / "build" / "bench" / "load.json")
    args = parser.parse_args()
    from bench.__main__ import _prepare_environment

    data_dir = args.output.parent / "data-load"
    _prepare_environment(data_dir)
    import django

    django.setup()
    from django.core.management import call_command

    from scripts.stack import Stack

    call_command("migrate", verbosity=0)
    call_command("build_demo_models", f"--only={MODEL}", stdout=io.StringIO())
    keys = []
    for index in range(args.clients):
        out = io.StringIO()
        call_command("create_client", f"load-{index}", stdout=out)
        keys.append(out.getvalue().strip().splitlines()[-1])
    with Stack({}, data_dir / "logs") as stack:
        result = run_load(stack.url, keys, data_dir / "demo" / MODEL / "samples.npz", data_dir / "keys", args.seconds)
    args.output.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
