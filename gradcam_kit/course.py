"""Where things live in an nbgrader course that holds the TP2 assignment.

A course is a folder with ``nbgrader_config.py`` at its root (nbgrader's convention). Every path
the kit uses is derived here, from that root, so that a copy of the course elsewhere works on its
own files and the kit never writes into its own install location.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from types import ModuleType

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
