"""MOAI as the README runs it against a bare single-process server (bench/bare.py).

Same models, same evaluation keys, same ciphertexts, measured from the client's side:
from sending a ciphertext to holding its output bytes. MOAI runs its default layout
(gunicorn with 2 workers, a Celery worker with one pool process per core, PostgreSQL,
Redis) and the client library's one-request submission (``POST .../jobs?wait=``).
"""

from __future__ import annotations

import contextlib
import json
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import requests

from base.folders import worker_status_path
from scripts.stack import ROOT, Stack, free_port

FIRST_UPLOAD_MODEL = "breast-cancer-logreg"


def side_by_side(stack: Stack, api_key: str, plan: Any, folders: dict[str, Path], data_dir: Path) -> dict[str, Any]:
    """``stack`` must be fresh: the first key upload it sees is measured first."""
    from moai_client import MoaiClient

    client = MoaiClient(stack.url, api_key, data_dir / "versus-keys", progress=False, timeout=120)
    measured: dict[str, Any] = {"first_upload": _first_upload(stack, client, api_key), "models": {}}
    # A session's first job is measured on a running service: its pool processes have loaded
    # the circuits they load at start (jobs.warmup), as they have long before a user comes.
    measured["preload_s"] = _wait_for_preload(stack)
    with _bare(folders) as bare_url:
        bare = requests.Session()
        for model in plan.models:
            measured["models"][model] = _model(client, bare, bare_url, model, folders[model], plan)
        measured["bare_throughput"] = _bare_throughput(bare_url, client, plan, folders)
        measured["bare_pss_mib"] = measured["bare_throughput"].pop("pss_mib")
    measured["web_pss_mib"] = _pss_mib([stack.processes["web"].pid])
    measured["web_processes"] = len(_tree([stack.processes["web"].pid]))
    return measured


def _wait_for_preload(stack: Stack, timeout: float = 300.0) -> float:
    """Seconds until every pool process has loaded the active circuits, as its status file says
    (jobs.worker: the bench runs the worker at WARNING, which logs no such line)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if len(_pool_processes_loaded(stack)) >= stack.concurrency:
            break
        time.sleep(0.2)
    return time.monotonic() - started


def _pool_processes_loaded(stack: Stack) -> list[int]:
    """The worker's pool processes whose status file says they have loaded the circuits."""
    loaded = []
    for child in _tree([stack.processes["worker"].pid])[1:]:
        path = worker_status_path(stack.data_dir, socket.gethostname(), child.pid, "json")
        try:
            if json.loads(path.read_text()).get("models_loaded_at"):
                loaded.append(child.pid)
        except (OSError, ValueError):
            continue  # not written yet, or being replaced
    return loaded


def _first_upload(stack: Stack, client: Any, api_key: str) -> dict[str, Any]:
    """The first session opened on fresh web processes: the key checker must already be up."""
    session = client.open_session(FIRST_UPLOAD_MODEL)  # keygen (cached after this) and the first upload
    client.close_session(session.context_id)
    keys = session.fhe.get_serialized_evaluation_keys()
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/octet-stream"}
    # gunicorn has 2 workers: two more uploads reach both, each timed.
    times = []
    for _ in range(2):
        started = time.perf_counter()
        response = requests.post(f"{stack.url}/api/v1/models/{FIRST_UPLOAD_MODEL}/sessions", data=keys, headers=headers)
        times.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
        client.close_session(response.json()["context_id"])
    return {"model": FIRST_UPLOAD_MODEL, "bytes": len(keys), "max_ms": max(times), "times_ms": times}


