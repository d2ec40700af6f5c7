"""Raw rows in, right answers out: the client applies the model's registered preprocessing.

Real gunicorn and Celery processes; the models are registered with their scalers, as
build_demo_models does. Expected labels come from the clear scikit-learn pipeline
(scaler, then the model without encryption) on the same raw rows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn import datasets

from jobs.models import Job
from moai_client import MoaiError
from sessions.models import KeySession

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# A setosa, a virginica and a versicolor, as any iris table gives them.
TEXTBOOK_IRIS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
SETOSA, VERSICOLOR, VIRGINICA = 0, 1, 2


def test_raw_rows_through_the_client_get_the_clear_pipelines_labels(stack, owner, logreg, tree, bundles):
    cancer = datasets.load_breast_cancer().data
    cases = {
        "iris-tree": np.vstack([TEXTBOOK_IRIS, bundles["iris-tree"].samples["X"]]),
        # Rows of the whole data set, benign and malignant, training and held-out alike.
        "breast-cancer-logreg": cancer[::71],
    }
    for model, rows in cases.items():
        session = owner.open_session(model)
        prediction = owner.predict(session, rows, timeout=180)
        expected = bundles[model].built.clear_predict(rows).tolist()
        assert prediction.labels.tolist() == expected, model
        owner.close_session(session.context_id)
    iris = owner.predict(owner.open_session("iris-tree"), TEXTBOOK_IRIS, timeout=120)
    assert iris.labels.tolist() == [SETOSA, VIRGINICA, VERSICOLOR]


def test_a_row_of_3_columns_for_a_4_feature_model_is_refused_before_any_request(stack, owner, tree):
    session = owner.open_session("iris-tree")
    sent: list[tuple[str, str]] = []
    send = owner.http.session.request

    def counted(method: str, url: str, **kwargs: object) -> object:
        sent.append((method, url))
        return send(method, url, **kwargs)

    owner.http.session.request = counted  # type: ignore[method-assign]
    with pytest.raises(MoaiError, match=r"iris-tree v1 takes 4 features per row: sepal length \(cm\).*got 3 column"):
        owner.predict(session, [[5.1, 3.5, 1.4]], timeout=60)
    assert sent == []
    assert not Job.objects.exists()


@pytest.fixture
def cli(stack, make_tenant, tmp_path):
    tenant = make_tenant("cli-owner")
    env = {**os.environ, "MOAI_URL": stack.url, "MOAI_API_KEY": tenant.api_key, "MOAI_KEY_DIR": str(tmp_path / "keys")}

    def _run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "moai_client", "--quiet", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    _run.client = tenant.client  # type: ignore[attr-defined]
    _run.key_dir = tmp_path / "keys"  # type: ignore[attr-defined]
    return _run


def _csv(path: Path, rows: list[list[float]], header: list[str] | None = None) -> Path:
    lines = ([",".join(header)] if header else []) + [",".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_cli_predicts_textbook_iris_rows_from_a_csv_with_or_without_its_header(cli, tree, bundles, tmp_path):
    names = bundles["iris-tree"].feature_names
    for path in (_csv(tmp_path / "headed.csv", TEXTBOOK_IRIS, names), _csv(tmp_path / "plain.csv", TEXTBOOK_IRIS)):
        done = cli("predict", "iris-tree", str(path))
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["labels"] == [SETOSA, VIRGINICA, VERSICOLOR]


def test_cli_refuses_a_file_that_is_not_the_models_features_before_keygen(cli, tree, bundles, tmp_path):
    names = bundles["iris-tree"].feature_names
    wrong = {
        "3 columns": (_csv(tmp_path / "short.csv", [row[:3] for row in TEXTBOOK_IRIS]), "takes 4 features per row"),
        "reordered header": (
            _csv(tmp_path / "reordered.csv", [row[::-1] for row in TEXTBOOK_IRIS], names[::-1]),
            "the header does not match the model's features",
        ),
    }
    for case, (path, message) in wrong.items():
        done = cli("predict", "iris-tree", str(path))
        assert done.returncode == 1, case
        assert message in done.stderr, (case, done.stderr)
        assert "sepal length (cm), sepal width (cm), petal length (cm), petal width (cm)" in done.stderr, case
    # No keys were made and no session opened: the rows never left the machine.
    assert not list(cli.key_dir.glob("*/keys"))
    assert not KeySession.objects.filter(client=cli.client).exists()
    assert not Job.objects.exists()
