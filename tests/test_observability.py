"""The runbook's metrics from real processes, readiness, and JSON logs."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import promql_parser
import pytest
import requests
from django.test import Client

from jobs.models import Job
from moai_client import MoaiJobFailed
from sessions.models import KeySession
from tests.helpers import poll, session_with_wrong_keys

RUNBOOK_QUERIES = [
    "sum(moai_queue_depth)",
    "histogram_quantile(0.99, sum(rate(moai_job_latency_bucket[5m])) by (le))",
    "sum(rate(moai_job_failed_total[5m]))",
]


def scrape(url: str) -> dict[str, float]:
    """Prometheus text format to {series: value}."""
    text = requests.get(url, timeout=10).text
    series = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            series[name] = float(value)
    return series


def metric_names(expression: str) -> set[str]:
    names: set[str] = set()

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(expression), visit)
    return names


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_runbook_metrics_are_true_numbers_from_web_and_worker(stack, owner, logreg, bundles):
    # The worker serves the whole test run, so its counters are compared before and after.
    worker_url = f"http://127.0.0.1:{stack.env['MOAI_WORKER_METRICS_PORT']}/metrics"
    before = scrape(worker_url)
    rows = bundles["breast-cancer-logreg"].samples["X"]
    session = owner.open_session("breast-cancer-logreg")
    for i in range(3):
        owner.predict(session, rows[i : i + 1], timeout=60)
    # Keys damaged in storage behind the service's back (a session row written directly: an
    # opened session's keys are warm in every pool process before its answer).
    broken = session_with_wrong_keys(session, b"\x01" * 64)
    with pytest.raises(MoaiJobFailed) as failed:
        owner.predict(broken, rows[:1], timeout=60)
    assert failed.value.code == "evaluation_keys_unavailable"
    # Two jobs that stay queued: created without a broker message.
    for _ in range(2):
        Job.objects.create(
            session_id=session.context_id,
            client=KeySession.objects.get(pk=session.context_id).client,
            model_version=logreg,
            input_count=1,
            inputs_sha256="0" * 64,
        )

    worker = scrape(worker_url)

    def grew(series: str) -> float:
        return worker[series] - before.get(series, 0.0)

    model = 'model="breast-cancer-logreg"'
    assert grew(f"moai_job_latency_count{{{model}}}") == 4  # three succeeded, one failed
    assert grew(f'moai_job_latency_bucket{{le="5000.0",{model}}}') <= 4
    assert grew(f'moai_job_latency_bucket{{le="+Inf",{model}}}') == 4
    pattern = re.compile(r'moai_job_latency_bucket\{le="([0-9.]+)",model="breast-cancer-logreg"\}')
    buckets = sorted((float(m.group(1)), v) for k, v in worker.items() if (m := pattern.fullmatch(k)))
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)  # cumulative
    assert {10.0, 5000.0} <= {b for b, _ in buckets}
    assert grew('moai_job_failed_total{reason="evaluation_keys_unavailable"}') == 1
    assert worker["moai_worker_processes"] == 2

    web = scrape(f"{stack.url}/metrics")
    assert web[f"moai_queue_depth{{{model}}}"] == Job.objects.filter(status="queued").count() == 2
    assert web["moai_session_count"] == KeySession.objects.filter(status="active").count() == 2
    # No cache family: since 2026-12-06 the rate limits count in Redis directly, and nothing on the
    # API's path uses Django's cache, so its counters appear only once something does.
    for family in ("django_http_requests_total_by_method_total", "django_db_execute_total"):
        assert any(name.startswith(family) for name in web), family
    exported = {name.split("{")[0] for name in {**web, **worker}}
    for query in RUNBOOK_QUERIES:
        assert metric_names(query) <= exported, query
    assert not any(session.context_id in name or broken.context_id in name for name in {**web, **worker})


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_worker_logs_are_json_lines_with_job_fields_and_no_ciphertext(stack, owner, logreg, bundles):
    session = owner.open_session("breast-cancer-logreg")
    ciphertext = session.encrypt(bundles["breast-cancer-logreg"].samples["X"][:1])[0]
    job = owner.wait(owner.submit(session, [ciphertext])["job_id"], timeout=60)

    def logged() -> list[dict]:
        text = (stack.log_dir / "worker.log").read_text()
        lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        return [line for line in lines if line.get("job_id") == job["job_id"]]

    # The client is woken when the job's row commits; the worker logs its end just after.
    poll(lambda: len(logged()) >= 3, 10, 0.05)
    mine = logged()
    assert [line["message"] for line in mine] == ["job running", "job threads", "job succeeded"]
    assert mine[-1]["model"] == "breast-cancer-logreg"
    assert mine[-1]["client"] == "owner"
    assert mine[-1]["context_id"] == session.context_id
    assert mine[-1]["latency_ms"] == Job.objects.get(pk=job["job_id"]).latency_ms > 0
    assert {"time", "level", "logger"} <= set(mine[-1])
    logs = (stack.log_dir / "worker.log").read_bytes() + (stack.log_dir / "web.log").read_bytes()
    assert ciphertext[100:140] not in logs
    assert ciphertext[100:140].hex() not in logs.decode(errors="replace")
    # Small ciphertexts ride in the broker message as base64 (jobs.broker.send_job): bytes 99 to 141
    # are base64 characters 132 to 188 of the whole, wherever a log line might have quoted them.
    assert base64.b64encode(ciphertext)[132:188] not in logs


def test_runbook_queries_parse():
    """The queries the runbook shows are PromQL (parse raises otherwise) over the service's metrics;
    those checked against a live scrape above are among them."""
    from tests.deploy_tools import code_blocks

    runbook = (Path(__file__).resolve().parent.parent / "docs" / "runbook.md").read_text()
    shown = [
        line.strip()
        for block in code_blocks(runbook, "promql")
        for line in block.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    assert set(RUNBOOK_QUERIES) <= set(shown)
    for query in shown:
        names = metric_names(query)
        assert names, query
        assert all(name.startswith("moai_") for name in names), query
    assert metric_names(RUNBOOK_QUERIES[1]) == {"moai_job_latency_bucket"}


def test_readyz_names_the_unreachable_broker(db, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    response = Client().get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"] == {"database": "ok", "broker": "unreachable"}


def test_healthz_needs_nothing(settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    assert Client().get("/healthz").status_code == 200


@pytest.mark.django_db
def test_one_web_replica_at_a_time_reports_the_shared_state_gauges(monkeypatch, settings):
    """sum(moai_queue_depth) over replicas, as the runbook writes it, must count the queue once."""
    import redis

    from dashboards import collectors as metrics

    if not settings.REDIS_URL:
        pytest.skip("the lease lives in Redis; without it one host reports alone")
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.delete(metrics.SHARED_STATE_LEASE_KEY)
    try:
        monkeypatch.setattr(metrics.socket, "gethostname", lambda: "web-pod-a")
        assert b"moai_session_count" in metrics.render(shared_state=True)
        monkeypatch.setattr(metrics.socket, "gethostname", lambda: "web-pod-b")
        assert b"moai_session_count" not in metrics.render(shared_state=True)
        assert b"moai_queue_depth" not in metrics.render(shared_state=True)
        # The reporter's pod went away: its lease runs out and another replica takes over.
        client.delete(metrics.SHARED_STATE_LEASE_KEY)
        assert b"moai_session_count" in metrics.render(shared_state=True)
        assert client.ttl(metrics.SHARED_STATE_LEASE_KEY) > 60
    finally:
        # Other tests' web processes (this host's name) must be able to take the lease at once.
        client.delete(metrics.SHARED_STATE_LEASE_KEY)
