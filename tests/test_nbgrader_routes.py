"""The nbgrader routes of the README, with the course's own ``nbgrader_config.py``.

On the stand-in course (fake judge, see ``fake_course``), with this repository's
``nbgrader_config.py``, through the real nbgrader commands:

* plain ``nbgrader autograde`` restores the released test cells without a checksum warning
  (and still reports a locked cell that was really edited);
* formgrader's "Autograde" button (nbgrader's API) and plain ``nbgrader autograde`` cannot replace
  what ``gradcam-kit grade`` recorded: they refuse and say what to do;
* ``nbgrader generate_feedback`` shows no hidden test;
* ``nbgrader zip_collect`` collects a Moodle download, under the course's student ids.
"""

from __future__ import annotations

import io
import shutil
import zipfile
from pathlib import Path

import nbformat
import pytest

from gradcam_kit.contract import ALLOW_PLAIN_AUTOGRADE_ENV as ALLOW_ENV
from gradcam_kit.course import ASSIGNMENT, NOTEBOOK, Course
from gradcam_kit.grading.batch import grade_course
from gradcam_kit.grading.nbgrader_settings import NbgraderSettings
from gradcam_kit.release import generate_release
from fake_course import REPO_ROOT, gradebook_scores, kit_env, submit, tree_hashes

HIDDEN_CODE = ("BEGIN HIDDEN TESTS", "END HIDDEN TESTS", "run_hidden_test", "gradcam_kit.nbgrader_bridge")


def run_nbgrader(root: Path, *args: str, **env: str):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=root, capture_output=True, text=True,
                          env=kit_env(**env), timeout=600)


@pytest.fixture
def course(fake_course, tmp_path, monkeypatch) -> Course:
    """The stand-in course with this repository's ``nbgrader_config.py``, released again."""
    shutil.copy(REPO_ROOT / "nbgrader_config.py", fake_course.root / "nbgrader_config.py")
    fake_course.gradebook.unlink()  # another course id: a new gradebook
    shutil.rmtree(fake_course.release_dir)
    generate_release(fake_course)
    monkeypatch.setenv("GRADCAM_HIDDEN_CACHE", str(tmp_path / "hidden-cache"))
    monkeypatch.delenv(ALLOW_ENV, raising=False)
    return fake_course


def formgrader_api(course: Course):
    """nbgrader's API as formgrader uses it, with the course's configuration."""
    from nbgrader.apps.api import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    settings = NbgraderSettings.of(course)
    return NbGraderAPI(coursedir=CourseDirectory(config=settings.config), config=settings.config)


def autograded(course: Course, student: str) -> Path:
    return course.root / "autograded" / student / ASSIGNMENT / NOTEBOOK


# ---------------------------------------------------------------------------------------------
# checksums
# ---------------------------------------------------------------------------------------------
def test_plain_autograde_restores_released_test_cells_without_checksum_warnings(course):
    submit(course, "alice")
    edited = submit(course, "mallory")
    notebook = nbformat.read(str(edited), as_version=4)
    cell = next(c for c in notebook.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "test_grad_cam")
    cell.source = "pass  # the student emptied the test"
    nbformat.write(notebook, str(edited))

    result = run_nbgrader(course.root, "autograde", ASSIGNMENT)

    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "Attribute 'checksum'" in line]
    assert len(warnings) == 1 and "test_grad_cam" in warnings[0], warnings  # mallory's edit only
    for student in ("alice", "mallory"):
        cells = {c.metadata.get("nbgrader", {}).get("grade_id"): c
                 for c in nbformat.read(str(autograded(course, student)), as_version=4).cells}
        assert 'run_hidden_test("test_grad_cam")' in cells["test_grad_cam"].source, "hidden tests not restored"
    assert gradebook_scores(course)["alice"]["test_grad_cam"] == 2.0
    assert gradebook_scores(course)["mallory"]["test_grad_cam"] == 2.0  # the original test ran


# ---------------------------------------------------------------------------------------------
# formgrader's Autograde button after gradcam-kit grade
# ---------------------------------------------------------------------------------------------
def test_formgrader_autograde_cannot_replace_the_kit_s_grades(course, monkeypatch):
    submit(course, "alice", bugs=("grad_cam",))
    submit(course, "bob")
    assert grade_course(course, students=["alice"], out=io.StringIO()) == 0
    kit_copy = tree_hashes(autograded(course, "alice").parent)
    scores = gradebook_scores(course)

    result = formgrader_api(course).autograde(ASSIGNMENT, "alice")  # the button, on alice

    assert not result["success"]
    message = result["error"] + result.get("log", "")
    for expected in ("Not autograded", "alice was graded by gradcam-kit grade", "gradcam-kit grade --student alice --force",
                     ALLOW_ENV):
        assert expected in message, message
    assert tree_hashes(autograded(course, "alice").parent) == kit_copy, "the kit's autograded copy changed"
    assert gradebook_scores(course) == scores, "the gradebook changed"

    # a student the kit has not graded: the button works as usual
    assert formgrader_api(course).autograde(ASSIGNMENT, "bob")["success"]
    assert gradebook_scores(course)["bob"]["test_grad_cam"] == 2.0

    # the command line refuses too, and says so
    result = run_nbgrader(course.root, "autograde", ASSIGNMENT, "--force")
    assert result.returncode == 1 and "gradcam-kit grade --student alice --force" in result.stderr
    assert tree_hashes(autograded(course, "alice").parent) == kit_copy

    # asked for explicitly, plain nbgrader replaces the kit's grades
    monkeypatch.setenv(ALLOW_ENV, "1")
    assert formgrader_api(course).autograde(ASSIGNMENT, "alice")["success"]
    assert tree_hashes(autograded(course, "alice").parent) != kit_copy


