"""Deserializing uploaded evaluation keys in a helper process, not in the web process.

Proving that an upload is Concrete evaluation keys means deserializing it once,
which takes memory of the order of the keys (hundreds of MB for large models). Doing
that in a long-lived helper process, one per web process and one upload at a time,
keeps the web process's memory flat whatever the key size, and a runtime abort on
hostile bytes kills only the helper, which is started again.

This module imports no Django: the helper process needs only ``concrete.fhe``.
"""

from __future__ import annotations

import multiprocessing
import threading
from multiprocessing.connection import Connection
from pathlib import Path

TIMEOUT_SECONDS = 120.0


def _serve(connection: Connection) -> None:
    from concrete import fhe  # imported once per helper, not per upload

    while True:
        try:
            path = connection.recv()
        except EOFError:
            return
        try:
            fhe.EvaluationKeys.deserialize(Path(path).read_bytes())
            connection.send(None)
        except Exception as exc:  # the runtime raises RuntimeError; any failure means "not keys"
            connection.send(str(exc)[:300])


class KeyValidator:
    """A helper process that answers "are the bytes in this file evaluation keys?"."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: multiprocessing.process.BaseProcess | None = None
        self._connection: Connection | None = None

    def _start(self) -> Connection:
        # "spawn": a fresh interpreter, so no OpenMP or database state is copied from the web process.
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child,), name="moai-key-validator", daemon=True)
        self._process.start()
        child.close()
        self._connection = parent
        return parent

    def _stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.join(5)
        self._process = self._connection = None

    def check(self, path: Path) -> str | None:
        """None when the file deserializes as evaluation keys, else why not."""
        with self._lock:
            # A helper that died since the last upload (killed, out of memory) gets one
            # fresh start; bytes that kill a fresh helper too are not usable keys.
            for _attempt in range(2):
                connection = self._connection
                if connection is None or self._process is None or not self._process.is_alive():
                    self._stop()
                    connection = self._start()
                try:
                    connection.send(str(path))
                    if not connection.poll(TIMEOUT_SECONDS):
                        self._stop()
                        return "deserializing took too long"
                    answer: str | None = connection.recv()
                    return answer
                except (EOFError, OSError):
                    self._stop()
            return "the keys crashed the deserializer"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None


validator = KeyValidator()
