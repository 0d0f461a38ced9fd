"""What plain ``nbgrader autograde`` (and formgrader's "Autograde" button) needs from the kit.

``nbgrader_config.py`` plugs these into nbgrader's own ``Autograde`` converter:

* :class:`OverwriteLockedCells` replaces nbgrader's ``OverwriteCells`` in its sanitize step. nbgrader
  records the checksum of each locked cell *with* its hidden tests, but students receive the cell
  *without* them, so stock nbgrader reports every test cell of every honest submission as changed
  ("Attribute 'checksum' for cell test_… has changed!"). This one first recognises a cell that is
  exactly as released and restores its hidden tests silently; a cell the student really edited is
  still reported and restored, as before.
* :class:`KitGradesGuard` is the converter's exporter (``Autograde.exporter_class``). Before nbgrader
  touches anything, it refuses to autograde a student that ``gradcam-kit grade`` has graded: plain
  nbgrader would run the submission outside the sandbox, delete the kit's autograded copy and
  replace its grades. The refusal names the students and the two ways on (``gradcam-kit grade
  --student ID --force``, or :data:`ALLOW_PLAIN_AUTOGRADE_ENV` ``=1`` to let nbgrader replace the kit's grades).
  formgrader shows the message in its error dialog; the command line prints it and exits with 1.

And to ``nbgrader generate_feedback``: :class:`ClearHiddenTestsFromFeedback` keeps the hidden tests
(restored in the autograded notebook) out of the students' feedback pages.
"""

from __future__ import annotations

import glob
import os
import re
import shlex
from pathlib import Path
from typing import Any

from nbconvert.exporters import NotebookExporter
from nbgrader.api import MissingEntry
from nbgrader.preprocessors import ClearHiddenTests, OverwriteCells
from traitlets import List

from gradcam_kit.contract import ALLOW_PLAIN_AUTOGRADE_ENV
from gradcam_kit.course import Course, GradesFolder
from gradcam_kit.hidden_regions import remove_hidden_regions

__all__ = ["ClearHiddenTestsFromFeedback", "KitGradesGuard", "OverwriteLockedCells", "kit_graded_students"]

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
MAX_NAMES = 10


# ---------------------------------------------------------------------------------------------
# the checksum of locked cells with hidden tests
# ---------------------------------------------------------------------------------------------
class OverwriteLockedCells(OverwriteCells):
    """nbgrader's ``OverwriteCells``, which knows that a released test cell lacks its hidden tests."""

    def preprocess_cell(self, cell: Any, resources: Any, cell_index: int) -> tuple[Any, Any]:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id is not None and cell.cell_type == "code":
            try:
                source_cell = self.gradebook.find_source_cell(grade_id, self.notebook_id, self.assignment_id)
            except MissingEntry:
                source_cell = None  # nbgrader's own step says so
            if source_cell is not None and source_cell.locked and source_cell.source != cell.source \
                    and cell.source == remove_hidden_regions(source_cell.source):
                cell.source = source_cell.source  # as released: nothing to report
        return super().preprocess_cell(cell, resources, cell_index)


# ---------------------------------------------------------------------------------------------
# formgrader's Autograde button, and plain `nbgrader autograde`, after `gradcam-kit grade`
# ---------------------------------------------------------------------------------------------
def kit_graded_students(course_root: Path, students: list[str]) -> list[str]:
    """Those of ``students`` whose grades ``gradcam-kit grade`` recorded (``grades/<student>.json``)."""
    folder = GradesFolder(Course(course_root).grades_dir)
    return [student for student in students if folder.marker(student).is_file()]


