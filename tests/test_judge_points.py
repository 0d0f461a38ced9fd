"""The judge's points: read from the source notebook's test cells, the one place where they live.

``autograder_tests/conftest.py:points_from_source`` reads them with
``gradcam_kit.grading.fingerprint.test_points`` (what a grade's fingerprint records) and refuses, with
a usage error naming the notebook, a source that lacks a graded test cell or whose points are not a
finite number (a judge given NaN points would write results the batch rejects).
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from autograder_tests.conftest import points_from_source
from gradcam_kit.contract import GRADED_FUNCTIONS, test_name


def written_points(course) -> dict[str, float]:
    """The points as nbformat reads them from the source's graded test cells."""
    source = nbformat.read(course.source_notebook, as_version=4)
    found = {}
    for cell in source.cells:
        info = cell.metadata.get("nbgrader", {})
        if info.get("grade") and info.get("grade_id") in {test_name(f) for f in GRADED_FUNCTIONS}:
            found[info["grade_id"]] = float(info["points"])
    return found


def edited_source(course, tmp_path: Path, edit) -> Path:
    """A copy of the source notebook after ``edit(cells)`` (its JSON cells, in place)."""
    document = json.loads(course.source_notebook.read_text(encoding="utf-8"))
    edit(document["cells"])
    path = tmp_path / "source.ipynb"
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def test_cell(cells: list, name: str) -> dict:
    (cell,) = [c for c in cells if c["metadata"].get("nbgrader", {}).get("grade_id") == name]
    return cell


test_cell.__test__ = False  # type: ignore[attr-defined]  # a helper, not a pytest test


def test_the_points_are_the_source_notebooks_in_notebook_order(course):
    points = points_from_source(course.source_notebook)
    assert points == written_points(course)
    assert list(points) == [test_name(function) for function in GRADED_FUNCTIONS]
    assert sum(points.values()) > 0


def test_a_graded_cell_that_is_not_one_of_the_seven_tests_earns_nothing(course, tmp_path):
    def add(cells):
        extra = json.loads(json.dumps(test_cell(cells, test_name("grad_cam"))))
        extra["metadata"]["nbgrader"]["grade_id"] = "test_something_else"
        cells.append(extra)

    assert points_from_source(edited_source(course, tmp_path, add)) == written_points(course)


def test_a_missing_test_cell_is_a_usage_error_naming_the_notebook(course, tmp_path):
    def drop(cells):
        cells.remove(test_cell(cells, test_name("weighted_cam")))

    path = edited_source(course, tmp_path, drop)
    with pytest.raises(pytest.UsageError, match="test_weighted_cam") as error:
        points_from_source(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize("value", ["three", None, [1], float("nan"), "nan", float("inf")])
def test_points_that_are_not_a_finite_number_are_a_usage_error_naming_the_notebook(course, tmp_path, value):
    def spoil(cells):
        test_cell(cells, test_name("channel_weights"))["metadata"]["nbgrader"]["points"] = value

    path = edited_source(course, tmp_path, spoil)
    with pytest.raises(pytest.UsageError, match="test_channel_weights") as error:
        points_from_source(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize("content", [b"{ not json", b"\xff\xfe binary", None])
def test_a_source_that_cannot_be_read_is_a_usage_error_that_says_so(tmp_path, content):
    path = tmp_path / "source.ipynb"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(pytest.UsageError, match="cannot be read") as error:
        points_from_source(path)
    assert str(path) in str(error.value)
