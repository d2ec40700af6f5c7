"""Every process reads its configuration the same way, and writes only under MOAI_DATA_DIR.

gunicorn (gunicorn.conf.py), the Celery worker (moai_site/celery.py) and Django's settings
all read variables through base/env.py, so ``X_FILE`` works for each of them; the data
folder has one default; importing the settings creates nothing; the filesystem broker
keeps its control folder under the data folder, not in the folder a process starts in.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from scripts.stack import ROOT

BIN = Path(sys.executable).parent


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """An embedded-defaults environment (SQLite, filesystem broker) that can start from any folder."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("MOAI_", "DATABASE_URL", "REDIS_URL", "PROMETHEUS"))
    }
    env.update(DEBUG="1", PYTHONPATH=str(ROOT), DJANGO_SETTINGS_MODULE="moai_site.settings", **extra)
    return env


def _secret_file(folder: Path, name: str, value: str) -> str:
    path = folder / name
    path.write_text(value + "\n")  # as a mounted secret usually ends
    return str(path)


def test_gunicorn_reads_its_settings_through_the_env_helpers(tmp_path):
    env = _env(
        tmp_path,
        MOAI_DATA_DIR=str(tmp_path / "data"),
        MOAI_WEB_THREADS_FILE=_secret_file(tmp_path, "threads", "3"),
        MOAI_BIND_FILE=_secret_file(tmp_path, "bind", "127.0.0.1:8123"),
    )
    # gunicorn resolves its configuration from ./gunicorn.conf.py, prints it and exits. It
    # loads the application but skips on_starting, which makes the metrics folder in a real start.
    (tmp_path / "data" / "prometheus" / "web-8123").mkdir(parents=True)
    done = subprocess.run(
        [str(BIN / "gunicorn"), "--print-config", "moai_site.wsgi"], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    printed = {
        name.strip(): value.strip() for name, _, value in (line.partition(" = ") for line in done.stdout.splitlines())
    }
    assert printed["threads"] == "3"
    assert printed["bind"] == "['127.0.0.1:8123']"
    assert printed["limit_request_line"] == "4096"  # the one config file, not gunicorn's defaults


def test_the_celery_worker_reads_the_data_folder_through_the_env_helpers(tmp_path):
    data = tmp_path / "from-file"
    env = _env(tmp_path, MOAI_DATA_DIR_FILE=_secret_file(tmp_path, "data-dir", str(data)))
    # The worker command prepares the pool's environment when moai_site.celery is imported,
    # before it parses its own options: --help runs that and exits without consuming.
    done = subprocess.run(
        [str(BIN / "celery"), "-A", "moai_site", "worker", "--help"], cwd=tmp_path, env=env, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (data / "prometheus" / "worker").is_dir()


def _python(code: str, cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_data_folder_has_one_default_whatever_folder_a_process_starts_in(tmp_path):
    code = (
        "from moai_site import settings; from base.env import env_data_dir; "
        "print(settings.MOAI_DATA_DIR); print(env_data_dir())"
    )
    assert _python(code, tmp_path, _env(tmp_path)).splitlines() == [str(ROOT / "var")] * 2


def test_importing_settings_creates_nothing_and_a_process_start_creates_its_folders(tmp_path):
    data = tmp_path / "data"
    env = _env(tmp_path, MOAI_DATA_DIR=str(data))
    assert _python("from moai_site import settings; print(settings.FILE_UPLOAD_TEMP_DIR)", tmp_path, env)
    assert not data.exists()
    subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "check"], cwd=tmp_path, env=env, check=True, capture_output=True,
        timeout=120,
    )  # fmt: skip
    assert {p.relative_to(data).as_posix() for p in data.rglob("*") if p.is_dir()} >= {
        "tmp", "broker", "broker/queue", "broker/processed"
    }  # fmt: skip


@contextlib.contextmanager
def _worker(env: dict[str, str], cwd: Path, log: Path, level: str) -> Iterator[subprocess.Popen[bytes]]:
    """A one-process Celery worker at ``level``, logging to ``log``; stopped as Kubernetes stops it."""
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [str(BIN / "celery"), "-A", "moai_site", "worker", "--concurrency", "1", "--loglevel", level],
            cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        yield worker
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:  # a pool process still loading the FHE runtime
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()


def _wait_for(ready: Callable[[], bool], worker: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while not ready():
        assert worker.poll() is None, log.read_text(errors="replace")
        assert time.monotonic() < deadline, log.read_text(errors="replace")
        time.sleep(0.2)


def test_a_worker_on_the_filesystem_broker_writes_no_control_folder_where_it_starts(tmp_path):
    started_in = tmp_path / "cwd"
    started_in.mkdir()
    data = tmp_path / "data"
    env = _env(tmp_path, MOAI_DATA_DIR=str(data), MOAI_WORKER_METRICS_PORT="0", MOAI_WORKER_POOL_SIZE="1")
    log = tmp_path / "worker.log"
    with _worker(env, started_in, log, "INFO") as worker:
        # Ready means its queue is bound, which is when kombu writes the exchange table.
        _wait_for(lambda: " ready." in log.read_text(errors="replace"), worker, log)
    assert list((data / "broker" / "control").glob("*.exchange"))
    assert list(started_in.iterdir()) == []


def test_a_worker_at_warning_logs_no_info_line_and_says_it_is_ready_by_a_file(tmp_path):
    data = tmp_path / "data"
    env = _env(
        tmp_path,
        MOAI_DATA_DIR=str(data),
        MOAI_WORKER_METRICS_PORT="0",
        MOAI_WORKER_POOL_SIZE="1",
        MOAI_LOG_LEVEL="WARNING",
    )
    log = tmp_path / "worker.log"
    with _worker(env, ROOT, log, "WARNING") as worker:
        # What scripts.stack waits for: Celery's " ready." is an INFO line, which this level drops.
        ready = data / "worker-status" / f"{socket.gethostname()}-{worker.pid}.ready"
        _wait_for(ready.exists, worker, log)
        assert json.loads(ready.read_text())["pid"] == worker.pid
        written = log.read_text(errors="replace")
        assert " ready." not in written
        assert '"level": "INFO"' not in written
    assert not ready.exists()  # a worker that stopped is not ready
