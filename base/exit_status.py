"""Keep a process's exit status, and its SIGPIPE handling, once it has run a Concrete circuit.

concrete-python 2.10.0 (the version concrete-ml 1.9.0 pins) registers, in
``concrete/compiler/__init__.py``, ``atexit.register(_terminate_df_parallelization)``.
Once a circuit has run in the process, that handler calls the runtime's
``_dfr_terminate()``, which calls C ``exit(0)`` during interpreter finalisation: a
``sys.exit(3)``, an uncaught exception or pytest's "1 failed" all leave with status 0,
so a failing test does not fail ``make test`` or CI.

The handler exists for the dataflow runtime (``dataflow_parallelize=True``), which
this project never enables, so dropping it costs nothing here (a process that ran a
circuit and then exits without it was seen to exit promptly with its own status).
``install()`` drops it as soon as ``concrete.compiler`` is imported, whoever imports
it; it is called where every process of the project starts (``moai_site`` for web,
worker, beat, ``manage.py`` and pytest; ``bench`` for its measuring subprocesses).
Drop this module once upstream's handler keeps the exit status.

Imports nothing from Django or Concrete: it must be installable before either.
"""

from __future__ import annotations

import atexit
import ctypes
import importlib.abc
import importlib.machinery
import signal
import sys
from collections.abc import Sequence
from functools import cache
from types import ModuleType

MODULE = "concrete.compiler"
HANDLER = "_terminate_df_parallelization"


def install() -> None:
    """Drop Concrete's exit(0) handler now if its module is loaded, else right after it loads."""
    module = sys.modules.get(MODULE)
    if module is not None:
        _drop_handler(module)
    elif not any(isinstance(finder, _Finder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Finder())


def _drop_handler(module: ModuleType) -> None:
    handler = getattr(module, HANDLER, None)
    if handler is not None:
        atexit.unregister(handler)


class _Finder(importlib.abc.MetaPathFinder):
    """Finds ``concrete.compiler`` as the other finders would, and wraps its loader."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _Loader(spec.loader)
        return spec


class _Loader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        # The module keeps the real loader (resource lookups go through it); only its execution is wrapped.
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        self._loader.exec_module(module)
        _drop_handler(module)


def ignore_sigpipe() -> None:
    """Put SIGPIPE back to "ignored" after Concrete's runtime took it over.

    concrete-python 2.10.0 installs a handler for SIGPIPE when the first circuit runs in a
    process (seen in /proc/self/status: ignored before, caught after). Python ignores
    SIGPIPE so that writing to a closed socket or pipe raises BrokenPipeError; with that
    handler the same write crashes the whole process with a stack dump (seen: exit 139).
    A pool process writing to a database or Redis connection that just broke, or the test
    process writing a body the server refused, must get the exception, not die. Called
    after each circuit run; libc's ``signal`` rather than Python's, which works only in
    the main thread (batch inputs run in threads).
    """
    _libc().signal(signal.SIGPIPE, _SIG_IGN)


_SIG_IGN = 1


@cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None)
    libc.signal.restype = ctypes.c_void_p
    libc.signal.argtypes = [ctypes.c_int, ctypes.c_void_p]
    return libc
