"""A process that ran a circuit leaves with its own exit status (base/exit_status.py).

Without the guard, concrete-python 2.10.0's atexit handler turns every such exit
into 0: a pytest run with a failing test, a ``sys.exit(3)`` and an uncaught
exception all exited 0. Each check runs a real circuit (a test model's server.zip,
real evaluation keys and a real ciphertext) in a fresh interpreter.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Runs one circuit the way a worker does (jobs.runtime) after the project's
# settings are loaded, as every process of the project starts.
RUN_CIRCUIT = textwrap.dedent(
    """
    import os
    from pathlib import Path

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    django.setup()

    from concrete import fhe

    from jobs.runtime import LoadedModel

    def run_circuit() -> bytes:
        work = Path(os.environ["MOAI_EXIT_TEST_DIR"])
        model = LoadedModel(work / "server.zip", work / "runtime-files")
        keys = fhe.EvaluationKeys.deserialize((work / "keys.bin").read_bytes())
        return model.run((work / "input.bin").read_bytes(), keys)
    """
)


@pytest.fixture(scope="module")
def circuit_dir(bundles, tmp_path_factory) -> Path:
    bundle = bundles["breast-cancer-logreg"]
    work = tmp_path_factory.mktemp("exit-status")
    (work / "server.zip").write_bytes((bundle.folder / "server.zip").read_bytes())
    (work / "keys.bin").write_bytes(bundle.evaluation_keys)
    (work / "input.bin").write_bytes(bundle.encrypt(0))
    return work


def _python(circuit_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MOAI_EXIT_TEST_DIR": str(circuit_dir), "PYTHONPATH": str(ROOT)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_sys_exit_after_a_circuit_keeps_its_status(circuit_dir):
    done = _python(circuit_dir, "-c", RUN_CIRCUIT + "\nassert run_circuit()\nraise SystemExit(3)\n")
    assert done.returncode == 3, done.stderr[-2000:]


def test_an_uncaught_exception_after_a_circuit_exits_non_zero(circuit_dir):
    done = _python(circuit_dir, "-c", RUN_CIRCUIT + "\nassert run_circuit()\nraise ValueError('boom')\n")
    assert done.returncode == 1, done.stderr[-2000:]
    assert "ValueError: boom" in done.stderr


def test_pytest_with_a_failing_test_exits_non_zero_after_a_circuit_ran(circuit_dir, tmp_path):
    (tmp_path / "test_runs_a_circuit.py").write_text(RUN_CIRCUIT + "\ndef test_runs():\n    assert run_circuit()\n")
    (tmp_path / "test_fails.py").write_text("def test_fails():\n    assert 1 == 2\n")
    done = _python(
        circuit_dir,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "--rootdir",
        str(ROOT),
        "-c",
        str(ROOT / "pyproject.toml"),
        str(tmp_path / "test_runs_a_circuit.py"),
        str(tmp_path / "test_fails.py"),
    )
    assert "1 failed, 1 passed" in done.stdout, done.stdout[-3000:]
    assert done.returncode == 1, done.stdout[-3000:]


def test_writing_to_a_closed_pipe_after_a_circuit_raises_instead_of_crashing(circuit_dir):
    # concrete-python 2.10.0's runtime takes SIGPIPE over at the first circuit run; a write to
    # a closed pipe then killed the process (exit 139) instead of raising BrokenPipeError.
    code = RUN_CIRCUIT + textwrap.dedent(
        """
        assert run_circuit()
        read_end, write_end = os.pipe()
        os.close(read_end)
        try:
            os.write(write_end, b"x")
        except BrokenPipeError:
            raise SystemExit(4)
        """
    )
    done = _python(circuit_dir, "-c", code)
    assert done.returncode == 4, done.stderr[-2000:]
