"""The framing of a Cap'n Proto stream, checked in Python before any native parser sees the bytes.

Serialized Concrete ciphertexts and evaluation keys are Cap'n Proto streams
(DESIGN.md): a little-endian u32 holding the number of segments minus one, one u32
per segment giving its size in 8-byte words, padding to a multiple of 8 bytes, then
the segments. The native deserializers trust those sizes: a header that claims more
than the body holds makes them allocate what it claims, or log a stack trace per
missing 8 KiB. Here a body passes only when its sizes add up to its length exactly,
so the native code is never asked to read a byte that is not there.
"""

from __future__ import annotations

import struct
from pathlib import Path

# Cap'n Proto's own stream reader refuses more segments than this; real ciphertexts
# have 2 and real key sets 1 to 3, so a larger count is never a real upload.
MAX_SEGMENTS = 512
WORD = 8
HEAD_BYTES = 4 + 4 * MAX_SEGMENTS + 4


def framing_problem(head: bytes, size: int) -> str | None:
    """Why a stream of ``size`` bytes starting with ``head`` is not well framed, or None when it is."""
    if size < 4 or len(head) < 4:
        return "shorter than a stream header"
    segments = struct.unpack_from("<I", head)[0] + 1
    if segments > MAX_SEGMENTS:
        return f"claims {segments} segments (at most {MAX_SEGMENTS})"
    header = 4 + 4 * segments
    header += -header % WORD
    if size < header or len(head) < 4 + 4 * segments:
        return "shorter than its own header"
    sizes = struct.unpack_from(f"<{segments}I", head, 4)
    if sizes[0] == 0:
        return "its first segment is empty"
    claimed = header + WORD * sum(sizes)
    if claimed != size:
        return f"its header claims {claimed} bytes; the body has {size}"
    return None


def file_framing_problem(path: Path) -> str | None:
    """:func:`framing_problem` of a file, reading only its header."""
    with path.open("rb") as handle:
        head = handle.read(HEAD_BYTES)
    return framing_problem(head, path.stat().st_size)
