"""Health check of a MOAI container: Docker's HEALTHCHECK and the Kubernetes probes under mTLS.

With mTLS on, gunicorn refuses any connection that does not present a client certificate, and
the kubelet's HTTP probes cannot present one. So the probes run this script inside the pod: it
asks the local gunicorn over loopback with the server's own key pair as the client certificate
(or MOAI_PROBE_CERT/MOAI_PROBE_KEY), which the client CA must have signed. It uses the standard
library only, so it starts in a few tens of milliseconds.

    python /app/healthcheck.py               which process is PID 1 decides (Docker's HEALTHCHECK)
    python /app/healthcheck.py web [PATH]    GET PATH (default /healthz) from the local gunicorn
    python /app/healthcheck.py worker        GET /metrics from the local Celery worker

Exit status 0 means healthy, 1 unhealthy; the reason goes to stderr.
"""

from __future__ import annotations

import http.client
import os
import ssl
import sys
from pathlib import Path

TIMEOUT_SECONDS = 10.0
ROLES = ("web", "worker", "beat", "other")


def detect_role(cmdline: list[str]) -> str:
    """web, worker, beat or other, from a process's command line (the image runs one process)."""
    words = [Path(word).name for word in cmdline]
    if "gunicorn" in words:
        return "web"
    if "celery" in words:
        for role in ("worker", "beat"):
            if role in words:
                return role
    return "other"


def pid1_cmdline() -> list[str]:
    return Path("/proc/1/cmdline").read_bytes().decode(errors="replace").split("\0")


def web_connection() -> http.client.HTTPConnection:
    port = int(os.environ.get("MOAI_BIND", "0.0.0.0:8000").rsplit(":", 1)[-1])
    cert = os.environ.get("MOAI_TLS_CERT")
    if not cert:
        return http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT_SECONDS)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # This talks to its own pod over loopback: the server's identity is not in question here.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if os.environ.get("MOAI_TLS_CLIENT_CA"):
        context.load_cert_chain(
            os.environ.get("MOAI_PROBE_CERT") or cert,
            os.environ.get("MOAI_PROBE_KEY") or os.environ.get("MOAI_TLS_KEY"),
        )
    return http.client.HTTPSConnection("127.0.0.1", port, timeout=TIMEOUT_SECONDS, context=context)


def get(connection: http.client.HTTPConnection, path: str) -> int:
    """Status of GET path; the Host header must be one Django allows (the chart always allows localhost)."""
    try:
        connection.request("GET", path, headers={"Host": os.environ.get("MOAI_PROBE_HOST", "localhost")})
        response = connection.getresponse()
        if response.status != 200:
            print(f"GET {path}: {response.status} {response.read(500)!r}", file=sys.stderr)
        return response.status
    except (OSError, http.client.HTTPException) as exc:
        print(f"GET {path}: {exc}", file=sys.stderr)
        return 0
    finally:
        connection.close()


def check(role: str, path: str) -> bool:
    if role == "web":
        return get(web_connection(), path) == 200
    if role == "worker":
        port = int(os.environ.get("MOAI_WORKER_METRICS_PORT") or 9808)
        return get(http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT_SECONDS), "/metrics") == 200
    # Beat and one-off commands serve nothing: that PID 1 runs is all there is to see.
    return True


def main(argv: list[str]) -> int:
    role = argv[0] if argv else detect_role(pid1_cmdline())
    if role not in ROLES:
        print(f"usage: healthcheck.py [{'|'.join(ROLES)} [PATH]]", file=sys.stderr)
        return 2
    path = argv[1] if len(argv) > 1 else "/healthz"
    return 0 if check(role, path) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
