"""The resource limits of a worker, and the words for them that both sides use.

The grader sets the limits (:class:`Limits`, sent in the ``start`` message); the worker applies
them to itself and words the failures of the student's code against them; the grader words the
deaths of a worker against them. :data:`MEMORY_MARKERS` and :func:`describe_bytes` are shared so
that both sides say the same thing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from gradcam_kit.wire.frames import record_of, require

__all__ = ["MEMORY_MARKERS", "Limits", "describe_bytes"]

MEMORY_MARKERS = ("MemoryError", "bad_alloc", "Cannot allocate memory", "can't allocate memory",
                  "not enough memory", "out of memory")
"""Words by which Python, C++ (``std::bad_alloc``), the C library and torch say an allocation failed:
in an exception's message (the worker) or at the end of a dead worker's log (the grader)."""


def describe_bytes(count: float) -> str:
    """``6442450944`` -> ``"6.0 GB"`` (binary units, the way students read them)."""
    for unit, size in (("GB", 2**30), ("MB", 2**20), ("kB", 2**10)):
        if count >= size:
            return f"{count / size:.1f} GB" if unit == "GB" else f"{count / size:.0f} {unit}"
    return f"{count:.0f} bytes"


@dataclass(frozen=True)
class Limits:
    """Resource limits of one submission's worker.

    Attributes
    ----------
    call_seconds : float
        Wall-clock time of one call of a student's function, and of one cell while loading.
    startup_seconds : float
        Wall-clock time to start the worker (interpreter, torch, matplotlib) before the first cell.
    cpu_seconds : int
        CPU time of one call or one cell (all threads together).
    cpu_total_seconds : int
        CPU time of one worker process over its whole life (a hard limit).
    memory_bytes : int
        Address space of the worker (``RLIMIT_AS``). A worker that imported the CUDA build of torch
        and ran DenseNet-121 forward and backward on one image maps about 3.8 GB, most of it
        libraries that are never touched; the default leaves about 2 GB of margin.
    output_bytes : int
        What the student's code may print (stdout and stderr together), and the largest file it
        may write (``RLIMIT_FSIZE``).
    max_processes : int
        Processes and threads of the worker's user (``RLIMIT_NPROC``). Set only when the worker has
        a uid of its own (the grader runs as root, level ``uid`` or ``bwrap``): the limit counts
        every process of a user, and it is not enforced for root.
    scratch_bytes : int
        Size of the scratch folder and of /tmp (``bwrap`` level: they are tmpfs).
    result_bytes : int
        Largest answer of one call.
    max_restarts : int
        Worker restarts allowed per session; then every call fails at once.
    """

    call_seconds: float = 60.0
    startup_seconds: float = 120.0
    cpu_seconds: int = 120
    cpu_total_seconds: int = 1800
    memory_bytes: int = 6 * 2**30
    output_bytes: int = 10 * 2**20
    max_processes: int = 64
    scratch_bytes: int = 256 * 2**20
    result_bytes: int = 64 * 2**20
    max_restarts: int = 10

    def to_plain(self) -> dict[str, float | int]:
        return asdict(self)

    @classmethod
    def from_plain(cls, message: Any) -> "Limits":
        record = record_of(message, "the limits")
        names = {item.name for item in fields(cls)}
        require(set(record) == names, "the limits must name every limit")
        require(all(type(value) in (int, float) for value in record.values()), "limits must be numbers")
        return cls(**record)
