"""Record each student as its judge finishes: the recording steps, run in the grader's process.

:class:`StudentRecorder` holds what a whole run shares (the course, its ``grades/`` folder, the
gradebook, the test cells and their points, the isolation level, the CSV) and runs the steps of
:data:`~gradcam_kit.grading.recording_steps.STEPS` on each finished
:class:`~gradcam_kit.grading.judge_launch.JudgedSubmission`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping, Sequence

import nbformat

from gradcam_kit.course import Course, GradesFolder
from gradcam_kit.grading.fingerprint import GradingInputs
from gradcam_kit.grading.gradebook import GradebookWriter, test_cells
from gradcam_kit.grading.grades_csv import GradesCsv
from gradcam_kit.grading.judge_launch import JudgedSubmission
from gradcam_kit.grading.nbgrader_settings import NbgraderSettings
from gradcam_kit.grading.recording import RecordingStep, StudentRecord
from gradcam_kit.grading.recording_steps import STEPS
from gradcam_kit.host.isolation import IsolationChoice

__all__ = ["StudentRecorder", "column_order", "read_notebook"]


@dataclass
class StudentRecorder:
    """Everything the grader's process needs to record students as their judges finish.

    Attributes
    ----------
    course : Course
    folder : GradesFolder
        The course's ``grades/``.
    settings : NbgraderSettings
    writer : GradebookWriter
        The open gradebook.
    expected : Mapping[str, float]
        The autograded test cells of the released notebook, and their points.
    columns : Sequence[str]
        The test columns of the CSV (:func:`column_order`).
    csv_path : Path
        Where the CSV goes.
    release : NotebookNode, optional
        The released notebook (to tell which locked cells a student edited).
    isolation : IsolationChoice, optional
        The isolation level this run grades at, and why (``None``: not decided by this grader).
    inputs : GradingInputs, optional
        What decides the grades of this run, kept with each student's results (default: computed
        from the course at the first student).
    steps : Sequence[RecordingStep]
        The recording steps, in order (:data:`~gradcam_kit.grading.recording_steps.STEPS`).
    """

    course: Course
    folder: GradesFolder
    settings: NbgraderSettings
    writer: GradebookWriter
    expected: Mapping[str, float]
    columns: Sequence[str]
    csv_path: Path
    release: nbformat.NotebookNode | None = None
    isolation: IsolationChoice | None = None
    inputs: GradingInputs | None = None
    steps: Sequence[RecordingStep] = STEPS
    csv: GradesCsv = field(init=False)

    def __post_init__(self) -> None:
        self.csv = GradesCsv(self.csv_path, self.columns, self.folder.all_results)

    def record(self, run: JudgedSubmission) -> dict[str, Any]:
        """Record one finished run; returns the kept results.

        Every step is contained: whatever the submission holds (lone surrogates, odd metadata, an
        overlong ``timestamp.txt``) and whatever fails on the way, this student is recorded or gets
        a :class:`~gradcam_kit.grading.recording.NotGraded`, and the rest of the class is not affected.

        Raises
        ------
        NotGraded
            When this student cannot be graded (nothing of it is written to the gradebook): a
            :class:`~gradcam_kit.grading.recording.GraderError` when the grader is at fault.
        """
        record = StudentRecord(run, graded_at=datetime.now().astimezone())
        for step in self.steps:
            step.apply(self, record)
        assert record.kept is not None, "the recording steps wrote no results file"
        return record.kept

    def grading_inputs(self) -> GradingInputs:
        """What decides the grades of this run (computed once)."""
        if self.inputs is None:
            self.inputs = GradingInputs.of(self.course)
        return self.inputs


def read_notebook(path: Path) -> nbformat.NotebookNode | None:
    """The notebook at ``path``, or ``None`` if it cannot be read."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return nbformat.read(str(path), as_version=4)
    except Exception:
        return None


def column_order(course: Course, expected: Mapping[str, float]) -> list[str]:
    """The test columns of the CSV: the source notebook's test cells in notebook order."""
    notebook = read_notebook(course.source_notebook)
    order = [name for name in test_cells(notebook) if name in expected] if notebook is not None else []
    return order + sorted(set(expected) - set(order))
