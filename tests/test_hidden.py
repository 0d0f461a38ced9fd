"""The nbgrader-native path: ``run_hidden_test`` in the notebook's hidden-test regions.

The fast tests use the stand-in course (fake judge, see ``fake_course``); the last one
runs ``nbgrader autograde`` and ``gradcam-kit grade`` with the real judge and notebook, on the
solution, a buggy submission and one with a syntax error, and checks the one rule by which their
points may differ: nbgrader gives nothing to a test cell whose visible part raised.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest
from fake_course import REPO_ROOT, gradebook_scores, nbgrader, runs, submit

from gradcam_kit import nbgrader_bridge as hidden
from gradcam_kit.contract import HIDDEN_CACHE_ENV
from gradcam_kit.course import ASSIGNMENT, NOTEBOOK, Course
from gradcam_kit.grading.batch import grade_course


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch) -> Path:
    """Each test gets its own folder of kept results, and an empty memo."""
    folder = tmp_path / "hidden-cache"
    monkeypatch.setenv(HIDDEN_CACHE_ENV, str(folder))
    monkeypatch.setattr(hidden, "_memo", {})
    return folder


# ---------------------------------------------------------------------------------------------
def test_the_notebook_is_the_one_in_the_current_folder(fake_course):
    folder = fake_course.root / "autograded" / "alice" / ASSIGNMENT
    folder.mkdir(parents=True)
    (folder / NOTEBOOK).write_text("{}")
    assert hidden.locate_notebook(folder) == (fake_course.root, folder / NOTEBOOK)
    assert hidden.locate_notebook(fake_course.source_dir) == (fake_course.root, fake_course.source_notebook)


def test_autograde_falls_back_to_the_submitted_notebook(fake_course):
    submitted = submit(fake_course, "alice")
    folder = fake_course.root / "autograded" / "alice" / ASSIGNMENT
    folder.mkdir(parents=True)
    assert hidden.locate_notebook(folder) == (fake_course.root, submitted)


def test_outside_a_course_it_says_so(tmp_path):
    with pytest.raises(hidden.HiddenTestError, match="nbgrader_config.py"):
        hidden.locate_notebook(tmp_path)
    (tmp_path / "nbgrader_config.py").write_text("")
    with pytest.raises(hidden.HiddenTestError, match="which notebook"):
        hidden.locate_notebook(tmp_path)


def test_one_judge_run_serves_every_hidden_cell_silently(fake_course, judge_log, monkeypatch, capfd):
    submitted = submit(fake_course, "bob", bugs=("grad_cam",))
    monkeypatch.chdir(submitted.parent)

    assert hidden.run_hidden_test("test_channel_weights") is None
    with pytest.raises(AssertionError, match="`grad_cam` gives a wrong result"):
        hidden.run_hidden_test("test_grad_cam")
    with pytest.raises(hidden.HiddenTestError, match="no test named"):
        hidden.run_hidden_test("test_nothing")

    assert runs(judge_log) == ["bob"]
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == "", "nbgrader zeroes a test cell that writes to stderr"

    monkeypatch.setattr(hidden, "_memo", {})  # a new kernel: the kept results are reused
    assert hidden.run_hidden_test("test_channel_weights") is None
    assert runs(judge_log) == ["bob"]

    submit(fake_course, "bob")  # another notebook: another run
    assert hidden.run_hidden_test("test_grad_cam") is None
    assert runs(judge_log) == ["bob", "bob"]


def test_partial_points_are_returned_for_nbgrader(fake_course, monkeypatch):
    submitted = submit(fake_course, "carol")
    monkeypatch.chdir(submitted.parent)
    results = {"tests": {"test_grad_cam": {"outcome": "failed", "points": 0.5, "max_points": 2.0, "feedback": "x"}}}
    monkeypatch.setattr(hidden, "judge_results", lambda root, notebook: results)
    assert hidden.run_hidden_test("test_grad_cam") == 0.5
    results["tests"]["test_grad_cam"].update(outcome="error", points=0.0, feedback="a bug of the judge")
    with pytest.raises(hidden.HiddenTestError, match="a bug of the judge"):
        hidden.run_hidden_test("test_grad_cam")


def test_a_crashing_judge_is_an_error_and_runs_once(fake_course, judge_log, monkeypatch):
    submitted = submit(fake_course, "dave", marker="JUDGE_CRASH")
    monkeypatch.chdir(submitted.parent)
    calls = []
    original = hidden._run_judge
    monkeypatch.setattr(hidden, "_run_judge", lambda *a: calls.append(a) or original(*a))
    for name in ("test_channel_weights", "test_grad_cam"):
        with pytest.raises(hidden.HiddenTestError, match="exit status 3"):
            hidden.run_hidden_test(name)
    assert len(calls) == 1


def test_nbgrader_autograde_agrees_with_gradcam_kit_grade_on_the_stand_in(fake_course, tmp_path):
    submit(fake_course, "alice")
    submit(fake_course, "bob", bugs=("grad_cam",))
    submit(fake_course, "carol", bugs=("channel_weights", "grad_cam"), answer=None)
    twin = Course.locate(shutil.copytree(fake_course.root, tmp_path / "twin"))

    nbgrader(fake_course.root, "autograde", ASSIGNMENT)
    assert grade_course(twin, out=io.StringIO()) == 0

    by_nbgrader = gradebook_scores(fake_course)
    assert by_nbgrader == gradebook_scores(twin)
    assert by_nbgrader["bob"]["test_grad_cam"] == 0.0 and by_nbgrader["alice"]["test_grad_cam"] == 2.0


# ---------------------------------------------------------------------------------------------
# With the real notebook, judge and worker (slow: nbgrader executes the whole notebook twice)
# ---------------------------------------------------------------------------------------------
def released_copy(base: Path) -> Course:
    """A copy of this course, released with nbgrader, in ``base``."""
    from gradcam_kit.demo import copy_course
    from gradcam_kit.release import generate_release

    base.mkdir()
    course = copy_course(Course.locate(REPO_ROOT), base)
    generate_release(course)
    return course


def visible_part_raised(notebook, grade_id: str) -> bool:
    """Whether nbgrader's execution of the test cell ``grade_id`` stopped in its visible part: an
    error output whose traceback does not reach the hidden region's call."""
    for cell in notebook.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == grade_id:
            errors = [o for o in cell.get("outputs", []) if o.output_type == "error"]
            return any("run_hidden_test" not in "\n".join(o.traceback) for o in errors)
    raise AssertionError(f"no cell {grade_id}")


