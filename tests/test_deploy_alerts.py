"""The alert rules (chart PrometheusRule and the standalone file) and the ServiceMonitors that feed them.

Part of the offline deployment checks (tests/deploy_tools.py has the shared helpers).
"""

from __future__ import annotations

import promql_parser
import yaml

from tests.deploy_tools import (
    ALERTS_FILE,
    NAMESPACE,
    OPERATOR_API,
    WEB,
    chart_rules,
    find,
    labels_match,
    metric_names,
    pod_templates,
    render,
    summed_shared_gauges,
)

# The runbook's four alerts: the series each reads and its threshold.
RUNBOOK_ALERTS = {
    "MoaiQueueDepthHigh": ("moai_queue_depth", 100),
    "MoaiJobLatencyP99High": ("moai_job_latency_bucket", 5000),
    "MoaiJobFailuresHigh": ("moai_job_failed_total", 10),
    "MoaiActiveSessionsHigh": ("moai_session_count", 1000),
}


def test_prometheus_rule_has_the_runbooks_four_alerts_at_its_thresholds(renders, helm):
    rules = {r["alert"]: r for r in chart_rules(renders["production"])}
    assert set(rules) == {*RUNBOOK_ALERTS, "MoaiAuditLogShrank"}
    for alert, (series, threshold) in RUNBOOK_ALERTS.items():
        rule = rules[alert]
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"]
        expression = promql_parser.parse(rule["expr"])
        assert str(expression.op) == ">", rule["expr"]
        assert expression.rhs.val == threshold, rule["expr"]
        assert metric_names(rule["expr"]) == {series}
        # Scoped to the release's namespace, so two installations do not alert for each other.
        assert f'namespace="{NAMESPACE}"' in rule["expr"]
        assert not summed_shared_gauges(rule["expr"]), rule["expr"]
    latency = rules["MoaiJobLatencyP99High"]["expr"]
    assert latency.startswith("histogram_quantile(0.99, sum by (le) (rate(moai_job_latency_bucket{")
    assert "[5m]" in latency
    failures = promql_parser.parse(rules["MoaiJobFailuresHigh"]["expr"]).lhs
    assert str(failures.op) == "*"
    assert failures.rhs.val == 60
    assert "rate(moai_job_failed_total" in rules["MoaiJobFailuresHigh"]["expr"]
    # Thresholds are values.
    changed = render(helm, *OPERATOR_API, "--set", "metrics.prometheusRule.queueDepth=250")
    (queue,) = [r for r in chart_rules(changed) if r["alert"] == "MoaiQueueDepthHigh"]
    assert queue["expr"].endswith("> 250")
    # Clusters without the operator's API would refuse these objects: none are rendered there.
    assert not [o for o in renders["default"] if o["apiVersion"].startswith("monitoring.coreos.com/")]


def test_audit_log_alert_fires_when_the_heads_sequence_goes_down(renders):
    (rule,) = [r for r in chart_rules(renders["production"]) if r["alert"] == "MoaiAuditLogShrank"]
    assert rule["labels"]["severity"] == "critical"
    assert "for" not in rule  # at once: tampering does not wait for a second look
    assert "verify_audit_log --checkpoints" in rule["annotations"]["description"]
    expression = promql_parser.parse(rule["expr"])
    assert str(expression.op) == "or"
    # A drop seen by the reporting replica, even if new writes fill the table up again afterwards...
    dropped = expression.lhs
    assert (str(dropped.op), dropped.rhs.val) == (">", 0)
    assert str(dropped.lhs) == f'max(resets(moai_audit_head_sequence{{namespace="{NAMESPACE}"}}[30m]))'
    # ...and the head now below its maximum of the last 30 minutes, across a change of reporter.
    below = expression.rhs
    assert str(below.op) == "<"
    assert str(below.lhs) == f'max(moai_audit_head_sequence{{namespace="{NAMESPACE}"}})'
    assert str(below.rhs) == f'max(max_over_time(moai_audit_head_sequence{{namespace="{NAMESPACE}"}}[30m]))'
    assert not summed_shared_gauges(rule["expr"])


def test_standalone_alert_rules_are_the_charts(renders):
    standalone = yaml.safe_load(ALERTS_FILE.read_text())
    rules = chart_rules(renders["production"])
    for rule in rules:
        rule["expr"] = rule["expr"].replace(f'{{namespace="{NAMESPACE}"}}', "")
    assert standalone == {"groups": [{"name": "moai-service", "rules": rules}]}


def test_service_monitors_find_the_metrics_ports(renders):
    objects = renders["production"]
    monitors = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ServiceMonitor"}
    assert set(monitors) == {WEB, "moai-service-worker"}
    services = [o for o in objects if o["kind"] == "Service"]
    for name, monitor in monitors.items():
        assert set(monitor["spec"]) == {"selector", "namespaceSelector", "endpoints"}
        assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
        (service,) = [
            s for s in services if labels_match(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
        ]
        (endpoint,) = monitor["spec"]["endpoints"]
        assert set(endpoint) <= {"port", "path", "interval", "scheme", "tlsConfig"}
        assert endpoint["path"] == "/metrics"
        (port,) = [p for p in service["spec"]["ports"] if p["name"] == endpoint["port"]]
        # The Service's pods have a container port of that name.
        pods = [
            t
            for t in pod_templates(objects).values()
            if labels_match(service["spec"]["selector"], t["metadata"]["labels"])
        ]
        assert pods, name
        for template in pods:
            names = {p["name"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
            assert port["targetPort"] in names, name
        # Metrics never come through the API's Service (and so never through a LoadBalancer).
        assert service["metadata"]["name"] != WEB
        assert service["spec"].get("clusterIP") == "None"
    web = monitors[WEB]["spec"]["endpoints"][0]
    # Under mTLS Prometheus presents a client certificate signed by the client CA.
    assert web["scheme"] == "https"
    tls = web["tlsConfig"]
    client = find(objects, "Secret", tls["cert"]["secret"]["name"])
    assert {tls["cert"]["secret"]["key"], tls["keySecret"]["key"], tls["ca"]["secret"]["key"]} <= set(client["data"])
    assert client["data"]["ca.crt"] == find(objects, "Secret", "moai-service-tls")["data"]["ca.crt"]
