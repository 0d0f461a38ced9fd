"""nbgrader's gradebook of the course (``gradebook.db``), written by ``gradcam-kit grade``.

nbgrader's own tools (formgrader, ``nbgrader export``, ``nbgrader generate_feedback``, the manual
grading of the written answers) read, after ``nbgrader autograde``, the autograded copy of each
submission (:mod:`gradcam_kit.grading.autograded_copy`) and ``gradebook.db``: one submission per
student, one ``Grade`` per graded cell (``auto_score``, ``needs_manual_grade``) and one ``Comment``
per answer cell.

The scores of the test cells come from the judge (``autograder_tests``), which ran the student
code in its sandboxed worker; the written answers get what nbgrader's ``SaveAutoGrades`` would give
them (zero when left untouched, else "needs manual grading"). Each student's writes form one
database transaction. Also here: the submission time (:func:`read_timestamp`). Where the gradebook
is, and the course's nbgrader configuration: :mod:`gradcam_kit.grading.nbgrader_settings`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Iterator, Mapping

from nbformat import NotebookNode

from gradcam_kit.contract import TEST_PREFIX
from gradcam_kit.course import ASSIGNMENT
from gradcam_kit.errors import KitError
from gradcam_kit.grading.nbgrader_settings import NOTEBOOK_ID, NbgraderSettings, grade_id, sqlite_path
from gradcam_kit.safe_text import shown_line

NO_RESPONSE = "No response."


class GradebookError(Exception):
    """Writing one student's grades failed; nothing of it was kept."""


# ---------------------------------------------------------------------------------------------
# gradebook.db
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StudentGrades:
    """What to record for one student.

    Attributes
    ----------
    student : str
        The student id.
    tests : Mapping[str, float]
        Points earned in each autograded test cell, by ``grade_id`` (``test_*``).
    notebook : NotebookNode
        The sanitized submission: the written answers are scored from it as nbgrader would.
    timestamp : datetime, optional
        The submission time (from ``timestamp.txt``), when known.
    """

    student: str
    tests: Mapping[str, float]
    notebook: NotebookNode
    timestamp: datetime | None = None