def with_syntax_error(notebook, function: str):
    """``notebook`` with a syntax error in the cell of ``function`` (a closing parenthesis missing)."""
    import nbformat

    broken = nbformat.from_dict(notebook)
    for cell in broken.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == function:
            cell.source = cell.source.replace(f"def {function}(", f"def {function}((", 1)
    return broken


def test_nbgrader_autograde_and_gradcam_kit_grade_differ_only_where_a_visible_part_raises(tmp_path, monkeypatch):
    """The one difference between the two routes, on the real course, judge and worker.

    nbgrader gives a test cell no points when its visible part raises, before the hidden region
    calls the judge; the kit runs no visible part. So a helper that cannot run (here a syntax
    error in ``upsample_normalize``) costs, under nbgrader, every test cell whose visible asserts
    call it (``test_grad_cam``, ``test_show_grad_cam``), while the kit charges it once. Everywhere
    else the points are the same: the hidden regions call the same judge.
    """
    import nbformat

    from gradcam_kit.grading.sample_mutations import MUTATIONS
    from gradcam_kit.grading.samples import build_samples

    monkeypatch.setenv("GRADCAM_WEIGHTS", "random")
    course = released_copy(tmp_path / "course")
    bug = next(m for m in MUTATIONS if m.function == "weighted_cam")
    samples = build_samples(course, names=["solution", bug.name])
    notebooks = {"honest": samples["solution"].notebook, "buggy": samples[bug.name].notebook,
                 "syntax": with_syntax_error(samples["solution"].notebook, "upsample_normalize")}
    for student, notebook in notebooks.items():
        for cell in notebook.cells:  # the exploration cells grade nothing: spare nbgrader a minute each
            if cell.metadata.get("nbgrader", {}).get("grade_id", "").endswith("_code"):
                cell.source = "pass"
        path = course.submission(student)
        path.parent.mkdir(parents=True)
        nbformat.write(notebook, str(path))
    twin = Course.locate(shutil.copytree(course.root, tmp_path / "twin"))

    for student in notebooks:  # one at a time: each within the helper's time limit on a busy machine
        nbgrader(course.root, "autograde", ASSIGNMENT, "--student", student)
    assert grade_course(twin, out=io.StringIO(), exploration=False) == 0

    by_nbgrader, by_kit = gradebook_scores(course), gradebook_scores(twin)
    tests = sorted(name for name in by_kit["honest"] if name.startswith("test_"))
    assert len(tests) == 7
    assert all(by_kit["honest"][name] > 0 for name in tests), by_kit["honest"]
    assert {name for name in tests if by_kit["buggy"][name] < by_kit["honest"][name]} == set(bug.fails)

    # the rule: the same points, except a test cell whose visible part raised gets none from nbgrader
    differences = {}
    for student in notebooks:
        graded = nbformat.read(str(course.root / "autograded" / student / ASSIGNMENT / NOTEBOOK), as_version=4)
        for name in tests:
            if by_nbgrader[student][name] != by_kit[student][name]:
                assert by_nbgrader[student][name] == 0.0 and visible_part_raised(graded, name), (student, name)
                differences.setdefault(student, set()).add(name)
    assert "honest" not in differences

    # the syntax error, charged once by the kit (10/12), three times by nbgrader (5/12)
    total = sum(by_kit["honest"][name] for name in tests)
    lost_by_kit = {name for name in tests if by_kit["syntax"][name] < by_kit["honest"][name]}
    lost_by_nbgrader = {name for name in tests if by_nbgrader["syntax"][name] < by_kit["honest"][name]}
    assert lost_by_kit == {"test_upsample_normalize"}
    assert lost_by_nbgrader == {"test_upsample_normalize", "test_grad_cam", "test_show_grad_cam"}
    assert differences["syntax"] == {"test_grad_cam", "test_show_grad_cam"}
    points = by_kit["honest"]
    assert sum(by_kit["syntax"][n] for n in tests) == total - points["test_upsample_normalize"]
    assert sum(by_nbgrader["syntax"][n] for n in tests) == total - sum(points[n] for n in lost_by_nbgrader)
