"""The autograded copy of a submission, as ``nbgrader autograde`` would leave it, without executing it.

``autograded/<student>/<assignment>/<notebook>.ipynb`` is what formgrader shows and what
``nbgrader generate_feedback`` turns into the student's feedback page:

* :func:`sanitize` runs nbgrader's own sanitize preprocessors on the submission (locked cells
  restored, outputs cleared) and says which locked cells the student edited;
* :func:`annotate_tests` writes the judge's verdict as the output of each test cell;
* :func:`copy_assignment_files` puts the assignment's other files beside it, and
  :func:`write_notebook_atomically` writes it whole or not at all.
"""

from __future__ import annotations

import base64
import logging
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import nbformat
from nbformat import NotebookNode

from gradcam_kit.course import ASSIGNMENT, Course
from gradcam_kit.fsutil import write_atomically
from gradcam_kit.grading.nbgrader_settings import NOTEBOOK_ID, NbgraderSettings, grade_id
from gradcam_kit.judge_results import JudgeResults

__all__ = ["WRAP_COLUMNS", "SanitizedNotebook", "annotate_tests", "copy_assignment_files", "edited_locked_cells",
           "sanitize", "wrap_lines", "write_notebook_atomically"]


class _CollectWarnings(logging.Handler):
    """Keep the messages that nbgrader's preprocessors log (e.g. a locked cell that was edited)."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@dataclass
class SanitizedNotebook:
    """The submission as nbgrader's autograde would grade it, and what nbgrader said about it."""

    notebook: NotebookNode
    warnings: list[str] = field(default_factory=list)


def edited_locked_cells(notebook: NotebookNode, release: NotebookNode | None) -> list[str]:
    """The locked cells whose source differs from the released notebook's, by ``grade_id``.

    (nbgrader's own check compares with the *source* version, so it flags every cell that had
    hidden tests; this one flags the cells the student actually edited.)
    """
    if release is None:
        return []
    released = {grade_id(c): c.source for c in release.cells
                if grade_id(c) and c.get("metadata", {}).get("nbgrader", {}).get("locked")}
    return [name for cell in notebook.cells if (name := grade_id(cell)) in released
            and cell.source.strip() != released[name].strip()]


def sanitize(submission: Path, settings: NbgraderSettings, student: str,
             release: NotebookNode | None = None) -> SanitizedNotebook:
    """Apply nbgrader's sanitize preprocessors to a submitted notebook.

    These are the steps ``nbgrader autograde`` runs before executing a submission (as the course's
    ``nbgrader_config.py`` sets them): clear the outputs, drop duplicated cell ids, restore the
    kernelspec, restore the locked cells (setup, tests: ``OverwriteLockedCells``, which knows that
    released test cells lack their hidden tests) and the metadata of the graded cells from the
    gradebook, check the metadata.

    Parameters
    ----------
    submission : Path
        The student's notebook (read only).
    settings : NbgraderSettings
        The course's nbgrader configuration.
    student : str
        The student id (nbgrader's preprocessors expect it in their resources).
    release : NotebookNode, optional
        The released notebook, to tell which locked cells the student edited.

    Raises
    ------
    ValueError, OSError, nbformat.ValidationError
        When the file is not a readable notebook.
    """
    from nbgrader.preprocessors import CheckCellMetadata, ClearOutput, DeduplicateIds, OverwriteKernelspec

    from gradcam_kit.autograde_plugins import OverwriteLockedCells

    notebook = nbformat.read(str(submission), as_version=nbformat.NO_CONVERT)
    if notebook.get("nbformat", 0) < 4:
        notebook = nbformat.convert(notebook, 4)
    resources = {
        "nbgrader": {
            "notebook": NOTEBOOK_ID,
            "assignment": ASSIGNMENT,
            "student": student,
            "db_url": settings.db_url,
        }
    }
    edited = edited_locked_cells(notebook, release)
    collector = _CollectWarnings()
    logger = logging.getLogger(f"gradcam_kit.sanitize.{student}")
    logger.propagate = False
    logger.addHandler(collector)
    try:
        for step in (ClearOutput, DeduplicateIds, OverwriteKernelspec, OverwriteLockedCells, CheckCellMetadata):
            preprocessor = step(config=settings.config, log=logger)
            notebook, resources = preprocessor(notebook, resources)
    finally:
        logger.removeHandler(collector)
    remarks = [f"the locked cell {name} was edited; it was restored from the source for grading"
               for name in edited]
    remarks += [m for m in collector.messages if not m.startswith("Attribute 'checksum'")]
    return SanitizedNotebook(notebook, remarks)


