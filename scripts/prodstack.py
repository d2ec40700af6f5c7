"""``make stack`` (``python -m scripts.prodstack``): the production layout on this machine.

nginx in front (scripts/proxy.py, the same rules as the Helm chart's web pods), gunicorn on
a loopback port behind it, a Celery worker and Celery beat, on PostgreSQL and Redis at
127.0.0.1 (``DATABASE_URL``/``REDIS_URL`` override them). On first use it creates the
database, migrates, builds the demo models and creates an API client, printing its key
once; the key, a generated ``SECRET_KEY`` and all data stay under ``var/stack``, so the
next start reuses them. It runs until Ctrl-C (or ``--seconds N``), then stops everything.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

from scripts.stack import ROOT, Stack

DATA_DIR = ROOT / "var" / "stack"
DEFAULT_DATABASE = "postgres://postgres@127.0.0.1:5432/moai_stack"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


def manage(*args: str, env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True, capture_output=True, text=True
    )
    return result.stdout


def ensure_database(url: str) -> None:
    """Create the database if the server has none of that name (PostgreSQL only)."""
    import psycopg

    parsed = urlparse(url)
    name = parsed.path.lstrip("/")
    admin = parsed._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as connection:
        if connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            connection.execute(f'CREATE DATABASE "{name}"')  # name from the operator's own URL


def check_redis(url: str) -> None:
    import redis

    redis.Redis.from_url(url, socket_connect_timeout=2).ping()


def secret_key(data_dir: Path) -> str:
    path = data_dir / "secret-key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8080, help="nginx's port on 127.0.0.1 (default 8080)")
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long (default: on Ctrl-C)")
    parser.add_argument("--no-models", action="store_true", help="do not build the demo models on first start")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR, help="MOAI_DATA_DIR (default var/stack)")
    args = parser.parse_args(argv)
    data_dir: Path = args.data_dir.resolve()

    database = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE
    redis_url = os.environ.get("REDIS_URL") or DEFAULT_REDIS
    try:
        ensure_database(database)
        check_redis(redis_url)
    except Exception as exc:
        print(f"PostgreSQL ({database}) and Redis ({redis_url}) must answer: {exc}", file=sys.stderr)
        return 2
    env = {
        "DATABASE_URL": database,
        "REDIS_URL": redis_url,
        "MOAI_DATA_DIR": str(data_dir),
        "SECRET_KEY": secret_key(data_dir),
        "DEBUG": "0",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
    }
    full_env = {**os.environ, **env}
    step("migrating")
    manage("migrate", "--verbosity", "0", env=full_env)
    key_file = data_dir / "api-key"
    if not key_file.exists():
        if not args.no_models:
            step("building and registering the demo models (first start only)")
            print(manage("build_demo_models", env=full_env), end="")
        api_key = manage("create_client", f"local-{secrets.token_hex(3)}", env=full_env).strip().splitlines()[-1]
        key_file.write_text(api_key)
        key_file.chmod(0o600)
    step("starting nginx, gunicorn, a Celery worker and Celery beat")
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    with Stack(env, data_dir / "logs", port=args.port, proxy=True, beat=True) as stack:
        print(f"  API      {stack.url}/api/v1   (key in {key_file})")
        print(f"  docs     {stack.url}/api/docs")
        print(f"  admin    {stack.url}/admin/   (manage.py createsuperuser, then enroll_totp)")
        print(f"  logs     {data_dir / 'logs'}")
        print("  Ctrl-C stops everything.", flush=True)
        deadline = None if args.seconds is None else time.monotonic() + args.seconds
        while not stopping and (deadline is None or time.monotonic() < deadline):
            exited = [name for name, process in stack.processes.items() if process.poll() is not None]
            if exited:
                print(f"{', '.join(exited)} exited; see {data_dir / 'logs'}", file=sys.stderr)
                return 1
            time.sleep(0.5)
    step("stopped")
    return 0


def step(text: str) -> None:
    print(f"==> {text}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
