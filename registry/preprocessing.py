"""Checking the preprocessing an operator registers with a model, and the model's feature names.

The data owner's client downloads the preprocessing and applies it to raw rows before
encrypting them (``moai_client/inputs.py``), so a file is accepted only if that client
will load it: a skops file naming nothing outside the same allow-list of array-only
transformers (``moai_client/preprocessing.py``: the image does not ship the client
library, so the list is repeated here, and a test keeps the two equal). It must turn a
row of the listed features into a row the model takes.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registry.registration import BundleError

TRUSTED_TYPES = frozenset(
    {
        "builtins.dict",
        "builtins.list",
        "builtins.tuple",
        "builtins.str",
        "builtins.int",
        "builtins.float",
        "builtins.bool",
        "numpy.ndarray",
        "numpy.int64",
        "numpy.float64",
        "sklearn.pipeline.Pipeline",
        "sklearn.preprocessing._data.StandardScaler",
        "sklearn.preprocessing._data.MinMaxScaler",
        "sklearn.preprocessing._data.MaxAbsScaler",
        "sklearn.preprocessing._data.RobustScaler",
    }
)
# A fitted scaler is a few arrays of one value per feature; anything near this is not one.
MAX_BYTES = 16 * 1024 * 1024
MAX_NAME_LENGTH = 200


class PreprocessingError(BundleError):
    """The preprocessing file or the feature names cannot be registered with this model."""


@dataclass(frozen=True)
class Preprocessing:
    path: Path
    data: bytes
    sha256: str
    transformer: Any


def load(path: Path) -> Preprocessing:
    """The fitted transformer in the skops file at ``path``, refused if it names any type not allowed."""
    if not path.is_file():
        raise PreprocessingError(f"no preprocessing file at {path}")
    if path.stat().st_size > MAX_BYTES:
        raise PreprocessingError(f"{path} is larger than {MAX_BYTES} bytes: not a fitted scaler")
    data = path.read_bytes()
    refused = _untrusted_types(data)
    if refused:
        allowed = ", ".join(sorted(t for t in TRUSTED_TYPES if t.startswith("sklearn.")))
        raise PreprocessingError(
            f"{path} holds types outside the allow-list: {', '.join(refused)}. "
            f"Save a fitted transformer made only of {allowed}, with skops.io.dump"
        )
    import skops.io

    try:
        transformer = skops.io.loads(data, trusted=sorted(TRUSTED_TYPES))
    except Exception as exc:  # a malformed file fails in many ways inside skops
        raise PreprocessingError(f"{path} cannot be loaded: {exc}") from exc
    if not callable(getattr(transformer, "transform", None)) or not hasattr(transformer, "n_features_in_"):
        raise PreprocessingError(f"{path} holds a {type(transformer).__name__} that is not a fitted transformer")
    return Preprocessing(path, data, hashlib.sha256(data).hexdigest(), transformer)


def _untrusted_types(data: bytes) -> list[str]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            schema = json.loads(archive.read("schema.json"))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise PreprocessingError(f"not a skops file (skops.io.dump writes one): {exc}") from None
    named: set[str] = set()
    pending: list[Any] = [schema]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            if "__class__" in node or "__module__" in node:
                named.add(f"{node.get('__module__')}.{node.get('__class__')}")
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    import skops.io

    return sorted((named | set(skops.io.get_untrusted_types(data=data))) - TRUSTED_TYPES)


def input_width(preprocessing: Preprocessing | None, model_features: int) -> int:
    """Columns of a raw row; the preprocessing must turn such a row into the model's ``model_features``."""
    if preprocessing is None:
        return model_features
    import numpy as np

    width = int(preprocessing.transformer.n_features_in_)
    try:
        out = np.asarray(preprocessing.transformer.transform(np.zeros((1, width))))
    except Exception as exc:  # whatever the transformer raises, the operator needs to see it
        raise PreprocessingError(f"{preprocessing.path} fails on a row of {width} features: {exc}") from exc
    if out.shape != (1, model_features):
        raise PreprocessingError(
            f"{preprocessing.path} turns a row of {width} features into shape {out.shape}, "
            f"but the model takes (1, {model_features})"
        )
    return width


def check_feature_names(given: Sequence[str] | None, preprocessing: Preprocessing | None, width: int) -> list[str]:
    """The raw features' names in order: given by the operator, or those the transformer was fitted with."""
    fitted = getattr(preprocessing.transformer, "feature_names_in_", None) if preprocessing else None
    fitted_names = [str(name) for name in fitted] if fitted is not None else None
    names = list(given) if given else fitted_names
    if not names:
        return []
    if fitted_names and names != fitted_names:
        raise PreprocessingError(
            f"the feature names given differ from those the preprocessing was fitted with: {fitted_names}"
        )
    if len(names) != width:
        raise PreprocessingError(f"{len(names)} feature names given, but a row has {width} features")
    if len(set(names)) != len(names):
        raise PreprocessingError("feature names must be unique")
    for name in names:
        # A data owner's CSV header is matched against these names field by field.
        if not name or name != name.strip() or len(name) > MAX_NAME_LENGTH or any(c in name for c in ',"\r\n'):
            raise PreprocessingError(
                f"invalid feature name {name!r}: up to {MAX_NAME_LENGTH} characters, no surrounding spaces, "
                "no commas, quotes or line breaks"
            )
    return names
