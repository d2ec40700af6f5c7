"""The chart's NetworkPolicies: deny by default, allow only the traffic MOAI needs.

Part of the offline deployment checks (tests/deploy_tools.py has the shared helpers).
"""

from __future__ import annotations

from typing import Any

from tests.deploy_tools import (
    RELEASE,
    WORKER,
    find,
    labels_match,
    pod_templates,
)


def policies_for(objects: list[dict[str, Any]], labels: dict[str, str]) -> list[dict[str, Any]]:
    selected = []
    for policy in (o for o in objects if o["kind"] == "NetworkPolicy"):
        selector = policy["spec"]["podSelector"]
        expressions = selector.get("matchExpressions", [])
        assert all(e["operator"] == "In" for e in expressions)
        if labels_match(selector.get("matchLabels", {}), labels) and all(
            labels.get(e["key"]) in e["values"] for e in expressions
        ):
            selected.append(policy["spec"])
    return selected


def allowed(objects: list[dict[str, Any]], labels: dict[str, str], direction: str) -> list[tuple[int, Any]]:
    """(port, peers) pairs a pod may use in one direction; peers None means anyone."""
    peer_key = "from" if direction == "ingress" else "to"
    return [
        (port["port"], rule.get(peer_key))
        for policy in policies_for(objects, labels)
        for rule in policy.get(direction, [])
        for port in rule["ports"]
    ]


def objects_values_metrics_from(objects: list[dict[str, Any]]) -> Any:
    """networkPolicy.metricsFrom as rendered: the peers of the worker metrics policy."""
    policy = find(objects, "NetworkPolicy", "moai-service-worker-metrics-ingress")
    return policy["spec"]["ingress"][0]["from"]


def test_network_policies_deny_by_default_and_allow_only_moai_traffic(renders):
    objects = renders["default"]
    for name, template in pod_templates(objects).items():
        labels = template["metadata"]["labels"]
        policies = policies_for(objects, labels)
        # Default deny: a policy of both types and no rules selects every pod of the release.
        assert any(
            set(p["policyTypes"]) == {"Ingress", "Egress"} and "ingress" not in p and "egress" not in p
            for p in policies
        ), name
        ingress = allowed(objects, labels, "ingress")
        egress = allowed(objects, labels, "egress")
        component = labels["component"]
        if component == "web":
            # The proxy's API port is public (mTLS guards it); its metrics port is Prometheus's only.
            assert ingress == [(8080, None), (9100, objects_values_metrics_from(objects))]
        elif component == "worker":
            assert [port for port, _ in ingress] == [9808]
            assert ingress[0][1]
        elif component in ("redis", "postgresql"):
            (rule,) = ingress
            assert rule[0] == {"redis": 6379, "postgresql": 5432}[component]
            assert rule[1][0]["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == RELEASE
        else:
            assert ingress == [], name
        if component in ("web", "worker", "beat", "migrate"):
            assert sorted(port for port, _ in egress) == [53, 53, 5432, 6379], name
            assert all(peers for _, peers in egress), f"{name} may reach anywhere"
        else:
            assert egress == [], name
    # An external database and Redis: their ports, to any address unless narrowed.
    external = renders["external"]
    worker_labels = find(external, "Deployment", WORKER)["spec"]["template"]["metadata"]["labels"]
    assert sorted(port for port, _ in allowed(external, worker_labels, "egress")) == [53, 53, 5432, 6379]
