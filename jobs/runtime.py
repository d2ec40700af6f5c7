"""The FHE runtime of a worker process: loaded model servers and warm evaluation keys.

Only ``concrete.fhe`` is imported here, never ``concrete.ml``: the worker runs
circuits and needs nothing else. ``concrete.fhe`` itself imports torch (its
extensions do); ``concrete.ml`` would add scikit-learn, ONNX and more on top
(``python -m bench`` measures both: start-up seconds and resident memory).

Both caches live for the life of the pool process. Loading ``server.zip`` compiles
the circuit (about a second), and the first run with a freshly deserialized key
object decompresses the keys (seconds); keeping both makes a session's next job
pay only for its circuit (DESIGN.md), and ``jobs.warmup`` fills both before
the first job asks.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings

from base import blobs, exit_status, metrics
from base.tempdirs import tempfiles_in
from jobs import cores
from jobs.cores import process_alive

if TYPE_CHECKING:
    from registry.models import ModelVersion
    from sessions.models import KeySession

logger = logging.getLogger(__name__)


class CircuitInputError(ValueError):
    """A ciphertext the circuit cannot take (garbage, or made for another model)."""


class LoadedModel:
    def __init__(self, server_zip: Path, folder: Path, version: ModelVersion | None = None) -> None:
        from concrete import fhe

        self.version = version  # the row it was loaded from: what a warm-up needs, without a query

        # The runtime's own folders (the unpacked zip, the compiled library) go in
        # ``folder``, removed by close(); the library must stay until then.
        self.folder = folder
        with tempfiles_in(folder):
            self.server = fhe.Server.load(server_zip)
        # The version's constant keys, deserialized and run once (jobs.warmup), for versions
        # whose every keygen makes the same keys; None until then, or where keys differ.
        self.constant_keys: Any = None
        self._handles = threading.local()

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def run(self, ciphertext: bytes, keys: Any) -> bytes:
        from concrete import fhe

        circuit = self._circuit()
        try:
            value = fhe.Value.deserialize(ciphertext)
        except RuntimeError as exc:
            raise CircuitInputError(str(exc)) from exc
        try:
            (result,) = circuit.call([value._inner], keys.server_keyset)
        except RuntimeError as exc:
            raise CircuitInputError(str(exc)) from exc
        finally:
            exit_status.ignore_sigpipe()
        output: bytes = fhe.Value(result).serialize()
        return output

    def _circuit(self) -> Any:
        """This thread's handle on the compiled circuit, made on its first run and kept.

        ``fhe.Server.run`` makes a new one on every call (it reads the program's description
        and opens the compiled library again): 1.4 ms of a 5.7 ms logreg run here, measured in
        one process, once per input. The handle is kept per thread, never shared: the batch
        code runs inputs side by side in threads, and each of them gets its own, as
        ``Server.run`` gives each call its own. Concrete's own attributes (``_library``,
        ``Value._inner``) are read as ``Server.run`` reads them; concrete-python is pinned with
        concrete-ml, and tests compare the outputs with ``Server.run``'s, byte for byte.
        """
        circuit = getattr(self._handles, "circuit", None)
        if circuit is None:
            from concrete.compiler import ServerProgram

            # Concrete-ML compiles one circuit per model; Server.run refuses more without a name.
            (only,) = self.server.program_info.get_circuits()
            self._handles.program = ServerProgram(self.server._library, False)
            circuit = self._handles.circuit = self._handles.program.get_server_circuit(only.get_name())
        return circuit


class ModelCache:
    """Model servers by version id, loaded once per process from a local copy of server.zip."""

    def __init__(self) -> None:
        self._models: dict[int, LoadedModel] = {}
        self._lock = threading.Lock()

    def get(self, model_version: ModelVersion) -> LoadedModel:
        with self._lock:
            loaded = self._models.get(model_version.pk)
            if loaded is None:
                folder = load_folders() / f"{socket.gethostname()}_{os.getpid()}_{model_version.pk}"
                shutil.rmtree(folder, ignore_errors=True)  # left by an earlier process of the same pid
                loaded = LoadedModel(self._local_copy(model_version), folder, model_version)
                self._models[model_version.pk] = loaded
            return loaded

    def __contains__(self, model_version_id: int) -> bool:
        return model_version_id in self._models

    def loaded_version(self, model_version_id: int) -> ModelVersion | None:
        """The row of a version this process has loaded (what a warm-up needs of it), without a query."""
        loaded = self._models.get(model_version_id)
        return None if loaded is None else loaded.version

    def clear(self) -> None:
        with self._lock:
            for loaded in self._models.values():
                loaded.close()
            self._models.clear()

    @staticmethod
    def _local_copy(model_version: ModelVersion) -> Path:
        folder = Path(settings.MOAI_DATA_DIR) / "model-cache" / model_version.server_sha256
        target = folder / "server.zip"
        if not target.exists():
            # A miss: fetched once from the blob store (a bucket, with MOAI_BLOB_STORAGE=s3) in chunks.
            folder.mkdir(parents=True, exist_ok=True)
            blobs.copy_to_local(model_version.server_zip, target, model_version.server_sha256)
        return target


def load_folders() -> Path:
    return Path(settings.MOAI_DATA_DIR) / "model-loads"


def sweep_load_folders() -> list[Path]:
    """Remove the load folders of this host's processes that have died (killed, or aborted by a circuit)."""
    removed = []
    # Host names have no "_"; another host's folders (a shared data volume) are never touched.
    for folder in load_folders().glob(f"{socket.gethostname()}_*_*"):
        pid = folder.name.split("_")[1]
        if pid.isascii() and pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


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
        self._loading: dict[str, threading.Lock] = {}  # one per session being loaded

    def get(self, session_id: str, keys_blob: str, warm: Callable[[Any], object] | None = None) -> Any:
        return self.fetch(session_id, keys_blob, warm)[0]

    def fetch(self, session_id: str, keys_blob: str, warm: Callable[[Any], object] | None = None) -> tuple[Any, bool]:
        """The session's keys, and whether this call loaded them (deserialized, then passed to ``warm``).

        One thread loads a session's keys; another that asks meanwhile (a job arriving
        while the warm-up runs) waits for them instead of decompressing a second copy.
        """
        keys = self._hit(session_id)
        if keys is not None:
            return keys, False
        with self._loading_lock(session_id):
            try:
                keys = self._hit(session_id)
                if keys is not None:
                    return keys, False
                return self._load(session_id, keys_blob, warm), True
            finally:
                with self._lock:
                    self._loading.pop(session_id, None)

    def _load(self, session_id: str, keys_blob: str, warm: Callable[[Any], object] | None) -> Any:
        metrics.KEY_CACHE.labels("miss").inc()
        from concrete import fhe

        data = blobs.read_bytes(keys_blob)
        keys = fhe.EvaluationKeys.deserialize(data)
        if warm is not None:
            warm(keys)
        cost = len(data) * settings.MOAI_KEY_MEMORY_FACTOR
        with self._lock:
            self._entries[session_id] = (keys, cost)
            self._used += cost
            self._evict_over_capacity(keep=session_id)
        return keys

    def _hit(self, session_id: str) -> Any:
        with self._lock:
            entry = self._entries.get(session_id)
            if entry is None:
                return None
            self._entries.move_to_end(session_id)
        metrics.KEY_CACHE.labels("hit").inc()
        return entry[0]

    def _loading_lock(self, session_id: str) -> threading.Lock:
        with self._lock:
            return self._loading.setdefault(session_id, threading.Lock())

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


