"""Deserializing uploaded evaluation keys in a process of its own, under limits.

Proving that an upload is Concrete evaluation keys means deserializing it once with
the native runtime, which trusts what it reads: hostile bytes of a well-formed
stream can still make it abort (a Rust panic) or allocate. So each check runs in a
fresh process forked from a server that has already imported ``concrete.compiler``
(multiprocessing's forkserver: a fork costs milliseconds, the import seconds), and
that process gets an address-space limit (``RLIMIT_AS``), a CPU-time limit, no core
dumps, and a size cap on its stderr, which goes to a file that is summarised (a line
count and the first line), never copied into the logs. A check that crashes, hits a
limit or runs out of time answers "not keys" for its upload and costs nothing else.

Checks of different uploads run side by side, at most ``slots`` at a time per web
process; past that a caller waits briefly, then gets :class:`CheckerBusy` (the view
answers 503 with Retry-After) rather than queueing without bound.

This module imports no Django: the forked processes need only ``concrete.compiler``, the
runtime's native bindings (``concrete.fhe.EvaluationKeys.deserialize`` is a wrapper around its
``ServerKeyset.deserialize``). ``concrete.fhe`` would bring torch along: a forkserver per web
process of 460 MiB instead of 107 (measured 2026-11-27).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import resource
import signal
import tempfile
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

# Enough for the runtime's messages and a stack trace or two; a flood stops here.
STDERR_CAP_BYTES = 64 * 1024
# How long an upload waits for a free slot before the answer is "busy, retry".
SLOT_WAIT_SECONDS = 2.0


@dataclass(frozen=True)
class Verdict:
    """What one check found: ``problem`` is None when the bytes deserialize as keys."""

    problem: str | None
    stderr_lines: int
    stderr_first: str
    pid: int | None
    exit_code: int | None  # negative: the signal that ended the process (-6: an abort)


class CheckerBusy(Exception):
    """Every check slot of this process stayed taken for ``SLOT_WAIT_SECONDS``."""


def _vm_size() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _limit_self(memory_bytes: int, seconds: float) -> None:
    """In the forked process: its own budget on top of what it already maps (the runtime's libraries)."""
    resource.setrlimit(resource.RLIMIT_AS, (_vm_size() + memory_bytes,) * 2)
    cpu = int(seconds) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # Writes past the cap fail (EFBIG) instead of killing the process with SIGXFSZ.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (STDERR_CAP_BYTES, STDERR_CAP_BYTES))


def _receive(data: Connection, size: int) -> int:
    """Gather a streamed check's chunks (until an empty one) in a memfd, outside the address
    space, before the limits are set (their file-size cap is the stderr's). Returns the fd."""
    fd = os.memfd_create("moai-key-check")
    received = 0
    with contextlib.closing(data):
        while chunk := data.recv_bytes(size + 1):
            received += len(chunk)
            if received > size:
                os.close(fd)
                raise ValueError("more bytes than announced")
            os.write(fd, chunk)
    return fd


def _check_in_child(
    path: str | None,
    stderr_path: str,
    memory_bytes: int,
    seconds: float,
    answer: Connection,
    data: Connection | None = None,
    size: int = 0,
) -> None:
    from concrete.compiler import ServerKeyset  # already imported by the forkserver: free here

    # A group of its own: whatever the runtime spawns (addr2line for a stack trace) is killed with it.
    os.setsid()
    err = os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(err, 2)
    os.dup2(err, 1)
    os.close(err)
    try:
        memfd = _receive(data, size) if data is not None else None
    except (ValueError, OSError, EOFError) as exc:
        answer.send(f"the upload could not be received: {exc}"[:300])
        os._exit(0)
    _limit_self(memory_bytes, seconds)
    # An abort's stack dump is symbolized by spawning a symbolizer: 0.7 s instead of 0.15 s.
    os.environ["LLVM_DISABLE_SYMBOLIZATION"] = "1"
    try:
        if memfd is not None:
            # The one copy the runtime needs, allocated under the address-space limit.
            serialized = os.pread(memfd, size, 0)
            os.close(memfd)
        else:
            serialized = Path(str(path)).read_bytes()
        ServerKeyset.deserialize(serialized)
        answer.send(None)
    except MemoryError:
        answer.send("deserializing needed more memory than keys of this size may take")
    except Exception as exc:  # the runtime raises RuntimeError; any failure means "not keys"
        answer.send(str(exc)[:300])
    # Tearing down an interpreter that imported the runtime takes longer than the check.
    os._exit(0)


def _feed(data: Connection, chunks: Iterator[bytes]) -> None:
    """Send a streamed check its bytes; a child that died meanwhile has its verdict read as usual."""
    try:
        for chunk in chunks:
            if chunk:
                data.send_bytes(chunk)
        data.send_bytes(b"")
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        data.close()


def _kill(process: multiprocessing.process.BaseProcess) -> None:
    """Kill a check's process and anything it started (it leads a process group of its own)."""
    if process.pid is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group has ended
        os.killpg(process.pid, signal.SIGKILL)
    if process.is_alive():  # killed before it had made its group
        process.kill()


def summarise(stderr_path: Path) -> tuple[int, str]:
    """Line count and first line of a capped stderr file."""
    try:
        data = stderr_path.read_bytes()[:STDERR_CAP_BYTES]
    except FileNotFoundError:
        return 0, ""
    lines = data.splitlines()
    first = lines[0].decode(errors="replace")[:200] if lines else ""
    return len(lines), first


def _context() -> multiprocessing.context.ForkServerContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["concrete.compiler", __name__])
    return context


