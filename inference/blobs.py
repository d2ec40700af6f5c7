"""Blob storage for model bundles, keys, ciphertexts and results.

Everything goes through Django's storage API (``STORAGES["default"]``), so a
backend other than the local filesystem can be configured later.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from django.core.files import File
from django.core.files.storage import default_storage


def save(name: str, content: File) -> str:
    """Store ``content`` under exactly ``name``, replacing nothing: names are unique by construction."""
    stored = default_storage.save(name, content)
    if stored != name:
        # The backend chose another name: a file was already there. Never overwrite silently.
        default_storage.delete(stored)
        raise FileExistsError(name)
    return stored


class _LocalFile(File):
    """A file already on local disk: the filesystem backend moves it into place instead of copying it."""

    def temporary_file_path(self) -> str:
        return str(self.name)


def save_local_file(name: str, path: Path) -> str:
    """Store the local file at ``path`` under ``name``; it may be moved rather than copied."""
    with path.open("rb") as handle:
        return save(name, _LocalFile(handle, name=str(path)))


def save_bytes(name: str, data: bytes) -> str:
    from django.core.files.base import ContentFile

    return save(name, ContentFile(data))


def read_bytes(name: str) -> bytes:
    with default_storage.open(name, "rb") as handle:
        data: bytes = handle.read()
    return data


def delete(name: str) -> None:
    if name:
        with contextlib.suppress(FileNotFoundError):
            default_storage.delete(name)


def exists(name: str) -> bool:
    return bool(name) and default_storage.exists(name)