def batch_parallelism(inputs: int, threads: int) -> int:
    """How many of a job's ``inputs`` run side by side (``MOAI_BATCH_PARALLELISM``, else one per thread)."""
    configured = settings.MOAI_BATCH_PARALLELISM or threads
    return max(1, min(configured, inputs))


def run_side_by_side(
    work: Callable[[int], None],
    indexes: Sequence[int],
    parallel: int,
    between_rounds: Callable[[], None] | None = None,
    threads: int = 1,
) -> None:
    """Call ``work`` on each index, in rounds of ``parallel`` at a time, and wait for all of them.

    ``between_rounds`` runs before every round but the first (the task re-checks its
    session there). One round of one runs inline; otherwise one thread pool serves the
    whole batch, each of its threads with its share of the job's ``threads`` (OpenMP),
    so that the cores are shared rather than oversubscribed. An error in one call (or the
    soft time limit) is raised here once the calls already started have ended: a circuit
    cannot be interrupted, and the next job must not share the cores with this one's
    leftovers. None is started after the error.
    """
    share = max(1, threads // parallel)
    pool = None
    if parallel > 1:
        pool = ThreadPoolExecutor(parallel, thread_name_prefix="batch", initializer=_limit_openmp, initargs=(share,))
    try:
        for start in range(0, len(indexes), parallel):
            if start and between_rounds is not None:
                between_rounds()
            chunk = indexes[start : start + parallel]
            if pool is None:
                work(chunk[0])
                continue
            for future in [pool.submit(work, index) for index in chunk]:
                future.result()
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _limit_openmp(threads: int) -> None:
    cores.set_openmp_threads(threads)


models = ModelCache()
keys = KeyCache(settings.MOAI_KEY_CACHE_BYTES)


def session_keys(session: KeySession, version: ModelVersion, model: LoadedModel) -> tuple[Any, bool]:
    """A job's evaluation keys, and whether this call loaded them.

    A session that uploaded its version's constant keys (the digest says they are those very
    bytes) runs with the copy this process has held warm since it loaded the circuit: the
    same public bytes for every client, so nothing of one session's reaches another's jobs.
    Any other session's keys come from the key cache.
    """
    if model.constant_keys is not None and version.kept_constant_keys(session.key_fingerprint):
        metrics.KEY_CACHE.labels("hit").inc()
        return model.constant_keys, False
    return keys.fetch(str(session.pk), session.keys_blob)
