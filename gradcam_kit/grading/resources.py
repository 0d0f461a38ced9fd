"""What ``gradcam-kit grade`` gives each judge: processes, threads, memory and waiting times.

Every default of the batch's use of the machine is here, with why it has that value. The judge's
own time limit per notebook is a contract between the kit and the judge
(:func:`gradcam_kit.contract.judge_timeout`); the sandboxed worker's limits belong to the sandbox
(:mod:`gradcam_kit.host.sandbox`).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "MAX_SERIES",
    "MEMORY_PER_WORKER",
    "SERIES_EXIT_GRACE",
    "THREAD_VARIABLES",
    "THREAD_JOIN_TIMEOUT",
    "available_memory",
    "default_workers",
    "series_length",
    "threads_per_judge",
]

MEMORY_PER_WORKER = 2 * 2**30
"""Bytes of memory to plan for each judge and its sandboxed worker (see benchmarks/grading.py)."""

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
"""The BLAS/OpenMP thread counts set for each judge (unless the user set them already)."""

MAX_SERIES = 8
"""The most notebooks given to one judge process (a crash costs the rest of its series a restart)."""

SERIES_EXIT_GRACE = 30.0
"""Seconds a judge has to exit after its last notebook of a series, before it is killed."""

THREAD_JOIN_TIMEOUT = 15.0
"""Seconds to wait for each of the runner's threads once the judges are stopped."""


def available_memory() -> int | None:
    """Bytes of memory available now (Linux ``MemAvailable``), or ``None`` when unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def default_workers(jobs: int) -> int:
    """Judges to run side by side: one per CPU, no more than there are jobs, nor than the memory allows.

    Parameters
    ----------
    jobs : int
        The submissions to judge.
    """
    workers = min(os.cpu_count() or 1, jobs)
    memory = available_memory()
    if memory is not None:
        workers = min(workers, memory // MEMORY_PER_WORKER)
    return max(1, workers)


def threads_per_judge(workers: int) -> int:
    """BLAS/OpenMP threads for each of ``workers`` judges: the CPUs shared among them, at least one."""
    return max(1, (os.cpu_count() or 1) // workers)


def series_length(jobs: int, workers: int) -> int:
    """Notebooks per judge process: the jobs shared among the workers, at most :data:`MAX_SERIES`."""
    return max(1, min(MAX_SERIES, -(-jobs // max(1, workers))))
