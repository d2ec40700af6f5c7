"""A model registered with its preprocessing: checked at registration, listed in the model's JSON, served."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import skops.io
from django.core.files.storage import default_storage
from django.core.management.base import CommandError
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, MinMaxScaler, StandardScaler

from base.models import AuditRecord
from moai_client import preprocessing as client_side
from registry import preprocessing as service_side
from registry.models import ModelVersion
from tests.helpers import error_code, run_command

TREE = "iris-tree"
IRIS_FEATURES = "sepal length (cm),sepal width (cm),petal length (cm),petal width (cm)"


@pytest.fixture
def measured(bundles, monkeypatch):
    """register_model's keygen and circuit run replaced by their known result (as conftest's ``register``):
    these tests are about the preprocessing, which is checked around the measurement."""
    from registry import services

    monkeypatch.setattr(services, "measure_bundle", lambda folder: bundles[TREE].facts)
    return bundles[TREE]


def _dump(obj: object, path: Path) -> Path:
    skops.io.dump(obj, path)
    return path


def test_register_model_with_its_scaler_lists_features_and_serves_the_file(db, alice, bundles):
    bundle = bundles[TREE]
    output = run_command(
        "register_model", "iris", str(bundle.folder), "--preprocessing", str(bundle.preprocessing),
        "--feature-names", IRIS_FEATURES,
    )  # fmt: skip
    assert "registered iris v1" in output
    assert "preprocessing yes" in output
    served = bundle.preprocessing.read_bytes()
    info = alice.http.get("/api/v1/models/iris").json()
    assert info["preprocessing"] is True
    assert info["feature_names"] == IRIS_FEATURES.split(",")
    assert info["input_features"] == 4
    assert info["preprocessing_sha256"] == hashlib.sha256(served).hexdigest()
    response = alice.http.get("/api/v1/models/iris/preprocessing.skops")
    assert response.status_code == 200
    assert response["X-Moai-Model-Version"] == "1"
    body = b"".join(response.streaming_content)
    assert body == served
    # The data owner's client loads it as the fitted scaler the model was trained behind.
    scaler = client_side.load(body)
    raw = [[5.1, 3.5, 1.4, 0.2]]
    assert np.allclose(scaler.transform(raw), bundle.built.scaler.transform(raw))
    record = AuditRecord.objects.get(action="model.registered", target_id="iris:v1")
    assert record.details["preprocessing_sha256"] == info["preprocessing_sha256"]


def test_a_model_without_preprocessing_says_so_and_its_file_is_404(db, alice, measured):
    run_command("register_model", "plain", str(measured.folder))
    info = alice.http.get("/api/v1/models/plain").json()
    assert (info["preprocessing"], info["preprocessing_sha256"], info["feature_names"]) == (False, None, None)
    response = alice.http.get("/api/v1/models/plain/preprocessing.skops")
    assert (response.status_code, error_code(response)) == (404, "preprocessing_not_found")
    unknown = alice.http.get("/api/v1/models/nope/preprocessing.skops")
    assert (unknown.status_code, error_code(unknown)) == (404, "model_not_found")


@pytest.mark.parametrize(
    ("transformer", "named"),
    [
        # A function: skops itself would refuse it without being told to trust it.
        (FunctionTransformer(np.log1p), "FunctionTransformer"),
        # An estimator that skops trusts by default, but that is not a scaler.
        (LogisticRegression(), "sklearn.linear_model._logistic.LogisticRegression"),
        # A pipeline hiding a transformer outside the list behind a trusted one.
        (make_pipeline(StandardScaler(), PCA(n_components=4)), "sklearn.decomposition._pca.PCA"),
    ],
)
def test_a_file_holding_a_type_outside_the_allow_list_is_refused(db, measured, tmp_path, transformer, named):
    X = np.random.default_rng(0).random((20, 4)) + 1
    transformer.fit(X, (X[:, 0] > 1.5).astype(int))
    path = _dump(transformer, tmp_path / "evil.skops")
    with pytest.raises(CommandError, match="outside the allow-list") as refused:
        run_command("register_model", "iris", str(measured.folder), "--preprocessing", str(path))
    assert named in str(refused.value)
    assert not ModelVersion.objects.exists()
    assert not default_storage.exists("models")
    # The client refuses the same file, whatever a server were to send.
    with pytest.raises(client_side.UntrustedPreprocessing, match=named):
        client_side.load(path.read_bytes())


def test_a_preprocessing_that_does_not_fit_the_model_is_refused(db, measured, tmp_path):
    X = np.random.default_rng(0).random((20, 5))
    cases = [
        (_dump(StandardScaler().fit(X), tmp_path / "five.skops"), [], "turns a row of 5 features into shape"),
        (tmp_path / "garbage.skops", [], "not a skops file"),
        (tmp_path / "missing.skops", [], "no preprocessing file"),
        (measured.preprocessing, ["--feature-names", "a,b,c"], "3 feature names given, but a row has 4"),
        (measured.preprocessing, ["--feature-names", "a,b,c,a"], "unique"),
        (measured.preprocessing, ["--feature-names", 'a,b,c,"d'], "invalid feature name"),
    ]
    (tmp_path / "garbage.skops").write_bytes(b"PK\x03\x04 not really a zip")
    for path, extra, message in cases:
        with pytest.raises(CommandError, match=message):
            run_command("register_model", "iris", str(measured.folder), "--preprocessing", str(path), *extra)
    assert not ModelVersion.objects.exists()


def test_feature_names_default_to_those_the_preprocessing_was_fitted_with(db, alice, measured, tmp_path):
    import pandas as pd

    names = IRIS_FEATURES.split(",")
    frame = pd.DataFrame(np.random.default_rng(0).random((20, 4)), columns=names)
    path = _dump(make_pipeline(StandardScaler(), MinMaxScaler()).fit(frame), tmp_path / "fitted.skops")
    run_command("register_model", "iris", str(measured.folder), "--preprocessing", str(path))
    assert alice.http.get("/api/v1/models/iris").json()["feature_names"] == names
    with pytest.raises(CommandError, match="differ from those the preprocessing was fitted with"):
        run_command(
            "register_model", "iris", str(measured.folder), "--preprocessing", str(path), "--feature-names", "a,b,c,d"
        )


def test_the_client_and_the_service_trust_the_same_types():
    assert client_side.TRUSTED_TYPES == service_side.TRUSTED_TYPES
