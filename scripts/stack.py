"""Start gunicorn and a Celery worker as real processes, and stop them again.

Used by ``make demo``, ``make stack`` and the end-to-end tests, so they exercise the
same process layout as a deployment: web and worker share only the database, the
broker and blob storage. With ``proxy=True`` nginx stands in front of gunicorn as in
the Helm chart's web pods (scripts/proxy.py): ``url`` is then nginx's, gunicorn
listens on another loopback port (``web_url``), and ``beat=True`` adds the scheduler.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import TracebackType

from base.env import DEFAULT_DATA_DIR
from base.folders import worker_status_path
from scripts.proxy import ProxyConfig, write

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Stack:
    """Web (gunicorn) and worker (celery) processes with their logs under ``log_dir``."""

    def __init__(
        self,
        env: dict[str, str],
        log_dir: Path,
        *,
        concurrency: int = 2,
        port: int | None = None,
        proxy: bool = False,
        beat: bool = False,
        serve_admin: bool = True,
        worker: bool = True,
    ) -> None:
        self.env = {**os.environ, **env}
        self.log_dir = log_dir
        self.concurrency = concurrency
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proxy = proxy
        self.beat = beat
        self.serve_admin = serve_admin
        self.worker = worker  # False: another stack's worker serves the same database and broker
        # Without the proxy gunicorn takes the public port itself, as before.
        self.web_port = free_port() if proxy else self.port
        self.web_url = f"http://127.0.0.1:{self.web_port}"
        if proxy:
            self.env["MOAI_BEHIND_PROXY"] = "1"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self, timeout: float = 90.0) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._spawn(
            "web",
            [
                str(BIN / "gunicorn"),
                "moai_site.wsgi",
                "-c",
                str(ROOT / "gunicorn.conf.py"),
                "--bind",
                f"127.0.0.1:{self.web_port}",
            ],
        )
        if self.proxy:
            self.start_proxy()
        if self.worker:
            self.start_worker()
        if self.beat:
            self._spawn("beat", [str(BIN / "celery"), "-A", "moai_site", "beat", "--loglevel", self.log_level])
        deadline = time.monotonic() + timeout
        while not (self._ready() and (self.worker_ready() or not self.worker)):
            for name, process in self.processes.items():
                if process.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"{name} exited with {process.returncode}; see {self.log_dir / name}.log")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"stack not ready after {timeout} s; logs in {self.log_dir}")
            time.sleep(0.2)

    def proxy_config(self) -> ProxyConfig:
        threads = int(self.env.get("MOAI_WEB_WORKERS", "2")) * int(self.env.get("MOAI_WEB_THREADS", "16"))
        return ProxyConfig(
            listen=self.port,
            upstream=f"127.0.0.1:{self.web_port}",
            run_dir=self.log_dir / "nginx",
            max_key_bytes=int(self.env.get("MOAI_MAX_KEY_BYTES", str(512 * 1024 * 1024))),
            max_ciphertext_bytes=int(self.env.get("MOAI_MAX_CIPHERTEXT_BYTES", str(16 * 1024 * 1024))),
            # Streamed key uploads may hold at most half of gunicorn's threads, one per API key.
            key_streams=max(1, threads // 2),
            serve_admin=self.serve_admin,
        )

    def start_proxy(self) -> None:
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(nginx).exists():
            raise RuntimeError("nginx is not installed: apt-get install nginx-light (make test and make stack do)")
        config = write(self.proxy_config())
        self._spawn(
            "proxy", [nginx, "-c", str(config), "-p", str(config.parent), "-e", str(config.parent / "nginx-error.log")]
        )

    def start_worker(self) -> None:
        self._spawn(
            "worker",
            [
                str(BIN / "celery"),
                "-A",
                "moai_site",
                "worker",
                "--loglevel",
                self.log_level,
                "--concurrency",
                str(self.concurrency),
            ],
        )

    def restart_worker(self, timeout: float = 90.0) -> None:
        """Start the worker again after it was stopped or killed, and wait until it consumes."""
        log = self.log_dir / "worker.log"
        if log.exists():
            log.rename(self.log_dir / f"worker-{time.time():.0f}.log")
        self.start_worker()
        deadline = time.monotonic() + timeout
        while not self.worker_ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker not ready after {timeout} s; see {log}")
            time.sleep(0.2)

    @property
    def data_dir(self) -> Path:
        """The processes' MOAI_DATA_DIR, resolved from where they start (the repository), as settings does."""
        return (ROOT / (self.env.get("MOAI_DATA_DIR") or DEFAULT_DATA_DIR)).resolve()

    @property
    def log_level(self) -> str:
        """Celery's level for worker and beat: MOAI_LOG_LEVEL, as the chart passes moai.logLevel to both."""
        return self.env.get("MOAI_LOG_LEVEL") or "INFO"

    def worker_ready(self) -> bool:
        """Whether the worker consumes: its main process keeps a ready file (jobs.worker), whatever it logs."""
        worker = self.processes.get("worker")
        if worker is None or worker.poll() is not None:
            return False
        return worker_status_path(self.data_dir, socket.gethostname(), worker.pid, "ready").exists()

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = (self.log_dir / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def stop_process(self, name: str, sig: int = signal.SIGTERM, timeout: float = 30.0, group: bool = True) -> None:
        """Signal a process and wait for it; ``group=False`` signals only the parent, as Kubernetes does."""
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        if group:
            os.killpg(process.pid, sig)
        else:
            os.kill(process.pid, sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def stop(self) -> None:
        for name in list(self.processes):
            self.stop_process(name)
