"""The demo models: small Concrete-ML classifiers on scikit-learn's bundled data sets.

Nothing is downloaded: the data sets ship inside scikit-learn. Each model is trained
behind a ``StandardScaler``; a build writes the ``FHEModelDev`` folder, the fitted
scaler as ``preprocessing.skops`` (registered with the model, so data owners send raw
rows) and ``samples.npz``: held-out raw rows (``X``), the same rows standardized as
the circuit takes them (``X_model``, for callers that use ``FHEModelClient`` directly),
their labels and the clear pipeline's predictions, which decrypted results must equal.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SAMPLES_PER_MODEL = 4
PREPROCESSING_FILE = "preprocessing.skops"


@dataclass(frozen=True)
class DemoModel:
    name: str
    description: str
    dataset: str
    make: Callable[[], Any]

    def feature_names(self) -> list[str]:
        """The data set's own feature names, in column order: what a data owner's rows hold."""
        from sklearn import datasets

        return [str(name) for name in getattr(datasets, f"load_{self.dataset}")().feature_names]

    def preprocessing(self, folder: Path) -> Path:
        return folder / PREPROCESSING_FILE


def _logreg() -> Any:
    from concrete.ml.sklearn import LogisticRegression

    return LogisticRegression(n_bits=8)


def _tree() -> Any:
    from concrete.ml.sklearn import DecisionTreeClassifier

    return DecisionTreeClassifier(max_depth=2, n_bits=3, random_state=0)


def _xgb() -> Any:
    from concrete.ml.sklearn import XGBClassifier

    return XGBClassifier(n_estimators=6, max_depth=3, n_bits=5, random_state=0)


DEMO_MODELS = [
    DemoModel("breast-cancer-logreg", "Logistic regression, breast cancer (8-bit)", "breast_cancer", _logreg),
    DemoModel("iris-tree", "Decision tree depth 2, iris (3-bit)", "iris", _tree),
    DemoModel("wine-xgb", "XGBoost 6 trees depth 3, wine (5-bit)", "wine", _xgb),
]


def _load(dataset: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn import datasets

    loader = getattr(datasets, f"load_{dataset}")
    X, y = loader(return_X_y=True)
    return np.asarray(X, dtype=np.float64), np.asarray(y)


@dataclass(frozen=True)
class Built:
    folder: Path
    scaler: Any
    estimator: Any

    def clear_predict(self, raw_rows: Any) -> np.ndarray:
        """The clear pipeline's labels (scaler, then the model without encryption) for raw rows."""
        return np.asarray(self.estimator.predict(self.scaler.transform(np.asarray(raw_rows)), fhe="disable"))


def build(model: DemoModel, folder: Path) -> Built:
    """Train, compile and export one demo model and its scaler into ``folder``."""
    import skops.io
    from concrete.ml.deployment import FHEModelDev
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    X, y = _load(model.dataset)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=42, stratify=y)
    # Inputs are quantized with one scale for all features in a linear model, so features
    # on very different scales would lose their small ones: every model is trained on
    # standardized rows, and the scaler goes to the data owner with the model.
    scaler = StandardScaler().fit(X_train)
    estimator = model.make()
    estimator.fit(scaler.transform(X_train), y_train)
    estimator.compile(scaler.transform(X_train))
    if folder.exists():
        shutil.rmtree(folder)
    FHEModelDev(str(folder), estimator).save()
    skops.io.dump(scaler, model.preprocessing(folder))
    built = Built(folder, scaler, estimator)
    rows = X_test[:SAMPLES_PER_MODEL]
    np.savez(
        folder / "samples.npz",
        X=rows,
        X_model=scaler.transform(rows),
        y_true=y_test[:SAMPLES_PER_MODEL],
        clear_prediction=built.clear_predict(rows),
        test_accuracy=np.array(float((built.clear_predict(X_test) == y_test).mean())),
    )
    return built
