"""Where things live in an nbgrader course that holds the TP2 assignment.

A course is a folder with ``nbgrader_config.py`` at its root (nbgrader's convention). Every path
the kit uses is derived here, from that root, so that a copy of the course elsewhere works on its
own files and the kit never writes into its own install location.

:class:`Course` holds nbgrader's folders and the kit's own; :class:`GradesFolder` the layout of
``grades/``, where ``gradcam-kit grade`` keeps what it wrote::

    grades/TP2_GradCAM.csv              the autograded points (--csv overrides the path)
    grades/TP2_GradCAM_scores.png       the histogram of the scores
    grades/<student>.json               the judge's results for the student (the "done" marker)
    grades/feedback/<student>.html      the feedback page, with the two heatmaps
    grades/artifacts/<student>/         what the judge left (heatmap.npz, heatmap.png)
    grades/logs/<student>.log           the judge's output
    grades/.work/<pid>-<id>/            the judges' scratch folders (removed after use)
    grades/.reference-cache/            the judges' shared reference arrays (safe to delete)
"""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from types import ModuleType
from typing import Any

from gradcam_kit.safe_text import encodable

ASSIGNMENT = "TP2_GradCAM"
NOTEBOOK = f"{ASSIGNMENT}.ipynb"
HELPER_MODULE = "tp2_utils.py"
CONFIG_FILE = "nbgrader_config.py"


class CourseNotFound(FileNotFoundError):
    """No ``nbgrader_config.py`` in the given folder or above it."""


def find_course_root(start: str | Path | None = None) -> Path:
    """The first folder at or above ``start`` (default: the current one) holding ``nbgrader_config.py``."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / CONFIG_FILE).is_file():
            return folder
    raise CourseNotFound(
        f"No {CONFIG_FILE} in {here} or any folder above it: run inside the course or pass --course DIR."
    )


@dataclass(frozen=True)
class Course:
    """The paths of one course checkout."""

    root: Path

    @classmethod
    def locate(cls, course: str | Path | None = None) -> "Course":
        """The course at ``course`` if given (it must hold the config file), else the enclosing one."""
        if course is None:
            return cls(find_course_root())
        root = Path(course).resolve()
        if not (root / CONFIG_FILE).is_file():
            raise CourseNotFound(f"{root} is not a course folder: it has no {CONFIG_FILE}.")
        return cls(root)

    # nbgrader's folders --------------------------------------------------------------------
    @property
    def source_dir(self) -> Path:
        return self.root / "source" / ASSIGNMENT

    @property
    def source_notebook(self) -> Path:
        return self.source_dir / NOTEBOOK

    @property
    def helper_module(self) -> Path:
        return self.source_dir / HELPER_MODULE

    @property
    def release_dir(self) -> Path:
        return self.root / "release" / ASSIGNMENT

    @property
    def submitted_dir(self) -> Path:
        return self.root / "submitted"

    def submission(self, student: str) -> Path:
        return self.submitted_dir / student / ASSIGNMENT / NOTEBOOK

    @property
    def feedback_dir(self) -> Path:
        return self.root / "feedback"

    def autograded_dir(self, student: str) -> Path:
        """nbgrader's ``autograded/<student>/<assignment>/``: what formgrader shows."""
        return self.root / "autograded" / student / ASSIGNMENT

    def autograded_notebook(self, student: str) -> Path:
        return self.autograded_dir(student) / NOTEBOOK

    @property
    def gradebook(self) -> Path:
        return self.root / "gradebook.db"

    # the kit's own folders -----------------------------------------------------------------
    @property
    def images_dir(self) -> Path:
        return self.root / "TP2_images"

    @property
    def image_manifest(self) -> Path:
        return self.images_dir / "manifest.json"

    @property
    def solutions_dir(self) -> Path:
        return self.root / "solutions"

    @property
    def reference_module(self) -> Path:
        return self.solutions_dir / "gradcam_reference.py"

    @property
    def autograder_dir(self) -> Path:
        return self.root / "autograder_tests"

    @property
    def grades_dir(self) -> Path:
        """Where ``gradcam-kit grade`` keeps its per-student results, CSV and plot."""
        return self.root / "grades"

    # modules that live in the course, not in the kit ---------------------------------------
    @cached_property
    def tp2_utils(self) -> ModuleType:
        """The course's helper module (the single home of the weights policy and preprocessing)."""
        return load_module_from(self.helper_module, "tp2_utils")

    @cached_property
    def reference(self) -> ModuleType:
        """``solutions/gradcam_reference.py``."""
        return load_module_from(self.reference_module, "gradcam_reference")


@dataclass(frozen=True)
class GradesFolder:
    """The paths under ``grades/`` (see the module docstring), and the results kept there.

    Parameters
    ----------
    root : Path
        The folder (:attr:`Course.grades_dir`).
    """

    root: Path

    def marker(self, student: str) -> Path:
        """``<student>.json``: the student's kept results, written last (the "done" marker)."""
        return self.root / f"{student}.json"

    def feedback(self, student: str) -> Path:
        return self.root / "feedback" / f"{student}.html"

    def artifacts(self, student: str) -> Path:
        return self.root / "artifacts" / student

    def log(self, student: str) -> Path:
        return self.root / "logs" / f"{student}.log"

    @property
    def work(self) -> Path:
        """Scratch space of the judges (one folder per series of students, removed after use)."""
        return self.root / ".work"

    @property
    def reference_cache(self) -> Path:
        """The judges' shared cache of reference arrays (safe to delete)."""
        return self.root / ".reference-cache"

    @property
    def csv(self) -> Path:
        return self.root / f"{ASSIGNMENT}.csv"

    @property
    def histogram(self) -> Path:
        return self.root / f"{ASSIGNMENT}_scores.png"

    def load_marker(self, student: str) -> dict[str, Any] | None:
        """The kept results of ``student``, or ``None`` if absent or unreadable."""
        try:
            data = encodable(json.loads(self.marker(student).read_text(encoding="utf-8")))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and isinstance(data.get("grading"), dict) else None

    def all_results(self) -> dict[str, dict[str, Any]]:
        """The kept results of every student graded so far, by student id (one read of each marker)."""
        found = {}
        for path in sorted(self.root.glob("*.json")):
            data = self.load_marker(path.stem)
            if data is not None and data["grading"].get("student") == path.stem:
                found[path.stem] = data
        return found


def load_module_from(path: Path, name: str) -> ModuleType:
    """Import the Python file at ``path`` under ``name`` (reusing it if already imported from there)."""
    loaded = sys.modules.get(name)
    if loaded is not None and Path(getattr(loaded, "__file__", "")).resolve() == path.resolve():
        return loaded
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
