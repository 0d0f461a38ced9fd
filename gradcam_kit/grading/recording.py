"""The parts of recording one student: what a step is, what it works on, and how it fails.

Recording a student is a list of steps (:data:`gradcam_kit.grading.recording_steps.STEPS`), as
nbgrader's ``autograde`` is a list of preprocessors. Each :class:`RecordingStep` reads or adds to
one :class:`StudentRecord` and is contained: whatever it meets, it either does its part or the
student is not graded (:class:`NotGraded`, or :class:`GraderError` when the grader is at fault),
and the rest of the class is not affected.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable

from nbformat import NotebookNode

from gradcam_kit.grading.exploration import ExplorationReport
from gradcam_kit.grading.judge_launch import JudgedSubmission
from gradcam_kit.grading.reports import HeatmapCase
from gradcam_kit.safe_text import shown_line

if TYPE_CHECKING:
    from gradcam_kit.grading.recorder import StudentRecorder

__all__ = ["GraderError", "NotGraded", "RecordingStep", "StudentRecord"]


class NotGraded(Exception):
    """This student could not be graded; the message says why. Nothing of it reaches the gradebook,
    and a rerun tries again."""

    cause = "submission"
    """Whose fault it is: ``submission`` (the notebook cannot be prepared for grading)."""

    def __init__(self, message: str) -> None:
        super().__init__(shown_line(message, 600))

    @property
    def status(self) -> str:
        """The student's line in the summary."""
        return f"FAILED (submission: {self})"


class GraderError(NotGraded):
    """The grader itself failed on this student (a judge that crashed or ran out of time, a worker
    that could not start, the kit's own files refused, results that cannot be read, a gradebook or
    a file that cannot be written): never a student's failure, never a score."""

    cause = "grader"

    @property
    def status(self) -> str:
        return f"FAILED (grader error: {self})"


@dataclass
class StudentRecord:
    """What the recording steps of one student build, in the order they run.

    Attributes
    ----------
    run : JudgedSubmission
        The judge's run on the submission.
    graded_at : datetime
        When the student is recorded (local time, with its offset).
    results : dict
        The judge's results, checked, with what the grader adds (isolation).
    notebook : NotebookNode, optional
        The submission as nbgrader prepares it (locked cells restored), then annotated: what
        formgrader shows.
    notes : list of str
        Remarks for the feedback page and the kept results.
    timestamp : datetime, optional
        The submission's ``timestamp.txt``, when it holds one.
    heatmap : bytes, optional
        The PNG of the student's heatmap beside the reference one.
    heatmap_case : HeatmapCase, optional
        What the heatmap is of, for its caption.
    exploration : ExplorationReport, optional
        What the exploration cells showed, when the judge ran them.
    kept : dict, optional
        The kept results (``grades/<student>.json``), once written.
    """

    run: JudgedSubmission
    graded_at: datetime
    results: dict[str, Any] = field(default_factory=dict)
    notebook: NotebookNode | None = None
    notes: list[str] = field(default_factory=list)
    timestamp: datetime | None = None
    heatmap: bytes | None = None
    heatmap_case: HeatmapCase | None = None
    exploration: ExplorationReport | None = None
    kept: dict[str, Any] | None = None

    @property
    def student(self) -> str:
        return self.run.submission.student


StepAction = Callable[["StudentRecorder", StudentRecord], None]


@dataclass(frozen=True)
class RecordingStep:
    """One step of recording a student.

    Attributes
    ----------
    what : str
        What the step reads or writes, as its errors name it ("the feedback page").
    action : callable
        ``action(recorder, record)``: does the step, adding to ``record``.
    contained : bool
        Any error of the step (but :class:`NotGraded`) fails the student as a :class:`GraderError`
        saying that ``what`` could not be written. When ``False``, the step raises its own
        :class:`NotGraded`; anything else it raises is a bug of the grader, which the batch
        reports for this student alone.
    required : bool
        When ``False``, a failure of the step is reported on standard error and the student stays
        recorded (the CSV, rewritten at the end of the run anyway).
    """

    what: str
    action: StepAction
    contained: bool = True
    required: bool = True

    def apply(self, recorder: "StudentRecorder", record: StudentRecord) -> None:
        """Run the step on ``record``, contained as its attributes say."""
        try:
            self.action(recorder, record)
        except Exception as error:
            if not self.required:
                print(f"gradcam-kit grade: {self.what} could not be updated ({type(error).__name__}: {error})",
                      file=sys.stderr)
                return
            if isinstance(error, NotGraded) or not self.contained:
                raise
            raise GraderError(f"{self.what} could not be written ({type(error).__name__}: {error})") from error