def _model(client: Any, bare: requests.Session, bare_url: str, model: str, folder: Path, plan: Any) -> dict[str, Any]:
    rows = np.load(folder / "samples.npz")["X"]
    warm_runs = plan.warm_runs[model]
    warmup = client.open_session(model)  # the keygen, cached in the key folder for the timed session
    client.close_session(warmup.context_id)
    started = time.perf_counter()
    session = client.open_session(model)
    open_ms = (time.perf_counter() - started) * 1000
    ciphertexts = session.encrypt(rows)
    keys = session.fhe.get_serialized_evaluation_keys()

    def moai(i: int) -> float:
        began = time.perf_counter()
        client.run_one(session, ciphertexts[i % len(ciphertexts)], timeout=600)
        return (time.perf_counter() - began) * 1000

    moai_first = moai(0)
    moai_warm = [moai(i) for i in range(warm_runs)]
    client.close_session(session.context_id)
    # One first job is one sample, compared with the median of many warm ones: the first jobs of
    # more fresh sessions give the median the target compares (the first of them, the first job
    # this service ever ran, is also shown alone).
    first_jobs = [moai_first]
    for _ in range(plan.first_job_sessions - 1):
        fresh = client.open_session(model)
        # Encrypted before the clock starts, as every other job here: the target compares the
        # service's time with the same session's warm jobs, not the client's encryption.
        ciphertext = fresh.encrypt(rows[:1])[0]
        began = time.perf_counter()
        client.run_one(fresh, ciphertext, timeout=600)
        first_jobs.append((time.perf_counter() - began) * 1000)
        client.close_session(fresh.context_id)

    began = time.perf_counter()
    uid = bare.post(f"{bare_url}/{model}/add_key", data=keys).json()["uid"]
    bare_open_ms = (time.perf_counter() - began) * 1000

    def bare_run(i: int) -> float:
        began = time.perf_counter()
        response = bare.post(f"{bare_url}/{model}/compute", params={"uid": uid}, data=ciphertexts[i % len(ciphertexts)])
        response.raise_for_status()
        return (time.perf_counter() - began) * 1000

    bare_first = bare_run(0)
    bare_warm = [bare_run(i) for i in range(warm_runs)]
    return {
        "moai_open_ms": open_ms,
        "moai_first_ms": moai_first,
        "moai_first_jobs_ms": first_jobs,
        "moai_first_median_ms": statistics.median(first_jobs),
        "moai_warm_median_ms": statistics.median(moai_warm),
        "bare_open_ms": bare_open_ms,
        "bare_first_ms": bare_first,
        "bare_warm_median_ms": statistics.median(bare_warm),
    }