class KitGradesGuard(NotebookExporter):
    """The Autograde converter's exporter: refuses to replace what ``gradcam-kit grade`` recorded.

    nbgrader builds its exporter before it removes or writes anything for any student, with the
    converter as ``parent``: the students it is about to grade are known then.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        converter = kwargs.get("parent")
        coursedir = getattr(converter, "coursedir", None)
        if coursedir is None or os.environ.get(ALLOW_PLAIN_AUTOGRADE_ENV, "").strip() == "1":
            return
        pattern = coursedir.format_path(coursedir.submitted_directory, coursedir.student_id,
                                        coursedir.assignment_id)
        students = sorted({Path(path).parent.name for path in glob.glob(pattern)})
        graded = kit_graded_students(Path(coursedir.root), students)
        if graded:
            self._refuse(converter, graded)

    @staticmethod
    def _refuse(converter: Any, graded: list[str]) -> None:
        from nbgrader.converters.base import NbGraderException

        more = len(graded) - MAX_NAMES
        names = ", ".join(graded[:MAX_NAMES]) + (f" and {more} more" if more > 0 else "")
        students = " ".join(f"--student {shlex.quote(student)}" for student in graded[:MAX_NAMES])
        message = (
            f"Not autograded: {names} {'was' if len(graded) == 1 else 'were'} graded by gradcam-kit grade, "
            f"with the student code in its sandbox; plain nbgrader autograde (which formgrader's Autograde "
            f"button runs) would run that code outside it and replace those grades and the autograded "
            f"notebooks. Nothing was changed. To grade {'it' if len(graded) == 1 else 'them'} "
            f"again, run in the course folder: gradcam-kit grade {students} --force. To let plain nbgrader "
            f"replace the kit's grades anyway, set {ALLOW_PLAIN_AUTOGRADE_ENV}=1 in the environment of this command "
            f"(or of the Jupyter server that runs formgrader)."
        )
        log = getattr(converter, "log", None)
        if log is not None:
            log.error(message)
        raise NbGraderException(message)


# ---------------------------------------------------------------------------------------------
# `nbgrader generate_feedback`: the students' copy shows no hidden test
# ---------------------------------------------------------------------------------------------
class ClearHiddenTestsFromFeedback(ClearHiddenTests):
    """nbgrader's ``ClearHiddenTests`` for the feedback pages (``GenerateFeedback.preprocessors``).

    The autograded notebook that feedback is made from holds the test cells with their hidden
    regions restored. This removes those regions, as the release did, and the traceback frames of
    an error output that show hidden-test code (the failing hidden call and its context); the
    error's last line, the judge's message for the student, stays.
    """

    # nbgrader's base class declares it without `config=True`, so the HTML exporter's setting of it
    # draws a warning for every feedback page; the same default, configurable
    display_data_priority = List(["text/html", "application/pdf", "text/latex", "image/svg+xml", "image/png",
                                  "image/jpeg", "text/plain"]).tag(config=True)

    def preprocess_cell(self, cell: Any, resources: Any, cell_index: int) -> tuple[Any, Any]:
        hidden = set()
        if cell.cell_type == "code":
            source = cell.source.split("\n")
            hidden = {line.strip() for line in source if line.strip()} - \
                {line.strip() for line in remove_hidden_regions(cell.source, self.begin_test_delimeter,
                                                                self.end_test_delimeter).split("\n")}
        cell, resources = super().preprocess_cell(cell, resources, cell_index)
        if hidden:
            for output in cell.get("outputs", []):
                if output.get("output_type") == "error":
                    output["traceback"] = _without_hidden_frames(list(output.get("traceback", [])), hidden,
                                                                 f"{output.get('ename', 'Error')}: "
                                                                 f"{output.get('evalue', '')}")
        return cell, resources


def _without_hidden_frames(traceback: list[str], hidden: set[str], summary: str) -> list[str]:
    """The traceback up to the first frame that shows a hidden line, then only its last line (the
    exception and its message): what the hidden code called is not shown either."""
    for index, frame in enumerate(traceback):
        if any(line in _ANSI.sub("", frame) for line in hidden):
            return traceback[:index] + (traceback[-1:] if index < len(traceback) - 1 else [summary])
    return traceback
