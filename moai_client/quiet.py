"""Keep the libraries' notices off the data owner's terminal.

Importing Concrete-ML prints "No CUDA runtime is found, using CUDA_HOME=..." (torch, on
a machine with a CUDA toolkit and no GPU: the PyPI torch that concrete-ml pins is a CUDA
build), and key generation prints "KeySetCache: miss, regenerating ..." (Concrete's
native key cache). Neither says anything the data owner can act on. Both are written to
file descriptor 2, the second from native code that Python's ``sys.stderr`` never sees,
so the descriptor itself is redirected while they run. Known notices go to this module's
logger at debug level; anything else written meanwhile is passed on to stderr unchanged,
so that a real error is never hidden.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger(__name__)

NOTICES = ("No CUDA runtime is found", "KeySetCache: ")


@contextmanager
def library_notices() -> Iterator[None]:
    """Run the block with fd 2 captured; log the known notices, pass the rest on."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            _pass_on(captured.read().decode(errors="replace"))


def _pass_on(text: str) -> None:
    for line in text.splitlines(keepends=True):
        if line.startswith(NOTICES):
            logger.debug("library notice: %s", line.rstrip())
        else:
            sys.stderr.write(line)
    sys.stderr.flush()


def fhe_model_client() -> type:
    """Concrete-ML's ``FHEModelClient`` class, imported without its start-up notice."""
    with library_notices():
        from concrete.ml.deployment import FHEModelClient
    return FHEModelClient
