"""Who ``gradcam-kit grade`` grades in this run, and why.

The plan is made of three steps:

1. :func:`find_submissions`: the students to consider, from ``submitted/`` or ``--student``;
2. :func:`inspect_submission`: read each notebook once (a missing or unreadable one is reported,
   naming the file, and left out);
3. :func:`why_grade`: skip a student whose kept grade still holds (unless ``--force``): results
   kept for this exact notebook, graded with the same inputs (points, setup and test cells, helper
   module, answer key, judge, weights policy: :mod:`gradcam_kit.grading.fingerprint`), in the
   gradebook, with the autograded copy in place; otherwise say why the student is (re)graded.

:func:`plan` runs them and returns a :class:`Plan`. Nothing here writes a file.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import nbformat

from gradcam_kit.course import ASSIGNMENT, Course, GradesFolder
from gradcam_kit.grading.fingerprint import GradingInputs
from gradcam_kit.grading.gradebook import GradebookWriter
from gradcam_kit.safe_text import shown_line

__all__ = [
    "Plan",
    "Problem",
    "StudentOutcome",
    "Submission",
    "find_submissions",
    "inspect_submission",
    "plan",
    "stale_others",
    "valid_student_id",
    "why_grade",
]


@dataclass(frozen=True)
class Submission:
    """A submitted notebook, read once: the judge and the sanitize step get these exact bytes.

    Attributes
    ----------
    student : str
        The student's id (the folder name under ``submitted/``).
    path : Path
        The notebook in ``submitted/`` (never modified).
    content : bytes
        Its bytes, as read.
    """

    student: str
    path: Path
    content: bytes = field(repr=False)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


@dataclass(frozen=True)
class Problem:
    """A student that could not be graded, and why (in words that name the file)."""

    student: str
    message: str


@dataclass
class StudentOutcome:
    """How one student fared in this run: a line of the summary table.

    Attributes
    ----------
    student : str
    status : str
        ``graded``, ``already graded (...)``, ``not graded: ...`` or ``FAILED (...)``.
    results : Mapping, optional
        The kept results (``grades/<student>.json``) when there are some.
    reason : str
        Why the student was graded in this run (:func:`why_grade`, or ``--force``).
    """

    student: str
    status: str
    results: Mapping[str, Any] | None = None
    reason: str = ""


@dataclass
class Plan:
    """What this run does: the submissions to judge, and the students already settled.

    Attributes
    ----------
    todo : list of Submission
        The submissions to judge, in student order.
    outcomes : list of StudentOutcome
        The students settled without judging (already graded, or not gradable).
    problems : list of Problem
        The students that could not be graded, and why.
    found_any : bool
        Whether there was anything to consider at all.
    reasons : dict
        For each student to judge, why (:func:`why_grade`, or ``--force``).
    stale : dict
        The students left out by ``--student`` whose kept grade is stale, and why.
    """

    todo: list[Submission]
    outcomes: list[StudentOutcome]
    problems: list[Problem]
    found_any: bool
    reasons: dict[str, str] = field(default_factory=dict)
    stale: dict[str, str] = field(default_factory=dict)


def valid_student_id(student: str) -> bool:
    """A plain folder name: not empty, no path separator, not hidden."""
    return bool(student) and "/" not in student and "\\" not in student and "\0" not in student \
        and not student.startswith(".")


def find_submissions(course: Course, students: Sequence[str] | None) -> tuple[list[str], list[Problem]]:
    """The students to consider, and the ones asked for that have no submission folder.

    Without ``students``, every folder of ``submitted/`` that holds the assignment's folder (hidden
    folders are ignored). With ``students``, exactly those.
    """
    problems: list[Problem] = []
    if students:
        chosen: list[str] = []
        for student in dict.fromkeys(students):
            if not valid_student_id(student):
                problems.append(Problem(student, f"{student!r} is not a valid student id"))
            elif not course.submission(student).parent.is_dir():
                problems.append(Problem(student, f"no submission: {course.submission(student)} does not exist"))
            else:
                chosen.append(student)
        return chosen, problems
    if not course.submitted_dir.is_dir():
        return [], []
    found = sorted(p.name for p in course.submitted_dir.iterdir()
                   if p.is_dir() and valid_student_id(p.name) and (p / ASSIGNMENT).is_dir())
    return found, problems


def inspect_submission(course: Course, student: str) -> Submission | Problem:
    """Read the student's notebook and check that it is one."""
    path = course.submission(student)
    if not path.is_file():
        others = sorted(p.name for p in path.parent.glob("*.ipynb")) if path.parent.is_dir() else []
        hint = f" (the folder holds: {', '.join(others)})" if others else ""
        return Problem(student, f"{path}: no such notebook{hint}")
    try:
        content = path.read_bytes()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            notebook = nbformat.reads(content.decode("utf-8"), as_version=4)
        if not isinstance(notebook.get("cells"), list):
            raise ValueError("it has no list of cells")
    except (OSError, UnicodeDecodeError) as error:
        return Problem(student, f"{path}: cannot be read ({error})")
    except Exception as error:  # nbformat raises many kinds of errors on malformed JSON
        return Problem(student, f"{path}: not a readable notebook ({type(error).__name__}: {error})")
    return Submission(student, path, content)


