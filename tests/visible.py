"""Running the notebook's cells as the student's kernel does, without a kernel (helpers for the tests).

* :func:`notebook_namespace`: the namespace after the setup cells of a notebook and the seven
  function cells of the source notebook's solution (DenseNet with the tests' weights policy);
* :func:`visible_tests`: the visible part of each test cell (the release's test cells are exactly
  that: nbgrader removed the hidden region);
* :func:`run_visible`: one visible test against one set of function cells, in a copy of that
  namespace, with everything a wrong function may leave behind (hooks, train mode, figures) undone.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from dataclasses import dataclass
from typing import Mapping

import matplotlib

matplotlib.use("agg")

import matplotlib.pyplot as plt
import nbformat

from gradcam_kit.contract import GRADED_FUNCTIONS, IMAGES_DIR_ENV, SETUP_PREFIX, TEST_PREFIX
from gradcam_kit.hidden_regions import remove_hidden_regions


def meta(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def cells_by_id(notebook) -> dict:
    return {meta(c)["grade_id"]: c for c in notebook.cells if "grade_id" in meta(c)}


def visible_tests(notebook) -> dict[str, str]:
    """``test_<function>`` -> the visible part of its test cell (all of it in a release notebook)."""
    tests = {}
    for grade_id, cell in cells_by_id(notebook).items():
        if grade_id.startswith(TEST_PREFIX):
            tests[grade_id] = remove_hidden_regions(cell.source).rstrip()
    return tests


def notebook_namespace(course, tp2_utils, setup_from) -> dict:
    """Run the ``setup_*`` cells of ``setup_from`` and the source's seven solution function cells."""
    from gradcam_kit.grading.samples import solution_sources

    sys.modules["tp2_utils"] = tp2_utils
    namespace: dict = {"display": lambda *objects: None}
    source = nbformat.read(course.source_notebook, as_version=4)
    solutions = solution_sources(source)
    old = os.environ.get(IMAGES_DIR_ENV)
    os.environ[IMAGES_DIR_ENV] = str(course.images_dir)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            for grade_id, cell in cells_by_id(setup_from).items():
                if grade_id.startswith(SETUP_PREFIX):
                    exec(compile(cell.source, grade_id, "exec"), namespace)
            for name in GRADED_FUNCTIONS:
                exec(compile(solutions[name], name, "exec"), namespace)
    finally:
        if old is None:
            del os.environ[IMAGES_DIR_ENV]
        else:
            os.environ[IMAGES_DIR_ENV] = old
    return namespace


@dataclass(frozen=True)
class VisibleResult:
    """What a visible test made of some code: ``passed``, or the exception it stopped with."""

    passed: bool
    error: str = ""
    output: str = ""

    @property
    def asserted(self) -> bool:
        """Whether it stopped on one of the test's own assertions (a message written for the student)."""
        return self.error.startswith("AssertionError")


def run_visible(namespace: Mapping, test_source: str, cells: Mapping[str, str] = {}) -> VisibleResult:
    """Run one visible test after replacing the function cells ``cells`` (grade_id -> source)."""
    scope = dict(namespace)
    output = io.StringIO()
    try:
        with contextlib.redirect_stdout(output):
            for grade_id, source in cells.items():
                exec(compile(source, grade_id, "exec"), scope)
            exec(compile(test_source, "visible test", "exec"), scope)
        return VisibleResult(True, output=output.getvalue())
    except Exception as error:  # the student sees any exception of a test cell as a failure
        return VisibleResult(False, f"{type(error).__name__}: {error}", output.getvalue())
    finally:
        plt.close("all")
        model = namespace["model"]
        for module in model.modules():  # a wrong function may leave hooks behind
            module._forward_hooks.clear()
            module._forward_pre_hooks.clear()
            module._backward_hooks.clear()
            module._backward_pre_hooks.clear()
            module._is_full_backward_hook = None
        model.eval()
        model.zero_grad(set_to_none=True)
