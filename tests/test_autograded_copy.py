"""What formgrader shows: the autograded copy that ``gradcam-kit grade`` writes.

Formgrader renders ``autograded/<student>/TP2_GradCAM/TP2_GradCAM.ipynb``; these tests check that
notebook (and its HTML rendering by nbconvert, as formgrader does):

* the helper module lies beside it, as ``nbgrader autograde`` leaves it;
* a failed test's message is cut into lines formgrader can show;
* the exploration cells show what the student's code printed and drew (PNG and plain text only:
  nothing a student could turn into HTML or JavaScript in the instructor's browser), and the
  cells that failed or hit a limit say so, there, in the feedback notes and in the summary.

The stand-in course's fake judge writes the exploration report (``fake_course``); the last
test runs the real judge and worker on the real course.
"""

from __future__ import annotations

import base64
import io
import shutil

import nbformat
import pytest
from nbformat.v4 import new_code_cell

from gradcam_kit.course import ASSIGNMENT, HELPER_MODULE, NOTEBOOK, Course
from gradcam_kit.grading.batch import grade_course
from gradcam_kit.grading.exploration import PNG_SIGNATURE, clean_png
from gradcam_kit.grading.autograded_copy import WRAP_COLUMNS, annotate_tests, wrap_lines
from gradcam_kit.release import generate_release
from fake_course import read_json, submit

SAFE_MIME = {"image/png", "text/plain"}
EXPLORATION = ("part2_code", "part3_code", "part4_code")


def exploration_cell(grade_id: str):
    return new_code_cell(f"# explore\n### BEGIN SOLUTION\nprint('{grade_id}')\n### END SOLUTION", metadata={
        "nbgrader": {"grade": False, "grade_id": grade_id, "locked": False, "schema_version": 3,
                     "solution": True, "task": False}})


@pytest.fixture
def course(fake_course) -> Course:
    """The stand-in course with three exploration cells, released again."""
    notebook = nbformat.read(str(fake_course.source_notebook), as_version=4)
    notebook.cells[-2:-2] = [exploration_cell(grade_id) for grade_id in EXPLORATION]
    nbformat.write(notebook, str(fake_course.source_notebook))
    fake_course.gradebook.unlink()
    generate_release(fake_course)
    return fake_course


def submit_exploring(course: Course, student: str, markers: dict[str, str]) -> None:
    path = submit(course, student)
    notebook = nbformat.read(str(path), as_version=4)
    for cell in notebook.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in EXPLORATION:
            cell.source = f"print('mine')  # {markers.get(grade_id, '')}"
    nbformat.write(notebook, str(path))


def autograded(course: Course, student: str):
    return nbformat.read(str(course.root / "autograded" / student / ASSIGNMENT / NOTEBOOK), as_version=4)


def cells_by_id(notebook) -> dict:
    return {c.metadata.get("nbgrader", {}).get("grade_id"): c for c in notebook.cells}


def test_the_autograded_copy_holds_the_exploration_outputs_and_only_safe_types(course):
    submit_exploring(course, "alice", {})
    submit_exploring(course, "bob", {"part3_code": "EXPLORE_FAIL"})
    submit_exploring(course, "carol", {"part4_code": "EXPLORE_LIMIT"})
    submit_exploring(course, "mallory", {"part2_code": "EXPLORE_HOSTILE"})
    out = io.StringIO()

    assert grade_course(course, out=out) == 0

    # the helper module beside each copy, as nbgrader autograde leaves it
    for student in ("alice", "bob", "carol", "mallory"):
        beside = course.root / "autograded" / student / ASSIGNMENT / HELPER_MODULE
        assert beside.read_bytes() == course.helper_module.read_bytes()

    alice = cells_by_id(autograded(course, "alice"))
    for grade_id in EXPLORATION:
        outputs = alice[grade_id].outputs
        assert [o.output_type for o in outputs] == ["stream", "display_data"], outputs
        assert outputs[0].text == f"shown by {grade_id}\n"
        png = base64.b64decode(outputs[1].data["image/png"])
        assert png.startswith(PNG_SIGNATURE) and clean_png(png)

    bob = cells_by_id(autograded(course, "bob"))["part3_code"].outputs
    assert bob[-1].name == "stderr" and "`part3_code` failed when the grader ran it: NameError" in bob[-1].text
    carol = cells_by_id(autograded(course, "carol"))["part4_code"].outputs
    assert [o.output_type for o in carol] == ["stream"] and "hit a limit" in carol[0].text \
        and "timed out after 60 s" in carol[0].text

    mallory = cells_by_id(autograded(course, "mallory"))["part2_code"].outputs
    assert len([o for o in mallory if o.output_type == "display_data"]) == 1, "a bad PNG or a path was kept"
    assert mallory[-1].text == "bell and ? surrogate\n"

    # only safe types, in every copy, and in the HTML that formgrader renders
    from nbconvert import HTMLExporter

    for student in ("alice", "bob", "carol", "mallory"):
        notebook = autograded(course, student)
        for cell in notebook.cells:
            for output in cell.get("outputs", []):
                assert output.output_type in ("stream", "display_data", "error"), output
                assert set(output.get("data", {})) <= SAFE_MIME, output
        html, _ = HTMLExporter().from_notebook_node(notebook)
        assert "<script>alert" not in html
    html, _ = HTMLExporter().from_notebook_node(autograded(course, "alice"))
    assert html.count('src="data:image/png;base64,') >= 3

    # reported: in the notes (feedback page) and in the summary
    notes = read_json(course.grades_dir / "bob.json")["grading"]["notes"]
    assert any("part3_code" in note and "NameError" in note for note in notes)
    assert "part3_code" in (course.grades_dir / "feedback" / "bob.html").read_text()
    summary = out.getvalue()
    assert "Exploration cells that did not run to the end" in summary
    assert "bob: part3_code (failed)" in summary and "carol: part4_code (limit)" in summary
    assert read_json(course.grades_dir / "alice.json")["grading"]["exploration"] == dict.fromkeys(EXPLORATION, "ran")