def why_grade(course: Course, folder: GradesFolder, writer: GradebookWriter, submission: Submission,
              inputs: GradingInputs) -> str | None:
    """Why ``submission`` must be graded now, in words; ``None`` when its kept grade still holds.

    A kept grade holds when the results in ``grades/<student>.json`` are for this exact notebook
    (same sha256), were graded with the same :class:`GradingInputs` (points, setup and test cells,
    helper module, answer key, judge, weights policy), are in the gradebook, and the autograded
    copy that formgrader reads is in place.
    """
    student = submission.student
    kept = folder.load_marker(student)
    if kept is None:
        return "not graded yet"
    if kept["grading"].get("sha256") != submission.sha256:
        return "the notebook changed since it was graded"
    changes = inputs.changes(GradingInputs.from_plain(kept["grading"].get("inputs")))
    if changes:
        return "; ".join(changes)
    if not writer.has_autograded(student):
        return "its grades are missing from the gradebook"
    if not course.autograded_notebook(student).is_file():
        return "its autograded copy (what formgrader shows) is missing"
    return None


def stale_others(folder: GradesFolder, inputs: GradingInputs, students: Sequence[str]) -> dict[str, str]:
    """Students graded before, not among ``students``, whose kept grade came from other inputs."""
    stale = {}
    for student, kept in folder.all_results().items():
        if student not in students:
            changes = inputs.changes(GradingInputs.from_plain(kept["grading"].get("inputs")))
            if changes:
                stale[student] = "; ".join(changes)
    return stale


def plan(course: Course, folder: GradesFolder, writer: GradebookWriter, students: Sequence[str] | None,
         force: bool, inputs: GradingInputs | None = None) -> Plan:
    """Find, read and sort out the submissions.

    Parameters
    ----------
    course, folder, writer
        The course, its ``grades/`` folder and its gradebook.
    students : Sequence[str], optional
        ``--student``: only these (default: every folder of ``submitted/``).
    force : bool
        ``--force``: judge again the students whose kept grade holds.
    inputs : GradingInputs, optional
        What decides a grade now (default: computed from the course).
    """
    inputs = inputs or GradingInputs.of(course)
    names, problems = find_submissions(course, students)
    outcomes = [StudentOutcome(p.student, f"not graded: {p.message}") for p in problems]
    todo: list[Submission] = []
    reasons: dict[str, str] = {}
    for student in names:
        found: Submission | Problem
        try:
            found = inspect_submission(course, student)
            reason = None if isinstance(found, Problem) else why_grade(course, folder, writer, found, inputs)
        except Exception as error:  # one student's files must not stop the planning
            found, reason = Problem(student, f"{course.submission(student)}: cannot be read ({error})"), None
        if isinstance(found, Problem):
            found = Problem(student, shown_line(found.message, 600))
            problems.append(found)
            outcomes.append(StudentOutcome(student, f"not graded: {found.message}"))
        elif reason is None and not force:
            outcomes.append(StudentOutcome(student, "already graded (--force to regrade)",
                                           folder.load_marker(student)))
        else:
            todo.append(found)
            reasons[student] = reason or "--force"
    stale = stale_others(folder, inputs, names) if students else {}
    return Plan(todo, outcomes, problems, bool(names or problems), reasons, stale)
