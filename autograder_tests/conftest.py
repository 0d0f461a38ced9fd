"""Options and fixtures of the judge.

``python -m pytest autograder_tests --submission S.ipynb [--results-json R.json] [--artifacts DIR]
[--course DIR] [--reference-cache DIR]``

* ``--submission``: the notebook to grade (required);
* ``--results-json``: where to write the results (see ``_results``);
* ``--artifacts``: where to leave files for the feedback page (``heatmap.npz``, ``heatmap.png``);
* ``--course``: the course folder (default: the one holding this folder);
* ``--reference-cache``: a folder where reference arrays are kept between judge processes (default
  ``$GRADCAM_REFERENCE_CACHE``, else none: each process computes them once);
* ``--exploration``: after the tests, run the exploration cells (Parts 2-4, bonus) in the same
  worker and leave what they showed in ``--artifacts`` (``exploration/``), for formgrader.

The judge runs torch on one thread, as the worker does: both then sum in the same order, and the
same model gives bitwise the same activations and gradients in both processes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterator, cast

import pytest

from gradcam_kit.contract import GRADED_FUNCTIONS, test_name
from gradcam_kit.course import Course
from gradcam_kit.grading.fingerprint import test_points
from gradcam_kit.grading.notebook import read_submission
from gradcam_kit.host.session import WorkerSession

from ._checks import CHECKS
from ._judge import Judge
from ._reference import References, use_judge_threads
from ._results import ResultsPlugin

HERE = Path(__file__).resolve().parent
RECORDER = "gradcam-results"
TESTS = tuple(test_name(function) for function in GRADED_FUNCTIONS)
"""The seven tests, in notebook order."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gradcam", "TP2 Grad-CAM judge")
    group.addoption("--submission", metavar="NOTEBOOK", help="the submitted notebook to grade")
    group.addoption("--results-json", metavar="FILE", help="write the results (points, feedback) to FILE")
    group.addoption("--artifacts", metavar="DIR", help="leave files for the feedback page in DIR")
    group.addoption("--course", metavar="DIR", help="the course folder (default: the one holding the judge)")
    group.addoption("--reference-cache", metavar="DIR", help="keep reference arrays in DIR between runs")
    group.addoption("--exploration", action="store_true",
                    help="after the tests, run the exploration cells for formgrader (into --artifacts)")


def points_from_source(notebook: Path) -> dict[str, float]:
    """``test_<function> -> points`` of the seven tests, in notebook order, from the source notebook's
    test cells (the one place for points; read by :func:`~gradcam_kit.grading.fingerprint.test_points`).

    Raises
    ------
    pytest.UsageError
        Naming ``notebook``, when it cannot be read, a graded test cell is missing or its points are
        not a finite number: the judge grades nothing rather than give points it cannot count.
    """
    points = {name: value for name, value in test_points(notebook).items() if name in TESTS}
    missing = [name for name in TESTS if name not in points]
    if missing:
        try:  # test_points never raises: say whether the file itself is the problem
            json.loads(notebook.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise pytest.UsageError(f"the source notebook {notebook} cannot be read ({type(error).__name__})") from None
        raise pytest.UsageError(f"the source notebook {notebook} has no graded test cell {missing}")
    wrong = [name for name, value in points.items() if not math.isfinite(value)]
    if wrong:
        raise pytest.UsageError(f"the source notebook {notebook}: the points of {wrong} are not a finite number")
    return points


def pytest_configure(config: pytest.Config) -> None:
    submission = config.getoption("--submission", default=None)
    if submission is None:
        return  # not a judge run (e.g. the folder was collected by accident); the tests will error
    course = Course.locate(config.getoption("--course") or HERE.parent)
    results = config.getoption("--results-json")
    plugin = ResultsPlugin(Path(submission), points_from_source(course.source_notebook),
                               Path(results) if results else None)
    config.pluginmanager.register(plugin, RECORDER)
    config.stash[_COURSE] = course
    use_judge_threads()


_COURSE = pytest.StashKey[Course]()


@pytest.fixture(scope="session")
def judge(pytestconfig: pytest.Config) -> Iterator[Judge]:
    """The submission's worker session and the references, for the whole run."""
    submission = pytestconfig.getoption("--submission")
    if submission is None:
        raise pytest.UsageError("the judge needs --submission NOTEBOOK")
    course = pytestconfig.stash[_COURSE]
    recorder = cast(ResultsPlugin, pytestconfig.pluginmanager.get_plugin(RECORDER))
    program = read_submission(Path(submission), course.source_notebook)
    cache = pytestconfig.getoption("--reference-cache")
    references = References(course, Path(cache) if cache else None)
    artifacts = pytestconfig.getoption("--artifacts")
    with WorkerSession(program, images_dir=course.images_dir, helper_module=course.helper_module) as session:
        judge = Judge(session, references, CHECKS, Path(artifacts) if artifacts else None)
        load = session.load()
        recorder.isolation = load.isolation
        recorder.zygote = load.zygote
        recorder.notes = list(dict.fromkeys(load.notes))
        recorder.artifacts = judge.artifacts
        recorder.computed = references.computed
        yield judge
        if pytestconfig.getoption("--exploration") and artifacts:
            run_exploration_cells(session, Path(submission), course, Path(artifacts))


def run_exploration_cells(session: WorkerSession, submission: Path, course: Course, artifacts: Path) -> None:
    """The exploration cells, in the submission's worker, for formgrader (grades nothing; see
    ``gradcam_kit/grading/exploration.py``). A failure here only loses the figures."""
    import traceback

    from gradcam_kit.grading.exploration import run_exploration

    try:
        run_exploration(session, submission, course.source_notebook).write(artifacts)
    except Exception:  # never a reason to lose the grade
        traceback.print_exc()
