"""The chart's bundled Redis: the runbook's database 0, and a backup restored as the runbook says
(against a real redis-server).

Part of the offline deployment checks (tests/deploy_tools.py has the shared helpers).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from scripts.stack import free_port
from tests.deploy_tools import (
    RELEASE,
    container,
    find,
)


def test_bundled_redis_is_the_runbooks_redis_0(renders):
    objects = renders["default"]
    statefulset = find(objects, "StatefulSet", "redis")
    assert statefulset["spec"]["replicas"] == 1
    assert statefulset["spec"]["serviceName"] == "redis"
    c = container(objects, "StatefulSet", "redis")
    assert {"mountPath": "/data", "name": "data"} in c["volumeMounts"]
    assert [t["metadata"]["name"] for t in statefulset["spec"]["volumeClaimTemplates"]] == ["data"]
    # redis-cli in `kubectl exec redis-0 -- redis-cli BGSAVE` authenticates from REDISCLI_AUTH.
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"]}
    assert env["REDISCLI_AUTH"] == env["REDIS_PASSWORD"] == {"name": RELEASE, "key": "redis-password"}
    assert c["command"] == ["/bin/sh", "/scripts/start.sh"]
    assert "start.sh" in find(objects, "ConfigMap", "redis-scripts")["data"]


@pytest.mark.skipif(not shutil.which("redis-server"), reason="needs redis-server")
def test_redis_keeps_the_queue_and_restores_a_backup_as_the_runbook_says(renders, tmp_path):
    import redis

    script = tmp_path / "start.sh"
    script.write_text(find(renders["default"], "ConfigMap", "redis-scripts")["data"]["start.sh"])
    data = tmp_path / "data"  # stands for /data
    data.mkdir()
    port = free_port()
    env = {
        **os.environ,
        "REDIS_DATA_DIR": str(data),
        "REDIS_PORT": str(port),
        "REDIS_PASSWORD": "pw",
        "REDISCLI_AUTH": "pw",
    }

    started: list[subprocess.Popen[bytes]] = []
    log = tmp_path / "redis.log"

    def start() -> tuple[subprocess.Popen[bytes], redis.Redis]:
        # A session of its own, so that cleanup can stop the script and its redis-server together.
        with log.open("ab") as output:
            process = subprocess.Popen(
                ["sh", str(script)], env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
            )
        started.append(process)
        client = redis.Redis(port=port, password="pw")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if client.config_get("appendonly")["appendonly"] == "yes":
                    return process, client
            except redis.ConnectionError:
                pass
            time.sleep(0.05)
        pytest.fail(f"redis did not start with AOF on:\n{log.read_text()[-2000:]}")

    try:
        restore_and_restart(start, data, port, env)
    finally:
        for process in started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)


def restore_and_restart(start: Any, data: Path, port: int, env: dict[str, str]) -> None:
    process, client = start()
    try:
        client.rpush("moai", "job-1")
        # Backup: BGSAVE, wait for it (as the runbook does, by INFO persistence), copy dump.rdb out.
        client.bgsave(schedule=True)  # scheduled if the AOF's first rewrite still runs
        deadline = time.monotonic() + 10
        while not (data / "dump.rdb").exists() or client.info("persistence")["rdb_bgsave_in_progress"]:
            assert time.monotonic() < deadline, "BGSAVE did not finish"
            time.sleep(0.05)
        assert client.info("persistence")["rdb_last_bgsave_status"] == "ok"
        backup = (data / "dump.rdb").read_bytes()
        client.rpush("moai", "job-2")
        # Restore, as docs/runbook.md: copy the backup in, remove the AOF, shut down without saving.
        (data / "dump.rdb").write_bytes(backup)
        shutil.rmtree(data / "appendonlydir")
        subprocess.run(["redis-cli", "-p", str(port), "SHUTDOWN", "NOSAVE"], env=env, check=False, capture_output=True)
        assert process.wait(timeout=10) == 0
    finally:
        process.terminate()
    process, client = start()  # the container restarts
    try:
        assert client.lrange("moai", 0, -1) == [b"job-1"]  # the backup's queue, not the later one
        assert (data / "appendonlydir").is_dir()
    finally:
        process.terminate()
    # It stops cleanly even when asked during its first AOF rewrite (the script asks again).
    assert process.wait(timeout=10) == 0
    process, client = start()  # and the restored queue now survives a restart through the AOF
    try:
        assert client.lrange("moai", 0, -1) == [b"job-1"]
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_a_stop_asked_while_aof_is_being_turned_on_is_asked_again_until_redis_stops(renders, tmp_path):
    """Redis refuses to stop while it writes its first AOF ("Writing initial AOF, can't exit").
    A TERM that reaches the script while it turns AOF on (redis-cli in the foreground) runs its
    trap only once that command returns, before the script waits on Redis: it must still ask
    again until Redis stops, or the container hangs until the kubelet kills it.

    redis-server and redis-cli are stand-ins here, on PATH ahead of the real ones: the real
    Redis refuses only for the ~0.1 s its first AOF takes on a small data set, so no test can
    hit that moment on purpose. The stand-in server refuses the first TERM, as Redis does then."""
    script = tmp_path / "start.sh"
    script.write_text(find(renders["default"], "ConfigMap", "redis-scripts")["data"]["start.sh"])
    shims = tmp_path / "bin"
    shims.mkdir()
    turning_on = tmp_path / "turning-aof-on"
    (shims / "redis-server").write_text(
        "#!/bin/sh\n"
        "asked=0\n"
        "trap 'asked=$((asked + 1)); [ \"$asked\" -ge 2 ] && exit 0' TERM\n"
        "while :; do sleep 0.05; done\n"
    )
    (shims / "redis-cli").write_text(
        f'#!/bin/sh\ncase "$*" in\n  *ping*) echo PONG ;;\n  *appendonly*) touch "{turning_on}"; sleep 2 ;;\nesac\n'
    )
    for shim in shims.iterdir():
        shim.chmod(0o755)
    data = tmp_path / "data"  # no appendonlydir: the script starts Redis without AOF, then turns it on
    data.mkdir()
    env = {**os.environ, "PATH": f"{shims}:{os.environ['PATH']}", "REDIS_DATA_DIR": str(data), "REDIS_PORT": "1"}
    process = subprocess.Popen(["sh", str(script)], env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while not turning_on.exists():
            assert process.poll() is None, "the script ended before it turned AOF on"
            assert time.monotonic() < deadline, "the script never turned AOF on"
            time.sleep(0.05)
        process.terminate()  # as the kubelet stops the container
        assert process.wait(timeout=10) == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
