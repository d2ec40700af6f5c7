"""The Helm chart as a whole, checked offline: lint, Kubernetes schemas, workloads, values, pod security,
secrets, migrations and disruption budgets.

Part of the offline deployment checks (tests/deploy_tools.py has the shared helpers).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from typing import Any

import kubernetes_validate
import pytest

from tests.deploy_tools import (
    AUTOSCALING,
    BEAT,
    CHART,
    EXTERNAL_STORES,
    MIGRATE,
    NAMESPACE,
    PRODUCTION,
    QUICK_SECRETS,
    RELEASE,
    WEB,
    WORKER,
    HelmError,
    container,
    env_of,
    find,
    helm_run,
    labels_match,
    pod_templates,
    render,
    sets,
)

MOAI_WORKLOADS = [("Deployment", WEB), ("Deployment", WORKER), ("Deployment", BEAT), ("Job", MIGRATE)]


COMPONENTS = {"web", "worker", "beat", "migrate", "redis", "postgresql"}


# What MOAI reads as X_FILE, and the file name each has in the secrets volume.
SECRET_FILES = [
    ("SECRET_KEY", "secret-key"),
    ("MOAI_AUDIT_KEY", "audit-key"),
    ("DATABASE_URL", "database-url"),
    ("REDIS_URL", "redis-url"),
]


# Volume types the restricted Pod Security Standard allows (of those this chart could use).
RESTRICTED_VOLUMES = {"emptyDir", "secret", "configMap", "projected", "persistentVolumeClaim"}


def all_containers(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, template in pod_templates(objects).items():
        for c in template["spec"].get("initContainers", []) + template["spec"]["containers"]:
            yield name, c


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


def test_the_worker_and_beat_log_at_the_level_the_web_does(helm):
    """Celery sets the root logger to its --loglevel after Django set it from MOAI_LOG_LEVEL, so
    the chart passes its one level to both (before, a worker logged every job at INFO under
    logLevel WARNING: three JSON lines a job in a pool process)."""
    objects = render(helm, "--set", "moai.logLevel=WARNING")
    for name in (WORKER, BEAT):
        found = container(objects, "Deployment", name)
        assert found["command"][-2:] == ["--loglevel", "WARNING"]
        assert {"name": "MOAI_LOG_LEVEL", "value": "WARNING"} in found["env"]


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
