"""The project's packages form a one-way stack: a package imports only those below it.

Bottom up: base (imports no package of the project), keys, registry (model versions),
sessions, jobs (which also ends sessions together with their jobs), actions (the
operators' actions that cross layers, with the admin, commands and beat task that call
them), api (the REST views), then compat, dashboards and moai_site on top. Every import
counts, at module level or inside a function, ``if TYPE_CHECKING`` included; migrations
are history and are left out. There is no exception: an entry point (a view, an admin, a
Celery task, a management command) lives in the lowest package that may import everything
it calls.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STACK = ["base", "keys", "registry", "sessions", "jobs", "actions", "api", "compat", "dashboards", "moai_site"]


def imported_packages(source: str) -> set[str]:
    """The top-level names of every absolute import in ``source``, wherever it is."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & set(STACK)


def violations(package: str, relative: Path, source: str) -> list[str]:
    """The packages above ``package`` that ``source``, its module at ``relative``, imports."""
    return sorted(imported_packages(source) - set(STACK[: STACK.index(package) + 1]))


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
        # Entry points get no exception: views, admin, tasks and commands below actions may not call it.
        ("sessions", Path("views.py"), "from actions import services\n"),
        ("sessions", Path("lookup.py"), "from actions.services import ensure_current\n"),
        ("sessions", Path("admin.py"), "from actions.services import end_selected_sessions\n"),
        ("sessions", Path("tasks.py"), "from actions import services\n"),
        ("jobs", Path("tasks.py"), "from actions.services import sweep\n"),
        ("keys", Path("management/commands/disable_client.py"), "from actions.services import set_client_active\n"),
        ("jobs", Path("views.py"), "from api.lookup import client_actor\n"),
        ("actions", Path("admin.py"), "from api import sessions\n"),
    ],
)
def test_the_check_sees_an_upward_import_wherever_it_is(package, relative, source):
    assert violations(package, relative, source) != []


def test_a_package_may_import_every_package_below_it():
    assert violations("api", Path("sessions.py"), "from actions import services\nfrom jobs import ending\n") == []
    assert violations("actions", Path("management/commands/disable_client.py"), "import keys.services\n") == []


@pytest.mark.parametrize("module", ["services", "broker"])
def test_services_publish_the_job_task_by_its_registered_name(module):
    """jobs.broker sends run_job by name; the name is the one queued messages already carry."""
    from jobs import broker, tasks

    assert tasks.run_job.name == broker.RUN_JOB == "inference.tasks.run_job"
    source = (ROOT / "jobs" / f"{module}.py").read_text()
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
        "import django; django.setup(); from celery import current_app; from jobs.broker import RUN_JOB; "
        "print(RUN_JOB in current_app.tasks)"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip().splitlines()[-1:] == ["True"], done.stderr[-2000:]


def test_a_worker_finds_every_task_that_beat_schedules_under_its_name():
    """Tasks moved between packages (the sweep: sessions -> actions) keep the names beat sends."""
    import os
    import subprocess
    import sys

    probe = (
        "import django; django.setup(); from moai_site.celery import app; from django.conf import settings; "
        "app.loader.import_default_modules(); "
        "print(sorted(e['task'] for e in settings.CELERY_BEAT_SCHEDULE.values() if e['task'] not in app.tasks))"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip().splitlines()[-1:] == ["[]"], done.stdout[-2000:] + done.stderr[-2000:]
