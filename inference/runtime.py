"""The FHE runtime of a worker process: loaded model servers and warm evaluation keys.

Only ``concrete.fhe`` is imported here, never ``concrete.ml`` (which pulls in torch
and scikit-learn): the worker runs circuits and needs nothing else.

Both caches live for the life of the pool process. Loading ``server.zip`` compiles
the circuit (about a second), and the first run with a freshly deserialized key
object decompresses the keys (seconds); keeping both makes a session's next job
pay only for its circuit (DESIGN.md).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings

from inference import blobs

if TYPE_CHECKING:
    from inference.models import ModelVersion

logger = logging.getLogger(__name__)


class CircuitInputError(ValueError):
    """A ciphertext the circuit cannot take (garbage, or made for another model)."""


class LoadedModel:
    def __init__(self, server_zip: Path) -> None:
        from concrete import fhe

        self.server = fhe.Server.load(server_zip)

    def run(self, ciphertext: bytes, keys: Any) -> bytes:
        from concrete import fhe

        try:
            value = fhe.Value.deserialize(ciphertext)
        except RuntimeError as exc:
            raise CircuitInputError(str(exc)) from exc
        try:
            result = self.server.run(value, evaluation_keys=keys)
        except RuntimeError as exc:
            raise CircuitInputError(str(exc)) from exc
        output: bytes = result.serialize()
        return output


class ModelCache:
    """Model servers by version id, loaded once per process from a local copy of server.zip."""

    def __init__(self) -> None:
        self._models: dict[int, LoadedModel] = {}
        self._lock = threading.Lock()

    def get(self, model_version: ModelVersion) -> LoadedModel:
        with self._lock:
            loaded = self._models.get(model_version.pk)
            if loaded is None:
                loaded = LoadedModel(self._local_copy(model_version))
                self._models[model_version.pk] = loaded
            return loaded

    def clear(self) -> None:
        with self._lock:
            self._models.clear()

    @staticmethod
    def _local_copy(model_version: ModelVersion) -> Path:
        folder = Path(settings.MOAI_DATA_DIR) / "model-cache" / model_version.server_sha256
        target = folder / "server.zip"
        if not target.exists():
            folder.mkdir(parents=True, exist_ok=True)
            data = blobs.read_bytes(model_version.server_zip)
            if hashlib.sha256(data).hexdigest() != model_version.server_sha256:
                raise RuntimeError(f"server.zip of {model_version} does not match its registered digest")
            partial = folder / f"server.zip.{threading.get_ident()}.part"
            partial.write_bytes(data)
            partial.replace(target)
        return target


class KeyCache:
    """Deserialized evaluation keys by session id, least recently used first out.

    Bounded by the estimated memory of warm keys (serialized size times
    ``MOAI_KEY_MEMORY_FACTOR``), not by their size on disk.
    """

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity_bytes = capacity_bytes
        self._entries: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self._used = 0
        self._lock = threading.Lock()

    def get(self, session_id: str, keys_blob: str) -> Any:
        with self._lock:
            entry = self._entries.get(session_id)
            if entry is not None:
                self._entries.move_to_end(session_id)
                return entry[0]
        from concrete import fhe

        data = blobs.read_bytes(keys_blob)
        keys = fhe.EvaluationKeys.deserialize(data)
        cost = len(data) * settings.MOAI_KEY_MEMORY_FACTOR
        with self._lock:
            self._entries[session_id] = (keys, cost)
            self._used += cost
            self._evict_over_capacity(keep=session_id)
        return keys

    def drop(self, session_id: str) -> bool:
        with self._lock:
            entry = self._entries.pop(session_id, None)
            if entry is not None:
                self._used -= entry[1]
            return entry is not None

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._used = 0

    def _evict_over_capacity(self, keep: str) -> None:
        while self._used > self.capacity_bytes and len(self._entries) > 1:
            oldest = next(iter(self._entries))
            if oldest == keep:
                break
            self._used -= self._entries.pop(oldest)[1]

    def session_ids(self) -> list[str]:
        with self._lock:
            return list(self._entries)

    def __contains__(self, session_id: str) -> bool:
        return session_id in self._entries

    @property
    def used_bytes(self) -> int:
        return self._used


models = ModelCache()
keys = KeyCache(settings.MOAI_KEY_CACHE_BYTES)