# ---------------------------------------------------------------------------------------------
# feedback
# ---------------------------------------------------------------------------------------------
def test_nbgrader_feedback_shows_no_hidden_test(course):
    submit(course, "alice", bugs=("grad_cam",))
    submit(course, "bob", bugs=("grad_cam",))
    assert grade_course(course, students=["alice"], out=io.StringIO()) == 0  # the kit's autograded copy
    assert run_nbgrader(course.root, "autograde", ASSIGNMENT, "--student", "bob").returncode == 0  # nbgrader's

    result = run_nbgrader(course.root, "generate_feedback", ASSIGNMENT)

    assert result.returncode == 0, result.stderr
    for student in ("alice", "bob"):
        page = (course.feedback_dir / student / ASSIGNMENT / "TP2_GradCAM.html").read_text()
        shown = [code for code in HIDDEN_CODE if code in page]
        assert not shown, f"{student}'s feedback shows hidden tests: {shown}"
        assert "gives a wrong result" in page, "the judge's message for the student is gone"
        assert "grad_cam: the visible checks pass" in page, "the visible tests are gone"
    # the instructor's copy (formgrader) keeps them
    assert "run_hidden_test" in autograded(course, "bob").read_text()


# ---------------------------------------------------------------------------------------------
# an LMS download
# ---------------------------------------------------------------------------------------------
def moodle_archive(course: Course, path: Path, entries: dict[str, bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as bundle:
        for name, data in entries.items():
            bundle.writestr(name, data)


def test_zip_collect_files_a_moodle_download_under_the_course_s_student_ids(course):
    notebooks = {}
    for student in ("jdoe", "asmith", "stranger"):
        notebooks[student] = submit(course, student).read_bytes()
    shutil.rmtree(course.submitted_dir)
    moodle_archive(course, course.root / "downloaded" / ASSIGNMENT / "archive" / "L3-TP2 Grad-CAM-1042.zip", {
        # "Download submissions in folders" (Moodle's default) ...
        f"Jane Doe_1234567_assignsubmission_file_/{NOTEBOOK}": notebooks["jdoe"],
        "Jane Doe_1234567_assignsubmission_file_/notes.txt": b"not a notebook",
        # ... or not
        f"Ann-Marie O'Smith_7654321_assignsubmission_file_{NOTEBOOK}": notebooks["asmith"],
        # a participant the roster does not know
        f"Sam Stranger_5550001_assignsubmission_file_/{NOTEBOOK}": notebooks["stranger"],
    })
    (course.root / "lms_roster.csv").write_text(
        "lms_id,student_id,name\n1234567,jdoe,Jane Doe\nParticipant 7654321,asmith,Ann-Marie O'Smith\n")

    result = run_nbgrader(course.root, "zip_collect", ASSIGNMENT)

    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in course.submitted_dir.iterdir()) == ["asmith", "jdoe"]
    for student in ("jdoe", "asmith"):
        assert course.submission(student).read_bytes() == notebooks[student]
    assert "Skipped" in result.stderr and "Sam Stranger" in result.stderr and "5550001,<student id>" in result.stderr
    assert "2 files collected" in result.stderr

    status = grade_course(course, out=io.StringIO())
    assert status == 0 and set(gradebook_scores(course)) == {"jdoe", "asmith"}


def test_the_roster_is_checked(tmp_path):
    from gradcam_kit.lms import RosterError, read_roster

    roster = tmp_path / "lms_roster.csv"
    roster.write_text("lms_id,student_id\n1,a\nParticipant 2, b \n")
    assert read_roster(roster) == {"1": "a", "2": "b"}
    for text, problem in [("id,student\n1,a\n", "no column lms_id, student_id"),
                          ("lms_id,student_id\n1,a/b\n", "not a usable student id"),
                          ("lms_id,student_id\n1,a\n1,b\n", "two student ids")]:
        roster.write_text(text)
        with pytest.raises(RosterError, match=problem):
            read_roster(roster)