class KeyChecker:
    """Runs each key check in a process of its own, ``slots`` at a time."""

    def __init__(self, slots: int) -> None:
        self._slots = threading.BoundedSemaphore(slots)
        # The last few verdicts, for operators and tests (which process, how it ended).
        self.recent: deque[Verdict] = deque(maxlen=16)

    def check(self, path: Path, memory_bytes: int, seconds: float) -> Verdict:
        if not self._slots.acquire(timeout=SLOT_WAIT_SECONDS):
            raise CheckerBusy
        try:
            return self._run(path, memory_bytes, seconds)
        finally:
            self._slots.release()

    def check_stream(
        self, chunks: Iterator[bytes], size: int, scratch: Path, memory_bytes: int, seconds: float
    ) -> Verdict:
        """:meth:`check` of ``size`` bytes that come as ``chunks`` (from object storage), never on local disk."""
        if not self._slots.acquire(timeout=SLOT_WAIT_SECONDS):
            raise CheckerBusy
        try:
            fd, stderr = tempfile.mkstemp(dir=scratch, prefix="key-check-", suffix=".stderr")
            os.close(fd)
            try:
                return self._run(None, memory_bytes, seconds, Path(stderr), (chunks, size))
            finally:
                Path(stderr).unlink(missing_ok=True)
        finally:
            self._slots.release()

    def _run(
        self,
        path: Path | None,
        memory_bytes: int,
        seconds: float,
        stderr_path: Path | None = None,
        stream: tuple[Iterator[bytes], int] | None = None,
    ) -> Verdict:
        if stderr_path is None:
            assert path is not None
            stderr_path = path.with_name(path.name + ".stderr")
        context = _context()
        receive, send = context.Pipe(duplex=False)
        data_in, data_out = context.Pipe(duplex=False) if stream else (None, None)
        process = context.Process(
            target=_check_in_child,
            args=(
                str(path) if path else None,
                str(stderr_path),
                memory_bytes,
                seconds,
                send,
                data_in,
                stream[1] if stream else 0,
            ),
            name="moai-key-check",
            daemon=True,
        )
        try:
            process.start()
            send.close()
            if stream is not None and data_in is not None and data_out is not None:
                data_in.close()
                _feed(data_out, stream[0])
            problem = self._answer(receive, process, seconds)
        finally:
            receive.close()
            process.join(1)
            _kill(process)
            process.join(5)
        lines, first = summarise(stderr_path)
        stderr_path.unlink(missing_ok=True)
        verdict = Verdict(problem, lines, first, process.pid, process.exitcode)
        self.recent.append(verdict)
        return verdict

    @staticmethod
    def _answer(receive: Connection, process: multiprocessing.process.BaseProcess, seconds: float) -> str | None:
        if not receive.poll(seconds):
            _kill(process)
            return f"deserializing took longer than {seconds:g} s"
        try:
            answer: str | None = receive.recv()
            return answer
        except (EOFError, OSError):
            process.join(5)
            return f"the deserializer crashed (exit code {process.exitcode})"

    def warm_up(self) -> None:
        """Start this process's forkserver now, so the first upload does not pay for the import."""
        from multiprocessing import forkserver

        _context()
        forkserver.ensure_running()