class GradebookWriter:
    """nbgrader's gradebook of one course, opened for writing grades of the assignment.

    Use it as a context manager. :meth:`record` writes one student in one transaction.
    """

    def __init__(self, settings: NbgraderSettings) -> None:
        from nbgrader.api import Gradebook

        self.settings = settings
        database = sqlite_path(settings.db_url)
        if database is not None and not database.is_file():
            # opening it would create an empty gradebook, which `nbgrader` then takes for a course
            raise KitError(f"there is no gradebook at {database} yet: run `gradcam-kit release` first "
                           "(it records the assignment, its cells and their points in the gradebook)")
        try:
            self.gradebook = Gradebook(settings.db_url, settings.course_id)
        except Exception as error:
            raise KitError(f"cannot open the gradebook {settings.db_url} ({error})") from error

    def __enter__(self) -> "GradebookWriter":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.gradebook.close()

    # -----------------------------------------------------------------------------------------
    def check_assignment(self) -> dict[str, float]:
        """The autograded test cells of the released notebook and their points.

        Raises
        ------
        KitError
            When the assignment or its notebook is not in the gradebook (release not run).
        """
        from nbgrader.api import MissingEntry

        try:
            notebook = self.gradebook.find_notebook(NOTEBOOK_ID, ASSIGNMENT)
        except MissingEntry as error:
            raise KitError(
                f"the gradebook {self.settings.db_url} has no notebook {NOTEBOOK_ID} in assignment "
                f"{ASSIGNMENT}: run `gradcam-kit release` first"
            ) from error
        return {cell.name: float(cell.max_score) for cell in notebook.grade_cells
                if cell.name.startswith(TEST_PREFIX)}

    def record(self, grades: StudentGrades) -> None:
        """Write one student's grades, all or nothing.

        Adds the student and the submission when missing, sets ``auto_score`` and
        ``needs_manual_grade`` of every graded cell and the automatic comments, then commits once.
        Manual scores already given by a grader are kept (their cells are flagged for review,
        as nbgrader does).

        Raises
        ------
        GradebookError
            After rolling the transaction back, whatever went wrong.
        """
        session = self.gradebook.db
        try:
            self._write(grades)
            session.commit()
        except BaseException as error:
            session.rollback()
            if isinstance(error, (KeyboardInterrupt, SystemExit)):
                raise
            raise GradebookError(f"{type(error).__name__}: {error}") from error

    # The writes below never commit: record() commits them together.
    def _write(self, grades: StudentGrades) -> None:
        from nbgrader import utils
        from nbgrader.api import Student

        session = self.gradebook.db
        student = session.get(Student, grades.student)
        if student is None:
            student = Student(id=grades.student)
            session.add(student)
        submitted = self._submitted_notebook(student, grades.timestamp)

        cells = {grade_id(cell): cell for cell in grades.notebook.cells if grade_id(cell)}
        for grade in submitted.grades:
            name = grade.cell.name
            cell = cells.get(name)
            if name in grades.tests:
                grade.auto_score = float(grades.tests[name])
            elif cell is not None and utils.is_grade(cell) and utils.is_solution(cell):
                # a written answer: zero when left as released, else for the grader
                grade.auto_score, _ = utils.determine_grade(cell)
            elif name.startswith(TEST_PREFIX) or getattr(grade.cell, "cell_type", None) == "code":
                raise GradebookError(f"the judge gave no result for the autograded cell {name}")
            else:
                continue  # a task or a deleted answer cell: nbgrader leaves it to the grader
            grade.needs_manual_grade = grade.manual_score is not None or grade.auto_score is None

        for comment in submitted.comments:
            cell = cells.get(comment.cell.name)
            if cell is None:
                continue
            unchanged = cell.metadata.nbgrader.get("checksum") == utils.compute_checksum(cell)
            comment.auto_comment = NO_RESPONSE if unchanged and not utils.is_task(cell) else None
        session.flush()

    def _submitted_notebook(self, student, timestamp: datetime | None):
        """The student's ``SubmittedNotebook``, created with its grades and comments if missing."""
        from nbgrader.api import Comment, Grade, MissingEntry, SubmittedAssignment, SubmittedNotebook

        gradebook = self.gradebook
        student_id = student.id
        try:
            submission = gradebook.find_submission(ASSIGNMENT, student_id)
        except MissingEntry:
            # nbgrader's add_submission, without its commit: the whole structure of the assignment
            with gradebook.db.no_autoflush:
                submission = SubmittedAssignment(assignment=gradebook.find_assignment(ASSIGNMENT),
                                                 student=student)
                for notebook in submission.assignment.notebooks:
                    submitted = SubmittedNotebook(notebook=notebook, assignment=submission)
                    for cell in notebook.grade_cells:
                        Grade(cell_id=cell.id, notebook=submitted)
                    for cell in notebook.solution_cells:
                        Comment(cell_id=cell.id, notebook=submitted)
                    for cell in notebook.task_cells:
                        Comment(cell_id=cell.id, notebook=submitted)
                        Grade(cell_id=cell.id, notebook=submitted)
                gradebook.db.add(submission)
            gradebook.db.flush()
        if timestamp is not None:
            submission.timestamp = timestamp
        for submitted in submission.notebooks:
            if submitted.notebook.name == NOTEBOOK_ID:
                return submitted
        raise GradebookError(f"the submission of {student_id} has no notebook {NOTEBOOK_ID}")

    # -----------------------------------------------------------------------------------------
    def has_autograded(self, student: str) -> bool:
        """Whether every autograded test cell of ``student`` has an ``auto_score``."""
        from nbgrader.api import MissingEntry

        try:
            submitted = self.gradebook.find_submission_notebook(NOTEBOOK_ID, ASSIGNMENT, student)
        except MissingEntry:
            return False
        tests = [g for g in submitted.grades if g.cell.name.startswith(TEST_PREFIX)]
        return bool(tests) and all(g.auto_score is not None for g in tests)

    def scores(self, student: str) -> dict[str, float | None]:
        """The ``auto_score`` of each graded cell of ``student`` (for checks and tests)."""
        submitted = self.gradebook.find_submission_notebook(NOTEBOOK_ID, ASSIGNMENT, student)
        return {grade.cell.name: grade.auto_score for grade in submitted.grades}


MAX_TIMESTAMP_BYTES = 100
"""A ``timestamp.txt`` longer than this is not a timestamp (nbgrader writes about 30 bytes)."""


def read_timestamp(folder: Path) -> tuple[datetime | None, str | None]:
    """The submission time in ``folder/timestamp.txt`` (nbgrader's convention), and a problem if any.

    Never raises: a file that cannot be read, is too long or does not parse is a problem (the
    timestamp is then ignored), whose text quotes none of the file's content.
    """
    from nbgrader.utils import parse_utc

    path = folder / "timestamp.txt"
    where = shown_line(path, 300)
    try:
        if not path.is_file():
            return None, None
        with open(path, "rb") as stream:
            raw = stream.read(MAX_TIMESTAMP_BYTES + 1)
    except OSError as error:
        return None, f"{where}: cannot be read ({error.strerror or type(error).__name__}; ignored)"
    if len(raw) > MAX_TIMESTAMP_BYTES:
        return None, f"{where}: longer than {MAX_TIMESTAMP_BYTES} bytes, not a timestamp (ignored)"
    text = raw.decode("utf-8", "replace").strip()
    if not text:
        return None, f"{where}: empty timestamp file (ignored)"
    try:
        return parse_utc(text), None
    except Exception as error:  # dateutil raises ValueError, OverflowError, OSError...
        return None, f"{where}: not a timestamp ({type(error).__name__}; ignored)"


# ---------------------------------------------------------------------------------------------
def test_cells(notebook: NotebookNode) -> Iterator[str]:
    """The ``grade_id`` of the autograded test cells, in notebook order."""
    for cell in notebook.cells:
        name = grade_id(cell)
        if cell.cell_type == "code" and name and name.startswith(TEST_PREFIX):
            yield name


test_cells.__test__ = False  # type: ignore[attr-defined]  # a helper, not a pytest test
