"""The program the worker runs for one submission: its cells, and what the grader found wrong.

:func:`gradcam_kit.grading.notebook.read_submission` builds it from the notebooks; the host's
:class:`~gradcam_kit.host.session.WorkerSession` sends it to the worker as plain data
(:meth:`SubmissionProgram.to_plain`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from gradcam_kit.contract import GRADED_FUNCTIONS

__all__ = ["ProgramCell", "SubmissionProgram"]


@dataclass(frozen=True)
class ProgramCell:
    """One cell that the worker runs.

    Attributes
    ----------
    grade_id : str
        The cell's nbgrader id (``setup_...`` or a function name).
    kind : {"setup", "function"}
        A locked setup cell or a graded function cell.
    source : str
        The cell's text as in the notebook (for showing the student's lines).
    code : str
        The Python that is run (IPython syntax translated, line numbers kept where possible).
    origin : {"source", "submission"}
        Which notebook the text comes from.
    defines : tuple of str
        Names of the functions defined at the top level of the cell, in order (with repeats).
    """

    grade_id: str
    kind: Literal["setup", "function"]
    source: str
    code: str
    origin: Literal["source", "submission"]
    defines: tuple[str, ...] = ()

    @property
    def filename(self) -> str:
        """The file name given to the cell's code, so that tracebacks name the cell."""
        return f"<cell {self.grade_id}>"

    def to_plain(self) -> dict[str, Any]:
        """The cell as plain data (for the worker)."""
        return {"grade_id": self.grade_id, "kind": self.kind, "source": self.source, "code": self.code,
                "origin": self.origin, "defines": list(self.defines)}


@dataclass
class SubmissionProgram:
    """What the grader runs for one submission, and what it found wrong with it.

    Attributes
    ----------
    submission_path, source_path : Path
        The files read.
    cells : list of ProgramCell
        The cells to run, in order: setup cells from the source, function cells from the submission.
    problems : dict
        Function name -> why that function cannot be graded (it is not run). Written for the student.
    notes : list of str
        Remarks that cost no points (a changed locked cell, a function defined twice...).
    fatal : str or None
        Why nothing of the submission can be run (unreadable file, wrong format); every function
        then has this problem too.
    functions : tuple of str
        The graded functions.
    """

    submission_path: Path
    source_path: Path
    cells: list[ProgramCell] = field(default_factory=list)
    problems: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    fatal: str | None = None
    functions: tuple[str, ...] = GRADED_FUNCTIONS

    @property
    def runnable(self) -> bool:
        """Whether the worker has anything of the student's to run."""
        return self.fatal is None

    def cell(self, grade_id: str) -> ProgramCell | None:
        """The program's cell with this id, if any."""
        return next((cell for cell in self.cells if cell.grade_id == grade_id), None)

    def to_plain(self) -> dict[str, Any]:
        """The cells and problems as plain data (sent to the worker)."""
        return {"cells": [cell.to_plain() for cell in self.cells], "problems": dict(self.problems),
                "functions": list(self.functions)}
