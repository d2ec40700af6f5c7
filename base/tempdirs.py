"""Folders for code that makes temporary folders of its own and never removes them.

Concrete's ``fhe.Server.load`` unpacks server.zip into one ``tempfile.mkdtemp()``
folder and compiles the circuit into another, and removes neither (its ``cleanup``
does nothing): every model load used to leave two folders in /tmp. The second holds
the compiled library that every run opens again, so it must live as long as the
loaded server. Loading with tempfile's default folder pointed at one of ours puts
both inside it, and the owner removes it when done with the server.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

_lock = threading.Lock()


@contextlib.contextmanager
def tempfiles_in(folder: Path) -> Iterator[Path]:
    """While inside, temporary files and folders made with a default location go to ``folder``.

    tempfile's default is one per process: another thread that makes a temporary file
    meanwhile gets it in ``folder`` too. Callers load models, with nothing else running.
    """
    folder.mkdir(parents=True, exist_ok=True)
    with _lock:
        previous = tempfile.tempdir
        tempfile.tempdir = str(folder)
        try:
            yield folder
        finally:
            tempfile.tempdir = previous
