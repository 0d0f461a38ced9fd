"""Everything ``gradcam-kit grade`` hands to nbgrader: the autograded copy and ``gradebook.db``.

nbgrader's own tools (formgrader, ``nbgrader export``, ``nbgrader generate_feedback``, the manual
grading of the written answers) read two things after ``nbgrader autograde``:

* ``autograded/<student>/<assignment>/<notebook>.ipynb``: the submission with its locked cells
  restored from the source version (nbgrader's *sanitize* step), then executed;
* ``gradebook.db``: one submission per student, one ``Grade`` per graded cell (``auto_score``,
  ``needs_manual_grade``) and one ``Comment`` per answer cell.

This module produces both without executing any student code in the grader's process: the
sanitize step is nbgrader's own preprocessors, run here; the scores of the test cells come from
the judge (``autograder_tests``), which ran the student code in its sandboxed worker; the written
answers get what nbgrader's ``SaveAutoGrades`` would give them (zero when left untouched, else
"needs manual grading"). Each student's writes form one database transaction.
"""

from __future__ import annotations

import base64
import logging
import textwrap
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Iterator, Mapping

import nbformat
from nbformat import NotebookNode
from traitlets.config import Config
from traitlets.config.loader import PyFileConfigLoader

from gradcam_kit.contract import TEST_PREFIX
from gradcam_kit.course import ASSIGNMENT, CONFIG_FILE, NOTEBOOK, Course
from gradcam_kit.errors import KitError
from gradcam_kit.fsutil import write_atomically
from gradcam_kit.grading.safe_text import shown_line
from gradcam_kit.judge_results import JudgeResults

NOTEBOOK_ID = Path(NOTEBOOK).stem
NO_RESPONSE = "No response."


class GradebookError(Exception):
    """Writing one student's grades failed; nothing of it was kept."""


def sqlite_path(db_url: str) -> Path | None:
    """The file of an SQLite database URL (``sqlite:///path``), or ``None`` for another database."""
    prefix = "sqlite:///"
    if not db_url.startswith(prefix) or db_url[len(prefix):] in ("", ":memory:"):
        return None
    return Path(db_url[len(prefix):])


# ---------------------------------------------------------------------------------------------
# nbgrader's configuration of the course
# ---------------------------------------------------------------------------------------------
def load_nbgrader_config(course: Course) -> Config:
    """The traitlets configuration in the course's ``nbgrader_config.py``.

    Raises
    ------
    KitError
        When the file cannot be executed (its error is quoted).
    """
    loader = PyFileConfigLoader(CONFIG_FILE, path=str(course.root))
    try:
        config = loader.load_config()
    except Exception as error:  # a syntax error or any exception raised by the file
        raise KitError(f"{course.root / CONFIG_FILE}: cannot be read ({type(error).__name__}: {error})") from error
    if "root" not in config.CourseDirectory:
        config.CourseDirectory.root = str(course.root)
    return config


@dataclass(frozen=True)
class NbgraderSettings:
    """Where nbgrader keeps the gradebook of the course, and under which course id."""

    db_url: str
    course_id: str
    config: Config

    @classmethod
    def of(cls, course: Course) -> "NbgraderSettings":
        from nbgrader.coursedir import CourseDirectory

        config = load_nbgrader_config(course)
        coursedir = CourseDirectory(config=config)
        return cls(db_url=coursedir.db_url, course_id=coursedir.course_id, config=config)


# ---------------------------------------------------------------------------------------------
# The autograded copy (nbgrader's sanitize step, no execution)
# ---------------------------------------------------------------------------------------------
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
    released = {_grade_id(c): c.source for c in release.cells
                if _grade_id(c) and c.get("metadata", {}).get("nbgrader", {}).get("locked")}
    return [name for cell in notebook.cells if (name := _grade_id(cell)) in released
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
    test_cells = [cell for cell in notebook.cells if cell.cell_type == "code" and _grade_id(cell) in tests]
    for cell in test_cells:
        verdict = tests[_grade_id(cell)]
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
        target = next((c for c in test_cells if _grade_id(c) == "test_grad_cam"), test_cells[-1])
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

        cells = {_grade_id(cell): cell for cell in grades.notebook.cells if _grade_id(cell)}
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
def _grade_id(cell: NotebookNode) -> str:
    """The cell's ``grade_id``; ``""`` when it has none."""
    grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
    return grade_id if isinstance(grade_id, str) else ""


def _number(value: float) -> str:
    """2.0 -> '2', 1.5 -> '1.5'."""
    return f"{float(value):g}"


def test_cells(notebook: NotebookNode) -> Iterator[str]:
    """The ``grade_id`` of the autograded test cells, in notebook order."""
    for cell in notebook.cells:
        name = _grade_id(cell)
        if cell.cell_type == "code" and name and name.startswith(TEST_PREFIX):
            yield name


test_cells.__test__ = False  # type: ignore[attr-defined]  # a helper, not a pytest test
