"""What decides a grade, besides the submission: recorded with each grade, compared at the next run.

A student's kept results stay valid only while everything that produced them is unchanged. That is
(:class:`GradingInputs`):

* ``points``: the points of each autograded test cell of the source notebook (the one place where
  points live);
* ``setup and test cells``: the source notebook's setup cells (run before the student's code) and
  test cells (the visible tests and the hidden region), and the ids of its graded cells;
* ``helper module tp2_utils.py``: models, weights, preprocessing;
* ``answer key``: ``solutions/*.py`` (the answer key and the reference Grad-CAM);
* ``judge``: ``autograder_tests/`` and the kit's grading engine (:func:`engine_files`: every module
  of the ``gradcam_kit`` package, in any subpackage, but those of :data:`OUTSIDE_GRADING`);
* ``weights``: the weights policy, ``$GRADCAM_WEIGHTS`` (for a file: its path, size and time).

``gradcam-kit grade`` stores :meth:`GradingInputs.to_plain` in each student's ``grades/<student>.json``
and regrades, without ``--force``, every student whose recorded inputs differ from the current ones;
:meth:`GradingInputs.changes` says why in words. ``gradcam_kit.nbgrader_bridge`` keys its kept results by
the same :meth:`GradingInputs.digest`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from gradcam_kit.contract import SETUP_PREFIX, TEST_PREFIX, weights_policy
from gradcam_kit.course import Course

__all__ = ["GradingInputs", "engine_files"]

OUTSIDE_GRADING = frozenset({
    "__init__.py", "__main__.py", "grading/__init__.py",
    # the instructor's commands around grading, and where the course's files are
    "cli.py", "demo.py", "release.py", "bundle.py", "stubs.py", "leaks.py", "images.py", "lms.py", "progress.py",
    "course.py",
    # nbgrader's own routes to the same judge (they run it, they do not decide what it decides)
    "hidden.py", "nbgrader_bridge.py", "autograde_plugins.py",
    # the batch: planning, running the judges, recording and reporting their results
    "grading/batch.py", "grading/batch_summary.py", "grading/planning.py", "grading/resources.py",
    "grading/judge_launch.py", "grading/judge_runner.py", "grading/status_reader.py", "grading/recorder.py",
    "grading/recording.py", "grading/recording_steps.py", "grading/grades_csv.py", "grading/gradebook.py",
    "grading/autograded_copy.py", "grading/nbgrader_settings.py",
    "grading/reports.py",
    "grading/interrupts.py",
    # the exploration cells (for formgrader: they earn no points), in the grader and in the worker
    "grading/exploration.py", "worker/exploration.py",
    # the kit's tests of the judge: sample submissions, students' styles, the mutator
    "grading/samples.py", "grading/sample_corpus.py", "grading/sample_mutations.py", "grading/styles.py",
    "grading/typical_bugs.py", "grading/mutator.py",
    "grading/mutation_operators.py", "grading/mutant_verdicts.py", "grading/judge_runs.py",
    # packages' docstrings
    "host/__init__.py", "worker/__init__.py", "wire/__init__.py",
})
"""Modules of the ``gradcam_kit`` package (by their path in it) that take no part in deciding a
grade: the commands around grading, nbgrader's routes, the batch that plans, runs and records the
judges, the exploration cells shown to formgrader, the sample submissions. Every other module,
wherever it lives (the worker, its host, the wire between them, the contract), is part of the
judge: a module added anywhere counts as grading until it is listed here."""

SETUP_AND_TESTS = "setup and test cells"
HELPER = "helper module tp2_utils.py"
ANSWER_KEY = "answer key"
JUDGE = "judge"
DIGESTS = (SETUP_AND_TESTS, HELPER, ANSWER_KEY, JUDGE)
"""The parts of :attr:`GradingInputs.digests`, in the order :meth:`GradingInputs.changes` names them."""


def _policy_identity(policy: str) -> str:
    """The policy, and for a weights file its resolved path, size and modification time."""
    if policy in ("imagenet", "random"):
        return policy
    path = Path(policy).expanduser().resolve()
    try:
        info = path.stat()
    except OSError:
        return f"{path} (missing)"
    return f"{path} ({info.st_size} bytes, modified {info.st_mtime_ns})"


def kit_package() -> Path:
    """The folder of the ``gradcam_kit`` package in use."""
    import gradcam_kit

    return Path(gradcam_kit.__file__).resolve().parent


def engine_files() -> list[Path]:
    """The kit's modules that take part in grading (see the module docstring), sorted."""
    package = kit_package()
    return sorted(path for path in package.rglob("*.py")
                  if path.relative_to(package).as_posix() not in OUTSIDE_GRADING and path.is_file())


