"""gunicorn settings for the web process, read from the environment through base.env.

gunicorn reads ./gunicorn.conf.py by default, so ``gunicorn moai_site.wsgi`` started
in the repository (or the image's /app) runs with them, as API.md and the runbook show.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gunicorn import util as gunicorn_util

from base.env import env_data_dir, env_int, env_str
from moai_site.logs import JSON_FORMATTER

bind = env_str("MOAI_BIND") or "0.0.0.0:8000"
workers = env_int("MOAI_WEB_WORKERS", 2, minimum=1)
# Threads let one process keep serving polls while another request streams a large key upload.
# Clients wait for jobs in long-held GET /jobs/{id}?wait=N requests, each holding a thread.
threads = env_int("MOAI_WEB_THREADS", 16, minimum=1)
worker_class = "gthread"
# A 512 MiB key upload on a slow link takes a while; the socket timeout is per read, not per request.
timeout = env_int("MOAI_WEB_TIMEOUT", 120, minimum=0)
graceful_timeout = env_int("MOAI_WEB_GRACEFUL_TIMEOUT", 30, minimum=0)
# Request lines and headers are tiny in this API; anything large is hostile.
limit_request_line = 4096
limit_request_fields = 50
limit_request_field_size = 8190

# A request gunicorn cannot parse (a header or request line over these limits, a broken
# request line, a bad chunk) is answered by gunicorn itself, before Django, with an HTML
# page. Clients of this API get every error in its JSON format, so gunicorn's error
# writer is replaced here; the status and reason stay gunicorn's. The workers fork from
# the process that reads this file, so they all inherit it.
_GUNICORN_ERROR_CODES = {
    400: "invalid_request",
    403: "forbidden",
    414: "request_line_too_long",
    417: "expectation_failed",
    431: "request_headers_too_large",
    500: "internal_error",
    501: "not_implemented",
}


def _write_json_error(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    message = f"{reason}: {mesg[:200]}" if mesg else reason
    code = _GUNICORN_ERROR_CODES.get(status_int, "invalid_request")
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    gunicorn_util.write_nonblock(sock, head.encode("latin-1") + body)


gunicorn_util.write_error = _write_json_error

# mTLS: with MOAI_TLS_CERT/KEY set gunicorn serves HTTPS; with MOAI_TLS_CLIENT_CA set too,
# it requires and verifies a client certificate signed by that CA.
if env_str("MOAI_TLS_CERT"):
    import ssl

    certfile = env_str("MOAI_TLS_CERT")
    keyfile = env_str("MOAI_TLS_KEY")
    if env_str("MOAI_TLS_CLIENT_CA"):
        ca_certs = env_str("MOAI_TLS_CLIENT_CA")
        cert_reqs = ssl.CERT_REQUIRED

# Every worker process writes its metrics to files here, and /metrics sums them.
# It must be set before any worker imports prometheus_client, which reads it from
# os.environ itself (so it is process plumbing, not a setting with an _FILE variant).
_metrics_dir = Path(
    os.environ.setdefault(
        "PROMETHEUS_MULTIPROC_DIR", str(env_data_dir() / "prometheus" / f"web-{bind.rsplit(':', 1)[-1]}")
    )
)

# JSON lines on stdout, like the application's own logs.
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": JSON_FORMATTER},
    # The access log's request line holds /compat/<token>/ URLs: tokens are redacted (compat/redaction.py).
    "filters": {"redact_tokens": {"()": "compat.redaction.RedactTokens"}},
    "handlers": {
        "stdout": {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "stream": "ext://sys.stdout",
            "filters": ["redact_tokens"],
        },
    },
    "root": {"level": "INFO", "handlers": ["stdout"]},
    "loggers": {
        "gunicorn.error": {"handlers": ["stdout"], "level": "INFO", "propagate": False},
        "gunicorn.access": {"handlers": ["stdout"], "level": "INFO", "propagate": False},
    },
}
accesslog = "-"
errorlog = "-"


def on_starting(server: Any) -> None:
    # Files of a previous run would be summed in as if their processes still existed.
    shutil.rmtree(_metrics_dir, ignore_errors=True)
    _metrics_dir.mkdir(parents=True, exist_ok=True)


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def post_worker_init(worker: Any) -> None:
    # Each web process checks uploaded keys in processes forked from its own forkserver,
    # which imports the FHE runtime (seconds): start it now rather than on the first upload.
    from keys.evaluation_keys import checker
    from moai_site.celery import ready_to_publish

    checker.warm_up()
    # And get ready to send the first job as its submission would (moai_site.celery): the imports
    # now, the connection in a thread, as kombu retries for long with the broker away and the
    # process must serve meanwhile.
    try:
        connect = ready_to_publish()
    except Exception:  # the first job does it (and waits) as before
        worker.log.warning("could not get ready to send jobs ahead of the first one")
        return
    threading.Thread(target=_connect, args=(worker, connect), name="broker-warm-up", daemon=True).start()


def _connect(worker: Any, connect: Callable[[], None]) -> None:
    try:
        connect()
    except Exception:  # the first job connects (and waits) as before
        worker.log.warning("could not connect to the broker ahead of the first job")
