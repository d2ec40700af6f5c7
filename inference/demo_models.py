"""The demo models: small Concrete-ML classifiers on scikit-learn's bundled data sets.

Nothing is downloaded: the data sets ship inside scikit-learn. Each build writes an
``FHEModelDev`` folder plus ``samples.npz`` (held-out rows, their labels and the
plaintext model's predictions) that the demo client compares decrypted results with.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SAMPLES_PER_MODEL = 4


@dataclass(frozen=True)
class DemoModel:
    name: str
    description: str
    dataset: str
    make: Callable[[], Any]


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


def build(model: DemoModel, folder: Path) -> Path:
    """Train, compile and export one demo model into ``folder``; returns the folder."""
    from concrete.ml.deployment import FHEModelDev
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    X, y = _load(model.dataset)
    X_train, X_test, _y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=42, stratify=y)
    # Inputs are quantized with one scale for all features, so features on very
    # different scales would lose their small ones: the data owner standardizes
    # before encrypting, as it would for any linear model.
    scaler = StandardScaler().fit(X_train)
    X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
    estimator = model.make()
    estimator.fit(X_train, _y_train)
    estimator.compile(X_train)
    if folder.exists():
        shutil.rmtree(folder)
    FHEModelDev(str(folder), estimator).save()
    rows = X_test[:SAMPLES_PER_MODEL]
    np.savez(
        folder / "samples.npz",
        X=rows,
        y_true=y_test[:SAMPLES_PER_MODEL],
        clear_prediction=estimator.predict(rows, fhe="disable"),
        test_accuracy=np.array(float((estimator.predict(X_test, fhe="disable") == y_test).mean())),
    )
    return folder