def _digest_files(files: list[Path], root: Path | None = None) -> str:
    digest = hashlib.sha256()
    for path in files:
        name = str(path.relative_to(root)) if root is not None and root in path.parents else path.name
        digest.update(name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _cells(notebook: Path) -> list[dict[str, Any]]:
    try:
        document = json.loads(notebook.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    cells = document.get("cells") if isinstance(document, dict) else None
    return [cell for cell in cells if isinstance(cell, dict)] if isinstance(cells, list) else []


def _nbgrader(cell: Mapping[str, Any]) -> Mapping[str, Any]:
    metadata = cell.get("metadata")
    info = metadata.get("nbgrader") if isinstance(metadata, dict) else None
    return info if isinstance(info, dict) else {}


def _source(cell: Mapping[str, Any]) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def test_points(notebook: Path) -> dict[str, float]:
    """``test_<function> -> points`` of the autograded test cells of ``notebook``."""
    points: dict[str, float] = {}
    for cell in _cells(notebook):
        info = _nbgrader(cell)
        grade_id = str(info.get("grade_id", ""))
        if info.get("grade") and cell.get("cell_type") == "code" and grade_id.startswith(TEST_PREFIX):
            try:
                points[grade_id] = float(info.get("points", 0.0))
            except (TypeError, ValueError):
                points[grade_id] = float("nan")
    return points


test_points.__test__ = False  # type: ignore[attr-defined]  # a helper, not a pytest test


def _setup_and_tests_digest(notebook: Path) -> str:
    digest = hashlib.sha256()
    for cell in _cells(notebook):
        info = _nbgrader(cell)
        grade_id = str(info.get("grade_id", ""))
        if not grade_id:
            continue
        digest.update(f"{grade_id}|{cell.get('cell_type')}|{bool(info.get('grade'))}|"
                      f"{bool(info.get('solution'))}|{bool(info.get('locked'))}\0".encode())
        if grade_id.startswith((SETUP_PREFIX, TEST_PREFIX)):
            digest.update(_source(cell).encode("utf-8", "replace") + b"\0")
    return digest.hexdigest()


@dataclass(frozen=True)
class GradingInputs:
    """What decides a grade besides the submission (see the module docstring).

    Attributes
    ----------
    points : dict
        ``test_<function> -> points`` from the source notebook.
    digests : dict
        Part name (:data:`DIGESTS`) -> sha256 of its files.
    weights : str
        The weights policy (``imagenet``, ``random`` or a file with its size and time).
    """

    points: dict[str, float] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)
    weights: str = ""

    @classmethod
    def of(cls, course: Course) -> "GradingInputs":
        """The inputs of ``course`` now, in this process's environment."""
        judge = sorted(path for path in course.autograder_dir.rglob("*")
                       if path.is_file() and path.suffix in (".py", ".ini") and "__pycache__" not in path.parts)
        answer_key = sorted(course.solutions_dir.glob("*.py"))
        digests = {
            SETUP_AND_TESTS: _setup_and_tests_digest(course.source_notebook),
            HELPER: _digest_files([course.helper_module] if course.helper_module.is_file() else []),
            ANSWER_KEY: _digest_files(answer_key, course.root),
            JUDGE: _digest_files(judge, course.root) + _digest_files(engine_files(), kit_package()),
        }
        return cls(test_points(course.source_notebook), digests, _policy_identity(weights_policy()))

    # -- plain data (kept in grades/<student>.json) -----------------------------------------------
    def to_plain(self) -> dict[str, Any]:
        return {"points": dict(self.points), "digests": dict(self.digests), "weights": self.weights}

    @classmethod
    def from_plain(cls, data: Any) -> "GradingInputs | None":
        """The inputs recorded in ``data``, or ``None`` when they are absent or malformed."""
        if not isinstance(data, dict):
            return None
        points, digests, weights = data.get("points"), data.get("digests"), data.get("weights")
        if not (isinstance(points, dict) and isinstance(digests, dict) and isinstance(weights, str)):
            return None
        try:
            return cls({str(k): float(v) for k, v in points.items()},
                       {str(k): str(v) for k, v in digests.items()}, weights)
        except (TypeError, ValueError):
            return None

    def digest(self) -> str:
        """One sha256 of everything here."""
        return hashlib.sha256(json.dumps(self.to_plain(), sort_keys=True).encode()).hexdigest()

    # -- comparing ----------------------------------------------------------------------------------
    def changes(self, kept: "GradingInputs | None") -> list[str]:
        """Why results graded with ``kept`` are stale now, in words; empty when they are not.

        ``None`` (nothing recorded: results of an older kit) is stale too.
        """
        if kept is None:
            return ["it was graded before the kit recorded what decides a grade"]
        reasons = []
        if kept.points != self.points:
            changed = [f"{name} {_points(kept.points.get(name))} → {_points(self.points.get(name))}"
                       for name in sorted(set(kept.points) | set(self.points))
                       if kept.points.get(name) != self.points.get(name)]
            reasons.append(f"the points changed ({', '.join(changed)})")
        for name in DIGESTS:
            if kept.digests.get(name) != self.digests.get(name):
                reasons.append(f"the {name} changed")
        if kept.weights != self.weights:
            reasons.append(f"the weights policy changed ({kept.weights} → {self.weights})")
        return reasons


def _points(value: float | None) -> str:
    return "none" if value is None else f"{value:g}"