def _bare_throughput(bare_url: str, client: Any, plan: Any, folders: dict[str, Path]) -> dict[str, Any]:
    """As MOAI's throughput run: two clients per core, one after the other, for a fixed time."""
    model = plan.throughput_model
    clients = 2 * (psutil.cpu_count() or 1)
    session = client.open_session(model)
    keys = session.fhe.get_serialized_evaluation_keys()
    ciphertexts = session.encrypt(np.load(folders[model] / "samples.npz")["X"])
    client.close_session(session.context_id)
    uids = [requests.post(f"{bare_url}/{model}/add_key", data=keys).json()["uid"] for _ in range(clients)]
    done = [0] * clients
    stop_at = time.monotonic() + plan.throughput_seconds
    server = psutil.Process(_bare_pid)
    peak = [0.0]

    def loop(index: int) -> None:
        http = requests.Session()
        while time.monotonic() < stop_at:
            ct = ciphertexts[done[index] % len(ciphertexts)]
            http.post(f"{bare_url}/{model}/compute", params={"uid": uids[index]}, data=ct).raise_for_status()
            done[index] += 1
            if index == 0:
                peak[0] = max(peak[0], server.memory_full_info().pss / 2**20)

    started = time.monotonic()
    threads = [threading.Thread(target=loop, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    return {"model": model, "clients": clients, "jobs_per_s": sum(done) / elapsed, "pss_mib": peak[0]}


_bare_pid = 0


@contextlib.contextmanager
def _bare(folders: dict[str, Path]) -> Iterator[str]:
    global _bare_pid
    port = free_port()
    demo_dir = next(iter(folders.values())).parent
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.bare", str(demo_dir), str(port)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        if process.stdout.readline().strip() != "ready":
            raise RuntimeError("the bare server did not start")
        _bare_pid = process.pid
        yield f"http://127.0.0.1:{port}"
    finally:
        process.kill()
        process.wait(10)


def _tree(pids: list[int]) -> list[psutil.Process]:
    processes = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            parent = psutil.Process(pid)
            processes += [parent, *parent.children(recursive=True)]
    return processes


def _pss_mib(pids: list[int]) -> float:
    """Proportional set size of the processes and all their descendants: shared pages counted once overall."""
    total = 0
    for process in _tree(pids):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += process.memory_full_info().pss
    return total / 2**20


def targets(versus: dict[str, Any], raw: dict[str, Any], moai_throughput: float) -> dict[str, Any]:
    """The latency issue's targets, each from figures of this one run."""
    checks: dict[str, Any] = {}
    for model, m in versus["models"].items():
        ratio = m["moai_warm_median_ms"] / m["bare_warm_median_ms"]
        first = m["moai_first_median_ms"] / m["moai_warm_median_ms"]
        met = ratio <= 1.0 and first <= 1.5
        entry = {
            "warm_over_bare": ratio,
            "first_over_warm": first,
            "target": "warm <= 1.0x bare, first job of a session (median over sessions) <= 1.5x warm",
        }
        if model == "breast-cancer-logreg":
            # The issue's own bar for logreg: "every model's warm median at most 1.0x (logreg
            # included: at most +10 ms over raw)". A 4 ms circuit cannot carry a job row, an
            # audit record and a queue within 1.0x of a server whose request is the circuit and
            # one HTTP exchange, so its bar is the raw circuit plus 10 ms; the ratio is shown.
            added = m["moai_warm_median_ms"] - raw[model]["threads_all"]["raw_median_ms"]
            entry |= {
                "added_over_raw_ms": added,
                "target": "warm <= raw + 10 ms, first job of a session (median over sessions) <= 1.5x warm",
            }
            met = added <= 10 and first <= 1.5
        checks[f"versus_bare_{model}"] = entry | {"met": met}
    checks["first_upload"] = {"met": versus["first_upload"]["max_ms"] < 100, "target": "first key upload < 100 ms"}
    checks["web_memory"] = {"met": versus["web_pss_mib"] < 600, "target": "web tier PSS < 600 MiB"}
    checks["throughput_today"] = {"met": moai_throughput >= 8.9, "target": ">= 8.9 inputs/s (4 clients, iris-tree)"}
    return checks


def print_lines(versus: dict[str, Any], raw: dict[str, Any], moai_throughput: float) -> None:
    print(f"\n{'against the bare server':<22} {'bare ms':>8} {'MOAI ms':>8} {'ratio':>6} {'bare 1st':>9} "
          f"{'MOAI 1st':>9} {'1st med':>8} {'med/warm':>9} {'open ms':>8}")  # fmt: skip
    for model, m in versus["models"].items():
        print(
            f"{model:<22} {m['bare_warm_median_ms']:>8.1f} {m['moai_warm_median_ms']:>8.1f} "
            f"{m['moai_warm_median_ms'] / m['bare_warm_median_ms']:>6.3f} {m['bare_first_ms']:>9.1f} "
            f"{m['moai_first_ms']:>9.1f} {m['moai_first_median_ms']:>8.1f} "
            f"{m['moai_first_median_ms'] / m['moai_warm_median_ms']:>9.2f} {m['moai_open_ms']:>8.0f}"
        )
    print(
        "(MOAI 1st: the first session's first job; 1st med: the median first job of "
        f"{len(next(iter(versus['models'].values()))['moai_first_jobs_ms'])} fresh sessions, which the target uses)"
    )
    first = versus["first_upload"]
    bare_tp = versus["bare_throughput"]
    print(
        f"first key uploads to fresh web processes ({first['model']}, {first['bytes']} B): "
        f"{', '.join(f'{t:.0f}' for t in first['times_ms'])} ms; "
        f"{bare_tp['clients']} clients on {bare_tp['model']}: bare {bare_tp['jobs_per_s']:.2f} inputs/s, "
        f"MOAI {moai_throughput:.2f} ({moai_throughput / bare_tp['jobs_per_s']:.1f}x); "
        f"PSS: MOAI web tier ({versus['web_processes']} processes) {versus['web_pss_mib']:.0f} MiB, "
        f"bare server peak {versus['bare_pss_mib']:.0f} MiB"
    )
