"""nbgrader's view of the course: its configuration, where its gradebook is, and the ids of cells.

Read from the course's ``nbgrader_config.py`` as nbgrader itself reads it, for the grader's steps
that hand results to nbgrader (:mod:`gradcam_kit.grading.gradebook`,
:mod:`gradcam_kit.grading.autograded_copy`) and for ``gradcam-kit release``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nbformat import NotebookNode
from traitlets.config import Config
from traitlets.config.loader import PyFileConfigLoader

from gradcam_kit.course import CONFIG_FILE, NOTEBOOK, Course
from gradcam_kit.errors import KitError

__all__ = ["NOTEBOOK_ID", "NbgraderSettings", "grade_id", "load_nbgrader_config", "sqlite_path"]

NOTEBOOK_ID = Path(NOTEBOOK).stem
"""The notebook's name in the gradebook."""


def sqlite_path(db_url: str) -> Path | None:
    """The file of an SQLite database URL (``sqlite:///path``), or ``None`` for another database."""
    prefix = "sqlite:///"
    if not db_url.startswith(prefix) or db_url[len(prefix):] in ("", ":memory:"):
        return None
    return Path(db_url[len(prefix):])


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


def grade_id(cell: NotebookNode) -> str:
    """The cell's ``grade_id``; ``""`` when it has none."""
    grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
    return grade_id if isinstance(grade_id, str) else ""
