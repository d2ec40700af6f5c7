"""`make stack` (python -m scripts.prodstack): one command brings up nginx, gunicorn, a worker and
beat on PostgreSQL and Redis, answers through nginx, and Ctrl-C stops every process it started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from scripts.stack import ROOT, free_port

pytestmark = [pytest.mark.e2e]


def test_one_command_starts_the_production_layout_and_ctrl_c_stops_it(tmp_path: Path) -> None:
    from django.conf import settings
    from django.db import connection

    if connection.vendor != "postgresql" or not settings.REDIS_URL:
        pytest.skip("the production stack runs on PostgreSQL and Redis")
    params: dict[str, Any] = connection.settings_dict
    user = params.get("USER") or "postgres"
    # A database of its own next to the test run's (the script creates it), and the run's Redis database.
    database = (
        f"postgres://{user}@{params.get('HOST') or '127.0.0.1'}:{params.get('PORT') or 5432}/{params['NAME']}_stack"
    )
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database, "REDIS_URL": settings.REDIS_URL}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    log = (tmp_path / "prodstack.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "scripts.prodstack",
            "--port",
            str(port),
            "--seconds",
            "240",
            "--no-models",
            "--data-dir",
            str(tmp_path / "data"),
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, (tmp_path / "prodstack.log").read_text()[-3000:]
            try:
                ready = requests.get(f"{url}/readyz", timeout=2)
                if ready.status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, (tmp_path / "prodstack.log").read_text()[-3000:]
            time.sleep(0.5)
        assert ready.headers["Server"] == "nginx"  # the answer came through the proxy
        api_key = (tmp_path / "data" / "api-key").read_text().strip()
        models = requests.get(f"{url}/api/v1/models", headers={"Authorization": f"Bearer {api_key}"}, timeout=10)
        assert (models.status_code, models.json()) == (200, [])
        logs = tmp_path / "data" / "logs"
        assert {"web.log", "worker.log", "beat.log", "proxy.log"} <= {p.name for p in logs.iterdir()}
        # Ctrl-C: everything stops, and the script says so.
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
        assert "==> stopped" in (tmp_path / "prodstack.log").read_text()
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{url}/healthz", timeout=2)
    finally:
        if process.poll() is None:
            # SIGTERM lets the script stop what it started (its children run in sessions of their
            # own, so killing its group would leave them running on this test's Redis database).
            process.terminate()
            try:
                process.wait(timeout=150)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log.close()
        import psycopg

        with psycopg.connect(database.rsplit("/", 1)[0] + "/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{params["NAME"]}_stack" WITH (FORCE)')
