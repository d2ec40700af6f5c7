"""``make demo``: the whole product on embedded defaults, end to end.

Migrates a fresh SQLite database, builds and registers the demo models, creates
an API client, starts gunicorn and a Celery worker (filesystem broker, no
server needed), then acts as a data owner for each model: generates keys
locally, uploads the evaluation keys, gives the client held-out rows of raw
features from the original data set (the client applies the model's scaler,
then encrypts), runs one input and a batch, decrypts, and compares with the
clear pipeline's predictions (scaler, then the model without encryption).
Then the hybrid part (compat/hybrid_demo.py): a small torch MLP is trained and
hybrid-compiled, registered with ``register_hybrid_model``, and run through MOAI by
Concrete-ML's unmodified ``HybridFHEModel`` client in remote mode, given only a
``/compat/<token>/hybrid`` URL; its outputs are printed against the clear model's.
Exits non-zero if any decrypted prediction differs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import numpy as np

from compat.hybrid_demo import HybridBuild, build, remote_model
from registry.demo_models import DEMO_MODELS
from scripts.stack import ROOT, Stack

DATA_DIR = ROOT / "var" / "demo"


def manage(*args: str, env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True, capture_output=True, text=True
    )
    return result.stdout


def main() -> int:
    if DATA_DIR.exists():
        shutil.rmtree(DATA_DIR)
    # Concrete-ML's progress bars (hybrid compile and forwards) would interleave with the tables.
    os.environ.setdefault("TQDM_DISABLE", "1")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(
        # One pool process using both cores: the demo runs one job at a time, so latency is what
        # it shows, and every job after a session's first finds the keys warm in that process.
        {"MOAI_DATA_DIR": str(DATA_DIR), "DEBUG": "1", "MOAI_WORKER_POOL_SIZE": "1", "MOAI_LOG_LEVEL": "WARNING"}
    )
    step("migrating a fresh SQLite database under var/demo")
    manage("migrate", "--verbosity", "0", env=env)
    step("building and registering the demo models (train, compile, one throwaway keygen each)")
    print(manage("build_demo_models", env=env), end="")
    api_key = manage("create_client", "demo-owner", env=env).strip().splitlines()[-1]
    hybrid = build_hybrid(env)
    token = manage("issue_compat_token", "demo-owner", "--reason", "demo", env=env).strip().splitlines()[-1]
    step("starting gunicorn and a Celery worker")
    with Stack(env, DATA_DIR / "logs", concurrency=1) as stack:
        print(f"  web at {stack.url}, logs in {DATA_DIR / 'logs'}")
        rows, timings = run_client(stack.url, api_key)
        hybrid_agrees = run_hybrid(stack.url, token, hybrid)
    step("stopped web and worker")
    print_table(rows, timings)
    mismatches = sum(1 for row in rows if row[3] != row[4])
    print(f"\n{len(rows) - mismatches} of {len(rows)} decrypted predictions equal the clear pipeline's.")
    return 1 if mismatches or not hybrid_agrees else 0


def build_hybrid(env: dict[str, str]) -> HybridBuild:
    step("hybrid: training a small torch MLP, hybrid-compiling seq.0 and seq.2, registering it as 'mlp'")
    built = build(DATA_DIR / "hybrid")
    print(manage("register_hybrid_model", "mlp", str(built.server_folder), env=env), end="")
    return built


def run_hybrid(url: str, token: str, built: HybridBuild) -> bool:
    """Concrete-ML's own HybridFHEModel client, unmodified, pointed at MOAI: True if it agrees with the clear model."""
    import torch

    step("hybrid: HybridFHEModel(..., server_remote_address=f'{url}/compat/<token>/hybrid', model_name='mlp')")
    samples = built.samples()
    model = remote_model(built, f"{url}/compat/{token}/hybrid", "mlp", DATA_DIR / "hybrid-client")
    remote, seconds = [], []
    with torch.no_grad():
        for row in samples["X"]:
            started = time.perf_counter()
            remote.append(model(torch.tensor(row[None, :]), fhe="remote").numpy()[0])
            seconds.append(time.perf_counter() - started)
    print(f"\n{'row':>3} {'clear logits':>22} {'through MOAI':>22} {'max diff':>9}")
    for i, (clear, through) in enumerate(zip(samples["clear"], remote, strict=True)):
        print(f"{i:>3} {_pair(clear):>22} {_pair(through):>22} {np.abs(clear - through).max():>9.4f}")
    direct = samples["direct_seconds"]
    print(f"per forward (2 layers under FHE): {np.median(seconds):.3f} s through MOAI, median of {len(seconds)}; "
          f"{np.median(direct):.3f} s run directly in-process (no server)")  # fmt: skip
    agrees = bool((np.array(remote).argmax(axis=1) == samples["clear"].argmax(axis=1)).all())
    print(f"hybrid: {'the same' if agrees else 'NOT the same'} classes as the clear torch model")
    return agrees


