"""Typed readers for configuration from the environment.

Every variable ``X`` may also be given as ``X_FILE``, a path whose content is the
value, so Kubernetes and Docker secrets can be mounted instead of exported.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

N = TypeVar("N", int, float)

# The repository's var/, whatever folder a process starts in: settings, gunicorn and the
# Celery processes all use this one default, so they agree on where the data is.
DEFAULT_DATA_DIR = Path(__file__).resolve().parent.parent / "var"


class ConfigError(ValueError):
    """A configuration variable is present but cannot be used."""


def env_str(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    if value is not None:
        return value
    file_path = os.environ.get(f"{name}_FILE")
    if file_path:
        try:
            # Secrets files usually end with a newline that is not part of the value.
            return Path(file_path).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(f"{name}_FILE={file_path!r} cannot be read: {exc}") from exc
    return default


def env_int(name: str, default: int, minimum: int | None = None) -> int:
    return _env_number(name, int, default, minimum)


def env_float(name: str, default: float, minimum: float | None = None) -> float:
    return _env_number(name, float, default, minimum)


def _env_number(name: str, kind: Callable[[str], N], default: N, minimum: N | None) -> N:
    raw = env_str(name)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be {'an integer' if kind is int else 'a number'}, got {raw!r}") from exc
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def env_bool(name: str, default: bool) -> bool:
    raw = env_str(name)
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be a boolean (true/false), got {raw!r}")


def env_list(name: str, default: list[str]) -> list[str]:
    raw = env_str(name)
    if raw is None or raw.strip() == "":
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_data_dir() -> Path:
    """``MOAI_DATA_DIR`` as an absolute path. Nothing is created here: see ``base.folders``."""
    return Path(env_str("MOAI_DATA_DIR") or DEFAULT_DATA_DIR).resolve()
