"""mTLS between the chart's proxy and gunicorn, and the documented client certificates, against real processes.

Part of the offline deployment checks (tests/deploy_tools.py has the shared helpers).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from scripts.stack import free_port
from tests.deploy_tools import (
    ROOT,
    RUNBOOK,
    WEB,
    code_blocks,
    container,
    env_of,
    find,
    shell_commands,
)


def pem_files(objects: list[dict[str, Any]], secret: str, directory: Path, names: dict[str, str]) -> None:
    data = find(objects, "Secret", secret)["data"]
    for key, filename in names.items():
        (directory / filename).write_bytes(base64.b64decode(data[key]))


def chart_proxy_config(objects: list[dict[str, Any]], root: Path, ports: dict[int, int]) -> Path:
    """The chart's nginx.conf with the pod's paths and ports mapped onto this machine: the tls
    volume and /tmp under ``root``, each listen port and gunicorn's port to a free one."""
    conf = find(objects, "ConfigMap", "moai-service-proxy")["data"]["nginx.conf"]
    conf = conf.replace("/etc/moai/tls/", f"{root}/tls/").replace("/tmp/nginx", f"{root}/nginx")
    for pod_port, local_port in ports.items():
        conf = re.sub(rf"\b(listen (?:127\.0\.0\.1:)?|server 127\.0\.0\.1:){pod_port}\b", rf"\g<1>{local_port}", conf)
    # Run as root (CI), nginx's workers would drop to "nobody" and could not read the test's files.
    import getpass

    path = root / "nginx.conf"
    path.write_text(f"user {getpass.getuser()};\n{conf}")
    return path


