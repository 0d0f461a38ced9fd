"""The worker's start-up, before any of the student's code runs, and its CPU budget.

In this order (:func:`gradcam_kit.worker.entry.run_worker`): switch to the unprivileged uid given
on the command line (:func:`drop_privileges`); read the ``start`` message and set the resource
limits (:func:`apply_limits`); prepare the scratch folder (:func:`prepare_home`); import torch (one
thread), torchvision and matplotlib (Agg) (:func:`import_libraries`: a worker forked by the zygote
has them already); import a private copy of the helper module (:func:`load_private_module`).
"""

from __future__ import annotations

import importlib.util
import os
import resource
import shutil
from pathlib import Path
from types import ModuleType

from gradcam_kit.wire.limits import Limits

__all__ = ["allow_cpu", "apply_limits", "cpu_used", "drop_privileges", "import_libraries", "load_private_module",
           "prepare_home", "release_free_memory"]


def drop_privileges(uid: int, gid: int) -> None:
    """Become ``uid``/``gid`` for good, with no supplementary groups (and so no capabilities)."""
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    if os.getuid() != uid or os.geteuid() != uid or os.getgid() != gid:
        raise SystemExit("worker: could not switch user")
    try:
        os.setuid(0)
    except PermissionError:
        return
    raise SystemExit("worker: the switch of user can be undone; refusing to run")


def apply_limits(limits: Limits, own_uid: bool) -> None:
    """Set the worker's resource limits (hard limits too: the student's code cannot raise them).

    The process limit counts every process of the user, so it is set only when the worker has a
    uid of its own (leased by the session); it would not hold for root anyway.
    """
    memory = int(limits.memory_bytes)
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    total_cpu = int(limits.cpu_total_seconds)
    resource.setrlimit(resource.RLIMIT_CPU, (min(total_cpu, int(limits.startup_seconds) * 2), total_cpu))
    output = int(limits.output_bytes)
    resource.setrlimit(resource.RLIMIT_FSIZE, (output, output))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if own_uid and os.geteuid() != 0:
        processes = int(limits.max_processes)
        resource.setrlimit(resource.RLIMIT_NPROC, (processes, processes))


def prepare_home(home: str, font_cache: str | None, font_cache_name: str | None) -> None:
    """The scratch folder's ``.tmp`` and matplotlib folders, with the grader's font list (so that
    matplotlib does not rebuild it, which takes seconds)."""
    config = Path(home) / ".config" / "matplotlib"
    for folder in (Path(home) / ".tmp", config):
        folder.mkdir(parents=True, exist_ok=True)
    if font_cache and font_cache_name and Path(font_cache).is_file():
        target = config / font_cache_name
        if not target.exists():
            shutil.copyfile(font_cache, target)


def import_libraries() -> None:
    """Import what every worker needs before the student's code: torch (one thread), matplotlib
    (Agg) and torchvision. About 2.5 s of CPU; the zygote does it once for all its workers."""
    import torch

    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot
    import torchvision  # noqa: F401


def release_free_memory() -> None:
    """Give the heap's free pages back to the system (glibc keeps them after a model is freed).

    Each call builds a model and runs a backward pass; without this the worker's resident size
    creeps up towards the sum of its largest calls. It costs about a millisecond.
    """
    try:
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def cpu_used() -> float:
    """CPU seconds this process used (user and system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def allow_cpu(seconds: float) -> None:
    """Let the next phase use ``seconds`` more of CPU time (SIGXCPU after that)."""
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = int(cpu_used() + seconds) + 1
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def load_private_module(path: str, name: str) -> ModuleType:
    """Import a file as a module that is not registered in ``sys.modules``."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
