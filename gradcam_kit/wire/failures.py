"""Why a call gave no value: the kind of failure (:class:`Failure`) and the student's error, located
(:class:`StudentError`), as they cross from the worker to the grader."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from enum import StrEnum
from typing import Any

from gradcam_kit.wire.frames import ProtocolError, record_of, require, text_of

__all__ = ["LIMIT_FAILURES", "RETRIED_FAILURES", "Failure", "StudentError"]


class Failure(StrEnum):
    """Why a call (or a cell) gave no value. A ``str``: ``Failure.GRADER == "grader"``."""

    EXCEPTION = "exception"
    """The student's code raised."""
    EXIT = "exit"
    """The student's code called ``sys.exit`` or ended the process."""
    UNAVAILABLE = "unavailable"
    """The function is not defined (or its cell failed), or nothing can be called at all."""
    WRONG_RETURN = "wrong_return"
    """``register_gradcam_hooks`` did not return ``(store, handles)``."""
    TIMEOUT = "timeout"
    CPU = "cpu"
    MEMORY = "memory"
    OUTPUT = "output"
    PROCESSES = "processes"
    """A limit of :class:`Limits` was hit."""
    CRASH = "crash"
    KILLED = "killed"
    """The worker was ended by a signal."""
    RESULT = "result"
    """The value returned is larger than the grader accepts."""
    LOST = "lost"
    """The worker broke or closed the channel."""
    GRADER = "grader"
    """The grader itself failed: never charged to the student."""

    @classmethod
    def from_plain(cls, value: Any) -> "Failure | None":
        if value is None:
            return None
        try:
            return cls(value)
        except ValueError:
            raise ProtocolError(f"malformed message: unknown failure {value!r}") from None


LIMIT_FAILURES = frozenset({Failure.TIMEOUT, Failure.CPU, Failure.MEMORY, Failure.OUTPUT, Failure.PROCESSES,
                            Failure.CRASH, Failure.KILLED, Failure.LOST, Failure.RESULT})
"""Failures that mean the code hit one of the worker's limits (or took the worker down)."""

RETRIED_FAILURES = frozenset({Failure.KILLED, Failure.LOST, Failure.CRASH, Failure.GRADER})
"""Failures of the worker itself, not of a Python exception in the student's code: the judge makes
such a call once more, on a fresh worker, before it believes them (timeouts and memory limits are
not retried)."""


@dataclass(frozen=True)
class StudentError:
    """What went wrong, located in the student's notebook when it happened in one of their cells.

    Attributes
    ----------
    message : str
        What happened, for the student (``"ValueError: bad shape (3, 4)"``, ``"timed out after 60 s"``).
    cell : str or None
        The ``grade_id`` of the cell whose code was running (the innermost of the student's frames).
    line : int or None
        The line in that cell.
    code : str
        That line of code as written (at most 200 characters; empty when unknown).
    hint : str
        Advice appended after the location (``" — the grader runs on a CPU: ..."``), or empty.
    step : str or None
        The step of a hook probe that failed (``register``, ``returned``, ``forward``, ``backward``,
        ``store``, ``remove``), or ``None``.
    """

    message: str
    cell: str | None = None
    line: int | None = None
    code: str = ""
    hint: str = ""
    step: str | None = None

    def location(self) -> str:
        """``" (cell `grad_cam`, line 12: `cam = ...`)"``, or empty."""
        if self.cell is None:
            return ""
        shown = f": `{self.code}`" if self.code else ""
        return f" (cell `{self.cell}`, line {self.line}{shown})"

    def __str__(self) -> str:
        text = f"{self.message}{self.location()}{self.hint}"
        return f"at step '{self.step}': {text}" if self.step else text

    def at_step(self, step: str | None) -> "StudentError":
        return replace(self, step=step)

    def to_plain(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_plain(cls, message: Any) -> "StudentError | None":
        if message is None:
            return None
        record = record_of(message, "an error")
        require(set(record) <= {item.name for item in fields(cls)}, "unknown fields of an error")
        line = record.get("line")
        require(line is None or type(line) is int, "the line of an error must be an integer")
        return cls(text_of(record.get("message"), "an error's message"), text_of(record.get("cell"), "cell", True),
                   line, text_of(record.get("code", ""), "code"), text_of(record.get("hint", ""), "hint"),
                   text_of(record.get("step"), "step", True))
