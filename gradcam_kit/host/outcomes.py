"""What the grader learns from a worker: the result of one call (:class:`Outcome`) and of loading
the notebook (:class:`LoadResult`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gradcam_kit.wire.failures import Failure, StudentError
from gradcam_kit.wire.messages import Answer

__all__ = ["LoadResult", "Outcome"]


@dataclass
class Outcome:
    """What one call of a student's function gave.

    Attributes
    ----------
    ok : bool
        The function returned (``value`` holds what); otherwise ``error`` says why not.
    value : Any
        Plain data: numbers, strings, lists, tuples, dicts, and descriptions
        (``{"kind": "tensor", "array", "dtype", "device", "requires_grad", "shape", "type"}``,
        ``{"kind": "ndarray", ...}``, ``{"kind": "numpy_scalar", ...}``,
        ``{"kind": "figure", "axes": [{"title", "n_images"}, ...], "suptitle"}``,
        ``{"kind": "object", "type": ...}``).
    error : str or None
        For the student: the exception and the line of their cell, or the limit that was hit
        (``str(student_error)`` when the worker answered).
    observations : dict
        After a call with a model: ``hooks_left`` (names of the modules still carrying hooks, the
        root being ``"<model>"``), ``training``, ``weights_changed``, ``buffers_changed``.
    failure : Failure or None
        The kind of failure (a ``str``: ``outcome.failure == "timeout"`` holds).
    seconds : float
        Time spent in the student's code (or until the failure).
    student_error : StudentError or None
        The error as fields: message, cell, line, code, step (``None`` when the grader, not the
        worker, decided the failure: a timeout, a crash, a function that is not defined...).
    """

    ok: bool
    value: Any = None
    error: str | None = None
    observations: dict[str, Any] = field(default_factory=dict)
    failure: Failure | None = None
    seconds: float = 0.0
    student_error: StudentError | None = None

    def __post_init__(self) -> None:
        if self.failure is not None:
            self.failure = Failure(self.failure)
        if self.error is None and self.student_error is not None:
            self.error = str(self.student_error)

    @classmethod
    def from_answer(cls, answer: Answer) -> "Outcome":
        """The outcome of a call the worker answered."""
        return cls(answer.ok, answer.value, None, dict(answer.observations), answer.failure, answer.seconds,
                   answer.error)


@dataclass
class LoadResult:
    """What loading the notebook in the worker gave.

    Attributes
    ----------
    ok : bool
        Every graded function is defined and every cell ran without error.
    defined : dict
        Function name -> whether it can be called.
    errors : dict
        Function name (or setup cell id) -> why it cannot be called / why the cell failed.
    notes : list of str
        Remarks for the student that cost no points.
    fatal : str or None
        Why nothing can be called at all.
    isolation : str
        The isolation level of the worker.
    seconds : float
        Wall-clock time of the load (worker start-up included).
    failure : Failure or None
        ``Failure.GRADER`` when ``fatal`` is the grader's own fault (the worker could not be
        started, or failed before any of the student's code ran): the student must not be charged.
    zygote : bool
        The worker was forked by the zygote (see :mod:`gradcam_kit.host.zygote`).
    """

    ok: bool
    defined: dict[str, bool]
    errors: dict[str, str]
    notes: list[str] = field(default_factory=list)
    fatal: str | None = None
    isolation: str = ""
    seconds: float = 0.0
    failure: Failure | None = None
    zygote: bool = False

    def __post_init__(self) -> None:
        if self.failure is not None:
            self.failure = Failure(self.failure)
