"""The student release (``gradcam-kit release``, committed in ``release/TP2_GradCAM/``).

* it is up to date and deterministic: regenerating it in a copy of the course gives the
  committed bytes, twice, even with caches lying in the source folder;
* it holds the notebook and tp2_utils.py, nothing else;
* it holds no solution code, no hidden tests and nothing from solutions/ or autograder_tests/;
* run top to bottom, it fails only inside the stubs of the seven graded functions
  (NotImplementedError); the stubs of the ungraded exploration cells do not raise.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest

from gradcam_kit.course import ASSIGNMENT, HELPER_MODULE, NOTEBOOK, Course
from gradcam_kit.errors import KitError
from gradcam_kit.grading.nbgrader_settings import load_nbgrader_config
from gradcam_kit.contract import GRADED_FUNCTIONS
from gradcam_kit.leaks import (
    NbgraderMarkers,
    find_leaks,
    is_trivial,
    normalise,
    release_leaks,
    released_lines,
    secret_files,
    split_source,
)
from gradcam_kit.release import generate_release


def scratch_course(course: Course, where: Path) -> Course:
    """A copy of what nbgrader needs to generate the release: config and source folder."""
    where.mkdir(parents=True, exist_ok=True)
    shutil.copy(course.root / "nbgrader_config.py", where)
    shutil.copytree(course.root / "source", where / "source",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints"))
    return Course.locate(where)


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_committed_release_is_up_to_date_and_deterministic(course, tmp_path):
    committed = files_under(course.release_dir)
    assert committed, f"{course.release_dir} is empty: run `gradcam-kit release`"
    scratch = scratch_course(course, tmp_path / "course")
    # What tests, editors and Jupyter leave next to the helper module must not travel.
    cache = scratch.source_dir / "__pycache__"
    cache.mkdir()
    (cache / "tp2_utils.cpython-311.pyc").write_bytes(b"\0" * 16)
    (scratch.source_dir / "stray.pyc").write_bytes(b"\0" * 16)
    (scratch.source_dir / ".ipynb_checkpoints").mkdir()
    (scratch.source_dir / ".ipynb_checkpoints" / f"{ASSIGNMENT}-checkpoint.ipynb").write_text("{}")
    for run in ("first", "second"):
        generate_release(scratch)
        regenerated = files_under(scratch.release_dir)
        assert sorted(regenerated) == sorted(committed), f"{run} run: other files than the committed release"
        stale = [name for name in committed if regenerated[name] != committed[name]]
        assert not stale, f"{run} run: {stale} differ from the committed release; run `gradcam-kit release`"
    assert (scratch.root / "gradebook.db").is_file(), "nbgrader records the assignment in its database"


def test_release_holds_the_notebook_and_the_helper_module(course):
    assert sorted(files_under(course.release_dir)) == sorted([NOTEBOOK, HELPER_MODULE])
    assert (course.release_dir / HELPER_MODULE).read_bytes() == course.helper_module.read_bytes()


def test_release_refuses_a_stray_file_in_the_source_folder(course, tmp_path):
    scratch = scratch_course(course, tmp_path / "course")
    (scratch.source_dir / "answers_draft.py").write_text("SECRET = 1\n")
    with pytest.raises(KitError, match="answers_draft.py"):
        generate_release(scratch)


# --------------------------------------------------------------------------------------------
# Nothing secret in the release (gradcam_kit.leaks: the check `gradcam-kit release` runs too)
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def markers(course):
    return NbgraderMarkers.of(load_nbgrader_config(course))


@pytest.fixture(scope="module")
def source_split(course, markers):
    """(secret, public) lines; the shipped helper module is public too."""
    secret, public = split_source(nbformat.read(course.source_notebook, as_version=4), markers)
    return secret, public + course.helper_module.read_text(encoding="utf-8").splitlines()


def test_release_holds_no_solution_and_no_hidden_test(course, source_split):
    secret, public = source_split
    assert len([s for s in secret if not is_trivial(normalise(s))]) > 50, "the check found almost no secret lines"
    assert not release_leaks(course, course.release_dir), "solution or hidden-test lines in the release"
    text = (course.release_dir / NOTEBOOK).read_text(encoding="utf-8")
    for marker in ["BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "gradcam_kit", "run_hidden_test",
                   "solutions/rubric.md"]:
        assert marker not in text, f"{marker!r} in the released notebook"


def test_release_holds_nothing_from_solutions_or_autograder_tests(course, source_split):
    _, public = source_split
    released = released_lines(course.release_dir)
    released_names = {p.name for p in course.release_dir.rglob("*")}
    files = secret_files(course)
    assert any(p.name == "rubric.md" for p in files)
    for path in files:
        assert path.name not in released_names, f"{path.name} was copied into the release"
        leaks = find_leaks(path.read_text(encoding="utf-8").splitlines(), public, released)
        assert not leaks, f"lines of {path.relative_to(course.root)} in the release: {leaks}"


def test_the_leak_check_can_fail(course, source_split):
    secret, public = source_split
    released = released_lines(course.release_dir)
    candidates = [normalise(s) for s in secret if not is_trivial(normalise(s)) and normalise(s) not in public]
    short = next(line for line in candidates if len(line) < 24)
    long = next(line for line in candidates if len(line) >= 40)
    assert find_leaks(secret, public, released + [short]) == [short]
    assert find_leaks(secret, public, released + [f"x = 1; {long}  # pasted"]) == [long]


def release_shape_problems(source, release, markers: NbgraderMarkers) -> list[str]:
    """How ``release`` differs from what nbgrader makes of ``source`` (cells, stubs, outputs, checksums)."""
    problems = []
    if release.metadata.get("kernelspec", {}).get("name") != "python3":
        problems.append("the kernel is not python3")
    ids = [c.metadata.get("nbgrader", {}).get("grade_id") for c in source.cells]
    if [c.metadata.get("nbgrader", {}).get("grade_id") for c in release.cells] != ids:
        problems.append("the cells differ from the source's")
    for cell in release.cells:
        info = cell.metadata.get("nbgrader", {})
        name = info.get("grade_id")
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None):
            problems.append(f"{name}: outputs left")
        lines = {line.strip() for line in cell.source.splitlines()}
        stub = markers.code_stub.splitlines()
        if info.get("solution") and cell.cell_type == "code" and name in GRADED_FUNCTIONS and \
                not all(line.strip() in lines for line in stub):
            problems.append(f"{name}: no code stub")
        if info.get("solution") and cell.cell_type == "code" and name not in GRADED_FUNCTIONS and \
                (stub[0].strip() not in lines or any(line.strip() in lines for line in stub[1:])):
            problems.append(f"{name}: not the quiet stub of an ungraded cell (Restart and Run All must go on)")
        if info.get("solution") and cell.cell_type == "markdown" and markers.text_stub not in cell.source:
            problems.append(f"{name}: no text stub")
        if (info.get("grade") or info.get("locked")) and "checksum" not in info:
            problems.append(f"{name}: nbgrader records a checksum")
    return problems


def test_release_notebook_shape(course, markers):
    source = nbformat.read(course.source_notebook, as_version=4)
    release = nbformat.read(course.release_dir / NOTEBOOK, as_version=4)
    assert not release_shape_problems(source, release, markers)
    answers = [c for c in release.cells if c.cell_type == "markdown" and c.metadata.get("nbgrader", {}).get("solution")]
    assert answers and all(c.source == markers.text_stub for c in answers), "the model answers are in the rubric"
    assert release_shape_problems(source, source, markers), "the shape check can fail"


# --------------------------------------------------------------------------------------------
# The release runs, and fails only in the stubs
# --------------------------------------------------------------------------------------------
def test_release_runs_top_to_bottom_failing_only_in_the_stubs(course, image_paths, tmp_path, monkeypatch):
    from nbclient import NotebookClient

    student = tmp_path / "student"
    shutil.copytree(course.release_dir, student)
    monkeypatch.setenv("TP2_IMAGES_DIR", str(course.images_dir))
    monkeypatch.setenv("GRADCAM_WEIGHTS", "random")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    notebook = nbformat.read(student / NOTEBOOK, as_version=4)
    client = NotebookClient(notebook, kernel_name="python3", timeout=300, allow_errors=True,
                            resources={"metadata": {"path": str(student)}})
    client.execute()

    stubbed = set()
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id", "(plain cell)")
        errors = [o for o in cell.outputs if o.output_type == "error"]
        for error in errors:
            assert error.ename == "NotImplementedError", \
                f"{grade_id} fails with {error.ename}: {error.evalue}\n" + "\n".join(error.traceback)[-3000:]
        if errors:
            stubbed.add(grade_id)
    expected = {f"test_{name}" for name in GRADED_FUNCTIONS}   # the exploration cells' stubs do not raise
    assert stubbed == expected, f"cells that stopped on a stub: {sorted(stubbed)}"


# --------------------------------------------------------------------------------------------
# Editing the assignment: what nbgrader makes is accepted, a refused or leaking release changes nothing
# --------------------------------------------------------------------------------------------
def full_scratch_course(course: Course, where: Path) -> Course:
    """A released copy of the course with its secrets (solutions/, autograder_tests/), as instructors have it."""
    scratch = scratch_course(course, where)
    for name in ("solutions", "autograder_tests"):
        shutil.copytree(course.root / name, scratch.root / name, ignore=shutil.ignore_patterns("__pycache__"))
    generate_release(scratch)
    return scratch


def add_cells(course: Course, *cells, after: str = "part5_answer") -> None:
    notebook = nbformat.read(course.source_notebook, as_version=4)
    index = next(i for i, c in enumerate(notebook.cells) if c.metadata.get("nbgrader", {}).get("grade_id") == after)
    notebook.cells[index + 1:index + 1] = list(cells)
    nbformat.write(notebook, str(course.source_notebook))


def answer_cell(grade_id: str, source: str, points: int = 2):
    return nbformat.v4.new_markdown_cell(source, metadata={"nbgrader": {
        "grade": True, "grade_id": grade_id, "locked": False, "points": points, "schema_version": 3,
        "solution": True, "task": False}})


def leftovers(course: Course) -> list[str]:
    return [p.name for p in course.root.iterdir() if p.name.startswith(".release-")]


def test_a_question_with_nbgrader_s_stock_answer_cell_is_released(course, tmp_path, markers):
    scratch = full_scratch_course(course, tmp_path / "course")
    add_cells(scratch,
              nbformat.v4.new_markdown_cell("**Question 6.** What does Grad-CAM show for a wrong prediction?"),
              answer_cell("part6_answer", "YOUR ANSWER HERE"),
              nbformat.v4.new_markdown_cell("**Question 7.** Which layer would you explain, and why?"),
              answer_cell("part7_answer", "Explain here.\n### BEGIN SOLUTION\nThe last convolutional layer: it keeps "
                                          "the spatial layout and the most semantic features.\n### END SOLUTION"))

    generate_release(scratch)

    assert not release_leaks(scratch, scratch.release_dir)
    source = nbformat.read(scratch.source_notebook, as_version=4)
    release = nbformat.read(scratch.release_dir / NOTEBOOK, as_version=4)
    assert not release_shape_problems(source, release, markers)
    cells = {c.metadata.get("nbgrader", {}).get("grade_id"): c for c in release.cells}
    assert cells["part6_answer"].source == "YOUR ANSWER HERE"
    assert cells["part7_answer"].source == "Explain here.\nYOUR ANSWER HERE"
    # the check still sees the model answer of the region, were it shown
    secret, public = split_source(source, markers)
    public += scratch.helper_module.read_text(encoding="utf-8").splitlines()
    model = "The last convolutional layer: it keeps the spatial layout and the most semantic features."
    assert find_leaks(secret, public, released_lines(scratch.release_dir) + [model]) == [model]


def test_a_refused_release_leaves_release_and_says_what_to_do(course, tmp_path):
    from nbgrader.api import Gradebook

    from gradcam_kit.grading.nbgrader_settings import NbgraderSettings

    scratch = full_scratch_course(course, tmp_path / "course")
    settings = NbgraderSettings.of(scratch)
    with Gradebook(settings.db_url, settings.course_id) as gradebook:  # a submission was collected
        gradebook.add_student("alice")
        gradebook.add_submission(ASSIGNMENT, "alice")
    before = files_under(scratch.release_dir)
    add_cells(scratch, nbformat.v4.new_markdown_cell("**Question 6.** Why?"), answer_cell("part6_answer", "Because."))

    with pytest.raises(KitError) as error:
        generate_release(scratch)

    message = str(error.value)
    for expected in ("nbgrader refused", "there are submissions", "new: part6_answer", "release/ was left as it was",
                     "keep every cell that has a grade_id", f"nbgrader db assignment remove {ASSIGNMENT} --force"):
        assert expected in message, message
    assert files_under(scratch.release_dir) == before, "the committed release changed"
    assert not leftovers(scratch)

    # changing points (not cells) is allowed with submissions
    notebook = nbformat.read(scratch.source_notebook, as_version=4)
    notebook.cells = [c for c in notebook.cells if c.metadata.get("nbgrader", {}).get("grade_id") != "part6_answer"]
    for cell in notebook.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "test_channel_weights":
            cell.metadata.nbgrader["points"] = 2
    nbformat.write(notebook, str(scratch.source_notebook))
    generate_release(scratch)
    assert files_under(scratch.release_dir) != before


def test_a_release_that_would_show_a_solution_is_refused(course, tmp_path, markers):
    scratch = full_scratch_course(course, tmp_path / "course")
    before = files_under(scratch.release_dir)
    secret, public = split_source(nbformat.read(scratch.source_notebook, as_version=4), markers)
    line = next(normalise(s) for s in secret
                if len(normalise(s)) > 30 and not is_trivial(normalise(s)) and normalise(s) not in public)
    notebook = nbformat.read(scratch.source_notebook, as_version=4)
    notebook.cells[0].source += f"\n\nHint: `{line}`"
    nbformat.write(notebook, str(scratch.source_notebook))

    with pytest.raises(KitError, match="would show 1 line") as error:
        generate_release(scratch)

    assert line in str(error.value) and "release/ was left as it was" in str(error.value)
    assert files_under(scratch.release_dir) == before
    assert not leftovers(scratch)
