"""Student data never goes into git: every folder and file that holds it is ignored.

The course is a git repository (the README tells instructors to commit ``release/``), so each
path where nbgrader or the kit writes names, emails, submissions or grades must be ignored by the
repository's ``.gitignore``. The test makes them the way an instructor would (the real nbgrader
commands on the stand-in course), in a fresh git repository holding the course's ``.gitignore``,
and asks git what it would add.
"""

from __future__ import annotations

import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from gradcam_kit.course import ASSIGNMENT, NOTEBOOK
from fake_course import REPO_ROOT, nbgrader, submit

#: Every path of a course that holds student data, as the README lists them.
STUDENT_DATA = ("submitted/", "autograded/", "feedback/", "downloaded/", "grades/", "grades.csv",
                "gradebook.db", "exchange/", "students.csv", "lms_roster.csv", "nbgrader.log")


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout


def would_add(root: Path) -> list[str]:
    """The files ``git add --all`` would stage."""
    return [line.split(" ", 1)[1].strip("'") for line in git(root, "add", "--all", "--dry-run").splitlines()]


@pytest.fixture
def repository(fake_course):
    """The stand-in course as a git repository with this repository's ``.gitignore``."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    shutil.copy(REPO_ROOT / ".gitignore", fake_course.root / ".gitignore")
    git(fake_course.root, "init", "-q")
    return fake_course


def test_every_student_data_path_is_ignored(repository):
    root = repository.root
    # what nbgrader and the kit write, made by their own commands where they exist
    submit(repository, "alice")
    (root / "students.csv").write_text("id,first_name,last_name,email\nalice,Alice,Liddell,alice@example.org\n")
    nbgrader(root, "db", "student", "import", "students.csv")
    archive = root / "downloaded" / ASSIGNMENT / "archive"
    archive.mkdir(parents=True)
    with zipfile.ZipFile(archive / "moodle.zip", "w") as bundle:
        bundle.write(repository.submission("alice"), f"Alice Liddell_101_assignsubmission_file_/{NOTEBOOK}")
    (root / "lms_roster.csv").write_text("lms_id,student_id\n101,alice\n")
    nbgrader(root, "zip_collect", ASSIGNMENT)  # extracts into downloaded/ (collects nothing without a regexp)
    nbgrader(root, "autograde", ASSIGNMENT)
    nbgrader(root, "generate_feedback", ASSIGNMENT)
    nbgrader(root, "export")  # grades.csv
    (root / "grades").mkdir()
    (root / "grades" / "alice.json").write_text("{}")
    (root / "exchange" / "gradcam_tp2" / "inbound").mkdir(parents=True)
    (root / "exchange" / "gradcam_tp2" / "inbound" / "alice+TP2_GradCAM+2026").write_text("x")
    (root / "nbgrader.log").write_text("alice\n")

    made = [path for path in STUDENT_DATA if (root / path.rstrip("/")).exists()]
    assert made == list(STUDENT_DATA), f"the test did not make {sorted(set(STUDENT_DATA) - set(made))}"
    staged = would_add(root)
    leaked = [name for name in staged if any(name == path or name.startswith(path) for path in STUDENT_DATA)]
    assert not leaked, f"student data would be committed: {leaked}"
    # what belongs in git is still added
    assert f"release/{ASSIGNMENT}/{NOTEBOOK}" in staged
    assert f"source/{ASSIGNMENT}/{NOTEBOOK}" in staged
    assert "nbgrader_config.py" in staged


def test_a_course_in_a_subfolder_of_the_repository_is_covered_too(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    shutil.copy(REPO_ROOT / ".gitignore", tmp_path / ".gitignore")
    git(tmp_path, "init", "-q")
    for path in STUDENT_DATA:
        target = tmp_path / "courses" / "2026" / path.rstrip("/")
        if path.endswith("/"):
            (target / "alice").mkdir(parents=True)
            (target / "alice" / "data.txt").write_text("x")
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("x")
    (tmp_path / "courses" / "2026" / "release").mkdir()
    (tmp_path / "courses" / "2026" / "release" / "kept.txt").write_text("x")
    assert would_add(tmp_path) == [".gitignore", "courses/2026/release/kept.txt"]
