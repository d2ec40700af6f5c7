"""Loading a model's preprocessing (a skops file) without running code from the server.

A pickle can run anything while it loads; a skops file is JSON plus NumPy arrays, and
loading one only builds objects of the types it names. Those names are checked first,
against a short allow-list of scikit-learn transformers that compute with arrays only,
so a file naming any other type (a function, an estimator that is not a scaler, a type
from another package) is refused before anything is built. The service checks the same
list when an operator registers the file (``registry/preprocessing.py``; a test keeps
the two lists equal).
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

from moai_client.errors import MoaiError

TRUSTED_TYPES = frozenset(
    {
        # What a fitted scaler or pipeline of scalers is made of in the file.
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
        # The transformers themselves: each one's transform is arithmetic on its fitted arrays.
        "sklearn.pipeline.Pipeline",
        "sklearn.preprocessing._data.StandardScaler",
        "sklearn.preprocessing._data.MinMaxScaler",
        "sklearn.preprocessing._data.MaxAbsScaler",
        "sklearn.preprocessing._data.RobustScaler",
    }
)


class UntrustedPreprocessing(MoaiError):
    """The file names a type outside the allow-list, or is not a skops file at all."""


def named_types(data: bytes) -> set[str]:
    """Every type a skops file would build while loading (``module.Class``), read from its schema."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            schema = json.loads(archive.read("schema.json"))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise UntrustedPreprocessing(f"not a skops file: {exc}") from None
    found: set[str] = set()
    pending: list[Any] = [schema]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            if "__class__" in node or "__module__" in node:
                found.add(f"{node.get('__module__')}.{node.get('__class__')}")
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return found


def untrusted_types(data: bytes) -> list[str]:
    """The types in the file that are not on the allow-list; empty when it is safe to load."""
    import skops.io

    # skops' own audit too, in case it resolves a name differently from the schema walk above.
    flagged = named_types(data) | set(skops.io.get_untrusted_types(data=data))
    return sorted(flagged - TRUSTED_TYPES)


def load(data: bytes) -> Any:
    """The fitted transformer in ``data``; UntrustedPreprocessing if it names any type not allowed."""
    import skops.io

    refused = untrusted_types(data)
    if refused:
        raise UntrustedPreprocessing(
            f"the preprocessing file holds types outside the allow-list: {', '.join(refused)}"
            f" (allowed: {', '.join(sorted(t for t in TRUSTED_TYPES if t.startswith('sklearn.')))})"
        )
    try:
        transformer = skops.io.loads(data, trusted=sorted(TRUSTED_TYPES))
    except Exception as exc:  # a malformed file fails in many ways inside skops; none is ours to handle
        raise UntrustedPreprocessing(f"the preprocessing file cannot be loaded: {exc}") from exc
    if not callable(getattr(transformer, "transform", None)):
        raise UntrustedPreprocessing(f"the preprocessing file holds a {type(transformer).__name__}, not a transformer")
    return transformer
