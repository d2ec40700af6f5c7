"""The chart with blobs in S3-compatible object storage, and workers scaled on the queue by KEDA.

Rendered offline with `helm template` and checked with kubernetes-validate, like the rest
of the chart (tests/test_deploy.py). KEDA's ScaledObject is a custom resource with no
schema here: its fields are checked one by one instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from tests.deploy_tools import (
    AUTOSCALING,
    OPERATOR_API,
    PRODUCTION,
    HelmError,
    container,
    env_of,
    find,
    helm_run,
    pod_templates,
    render,
)
from tests.deploy_tools import ensure_helm as _ensure_helm

WEB, WORKER, BEAT, MIGRATE = "moai-service-web", "moai-service", "moai-service-beat", "moai-service-migrate"
S3 = ["--set", "storage.type=s3", "--set", "storage.s3.bucket=moai-blobs", "--set", "storage.s3.region=eu-west-1"]
S3_SECRET = ["--set", "storage.s3.existingSecret=moai-s3", "--set", "storage.s3.endpoint=https://minio.example:9000"]
KEDA = ["--set", "autoscaling.keda.enabled=true", "--set", "autoscaling.keda.queueDepthPerWorker=6"]


@pytest.fixture(scope="module")
def helm() -> Path:
    return _ensure_helm()


@pytest.fixture(scope="module")
def renders(helm: Path) -> dict[str, list[dict[str, Any]]]:
    return {
        "filesystem": render(helm),
        "s3": render(helm, *S3),
        "s3-secret": render(helm, *S3, *S3_SECRET, *PRODUCTION, *OPERATOR_API),
        "s3-keda": render(helm, *S3, *PRODUCTION, *AUTOSCALING, *KEDA, *OPERATOR_API),
    }


def kinds(objects: list[dict[str, Any]]) -> set[str]:
    return {obj["kind"] for obj in objects}


@pytest.mark.parametrize("version", ["1.25", kubernetes_validate.latest_version()])
def test_s3_renders_valid_kubernetes(renders, version):
    checked = 0
    for name in ("s3", "s3-secret", "s3-keda"):
        for obj in renders[name]:
            if obj["apiVersion"].startswith(("monitoring.coreos.com/", "keda.sh/")):
                continue  # custom resources: no schema shipped (the ScaledObject is checked below)
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{name}: {obj['kind']}/{obj['metadata']['name']}: {'.'.join(map(str, exc.path))}: {exc}")
            checked += 1
    assert checked > 40


def test_helm_lint_strict_passes_with_s3_and_keda(helm):
    from tests.deploy_tools import CHART, NAMESPACE, QUICK_SECRETS

    flags = [*S3, *S3_SECRET, *PRODUCTION, *AUTOSCALING, *KEDA]
    result = helm_run(helm, "lint", "--strict", str(CHART), "--namespace", NAMESPACE, *QUICK_SECRETS, *flags)
    assert result.returncode == 0, result.stdout + result.stderr


def test_filesystem_keeps_its_shared_claim(renders):
    objects = renders["filesystem"]
    assert "PersistentVolumeClaim" in kinds(objects)
    for name, template in pod_templates(objects).items():
        if name.startswith(("StatefulSet/", "Job/")):
            continue
        [data] = [v for v in template["spec"]["volumes"] if v["name"] == "data"]
        assert data["persistentVolumeClaim"]["claimName"] == "moai-service-data", name
        assert "MOAI_BLOB_STORAGE" not in env_of(container(objects, *name.split("/")))


@pytest.mark.parametrize("name", ["s3", "s3-secret", "s3-keda"])
def test_s3_renders_no_claim_and_no_shared_volume(renders, name):
    objects = renders[name]
    assert "PersistentVolumeClaim" not in kinds(objects)
    for pod, template in pod_templates(objects).items():
        if pod.startswith("StatefulSet/"):
            continue  # the optional bundled PostgreSQL and Redis keep their own per-pod claims
        volumes = template["spec"]["volumes"]
        assert not [v for v in volumes if "persistentVolumeClaim" in v], pod
    sizes = {}
    for kind, workload in [("Deployment", WEB), ("Deployment", WORKER), ("Deployment", BEAT)]:
        spec = find(objects, kind, workload)["spec"]["template"]["spec"]
        [data] = [v for v in spec["volumes"] if v["name"] == "data"]
        sizes[workload] = data["emptyDir"]["sizeLimit"]
    assert sizes == {WEB: "4Gi", WORKER: "20Gi", BEAT: "4Gi"}


def test_s3_configuration_reaches_every_moai_container(renders):
    for kind, workload in [("Deployment", WEB), ("Deployment", WORKER), ("Deployment", BEAT), ("Job", MIGRATE)]:
        env = env_of(container(renders["s3"], kind, workload))
        assert env["MOAI_BLOB_STORAGE"] == "s3"
        assert env["MOAI_S3_BUCKET"] == "moai-blobs"
        assert env["MOAI_S3_REGION"] == "eu-west-1"
        # No Secret given: the SDK's own chain (workload identity), no key files.
        assert "MOAI_S3_ACCESS_KEY_ID_FILE" not in env
        env = env_of(container(renders["s3-secret"], kind, workload))
        assert env["MOAI_S3_ENDPOINT_URL"] == "https://minio.example:9000"
        assert env["MOAI_S3_ACCESS_KEY_ID_FILE"] == "/run/secrets/moai/s3-access-key-id"
        assert env["MOAI_S3_SECRET_ACCESS_KEY_FILE"] == "/run/secrets/moai/s3-secret-access-key"
        spec = find(renders["s3-secret"], kind, workload)["spec"]["template"]["spec"]
        [secrets] = [v for v in spec["volumes"] if v["name"] == "secrets"]
        from_ours = [s["secret"] for s in secrets["projected"]["sources"] if s["secret"]["name"] == "moai-s3"]
        assert from_ours == [
            {
                "name": "moai-s3",
                "items": [
                    {"key": "access-key-id", "path": "s3-access-key-id"},
                    {"key": "secret-access-key", "path": "s3-secret-access-key"},
                ],
            }
        ]


def test_workload_identity_annotations_go_on_the_service_account(helm):
    role = "arn:aws:iam::123456789012:role/moai-blobs"
    objects = render(helm, *S3, "--set-string", f"serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn={role}")
    account = find(objects, "ServiceAccount", "moai-service")
    assert account["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": role}
    for template in pod_templates(objects).values():
        if template["metadata"]["labels"]["component"] in {"web", "worker", "beat", "migrate"}:
            assert template["spec"]["serviceAccountName"] == "moai-service"


def test_s3_needs_a_bucket(helm):
    with pytest.raises(HelmError, match=r"storage\.s3\.bucket"):
        render(helm, "--set", "storage.type=s3")
    with pytest.raises(HelmError, match=r"storage\.type"):
        render(helm, "--set", "storage.type=nfs")


def test_network_policy_lets_moai_pods_reach_the_bucket_only_with_s3(renders, helm):
    def bucket_rules(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
        egress = find(objects, "NetworkPolicy", "moai-service-egress")["spec"]["egress"]
        return [rule for rule in egress if {"port": 443, "protocol": "TCP"} in rule.get("ports", [])]

    assert bucket_rules(renders["filesystem"]) == []
    assert bucket_rules(renders["s3"]) == [{"ports": [{"port": 443, "protocol": "TCP"}]}]
    narrowed = render(
        helm, *S3, "--set", "networkPolicy.objectStorage.to[0].ipBlock.cidr=10.20.0.0/16"
    )  # a self-hosted store's addresses
    assert bucket_rules(narrowed) == [
        {"ports": [{"port": 443, "protocol": "TCP"}], "to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}]}
    ]


def test_keda_scales_the_worker_deployment_on_queue_depth(renders):
    objects = renders["s3-keda"]
    scaled = find(objects, "ScaledObject", "moai-service")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": WORKER}
    find(objects, "Deployment", WORKER)  # the target exists under that name
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (2, 10)
    queue, cpu = spec["triggers"]
    assert queue["type"] == "prometheus"
    assert queue["metricType"] == "AverageValue"
    assert 'moai_queue_depth{namespace="moai"}' in queue["metadata"]["query"]
    assert queue["metadata"]["threshold"] == "6"
    assert cpu == {"type": "cpu", "metricType": "Utilization", "metadata": {"value": "70"}}
    # KEDA owns the workers' HPA; two on one Deployment would fight. Web keeps its CPU HPA.
    hpas = [obj["spec"]["scaleTargetRef"]["name"] for obj in objects if obj["kind"] == "HorizontalPodAutoscaler"]
    assert hpas == [WEB]
    assert "replicas" not in find(objects, "Deployment", WORKER)["spec"]


def test_keda_is_off_by_default_and_without_it_the_cpu_hpa_scales_workers(renders, helm):
    assert "ScaledObject" not in kinds(renders["s3"])
    objects = render(helm, *PRODUCTION, *AUTOSCALING)
    hpas = sorted(obj["spec"]["scaleTargetRef"]["name"] for obj in objects if obj["kind"] == "HorizontalPodAutoscaler")
    assert hpas == [WORKER, WEB]
    keda_without_hpa = render(helm, *KEDA)
    assert [o["kind"] for o in keda_without_hpa if o["kind"] in {"ScaledObject", "HorizontalPodAutoscaler"}] == [
        "ScaledObject"
    ]
    assert "replicas" not in find(keda_without_hpa, "Deployment", WORKER)["spec"]
