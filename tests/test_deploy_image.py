"""The container image: a lean non-root Dockerfile, its build context, and a healthcheck per process.

Part of the offline deployment checks (tests/deploy_tools.py has the shared helpers).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from tests.deploy_tools import (
    BEAT,
    DOCKERFILE,
    ROOT,
    WEB,
    WORKER,
    container,
    copy_sources,
    dockerignore_excludes,
    env_of,
    find,
    parse_dockerfile,
    read_dockerignore,
)


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
    strays += ["docs/runbook.md", "moai_client/client.py", "scripts/demo.py", ".env", "base/__pycache__/views.pyc"]
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
