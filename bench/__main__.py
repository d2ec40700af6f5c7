"""``python -m bench``: the service against raw Concrete-ML, side by side, in one run.

Prints a table and writes JSON (default ``build/bench/results.json``):
1. raw ``FHEModelServer.run`` with deserialized keys (the limit) and 2. with keys as
bytes on every call (how reference servers run), per model, in separate processes
(and the same loop with ``fhe.Server`` in a process with the worker's imports only);
3. the service end to end through HTTP, first job of a session and warm jobs;
4. throughput with concurrent clients against the raw loop's best thread setting, and
   with a key cache too small for every session everywhere: affinity against oldest first;
5. a large key upload: seconds and the web process's peak memory growth;
6. an expiry sweep over many sessions with tiny keys;
and what the worker's runtime import costs (concrete.fhe against concrete.ml), and a
batch job with its inputs side by side against one after the other.
``--quick`` runs a reduced version (the test suite runs it so that it cannot rot); ``--only storage``
runs part 5's storage comparison alone (blobs on the filesystem and on S3, side by side), and
``--only versus`` the default layout against the bare server (bench/versus.py) with the raw
loops and the default layout's throughput: the latency targets' figures in about 8 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# A database of its own (dropped and created again at every run) and a Redis database it flushes;
# MOAI_BENCH_DATABASE / MOAI_BENCH_REDIS_URL choose others where two runs share a machine.
DATABASE = os.environ.get("MOAI_BENCH_DATABASE", "moai_bench")
PG = f"postgres://postgres@127.0.0.1:5432/{DATABASE}"
REDIS = os.environ.get("MOAI_BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reduced sizes and counts (used by the tests)")
    parser.add_argument(
        "--only",
        choices=["storage", "versus"],
        help="one part alone: storage = the key upload and warm jobs with blobs on the filesystem and on S3; "
        "versus = MOAI's default layout against the bare server, with the raw loops and throughput",
    )
    parser.add_argument("--output", type=Path, help="default build/bench/results.json (results-PART.json with --only)")
    args = parser.parse_args()
    plan = Plan.quick() if args.quick else Plan.full()
    output = args.output or ROOT / "build" / "bench" / (f"results-{args.only}.json" if args.only else "results.json")
    data_dir = output.parent / ("data-quick" if args.quick else "data")
    services = _prepare_environment(data_dir)

    import django

    django.setup()
    from bench import measure, storage, versus

    results: dict[str, Any] = {"machine": _machine(), "services": services, "plan": plan.__dict__}
    if args.only == "storage":
        results.update(storage.run_alone(plan, data_dir))
    elif args.only == "versus":
        results.update(measure.run_versus(plan, data_dir))
    else:
        results.update(measure.run_all(plan, data_dir))
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2, default=str))
    if args.only == "storage":
        storage.print_lines(results["storage"])
    elif args.only == "versus":
        versus.print_lines(results["versus"], results["raw"], results["throughput"]["service_jobs_per_s"])
        verdicts = [f"{name}: {'met' if target['met'] else 'NOT met'}" for name, target in results["targets"].items()]
        print(f"targets: {', '.join(verdicts)}")
    else:
        measure.print_table(results)
    print(f"\nJSON written to {output}")
    missed = [name for name, target in results["targets"].items() if target.get("met") is False]
    if missed and not args.quick:
        print(f"targets missed: {', '.join(missed)}", file=sys.stderr)
        return 1
    # --quick runs too few jobs for its ratios to mean anything: it checks that every
    # measurement runs (the test suite's use), so a missed target does not fail it.
    return 0


class Plan:
    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)

    @classmethod
    def full(cls) -> Plan:
        return cls(
            models=["breast-cancer-logreg", "iris-tree", "wine-xgb"],
            raw_runs={"breast-cancer-logreg": 200, "iris-tree": 30, "wine-xgb": 7},
            warm_runs={"breast-cancer-logreg": 100, "iris-tree": 30, "wine-xgb": 7},
            first_job_sessions=5,
            batch_inputs={"iris-tree": 8, "wine-xgb": 4},
            batch_runs=3,
            throughput_model="iris-tree",
            throughput_seconds=30.0,
            upload_bytes=100 * 1024 * 1024,
            sweep_sessions=10_000,
        )

    @classmethod
    def quick(cls) -> Plan:
        return cls(
            models=["breast-cancer-logreg", "iris-tree"],
            raw_runs={"breast-cancer-logreg": 20, "iris-tree": 4},
            warm_runs={"breast-cancer-logreg": 10, "iris-tree": 3},
            first_job_sessions=2,
            batch_inputs={"iris-tree": 4},
            batch_runs=1,
            throughput_model="iris-tree",
            throughput_seconds=3.0,
            upload_bytes=10 * 1024 * 1024,
            sweep_sessions=300,
        )


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def _prepare_environment(data_dir: Path) -> dict[str, str]:
    """A fresh data folder and database; PostgreSQL and Redis when they are reachable."""
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    env = {
        "DJANGO_SETTINGS_MODULE": "moai_site.settings",
        "MOAI_DATA_DIR": str(data_dir),
        # Production settings, as the chart runs them (DEBUG off: no per-query debug records in
        # web and worker), with keys made for this run alone.
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_hex(32),
        "MOAI_AUDIT_KEY": secrets.token_hex(32),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "MOAI_LOG_LEVEL": "WARNING",
        # The benchmark is its only client: rate limits would measure themselves.
        "MOAI_RATE_LIMIT_SESSIONS": "100000/min",
        "MOAI_RATE_LIMIT_JOBS": "1000000/min",
        "MOAI_MAX_ACTIVE_SESSIONS_PER_CLIENT": "100000",
    }
    if _reachable("127.0.0.1", 5432) and _reachable("127.0.0.1", 6379):
        subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", DATABASE], check=True)
        subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", DATABASE], check=True)
        import redis

        redis.Redis.from_url(REDIS).flushdb()
        env.update({"DATABASE_URL": PG, "REDIS_URL": REDIS})
    else:
        os.environ.pop("DATABASE_URL", None)
        os.environ.pop("REDIS_URL", None)
    os.environ.update(env)
    return {"database": env.get("DATABASE_URL", "sqlite"), "broker": env.get("REDIS_URL", "filesystem")}


def _machine() -> dict[str, Any]:
    import psutil

    return {
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "processor": platform.processor() or platform.machine(),
        "python": sys.version.split()[0],
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


if __name__ == "__main__":
    sys.exit(main())
