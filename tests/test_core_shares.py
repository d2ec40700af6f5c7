"""How many pool processes a starting job shares the cores with (jobs.cores.company).

The end-to-end test (tests/test_cores.py) shows the threads a real worker gives; here the
count itself, on boards of real process ids (this process and its parent, both alive).
"""

from __future__ import annotations

import os

from jobs import cores

ME, OTHER = os.getpid(), os.getppid()


def test_a_job_with_nothing_waiting_counts_only_the_busy_processes():
    assert cores.company(board=[ME, 0], present=[ME, OTHER], own=0, waiting=0) == 0
    assert cores.company(board=[ME, OTHER], present=[ME, OTHER], own=0, waiting=0) == 1


def test_jobs_waiting_in_the_queue_count_the_idle_processes_that_will_take_them():
    assert cores.company(board=[ME, 0], present=[ME, OTHER], own=0, waiting=1) == 1
    assert cores.company(board=[ME, 0], present=[ME, OTHER], own=0, waiting=5) == 1  # one other process only


def test_waiting_jobs_without_an_idle_process_to_take_them_change_nothing():
    assert cores.company(board=[ME, 0], present=[ME, 0], own=0, waiting=3) == 0
    assert cores.company(board=[ME, OTHER], present=[ME, OTHER], own=0, waiting=3) == 1


def test_a_dead_process_left_on_the_boards_counts_as_gone():
    dead = 2**22 + 12345  # above the default pid_max: no such process
    assert not cores.process_alive(dead)
    assert cores.company(board=[ME, dead], present=[ME, dead], own=0, waiting=2) == 0
