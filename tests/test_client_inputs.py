"""The client's checks of a data owner's rows and files against the model's listed features."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.preprocessing import StandardScaler

from moai_client import MoaiError
from moai_client.inputs import InputSpec, read_rows

NAMES = ("sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)")
TEXTBOOK = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]


@pytest.fixture(scope="module")
def scaler() -> StandardScaler:
    return StandardScaler().fit(load_iris().data)


@pytest.fixture
def spec(scaler: StandardScaler) -> InputSpec:
    info = {"name": "iris-tree", "version": 1, "input_features": 4, "feature_names": list(NAMES)}
    return InputSpec.of(info, scaler)


def test_rows_are_checked_then_preprocessed_as_the_model_was_trained(spec, scaler):
    assert np.allclose(spec.prepare(TEXTBOOK), scaler.transform(TEXTBOOK))
    assert spec.prepare(TEXTBOOK[0]).shape == (1, 4)  # one row given flat


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([[5.1, 3.5, 1.4]], "iris-tree v1 takes 4 features per row: sepal length"),
        ([[5.1, 3.5, 1.4, 0.2, 9.0]], "got 5 column"),
        ([[5.1, 3.5, 1.4, float("nan")]], "row 0 has a missing or non-finite value"),
        ([], "no rows to encrypt"),
        (np.zeros((1, 2, 2)), "expected a table of rows"),
        ([["a", "b", "c", "d"]], "rows must be numbers"),
    ],
)
def test_rows_that_are_not_the_models_features_are_refused(spec, rows, message):
    with pytest.raises(MoaiError, match=message):
        spec.prepare(rows)


def test_a_csv_with_or_without_the_feature_names_header_is_read(spec, tmp_path):
    body = "\n".join(",".join(str(v) for v in row) for row in TEXTBOOK) + "\n"
    plain, headed = tmp_path / "plain.csv", tmp_path / "headed.csv"
    plain.write_text(body)
    headed.write_text(",".join(NAMES) + "\n" + body)
    assert read_rows(plain, spec).tolist() == TEXTBOOK
    assert read_rows(headed, spec).tolist() == TEXTBOOK
    np.save(tmp_path / "rows.npy", np.array(TEXTBOOK))
    assert read_rows(tmp_path / "rows.npy", spec).tolist() == TEXTBOOK


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # The columns of a header in another order would be sent to the wrong features.
        ("petal length (cm),petal width (cm),sepal length (cm),sepal width (cm)\n1.4,0.2,5.1,3.5\n", "header does not"),
        ("sepal length (cm),sepal width (cm),petal length (cm)\n5.1,3.5,1.4\n", "header does not match"),
        ("5.1,3.5,1.4\n6.7,3.0,5.2\n", "takes 4 features per row"),
        ("5.1,3.5,1.4,0.2\n6.7,3.0,5.2\n", "different numbers of columns"),
        ("5.1,3.5,,0.2\n", "line 1: every field must be a number"),
        ("5.1,3.5,1.4,0.2\n6.7,x,5.2,2.3\n", "line 2: every field must be a number"),
    ],
)
def test_a_csv_that_does_not_match_the_features_is_refused(spec, tmp_path, text, message):
    path = tmp_path / "rows.csv"
    path.write_text(text)
    with pytest.raises(MoaiError, match=message):
        read_rows(path, spec)


def test_a_header_cannot_be_checked_for_a_model_that_lists_no_names(tmp_path):
    unnamed = InputSpec.of({"name": "m", "version": 2, "input_features": 2, "feature_names": None}, None)
    path = tmp_path / "rows.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(MoaiError, match="lists no feature names"):
        read_rows(path, unnamed)
    path.write_text("1,2\n3,4\n")
    assert read_rows(path, unnamed).tolist() == [[1, 2], [3, 4]]
