"""What a model takes from its data owner: raw feature rows, checked and preprocessed here.

The model's JSON lists its features (names and order) and says whether it carries a
preprocessing (for example the scaler it was trained behind). Rows are checked
against that before any key is made or any request leaves, then preprocessed, then
quantized and encrypted: a row in the wrong shape would otherwise be encrypted and
answered, wrongly and silently.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from moai_client.errors import MoaiError


@dataclass(frozen=True)
class InputSpec:
    model: str
    feature_names: tuple[str, ...] | None
    # Columns a raw row has: the preprocessing's input width, or the model's own.
    n_features: int
    preprocessing: Any = None

    @classmethod
    def of(cls, info: dict[str, Any], preprocessing: Any) -> InputSpec:
        names = info.get("feature_names")
        width = int(getattr(preprocessing, "n_features_in_", info["input_features"]))
        return cls(f"{info['name']} v{info['version']}", tuple(names) if names else None, width, preprocessing)

    def describe(self) -> str:
        listed = f": {', '.join(self.feature_names)}" if self.feature_names else ""
        return f"{self.model} takes {self.n_features} features per row{listed}"

    def check(self, X: Any) -> np.ndarray:
        """The rows as a 2-D float array; MoaiError if they are not rows of this model's features."""
        try:
            rows = np.asarray(X, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise MoaiError(f"rows must be numbers: {exc}") from None
        if rows.size == 0:
            raise MoaiError("no rows to encrypt")
        if rows.ndim == 1:
            rows = rows.reshape(1, -1)
        if rows.ndim != 2:
            raise MoaiError(f"expected a table of rows, got an array of shape {rows.shape}")
        if rows.shape[1] != self.n_features:
            raise MoaiError(f"{self.describe()}; got {rows.shape[1]} column(s)")
        bad = np.flatnonzero(~np.isfinite(rows).all(axis=1))
        if bad.size:
            raise MoaiError(f"row {int(bad[0])} has a missing or non-finite value")
        return rows

    def prepare(self, X: Any) -> np.ndarray:
        """Checked rows, preprocessed as the model was trained: what gets quantized and encrypted."""
        rows = self.check(X)
        if self.preprocessing is None:
            return rows
        return np.asarray(self.preprocessing.transform(rows), dtype=np.float64)


def read_rows(path: Path, spec: InputSpec) -> np.ndarray:
    """Rows from a ``.npy`` file or a CSV file, with or without a header of the feature names."""
    if path.suffix == ".npy":
        try:
            return spec.check(np.load(path, allow_pickle=False))
        except (OSError, ValueError) as exc:
            raise MoaiError(f"cannot read {path}: {exc}") from None
    try:
        with path.open(newline="") as handle:
            lines = [(number, row) for number, row in enumerate(csv.reader(handle), 1) if any(f.strip() for f in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise MoaiError(f"cannot read {path}: {exc}") from None
    if lines and _is_header(lines[0][1]):
        _check_header([field.strip() for field in lines[0][1]], spec, path)
        lines = lines[1:]
    rows = []
    for number, fields in lines:
        if not _numeric(fields):
            raise MoaiError(f"{path} line {number}: every field must be a number, got {','.join(fields)[:200]!r}")
        rows.append([float(field) for field in fields])
    if len({len(row) for row in rows}) > 1:
        raise MoaiError(f"{path}: rows have different numbers of columns")
    return spec.check(rows)


def _numeric(fields: Sequence[str]) -> bool:
    return all(_is_number(field) for field in fields)


def _is_header(fields: Sequence[str]) -> bool:
    # A first row with an empty field is a data row with a value missing, not a header.
    return any(field.strip() and not _is_number(field) for field in fields)


def _is_number(field: str) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True


def _check_header(header: list[str], spec: InputSpec, path: Path) -> None:
    if spec.feature_names is None:
        raise MoaiError(f"{path} has a header row, but {spec.model} lists no feature names to check it against")
    if tuple(header) != spec.feature_names:
        raise MoaiError(
            f"{path}: the header does not match the model's features. {spec.describe()}, in this order; "
            f"the header has {len(header)}: {', '.join(header)}"
        )
