"""The student's errors in their own terms: what failed, and where in their notebook.

Every cell runs compiled with the file name ``<cell GRADE_ID>`` (:data:`CELL_PREFIX`), so the
innermost frame of a traceback that lies in one of the student's cells locates the error
(:func:`located`). :func:`failure_from` turns whatever the student's code raised into a
:class:`CallFailure` (a :class:`~gradcam_kit.wire.messages.StudentError` and a
:class:`~gradcam_kit.wire.messages.Failure`); :func:`harness_failure` says whether an error of the
grader's own code around a call is still the student's (it went through their code) or the grader's.
"""

from __future__ import annotations

import errno
import traceback

from gradcam_kit.wire.failures import Failure, StudentError
from gradcam_kit.wire.limits import MEMORY_MARKERS, Limits, describe_bytes
from gradcam_kit.wire.messages import Answer

__all__ = ["CELL_PREFIX", "MAX_MESSAGE", "CallFailure", "exception_message", "failure_from", "harness_failure",
           "located"]

MAX_MESSAGE = 600
"""Longest exception message kept (then cut, with ``[...]``)."""
CELL_PREFIX = "<cell "
"""Start of the file name each cell is compiled with: ``<cell grad_cam>``."""
MAX_CODE = 200
"""Longest line of code quoted in a location."""

_CUDA_HINT = " — the grader runs on a CPU: put tensors on the device of the input (e.g. image.device)."
_BACKWARD_HOOK_HINT = (" — this happens with register_full_backward_hook on a module whose output is then "
                       "modified in place (DenseNet applies an in-place ReLU to the output of `features`): "
                       "capture the gradient with a hook on the output tensor (output.register_hook) instead.")


class CallFailure(Exception):
    """A failure of the student's code: the error for them, its kind, and whether the worker must
    be restarted after it (a limit was hit)."""

    def __init__(self, error: StudentError | str, kind: Failure = Failure.EXCEPTION, restart: bool = False) -> None:
        self.error = error if isinstance(error, StudentError) else StudentError(error)
        super().__init__(str(self.error))
        self.kind, self.restart = Failure(kind), restart

    @property
    def message(self) -> str:
        """The error as the student reads it."""
        return str(self.error)

    def answer(self, seconds: float = 0.0) -> Answer:
        """The worker's answer for this failure."""
        return Answer(False, error=self.error, failure=self.kind,
                      restart=self.kind.value if self.restart else None, seconds=seconds)


def exception_message(exc: BaseException) -> str:
    """``str(exc)``, stripped and cut at :data:`MAX_MESSAGE` (whatever a hostile ``__str__`` does)."""
    try:
        text = str(exc)
    except BaseException:  # a hostile __str__
        text = "(its message could not be read)"
    if not isinstance(text, str):
        text = "(its message could not be read)"
    text = text.strip()
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + " [...]"


def located(message: str, exc: BaseException) -> StudentError:
    """``message``, located at the innermost frame of ``exc``'s traceback in a student's cell (not
    located when no frame is in one)."""
    try:
        frames = traceback.extract_tb(exc.__traceback__)
    except Exception:
        return StudentError(message)
    mine = [frame for frame in frames if str(frame.filename).startswith(CELL_PREFIX)]
    if not mine:
        return StudentError(message)
    frame = mine[-1]
    code = (frame.line or "").strip()[:MAX_CODE]
    return StudentError(message, frame.filename[len(CELL_PREFIX):-1], frame.lineno, code)


def _is_memory_error(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    text = exception_message(exc) if isinstance(exc, RuntimeError) else ""
    return any(marker in text for marker in MEMORY_MARKERS)


def _is_process_error(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno == errno.EAGAIN:
        return True
    return isinstance(exc, RuntimeError) and "can't start new thread" in exception_message(exc)


def failure_from(exc: BaseException, limits: Limits) -> CallFailure:
    """Turn an exception raised by the student's code into a :class:`CallFailure`."""
    if isinstance(exc, SystemExit):
        return CallFailure(located(f"your code called sys.exit({exc.code!r})", exc), Failure.EXIT)
    if _is_memory_error(exc):
        return CallFailure(located(f"used more than {describe_bytes(limits.memory_bytes)} of memory", exc),
                           Failure.MEMORY, restart=True)
    if _is_process_error(exc):
        return CallFailure(located(f"tried to start too many processes or threads (the limit is "
                                   f"{limits.max_processes})", exc), Failure.PROCESSES, restart=True)
    if isinstance(exc, OSError) and exc.errno == errno.EFBIG:
        return CallFailure(located(f"printed or wrote more than {describe_bytes(limits.output_bytes)}", exc),
                           Failure.OUTPUT, restart=True)
    error = located(f"{type(exc).__name__}: {exception_message(exc)}", exc)
    said = f"{error.message}{error.location()}"
    hint = ""
    if "CUDA" in said or "cuda" in said:
        hint += _CUDA_HINT
    if "BackwardHookFunction" in said + hint:
        hint += _BACKWARD_HOOK_HINT
    return CallFailure(StudentError(error.message, error.cell, error.line, error.code, hint))


def harness_failure(error: BaseException) -> Answer:
    """The answer to a call whose harness (not the student's function itself) raised ``error``.

    When the exception comes from the student's code (it went through a frame of one of their
    cells: a monkeypatched library, a model they changed), it is theirs: ``exception``. Otherwise
    the grader itself failed (its own files unreadable, a bug): ``grader``, never charged to them.
    """
    said = f"{type(error).__name__}: {exception_message(error)}"
    theirs = located(f"your code broke the grader's call: {said}", error)
    if theirs.cell is not None:
        return Answer(False, error=theirs, failure=Failure.EXCEPTION)
    return Answer(False, error=StudentError(f"the grader failed to run this call: {said}"), failure=Failure.GRADER)
