"""``read_submission``: which cells run, and every problem of a broken notebook, in the student's words."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from hostile import cases, notebooks

from gradcam_kit.contract import GRADED_FUNCTIONS
from gradcam_kit.grading.notebook import SourceNotebookError, read_submission


@pytest.fixture(scope="module")
def source_path(tmp_path_factory) -> Path:
    return notebooks.write(notebooks.source_notebook(), tmp_path_factory.mktemp("source") / "TP2_GradCAM.ipynb")


def test_the_synthetic_notebooks_follow_the_contract():
    assert notebooks.FUNCTIONS == GRADED_FUNCTIONS


def test_a_correct_submission_runs_setup_then_the_seven_functions(source_path, tmp_path):
    path = notebooks.write(notebooks.submission(), tmp_path / "s.ipynb")
    program = read_submission(path, source_path)
    assert program.fatal is None and program.problems == {} and program.notes == []
    assert [cell.grade_id for cell in program.cells] == ["setup_imports", "setup_data", *GRADED_FUNCTIONS]
    assert [cell.origin for cell in program.cells] == ["source"] * 2 + ["submission"] * 7
    assert program.cell("grad_cam").defines == ("grad_cam",)
    assert program.cell("grad_cam").filename == "<cell grad_cam>"


def test_exploration_test_and_unlabelled_cells_are_never_run(source_path, tmp_path):
    path = notebooks.write(notebooks.submission(append=[(None, "import os; os.remove('x')"),
                                                        ("part3_code", "while True: pass")]), tmp_path / "s.ipynb")
    program = read_submission(path, source_path)
    ran = " ".join(cell.code for cell in program.cells)
    assert "exploration cells are never run" not in ran and "while True" not in ran
    assert "os.remove" not in ran and "run_hidden_test" not in ran


def test_setup_cells_come_from_the_source_and_function_cells_from_the_submission(source_path, tmp_path):
    mine = "def grad_cam(model, image, class_idx, layer):\n    return 'mine'\n"
    path = notebooks.write(notebooks.submission(replace={"setup_data": "class_names = []\n", "grad_cam": mine}),
                           tmp_path / "s.ipynb")
    program = read_submission(path, source_path)
    assert program.cell("setup_data").source == notebooks.SETUP["setup_data"]
    assert program.cell("grad_cam").source == mine


def test_order_is_the_source_order_even_if_the_student_moved_cells(source_path, tmp_path):
    notebook = notebooks.submission()
    notebook.cells.reverse()
    program = read_submission(notebooks.write(notebook, tmp_path / "s.ipynb"), source_path)
    assert [cell.grade_id for cell in program.cells] == ["setup_imports", "setup_data", *GRADED_FUNCTIONS]


@pytest.mark.parametrize("case", cases.BROKEN, ids=lambda case: case.name)
def test_broken_notebooks_are_recorded_never_raised(case, source_path, tmp_path):
    path = case.write(tmp_path / "sub" / "TP2_GradCAM.ipynb")
    before = path.read_bytes() if path.exists() else None
    program = read_submission(path, source_path)
    if case.fatal is not None:
        assert program.fatal is not None and case.fatal in program.fatal
        assert set(program.problems) == set(GRADED_FUNCTIONS)
        assert not program.runnable
    else:
        assert program.fatal is None
        assert set(program.problems) == set(case.problems), program.problems
        for function, fragment in case.problems.items():
            assert fragment in program.problems[function]
        ran = {cell.grade_id for cell in program.cells}
        assert not ran & set(case.problems), "a function with a problem must not be run"
    for fragment in case.notes:
        assert any(fragment in note for note in program.notes), program.notes
    if before is not None:
        assert path.read_bytes() == before


def test_problems_speak_to_the_student(source_path, tmp_path):
    path = notebooks.write(notebooks.submission(remove=["grad_cam"]), tmp_path / "s.ipynb")
    message = read_submission(path, source_path).problems["grad_cam"]
    assert message.startswith("The cell `grad_cam` is missing from your notebook — was it deleted or renamed? "
                              "Restore it from the release")
    assert "Traceback" not in message and "KeyError" not in message


def test_ipython_syntax_is_translated_with_line_numbers_kept(source_path, tmp_path):
    source = "%matplotlib inline\n" + notebooks.SOLUTIONS["top_and_least"]
    path = notebooks.write(notebooks.submission(replace={"top_and_least": source}), tmp_path / "s.ipynb")
    cell = read_submission(path, source_path).cell("top_and_least")
    assert cell.code.splitlines()[0].startswith("get_ipython().run_line_magic('matplotlib'")
    assert len(cell.code.splitlines()) == len(source.splitlines())
    timed = "%%time\n" + notebooks.SOLUTIONS["top_and_least"]
    path = notebooks.write(notebooks.submission(replace={"top_and_least": timed}), tmp_path / "t.ipynb")
    assert read_submission(path, source_path).cell("top_and_least").code.startswith("#%%time\n")


def test_a_submission_with_other_metadata_versions_is_read(source_path, tmp_path):
    document = json.loads(json.dumps(notebooks.submission(), default=dict))
    document["nbformat_minor"] = 2
    for cell in document["cells"]:
        cell["source"] = cell["source"].splitlines(True)  # the list form of older savers
    path = tmp_path / "s.ipynb"
    path.write_text(json.dumps(document))
    program = read_submission(path, source_path)
    assert program.problems == {} and program.cell("grad_cam").source == notebooks.SOLUTIONS["grad_cam"]


@pytest.mark.parametrize("breakage", ["missing", "invalid", "duplicate_ids", "no_function", "no_setup"])
def test_an_unusable_source_notebook_is_a_grader_error(breakage, source_path, tmp_path):
    bad = tmp_path / "source.ipynb"
    if breakage == "invalid":
        bad.write_text("{")
    elif breakage == "duplicate_ids":
        notebooks.write(notebooks.submission(duplicate=["setup_data"]), bad)
    elif breakage == "no_function":
        notebooks.write(notebooks.submission(remove=["grad_cam"]), bad)
    elif breakage == "no_setup":
        notebooks.write(notebooks.submission(remove=["setup_imports", "setup_data"]), bad)
    student = notebooks.write(notebooks.submission(), tmp_path / "s.ipynb")
    with pytest.raises(SourceNotebookError):
        read_submission(student, bad)


def test_the_plain_form_sent_to_the_worker(source_path, tmp_path):
    path = notebooks.write(notebooks.submission(remove=["grad_cam"]), tmp_path / "s.ipynb")
    plain = read_submission(path, source_path).to_plain()
    assert json.loads(json.dumps(plain)) == plain
    assert plain["problems"].keys() == {"grad_cam"} and plain["functions"] == list(GRADED_FUNCTIONS)


# ------------------------------------------------------------------------------------------------
# the real instructor notebook (written by another part of the kit; skipped until it exists)
# ------------------------------------------------------------------------------------------------
def _real_source(course) -> Path:
    if not course.source_notebook.is_file():
        pytest.skip("the instructor notebook is not written yet")
    return course.source_notebook


def test_the_real_source_notebook_reads_as_a_complete_program(course):
    source = _real_source(course)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    program = read_submission(source, source)
    assert program.fatal is None and program.problems == {}, program.problems
    kinds = [cell.kind for cell in program.cells]
    assert kinds[-7:] == ["function"] * 7 and set(kinds[:-7]) == {"setup"}
    assert [cell.grade_id for cell in program.cells][-7:] == list(GRADED_FUNCTIONS)
    for cell in program.cells[-7:]:
        assert cell.grade_id in cell.defines
    assert hashlib.sha256(source.read_bytes()).hexdigest() == digest


def test_a_broken_copy_of_the_real_notebook(course, tmp_path):
    source = _real_source(course)
    document = json.loads(source.read_text())
    document["cells"] = [cell for cell in document["cells"]
                         if cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") != "show_grad_cam"]
    for cell in document["cells"]:
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if grade_id and grade_id.startswith("setup_"):
            cell["source"] = "print('hacked')\n"
    path = tmp_path / "TP2_GradCAM.ipynb"
    path.write_text(json.dumps(document))
    program = read_submission(path, source)
    assert set(program.problems) == {"show_grad_cam"}
    assert all("hacked" not in cell.code for cell in program.cells)
    assert any("was changed" in note for note in program.notes)


@pytest.mark.parametrize("version", ["release", "source"])
def test_untouched_locked_cells_give_no_notes(course, version):
    """Test cells reach students without their hidden region, and come back with it under nbgrader
    autograde: neither form is a change to a locked cell."""
    notebook = course.release_dir / course.source_notebook.name if version == "release" else course.source_notebook
    program = read_submission(notebook, course.source_notebook)
    assert program.notes == []


def test_a_tampered_test_cell_is_noted(course, tmp_path):
    document = json.loads((course.release_dir / course.source_notebook.name).read_text())
    for cell in document["cells"]:
        if cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") == "test_grad_cam":
            cell["source"] = "assert True\n"
    path = tmp_path / "TP2_GradCAM.ipynb"
    path.write_text(json.dumps(document))
    notes = read_submission(path, course.source_notebook).notes
    assert len(notes) == 1 and "`test_grad_cam` was changed" in notes[0]