WRAP_COLUMNS = 100
"""Formgrader shows a traceback as preformatted text, which it neither wraps nor scrolls far: the
judge's messages are cut into lines of at most this many characters."""


def wrap_lines(text: str, width: int = WRAP_COLUMNS) -> list[str]:
    """``text`` cut into lines of at most ``width`` characters, at spaces where possible, its own
    line breaks kept (every word of it survives, in order)."""
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        lines += textwrap.wrap(paragraph, width, break_long_words=True, break_on_hyphens=False,
                               replace_whitespace=False, drop_whitespace=True) or [""]
    return lines


def annotate_tests(notebook: NotebookNode, results: JudgeResults | Mapping, heatmap_png: bytes | None = None) -> None:
    """Show the judge's verdict as the output of each test cell (formgrader displays it).

    A passed test gets a line of text (and the judge's remark, if any); a failed one an
    ``AssertionError`` output carrying the feedback, as the hidden test would show under ``nbgrader
    autograde``, its traceback cut into lines of at most :data:`WRAP_COLUMNS` characters. The
    heatmap comparison, when given, is attached to the ``test_grad_cam`` cell (or the last test cell).
    """
    tests = JudgeResults.of(results).tests
    test_cells = [cell for cell in notebook.cells if cell.cell_type == "code" and grade_id(cell) in tests]
    for cell in test_cells:
        verdict = tests[grade_id(cell)]
        points = f"{_number(verdict.points)}/{_number(verdict.max_points)} points"
        if verdict.passed:
            remark = verdict.feedback
            text = f"gradcam-kit autograder: passed ({points})" + (f". {remark}" if remark else "")
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="\n".join(wrap_lines(text)) + "\n")]
        else:
            feedback = verdict.feedback or verdict.outcome
            cell.outputs = [nbformat.v4.new_output(
                "error", ename="AssertionError", evalue=f"{feedback} ({points})",
                traceback=wrap_lines(f"AssertionError: {feedback} ({points})"),
            )]
    if heatmap_png and test_cells:
        target = next((c for c in test_cells if grade_id(c) == "test_grad_cam"), test_cells[-1])
        target.outputs.append(nbformat.v4.new_output(
            "display_data", data={"image/png": base64.b64encode(heatmap_png).decode("ascii"),
                                  "text/plain": "<heatmap: the student's beside the reference>"},
        ))


def copy_assignment_files(course: Course, settings: NbgraderSettings, destination: Path) -> None:
    """Copy the assignment's other files (``tp2_utils.py``) next to the autograded notebook, as
    ``nbgrader autograde`` does: every file of the source folder but notebooks and what
    ``CourseDirectory.ignore`` names, so that the autograded copy runs where it lies."""
    from nbgrader.coursedir import CourseDirectory
    from nbgrader.utils import find_all_files

    ignore = list(CourseDirectory(config=settings.config).ignore) + ["*.ipynb"]
    for name in find_all_files(str(course.source_dir), ignore):
        source = Path(name)
        target = destination / source.relative_to(course.source_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        data = source.read_bytes()
        if not target.is_file() or target.read_bytes() != data:
            write_atomically(target, data)


def write_notebook_atomically(notebook: NotebookNode, path: Path) -> None:
    """Write ``notebook`` to ``path``, whole or not at all (as ``nbformat.write`` writes it)."""
    text = nbformat.writes(notebook)
    write_atomically(path, text if text.endswith("\n") else text + "\n", durable=False)


def _number(value: float) -> str:
    """2.0 -> '2', 1.5 -> '1.5'."""
    return f"{float(value):g}"
