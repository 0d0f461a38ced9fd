"""Whose fault a failure while the notebook loads is, and how the student is told.

The worker runs the source notebook's setup cells, then the student's graded cells. A failure
before any cell of the student's ran (the start-up, a setup cell) is the grader's: the student is
"not graded", never given zero. A graded cell that kills its worker is skipped on the next start,
so that only its function loses points.
"""

from __future__ import annotations

from typing import Mapping

from gradcam_kit.program import SubmissionProgram

__all__ = ["failed_setup", "grader_at_fault", "not_run_message", "skipped_cell_message"]


def _student_cell_before(program: SubmissionProgram, grade_id: str | None) -> bool:
    """Whether a cell of the student's runs before the cell ``grade_id`` (a setup cell)."""
    for cell in program.cells:
        if cell.grade_id == grade_id:
            return False
        if cell.grade_id in program.functions:
            return True
    return False


def grader_at_fault(program: SubmissionProgram, grade_id: str | None) -> bool:
    """Whether a worker lost while running the cell ``grade_id`` (``None``: while starting) is the
    grader's fault: nothing of the student's had run yet."""
    return grade_id is None or (grade_id not in program.functions and not _student_cell_before(program, grade_id))


def failed_setup(program: SubmissionProgram, errors: Mapping[str, str]) -> str | None:
    """Why the notebook's setup failed before any of the student's cells ran (the setup cells are
    the source notebook's own: their failure is the grader's), or ``None``."""
    for cell in program.cells:
        if cell.grade_id in program.functions:
            return None
        if cell.grade_id in errors:
            return f"The grader could not prepare your notebook: {errors[cell.grade_id]}"
    return None


def skipped_cell_message(grade_id: str, reason: str, *, hint: bool) -> str:
    """What the student reads about a graded cell skipped because its worker was lost loading it
    (``hint``: the worker was lost, not stopped at a limit it reported)."""
    said = f"The cell `{grade_id}` {reason} while the notebook was loading, so it was not run"
    if hint:
        return said + (" (is there a long computation, an infinite loop or a crash at the top level of the "
                       "cell?).")
    return said + "."


def not_run_message(reason: str) -> str:
    """What the student reads when the notebook could not be run at all."""
    return f"The grader could not run your notebook: {reason}"
