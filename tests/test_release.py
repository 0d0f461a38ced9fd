"""The student release (``gradcam-kit release``, committed in ``release/TP2_GradCAM/``).

* it is up to date and deterministic: regenerating it in a copy of the course gives the
  committed bytes, twice, even with caches lying in the source folder;
* it holds the notebook and tp2_utils.py, nothing else;
* it holds no solution code, no hidden tests and nothing from solutions/ or autograder_tests/;
* run top to bottom, it fails only inside the stubs of the seven graded functions
  (NotImplementedError); the stubs of the ungraded exploration cells do not raise.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import nbformat
import pytest

from gradcam_kit.course import ASSIGNMENT, HELPER_MODULE, NOTEBOOK, Course
from gradcam_kit.errors import KitError
from gradcam_kit.grading.notebook import GRADED_FUNCTIONS
from gradcam_kit.release import generate_release

SECRET_REGIONS = [("### BEGIN SOLUTION", "### END SOLUTION"), ("### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")]


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
# Nothing secret in the release
# --------------------------------------------------------------------------------------------
def normalise(line: str) -> str:
    return " ".join(line.split())


def is_trivial(line: str) -> bool:
    """Lines too generic to reveal anything: blank, punctuation, a lone keyword or delimiter."""
    if len(re.sub(r"[^A-Za-z0-9]", "", line)) < 4:
        return True
    return line in {"else:", "try:", "finally:", "pass", "return", '"""', "'''", "```", "```python"}


def split_source(notebook) -> tuple[list[str], list[str]]:
    """(secret lines, public lines) of the source notebook.

    Secret: the lines inside solution and hidden-test regions, and the text of markdown
    solution cells (written answers). Public: everything else (setup, tests' visible parts,
    signatures and docstrings, instructions).
    """
    secret, public = [], []
    for cell in notebook.cells:
        info = cell.metadata.get("nbgrader", {})
        lines = cell.source.splitlines()
        if cell.cell_type == "markdown" and info.get("solution"):
            secret += lines
            continue
        inside = None
        for line in lines:
            stripped = line.strip()
            begin = next((end for start, end in SECRET_REGIONS if stripped.startswith(start)), None)
            if inside is None and begin is not None:
                inside = begin
            elif inside is not None and stripped.startswith(inside):
                inside = None
            elif inside is not None:
                secret.append(line)
            elif cell.cell_type == "code":
                public.append(line)
    return secret, public


def release_lines(course: Course) -> list[str]:
    notebook = nbformat.read(course.release_dir / NOTEBOOK, as_version=4)
    lines = [line for cell in notebook.cells for line in cell.source.splitlines()]
    lines += (course.release_dir / HELPER_MODULE).read_text(encoding="utf-8").splitlines()
    return [normalise(line) for line in lines]


def find_leaks(secret: list[str], public: list[str], released: list[str]) -> list[str]:
    """Non-trivial secret lines that the release shows (as a line, or inside a line)."""
    public_set = {normalise(line) for line in public}
    released_set = set(released)
    released_text = "\n".join(released)
    leaks = []
    for line in dict.fromkeys(normalise(s) for s in secret):
        if is_trivial(line) or line in public_set:
            continue
        if line in released_set or (len(line) >= 24 and line in released_text):
            leaks.append(line)
    return leaks


def secret_files(course: Course) -> list[Path]:
    files = sorted(course.solutions_dir.glob("*.py")) + sorted(course.solutions_dir.glob("*.md"))
    if course.autograder_dir.is_dir():
        files += sorted(p for p in course.autograder_dir.rglob("*.py") if "__pycache__" not in p.parts)
    return files


@pytest.fixture(scope="module")
def source_split(course):
    """(secret, public) lines; the shipped helper module is public too."""
    secret, public = split_source(nbformat.read(course.source_notebook, as_version=4))
    return secret, public + course.helper_module.read_text(encoding="utf-8").splitlines()


def test_release_holds_no_solution_and_no_hidden_test(course, source_split):
    secret, public = source_split
    assert len([s for s in secret if not is_trivial(normalise(s))]) > 50, "the check found almost no secret lines"
    leaks = find_leaks(secret, public, release_lines(course))
    assert not leaks, f"solution or hidden-test lines in the release: {leaks}"
    text = (course.release_dir / NOTEBOOK).read_text(encoding="utf-8")
    for marker in ["BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "gradcam_kit", "run_hidden_test",
                   "solutions/rubric.md"]:
        assert marker not in text, f"{marker!r} in the released notebook"


def test_release_holds_nothing_from_solutions_or_autograder_tests(course, source_split):
    _, public = source_split
    released = release_lines(course)
    released_names = {p.name for p in course.release_dir.rglob("*")}
    files = secret_files(course)
    assert any(p.name == "rubric.md" for p in files)
    for path in files:
        assert path.name not in released_names, f"{path.name} was copied into the release"
        leaks = find_leaks(path.read_text(encoding="utf-8").splitlines(), public, released)
        assert not leaks, f"lines of {path.relative_to(course.root)} in the release: {leaks}"


def test_the_leak_check_can_fail(course, source_split):
    secret, public = source_split
    released = release_lines(course)
    candidates = [normalise(s) for s in secret if not is_trivial(normalise(s)) and normalise(s) not in public]
    short = next(line for line in candidates if len(line) < 24)
    long = next(line for line in candidates if len(line) >= 40)
    assert find_leaks(secret, public, released + [short]) == [short]
    assert find_leaks(secret, public, released + [f"x = 1; {long}  # pasted"]) == [long]


def test_release_notebook_shape(course):
    source = nbformat.read(course.source_notebook, as_version=4)
    release = nbformat.read(course.release_dir / NOTEBOOK, as_version=4)
    assert release.metadata["kernelspec"]["name"] == "python3"
    ids = [c.metadata.get("nbgrader", {}).get("grade_id") for c in source.cells]
    assert [c.metadata.get("nbgrader", {}).get("grade_id") for c in release.cells] == ids
    for cell in release.cells:
        info = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None
        if info.get("solution") and cell.cell_type == "code" and info["grade_id"] in GRADED_FUNCTIONS:
            assert cell.source.endswith("    # YOUR CODE HERE\n    raise NotImplementedError()"), info["grade_id"]
        elif info.get("solution") and cell.cell_type == "code":
            # an ungraded exploration cell: a stub that does not raise, so that Restart and Run All goes on
            assert cell.source.endswith("\n# YOUR CODE HERE") and "raise" not in cell.source, info["grade_id"]
        if info.get("solution") and cell.cell_type == "markdown":
            assert cell.source == "YOUR ANSWER HERE", info["grade_id"]
        if info.get("grade") or info.get("locked"):
            assert "checksum" in info, f"{info['grade_id']}: nbgrader records a checksum"


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
