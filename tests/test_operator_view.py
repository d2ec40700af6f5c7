"""What a new operator and a new data owner see on a fresh stack: metrics from the first
scrape, commands that print only their own lines, request errors logged with their code.

One stack for the module, on embedded defaults in a folder of its own (fresh SQLite,
filesystem broker, fresh metric files), so that "first scrape" means what it says; the
operator's commands run as subprocesses exactly as the runbook shows them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import promql_parser
import pytest
import requests

from base.metrics import JOB_FAILURE_CODES
from scripts.stack import ROOT, Stack, free_port
from tests.helpers import poll

pytestmark = pytest.mark.e2e

SEED_RUNBOOK_QUERIES = [
    "sum(moai_queue_depth)",
    "histogram_quantile(0.99, sum(rate(moai_job_latency_bucket[5m])) by (le))",
    "sum(rate(moai_job_failed_total[5m]))",
]


class Fresh:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.env = {
            # Embedded defaults: an empty value means unset (base/env.py).
            "DATABASE_URL": "",
            "REDIS_URL": "",
            "DJANGO_SETTINGS_MODULE": "moai_site.settings",
            "MOAI_DATA_DIR": str(folder / "data"),
            "DEBUG": "1",
            "MOAI_WORKER_POOL_SIZE": "1",
            "MOAI_WORKER_METRICS_PORT": str(free_port()),
        }
        self.full_env = {**os.environ, **self.env}
        self.stack: Stack | None = None

    def manage(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=self.full_env, capture_output=True, text=True
        )

    def scrape(self, url: str) -> dict[str, float]:
        series = {}
        for line in requests.get(url, timeout=10).text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                series[name] = float(value)
        return series


@pytest.fixture(scope="module")
def fresh(tmp_path_factory, bundles):
    state = Fresh(tmp_path_factory.mktemp("fresh-stack"))
    assert state.manage("migrate", "--verbosity", "0").returncode == 0
    registered = state.manage("register_model", "breast-cancer-logreg", str(bundles["breast-cancer-logreg"].folder))
    assert registered.returncode == 0, registered.stderr
    with Stack(state.env, state.folder / "logs", concurrency=1) as stack:
        state.stack = stack
        yield state


def test_first_scrape_has_every_failure_code_at_zero_and_every_runbook_series(fresh):
    worker = fresh.scrape(f"http://127.0.0.1:{fresh.env['MOAI_WORKER_METRICS_PORT']}/metrics")
    web = fresh.scrape(f"{fresh.stack.url}/metrics")
    for scraped in (web, worker):
        for code in JOB_FAILURE_CODES:
            assert scraped[f'moai_job_failed_total{{reason="{code}"}}'] == 0, code
    model = 'model="breast-cancer-logreg"'
    assert worker[f'moai_job_latency_bucket{{le="5000.0",{model}}}'] == 0
    for status in ("succeeded", "failed", "cancelled"):
        assert worker[f'moai_jobs_finished_total{{{model},status="{status}"}}'] == 0
    assert web[f"moai_queue_depth{{{model}}}"] == 0
    exported = {name.split("{")[0] for name in {**web, **worker}}
    for query in SEED_RUNBOOK_QUERIES:
        names: set[str] = set()

        def visit(node, names=names):
            if isinstance(node, promql_parser.VectorSelector):
                names.add(node.name)

        promql_parser.walk(promql_parser.parse(query), visit)
        assert names, query
        assert names <= exported, query


def test_create_client_prints_only_its_documented_lines(fresh):
    done = fresh.manage("create_client", "quiet-acme")
    assert done.returncode == 0
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    assert lines[0] == "created client quiet-acme; its API key is shown once, store it now:"
    assert len(lines) == 2
    assert lines[1].count(".") == 1


def test_zero_match_incident_actions_still_leave_an_audit_record(fresh):
    assert fresh.manage("create_client", "idle-acme").returncode == 0
    invalidated = fresh.manage("invalidate_sessions", "--client", "idle-acme", "--reason", "breach drill")
    assert invalidated.stdout == "invalidated 0 session(s); 0 had already ended\n"
    rotated = fresh.manage("rotate_client_keys", "idle-acme", "--reason", "laptop lost")
    assert rotated.returncode == 0, rotated.stderr
    exported = fresh.manage("export_audit_log", "--format", "jsonl")
    records = [json.loads(line) for line in exported.stdout.splitlines()]
    invalidations = [r for r in records if r["action"] == "sessions.invalidated"]
    assert len(invalidations) == 1
    assert invalidations[0]["target_id"] == "client:idle-acme"
    assert invalidations[0]["reason"] == "breach drill"
    assert invalidations[0]["details"] == {"matched": 0, "ended": 0}
    rotations = [r for r in records if r["action"] == "client.keys_rotated" and r["target_id"] == "idle-acme"]
    assert len(rotations) == 1
    assert rotations[0]["details"] == {"sessions_ended": 0}


def test_a_refused_request_is_logged_once_with_its_code(fresh):
    api_key = fresh.manage("create_client", "lost-acme").stdout.splitlines()[-1]
    unknown = "00000000-0000-4000-8000-000000000000"
    response = requests.post(
        f"{fresh.stack.url}/api/v1/sessions/{unknown}/jobs",
        data=b"x",
        headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/octet-stream"},
        timeout=10,
    )
    assert response.json()["error"]["code"] == "context_not_found"
    web_log = fresh.folder / "logs" / "web.log"

    def lines() -> list[dict]:
        found = [json.loads(line) for line in web_log.read_text().splitlines() if unknown in line]
        return [entry for entry in found if entry["logger"] != "gunicorn.access"]  # one line per request anyway

    poll(lines, 5, 0.05)
    time.sleep(0.5)  # a second line (Django's own "Not Found") would come right after
    mine = lines()
    assert len(mine) == 1, mine
    entry = mine[0]
    log = web_log.read_text()
    assert entry["error_code"] == "context_not_found"
    assert entry["status"] == 404
    assert entry["client"] == "lost-acme"
    assert entry["path"] == f"/api/v1/sessions/{unknown}/jobs"
    assert api_key not in log


def test_predict_prints_no_library_notices(fresh, bundles, tmp_path):
    api_key = fresh.manage("create_client", "cli-acme").stdout.splitlines()[-1]
    rows = tmp_path / "rows.npy"
    np.save(rows, bundles["breast-cancer-logreg"].samples["X"][:2])
    done = subprocess.run(
        [sys.executable, "-m", "moai_client", "--url", fresh.stack.url, "--api-key", api_key,
         "--key-dir", str(tmp_path / "keys"), "--quiet", "predict", "breast-cancer-logreg", str(rows)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert len(json.loads(done.stdout)["labels"]) == 2


def test_the_runbook_lists_every_job_failure_code_the_metric_starts_with():
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    section = runbook.split("Job failures (worker log and `moai_job_failed_total{reason}`):", 1)[1].split("\n\n", 1)[0]
    causes = [line.split(":", 1)[0] for line in section.splitlines() if line.startswith("- ")]
    listed = {code for cause in causes for code in cause.split("`")[1::2]}
    assert listed == set(JOB_FAILURE_CODES)