def _pair(values: np.ndarray) -> str:
    return ", ".join(f"{value:8.4f}" for value in values)


def run_client(
    url: str, api_key: str
) -> tuple[list[tuple[str, int, int, int, int]], list[tuple[str, float, float, float, float]]]:
    from moai_client import MoaiClient

    client = MoaiClient(url, api_key, DATA_DIR / "client-keys", progress=sys.stderr.isatty())
    rows: list[tuple[str, int, int, int, int]] = []
    timings: list[tuple[str, float, float, float, float]] = []
    demo_names = {model.name for model in DEMO_MODELS}
    # The registry also lists the hybrid model's modules: they have their own part (run_hybrid).
    for model in [model for model in client.models() if model["name"] in demo_names]:
        name = model["name"]
        samples = np.load(DATA_DIR / "demo" / name / "samples.npz")
        print_raw_rows(name, model["feature_names"], samples["X"])
        step(f"{name}: keygen on the client, upload of {model['evaluation_keys_bytes']:,} B of evaluation keys")
        started = time.perf_counter()
        session = client.open_session(name)
        session_seconds = time.perf_counter() - started
        cold = client.predict(session, samples["X"][:1])
        warm = client.predict(session, samples["X"][:1])
        batch = client.predict(session, samples["X"])
        client.close_session(session.context_id)
        timings.append((name, session_seconds, cold.seconds, warm.seconds, batch.seconds))
        for i, label in enumerate(batch.labels):
            rows.append((name, i, int(samples["y_true"][i]), int(samples["clear_prediction"][i]), int(label)))
        assert int(cold.labels[0]) == int(warm.labels[0]) == int(batch.labels[0])
    return rows, timings


def print_raw_rows(name: str, features: list[str], X: np.ndarray) -> None:
    step(f"{name}: {len(X)} held-out rows of raw features, as the data owner gives them to its client")
    print(f"  features, in order: {', '.join(features)}")
    for i, row in enumerate(X):
        print(f"  row {i}: {', '.join(f'{value:g}' for value in row)}")


def step(text: str) -> None:
    print(f"==> {text}", flush=True)


def print_table(
    rows: list[tuple[str, int, int, int, int]], timings: list[tuple[str, float, float, float, float]]
) -> None:
    print(f"\n{'model':<22} {'row':>3} {'true':>5} {'clear':>6} {'decrypted':>10}  match")
    for name, i, truth, clear, decrypted in rows:
        print(f"{name:<22} {i:>3} {truth:>5} {clear:>6} {decrypted:>10}  {'yes' if clear == decrypted else 'NO'}")
    print(f"\n{'model':<22} {'keygen+upload s':>16} {'first job s':>12} {'warm job s':>11} {'batch of 4 s':>13}")
    for name, session_s, cold_s, warm_s, batch_s in timings:
        print(f"{name:<22} {session_s:>16.2f} {cold_s:>12.2f} {warm_s:>11.2f} {batch_s:>13.2f}")
    print("(job times are client-side: encrypt, submit, wait, download and decrypt)")


if __name__ == "__main__":
    sys.exit(main())