def test_proxy_mtls_probes_and_documented_client_certificates_work(renders, tmp_path):
    """The chart's proxy configuration in a real nginx in front of a real gunicorn with the web
    container's settings: its TLS and mTLS, its probes, the runbook's openssl steps, the ports
    Prometheus and operators use, and what the public port refuses."""
    if not shutil.which("nginx") and not Path("/usr/sbin/nginx").exists():
        pytest.fail("nginx is not installed: run `make test` (it installs it) or apt-get install nginx-light")
    objects = renders["production"]
    web = container(objects, "Deployment", WEB, "web")
    proxy = container(objects, "Deployment", WEB, "proxy")
    tls_dir = tmp_path / "tls"  # stands for the tls volume
    tls_dir.mkdir()
    pem_files(
        objects, "moai-service-tls", tls_dir, {"tls.crt": "tls.crt", "tls.key": "tls.key", "ca.crt": "client-ca.crt"}
    )
    pem_files(objects, "moai-service-mtls-ca", tmp_path, {"tls.crt": "moai-ca.crt", "tls.key": "moai-ca.key"})
    pem_files(objects, "moai-service-metrics-client", tmp_path, {"tls.crt": "prom.crt", "tls.key": "prom.key"})
    pod_ports = {p["name"]: p["containerPort"] for p in proxy["ports"]}
    admin_port = int(
        re.search(
            r"listen 127\.0\.0\.1:(\d+) ssl;", find(objects, "ConfigMap", "moai-service-proxy")["data"]["nginx.conf"]
        ).group(1)
    )  # type: ignore[union-attr]
    local = {name: free_port() for name in (*pod_ports, "admin", "gunicorn")}
    config = chart_proxy_config(
        objects,
        tmp_path,
        {**{pod_ports[n]: local[n] for n in pod_ports}, admin_port: local["admin"], 8000: local["gunicorn"]},
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "PROMETHEUS_MULTIPROC_DIR")}
    env.update({k: v for k, v in env_of(web).items() if k in ("MOAI_BEHIND_PROXY", "MOAI_HTTPS")})
    env.update(
        DJANGO_SETTINGS_MODULE="moai_site.settings",
        MOAI_BIND=env_of(web)["MOAI_BIND"].replace(":8000", f":{local['gunicorn']}"),
        MOAI_WEB_WORKERS="1",
        MOAI_DATA_DIR=str(tmp_path / "data"),
        SECRET_KEY="test-only-secret-key-for-the-mtls-probe-0123456789",
        DEBUG="0",
        ALLOWED_HOSTS="localhost,127.0.0.1,moai-service-web.moai.svc",
    )
    assert env["MOAI_BIND"].startswith("127.0.0.1:")
    # /metrics reads the job and session tables.
    subprocess.run([sys.executable, "manage.py", "migrate", "--verbosity", "0"], cwd=ROOT, env=env, check=True)
    gunicorn = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "moai_site.wsgi"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    # The container's command, with this machine's nginx and the mapped configuration.
    command = [shutil.which("nginx") or "/usr/sbin/nginx", *proxy["command"][1:]]
    command[command.index("/etc/moai/proxy/nginx.conf")] = str(config)
    nginx = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    probe = [sys.executable if w == "python" else w for w in web["livenessProbe"]["exec"]["command"]]
    probe = [str(ROOT / "deploy/docker/healthcheck.py") if w == "/app/healthcheck.py" else w for w in probe]

    def plain(port: int, path: str) -> int:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            connection.request("GET", path, headers={"Host": "localhost"})
            return connection.getresponse().status
        finally:
            connection.close()

    try:
        deadline = time.monotonic() + 60
        # The kubelet's readiness probe: the proxy's health port, through nginx to gunicorn.
        readiness = proxy["readinessProbe"]["httpGet"]
        while True:
            assert gunicorn.poll() is None, gunicorn.stderr.read().decode() if gunicorn.stderr else ""
            assert nginx.poll() is None, nginx.stderr.read().decode() if nginx.stderr else ""
            with contextlib.suppress(OSError):
                if plain(local[readiness["port"]], readiness["path"]) == 200:
                    break
            assert time.monotonic() < deadline, "the readiness probe never passed"
            time.sleep(0.3)
        liveness = proxy["livenessProbe"]["httpGet"]
        assert plain(local[liveness["port"]], liveness["path"]) == 200
        # gunicorn's own probe, over loopback.
        assert subprocess.run(probe, env=env, check=False).returncode == 0
        # The health port serves the probes and nothing else.
        assert plain(local["health"], "/api/v1/models") == 404
        assert plain(local["health"], "/admin/") == 404

        # A data owner's certificate, made exactly as the runbook says.
        steps = [
            c
            for c in shell_commands("\n".join(code_blocks(RUNBOOK.read_text(), "bash")))
            if c[0] in ("openssl", "printf") and c[1:2] != ["rand"]  # rand: the keys and passwords of the install
        ]
        assert [c[0] for c in steps] == ["printf", "openssl", "openssl"]
        (tmp_path / "client.ext").write_text(steps[0][1].encode().decode("unicode_escape"))
        for step in steps[1:]:
            subprocess.run(step, cwd=tmp_path, check=True, capture_output=True)
        context = ssl.create_default_context(cafile=str(tmp_path / "moai-ca.crt"))
        context.load_cert_chain(tmp_path / "acme.crt", tmp_path / "acme.key")
        # The runbook's curl names the web Service: the server certificate must be valid for it.
        (curl,) = [
            c
            for c in shell_commands("\n".join(code_blocks(RUNBOOK.read_text(), "bash")))
            if c[0] == "curl" and "--cert" in c
        ]
        host = re.match(r"https://([^:/]+)", curl[-1]).group(1)  # type: ignore[union-attr]
        api = local[proxy["ports"][0]["name"]]
        assert get(api, context, host) == 200
        # Not on the public port: the admin console and the metrics.
        assert get(api, context, host, "/admin/login/") == 404
        assert get(api, context, host, "/metrics") == 404
        # Without a client certificate, nothing is served.
        bare = ssl.create_default_context(cafile=str(tmp_path / "moai-ca.crt"))
        with contextlib.suppress(ssl.SSLError, ConnectionResetError, BrokenPipeError):
            assert get(api, bare, host) == 400
        # Prometheus, with the chart's client certificate, on the metrics port: /metrics only.
        prometheus = ssl.create_default_context(cafile=str(tmp_path / "moai-ca.crt"))
        prometheus.load_cert_chain(tmp_path / "prom.crt", tmp_path / "prom.key")
        assert get(local["metrics"], prometheus, host, "/metrics") == 200
        assert get(local["metrics"], prometheus, host, "/healthz") == 404
        with contextlib.suppress(ssl.SSLError, ConnectionResetError, BrokenPipeError):
            assert get(local["metrics"], bare, host, "/metrics") == 400
        # Operators, through kubectl port-forward to the loopback admin port: the admin console.
        operator = ssl.create_default_context(cafile=str(tmp_path / "moai-ca.crt"))
        assert get(local["admin"], operator, "localhost", "/admin/login/") == 200
    finally:
        for process in (nginx, gunicorn):
            process.terminate()
        for process in (nginx, gunicorn):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def get(port: int, context: ssl.SSLContext, host: str, path: str = "/healthz") -> int:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        connection = http.client.HTTPConnection(host, port)
        connection.sock = tls
        connection.request("GET", path, headers={"Host": host})
        return connection.getresponse().status
