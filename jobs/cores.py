"""How many OpenMP threads a job's circuit gets: all of the host's cores when it runs
alone, its share of them when several run.

A circuit runs faster on more cores (OpenMP loops inside the compiled program), but
pool processes that each take every core fight over them. So the worker's parent,
before it forks its pool, makes a board in shared memory with one cell per pool
process; a process writes its pid there while it runs a job and counts the busy cells
when a job starts. A process killed mid-job leaves its pid behind: a cell whose pid is
not alive counts as free, and the process that replaces it (same pool index) overwrites it.

The share is fixed when a job starts (a running circuit's OpenMP team cannot be resized
from outside), so for the length of one job the cores can be oversubscribed by the
threads of jobs that started alone; the next job takes its share of the new count. To
keep that rare under load, a job that starts while others wait in the queue counts the
idle pool processes that will take them (each pool process marks a second board,
"present", when it starts) as busy already.

This module imports nothing but the standard library: the parent imports it before forking.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
from collections.abc import Iterator
from typing import Any

logger = logging.getLogger(__name__)

# Pool processes of one worker beyond this share the last cells' fate: they are not counted.
MAX_POOL_PROCESSES = 256

_board: Any = None  # a RawArray of pids, one cell per pool index; None outside a prefork worker
_present: Any = None  # the same, for every pool process that has started, busy or not


def create_board() -> None:
    """In the worker's parent, before the pool is forked: the children inherit the boards."""
    global _board, _present
    _board = multiprocessing.RawArray(ctypes.c_int, MAX_POOL_PROCESSES)
    _present = multiprocessing.RawArray(ctypes.c_int, MAX_POOL_PROCESSES)


def join_pool() -> None:
    """In a pool process as it starts: count it among the processes that can take a job."""
    index = _pool_index()
    if _present is not None and index is not None and index < MAX_POOL_PROCESSES:
        _present[index] = os.getpid()


def host_cores() -> int:
    """The cores this process may use: its CPU affinity (a container's cpuset), capped by
    its cgroup's CPU quota (a Kubernetes CPU limit, which leaves the affinity at the node's
    every core: a lone job there would start more threads than the quota can run)."""
    cores = len(os.sched_getaffinity(0)) or 1
    quota = _cgroup_cpu_quota()
    return max(1, min(cores, quota)) if quota else cores


def _cgroup_cpu_quota() -> int | None:
    """Whole cores of the cgroup v2 quota (``cpu.max``: "200000 100000" is 2), None when unlimited."""
    try:
        with open("/sys/fs/cgroup/cpu.max") as limit:
            quota, period = limit.read().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return max(1, int(quota) // max(1, int(period)))


def process_alive(pid: int) -> bool:
    """Whether a process of this pid exists (another user's counts: the signal is refused, not lost)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pool_index() -> int | None:
    """This process's index in the worker's pool (billiard sets it on each pool process it starts)."""
    from billiard.process import current_process

    index = getattr(current_process(), "index", None)
    return index if isinstance(index, int) else None


def busy_elsewhere(board: Any, own: int | None) -> int:
    """How many other pool processes are running a job now."""
    return sum(1 for i, pid in enumerate(board) if pid and i != own and process_alive(pid))


def share_now() -> int:
    """The threads that work starting now may take, without marking this process busy
    (a warm-up in a background thread: the process's own jobs are not slowed by it)."""
    index = _pool_index()
    busy = busy_elsewhere(_board, index) if _board is not None else 0
    return max(1, host_cores() // (1 + busy))


def company(board: Any, present: Any, own: int | None, waiting: int) -> int:
    """How many other pool processes will run a job beside this one: the busy ones, and as
    many idle ones as there are jobs ``waiting`` in the queue (they are about to take them)."""
    busy = busy_elsewhere(board, own)
    idle = busy_elsewhere(present, own) - busy if present is not None else 0
    return busy + min(max(0, waiting), max(0, idle))


@contextlib.contextmanager
def job_running(waiting: int = 0) -> Iterator[int]:
    """Mark this pool process busy while inside; yields the OpenMP threads its job may use.

    ``waiting``: jobs queued behind this one when it was claimed.
    """
    cores = host_cores()
    index = _pool_index()
    if _board is None or index is None or index >= MAX_POOL_PROCESSES:
        # Not a prefork pool process (a test running tasks inline, a solo worker): alone.
        yield cores
        return
    _board[index] = os.getpid()
    try:
        yield max(1, cores // (1 + company(_board, _present, index, waiting)))
    finally:
        _board[index] = 0


def set_openmp_threads(threads: int) -> int:
    """Set the OpenMP team size of the calling thread (a per-thread setting), and return
    what the runtime now reports for it (0 when no OpenMP runtime is loaded)."""
    library = _openmp_library()
    if library is None:
        return 0
    library.omp_set_num_threads(threads)
    reported: int = library.omp_get_max_threads()
    return reported


_library: ctypes.CDLL | None = None


def _openmp_library() -> ctypes.CDLL | None:
    """The OpenMP runtime Concrete loaded into this process (a private copy in its wheel).

    Found once it is loaded (after the first model load); not remembered as missing before.
    """
    global _library
    if _library is None:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "/libomp" in line}
        if not paths:
            logger.warning("no OpenMP runtime loaded; circuits keep the process's OpenMP setting")
            return None
        _library = ctypes.CDLL(sorted(paths)[0])
    return _library
