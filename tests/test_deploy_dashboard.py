"""The Grafana dashboard, and every metric a panel, alert or runbook query reads is one the service exports.

Part of the offline deployment checks (tests/deploy_tools.py has the shared helpers).
"""

from __future__ import annotations

from typing import Any

import promql_parser
import pytest
import yaml

from tests.deploy_tools import (
    ALERTS_FILE,
    RUNBOOK,
    TARGET_LABELS,
    chart_rules,
    code_blocks,
    dashboard_expressions,
    grafana_to_promql,
    label_names,
    load_dashboard,
    metric_names,
    summed_shared_gauges,
)


def test_dashboard_has_the_panels_operators_need():
    dashboard = load_dashboard()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert (variables["datasource"]["type"], variables["datasource"]["query"]) == ("datasource", "prometheus")
    by_metric: dict[str, list[dict[str, Any]]] = {}
    for panel in dashboard["panels"]:
        # Every panel and query follows the datasource variable, and every panel has a unit.
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["fieldConfig"]["defaults"]["unit"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            expression = grafana_to_promql(target["expr"])
            assert not summed_shared_gauges(expression), expression
            for name in metric_names(expression):
                by_metric.setdefault(name, []).append(panel)

    def panel(metric: str) -> dict[str, Any]:
        assert metric in by_metric, f"no panel reads {metric}"
        return by_metric[metric][0]

    def threshold_line(p: dict[str, Any]) -> float | None:
        defaults = p["fieldConfig"]["defaults"]
        if defaults["custom"]["thresholdsStyle"]["mode"] == "off":
            return None
        value: float = defaults["thresholds"]["steps"][-1]["value"]
        return value

    assert threshold_line(panel("moai_queue_depth")) == 100
    latency = panel("moai_job_latency_bucket")
    assert latency["fieldConfig"]["defaults"]["unit"] == "ms"
    assert threshold_line(latency) == 5000
    quantiles = {promql_parser.parse(grafana_to_promql(t["expr"])).args[0].val for t in latency["targets"]}
    assert quantiles == {0.5, 0.95, 0.99}
    failures = panel("moai_job_failed_total")
    assert "reason" in label_names(grafana_to_promql(failures["targets"][0]["expr"]))
    assert "* 60" in failures["targets"][0]["expr"]  # per minute
    assert threshold_line(panel("moai_session_count")) == 1000
    throughput = panel("moai_jobs_finished_total")
    assert "rate(moai_jobs_finished_total" in throughput["targets"][0]["expr"]
    pool = panel("moai_worker_busy")
    assert pool["fieldConfig"]["defaults"]["unit"] == "percentunit"
    assert "moai_worker_processes" in pool["targets"][0]["expr"]
    errors = panel("django_http_responses_total_by_status_total")
    assert any('status=~"5.."' in t["expr"] for t in errors["targets"])


def exported_metrics() -> dict[str, set[str]]:
    """{series name: label names} the service exports, from its own registry."""
    from django.test import Client
    from prometheus_client.parser import text_string_to_metric_families

    from base.metrics import observe_job_end
    from dashboards.collectors import render
    from registry.models import ModelVersion

    # A registered model, so that moai_queue_depth has a sample with its labels.
    ModelVersion.objects.create(
        name="m",
        version=1,
        client_zip="c",
        server_zip="s",
        server_sha256="0" * 64,
        evaluation_keys_bytes=1,
        input_ciphertext_bytes=1,
        output_ciphertext_bytes=1,
        input_features=1,
    )
    observe_job_end("m", "failed", 10, "x")
    observe_job_end("m", "succeeded", 20)
    assert Client().get("/healthz").status_code == 200
    exported: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(render(shared_state=True).decode()):
        for sample in family.samples:
            exported.setdefault(sample.name, set()).update(sample.labels)
    return exported


def runbook_queries() -> list[str]:
    return [
        line.strip()
        for block in code_blocks(RUNBOOK.read_text(), "promql")
        for line in block.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


@pytest.mark.django_db
def test_every_metric_in_dashboard_alerts_and_runbook_is_exported(renders):
    exported = exported_metrics()
    assert {"moai_queue_depth", "moai_job_latency_bucket", "moai_job_failed_total", "moai_session_count"} <= set(
        exported
    )
    expressions = [("dashboard", grafana_to_promql(e)) for e in dashboard_expressions(load_dashboard())]
    expressions += [("chart rule", r["expr"]) for r in chart_rules(renders["production"])]
    expressions += [
        ("moai-alerts.yaml", r["expr"]) for r in yaml.safe_load(ALERTS_FILE.read_text())["groups"][0]["rules"]
    ]
    expressions += [("runbook", q) for q in runbook_queries()]
    assert len(expressions) > 20
    for where, expression in expressions:
        names = metric_names(expression)
        assert names, f"{where}: {expression}"
        assert names <= set(exported), f"{where}: {names - set(exported)} not exported: {expression}"
        # Labels matched or grouped by are the series' own, or ones Prometheus adds to every target.
        known = set().union(*(exported[n] for n in names)) | TARGET_LABELS
        assert label_names(expression) <= known, f"{where}: {label_names(expression) - known}: {expression}"
