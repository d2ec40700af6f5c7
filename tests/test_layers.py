"""The project's packages form a one-way stack: a package imports only those below it.

Bottom up: base (imports no package of the project), keys, registry (model versions),
sessions, jobs, actions (what crosses layers: ending sessions stops their jobs), then
compat, dashboards and moai_site on top. Every import counts, at module level or inside a
function, ``if TYPE_CHECKING`` included; migrations are history and are left out.

An app's entry points (its views, admin, Celery tasks, management commands and the
request helpers of sessions.lookup) also call ``actions``: an operator's or a client's
request that ends sessions goes through the one function that also stops their jobs.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STACK = ["base", "keys", "registry", "sessions", "jobs", "actions", "compat", "dashboards", "moai_site"]
ENTRY_POINTS = {"views", "admin", "tasks", "lookup"}


def imported_packages(source: str) -> set[str]:
    """The top-level names of every absolute import in ``source``, wherever it is."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & set(STACK)


def is_entry_point(relative: Path) -> bool:
    return relative.stem in ENTRY_POINTS or "commands" in relative.parts


def allowed_for(package: str, relative: Path) -> set[str]:
    allowed = set(STACK[: STACK.index(package) + 1])
    if is_entry_point(relative):
        allowed.add("actions")
    return allowed


def violations(package: str, relative: Path, source: str) -> list[str]:
    return sorted(imported_packages(source) - allowed_for(package, relative))


def project_modules() -> list[tuple[str, Path]]:
    return [
        (package, path.relative_to(ROOT / package))
        for package in STACK
        for path in sorted((ROOT / package).rglob("*.py"))
        if "migrations" not in path.parts
    ]


def test_every_package_of_the_stack_is_a_folder_and_every_app_is_in_the_stack():
    from django.apps import apps

    assert all((ROOT / package / "__init__.py").is_file() for package in STACK)
    ours = {config.name.split(".")[0] for config in apps.get_app_configs() if (ROOT / config.name).is_dir()}
    assert ours <= set(STACK), f"apps outside the stack: {ours - set(STACK)}"
    assert len(project_modules()) > 100  # the walk sees the code, not an empty tree


def test_no_package_imports_one_above_it():
    upward = {
        f"{package}/{relative}": bad
        for package, relative in project_modules()
        if (bad := violations(package, relative, (ROOT / package / relative).read_text()))
    }
    assert upward == {}


@pytest.mark.parametrize(
    ("package", "relative", "source"),
    [
        ("base", Path("audit.py"), "from keys.models import ApiClient\n"),
        ("keys", Path("services.py"), "def f():\n    from sessions import models\n"),
        ("sessions", Path("services.py"), "import jobs.services\n"),
        ("sessions", Path("services.py"), "from actions import services\n"),
        ("jobs", Path("tasks.py"), "if True:\n    from compat.models import CompatToken\n"),
        ("keys", Path("admin.py"), "from compat.admin import issue_token_action\n"),
    ],
)
def test_the_check_sees_an_upward_import_wherever_it_is(package, relative, source):
    assert violations(package, relative, source) != []


def test_entry_points_may_call_actions_and_nothing_else_above_them():
    assert violations("sessions", Path("views.py"), "from actions import services\n") == []
    assert violations("keys", Path("management/commands/disable_client.py"), "from actions import services\n") == []
    assert violations("sessions", Path("views.py"), "from jobs import services\n") == ["jobs"]


def test_services_publish_the_job_task_by_its_registered_name():
    """jobs.services sends run_job by name; the name is the one queued messages already carry."""
    from jobs import services, tasks

    assert tasks.run_job.name == services.RUN_JOB == "inference.tasks.run_job"
    source = (ROOT / "jobs" / "services.py").read_text()
    modules = {n.module for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ImportFrom)}
    assert "jobs.tasks" not in modules
    assert not any(
        isinstance(n, ast.ImportFrom) and n.module == "jobs" and any(a.name == "tasks" for a in n.names)
        for n in ast.walk(ast.parse(source))
    )


def test_a_process_that_never_imported_the_task_module_knows_the_task_by_name():
    """Otherwise enqueue's by-name publish goes to the broker even where tasks run in place (eager)."""
    import os
    import subprocess
    import sys

    probe = (
        "import django; django.setup(); from celery import current_app; from jobs.services import RUN_JOB; "
        "print(RUN_JOB in current_app.tasks)"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip().splitlines()[-1:] == ["True"], done.stderr[-2000:]