def test_without_exploration_the_cells_keep_no_outputs(course):
    submit_exploring(course, "alice", {})
    assert grade_course(course, out=io.StringIO(), exploration=False) == 0
    alice = cells_by_id(autograded(course, "alice"))
    assert all(not alice[grade_id].outputs for grade_id in EXPLORATION)
    assert read_json(course.grades_dir / "alice.json")["grading"]["exploration"] == {}


def test_a_failed_test_s_message_is_wrapped_for_formgrader(course):
    message = ("`grad_cam` gives a wrong result: " + "the map of class 281 differs from the reference " * 8
               + "see https://example.org/" + "a" * 130)
    notebook = nbformat.read(str(course.release_dir / NOTEBOOK), as_version=4)
    results = {"tests": {"test_grad_cam": {"outcome": "failed", "points": 0, "max_points": 2, "feedback": message},
                         "test_channel_weights": {"outcome": "passed", "points": 1, "max_points": 1,
                                                  "feedback": "a remark " * 30}}}
    annotate_tests(notebook, results)
    cells = cells_by_id(notebook)
    error = cells["test_grad_cam"].outputs[0]
    assert len(error.traceback) > 3 and all(len(line) <= WRAP_COLUMNS for line in error.traceback)
    assert " ".join(error.traceback).replace(" ", "") == f"AssertionError: {message} (0/2 points)".replace(" ", "")
    assert error.evalue.startswith(message)  # the whole message, for tools that read it
    passed = cells["test_channel_weights"].outputs[0].text
    assert "passed (1/1 points)" in passed and all(len(line) <= WRAP_COLUMNS for line in passed.splitlines())
    assert wrap_lines("short") == ["short"] and wrap_lines("a\n\nb") == ["a", "", "b"]


# ---------------------------------------------------------------------------------------------
# the real judge and worker
# ---------------------------------------------------------------------------------------------
def test_the_real_worker_runs_the_exploration_cells_under_its_limits(tmp_path, monkeypatch):
    from gradcam_kit.demo import copy_course
    from gradcam_kit.grading.samples import build_samples
    from fake_course import REPO_ROOT

    monkeypatch.setenv("GRADCAM_WEIGHTS", "random")
    (tmp_path / "course").mkdir()
    real = copy_course(Course.locate(REPO_ROOT), tmp_path / "course")
    generate_release(real)
    solution = build_samples(real, names=["solution"])["solution"].notebook
    broken = nbformat.from_dict(solution)
    for cell in broken.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id == "part3_code":
            cell.source = "hog = bytearray(16 * 2**30)  # more memory than the worker may use"
        elif grade_id == "part4_code":
            cell.source = "print('before')\nplt.plot([0, 1])\nundefined_name"
        elif grade_id == "bonus_code":
            cell.source = "from IPython.display import HTML\nHTML('<script>alert(1)</script>')"
    for student, notebook in (("honest", solution), ("broken", broken)):
        path = real.submission(student)
        path.parent.mkdir(parents=True)
        nbformat.write(notebook, str(path))

    assert grade_course(real, out=io.StringIO(), workers=1) == 0

    honest = cells_by_id(autograded(real, "honest"))
    for grade_id in ("part2_code", "part3_code", "part4_code", "bonus_code"):
        images = [o for o in honest[grade_id].outputs if "image/png" in o.get("data", {})]
        assert images, f"{grade_id}: no figure"
    assert read_json(real.grades_dir / "honest.json")["grading"]["exploration"] == dict.fromkeys(
        ("part2_code", "part3_code", "part4_code", "bonus_code"), "ran")

    broken_cells = cells_by_id(autograded(real, "broken"))
    kept = read_json(real.grades_dir / "broken.json")
    assert kept["grading"]["exploration"] == {"part2_code": "ran", "part3_code": "limit", "part4_code": "failed",
                                              "bonus_code": "ran"}
    assert "used more than" in broken_cells["part3_code"].outputs[-1].text
    part4 = broken_cells["part4_code"].outputs
    assert part4[0].text == "before\n" and "image/png" in part4[1].data  # shown before the failure
    assert "NameError" in part4[-1].text and "line 3" in part4[-1].text
    bonus = broken_cells["bonus_code"].outputs
    assert all(set(o.get("data", {})) <= SAFE_MIME for o in bonus) and "<IPython.core.display.HTML object>" in bonus[0].text
    # grading is unchanged by what the exploration cells did
    assert sum(t["points"] for t in kept["tests"].values()) == sum(
        t["points"] for t in read_json(real.grades_dir / "honest.json")["tests"].values())
    shutil.rmtree(tmp_path / "course", ignore_errors=True)


def test_exploration_text_loses_escape_sequences_and_bidirectional_overrides():
    """What a student's cell prints reaches the instructor's browser: no terminal escapes, no text
    shown in another order than it reads (U+202E), no lone surrogate."""
    from gradcam_kit.grading.exploration import output_text

    assert output_text("grade: 0\u202e01\x1b[31m\r\nok\ud800\x85") == "grade: 001[31m\nok?"
