"""The same grade wherever the course and the kit live (README, "Isolation"; issue "Trusted grades").

Each test copies the course somewhere else and grades the source notebook's own solution with
``gradcam-kit grade`` in a process of its own, as an instructor would, then checks the three things
that used to change with the placement: the strongest isolation level this machine has, workers
forked by the zygote, and full marks.

* a course under ``/tmp`` (the workers' sandbox has a ``/tmp`` of its own);
* a course that is another clone of the repository (it holds its own ``gradcam_kit/``), graded by
  the kit installed from this checkout: the judge imports the course's copy, and the worker must
  import the same one;
* the kit installed with ``pip install .`` (not editable) into a virtual environment outside the
  course, and under ``/tmp``;
* a course folder whose path holds spaces, reached through a symbolic link.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat

from gradcam_kit.course import Course
from gradcam_kit.host.isolation import available_isolation
from gradcam_kit.grading.samples import release_notebook, solution_notebook
from fake_course import REPO_ROOT, kit_env

STRONGEST = available_isolation()[0]
COURSE_PARTS = ("source", "autograder_tests", "solutions", "nbgrader_config.py", "TP2_images")


def make_course(root: Path, *, with_kit: bool = False) -> Course:
    """A copy of this course at ``root`` (with the kit's package too when ``with_kit``), with the
    solution submitted by the student ``solution``."""
    root.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints")
    for part in COURSE_PARTS + (("gradcam_kit",) if with_kit else ()):
        source = REPO_ROOT / part
        if source.is_dir():
            shutil.copytree(source, root / part, ignore=ignore)
        else:
            shutil.copy2(source, root / part)
    course = Course.locate(root)
    submission = course.submission("solution")
    submission.parent.mkdir(parents=True)
    source = nbformat.read(str(course.source_notebook), as_version=4)
    nbformat.write(solution_notebook(release_notebook(Course.locate(REPO_ROOT)), source), str(submission))
    return course


def grade(course_arg: Path, program: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess, dict]:
    """``gradcam-kit release`` then ``grade`` in a process of their own; the solution's results."""
    env = kit_env()
    env.pop("PYTHONPATH", None)
    for command in ("release", "grade"):
        done = subprocess.run([*program, command, "--course", str(course_arg)], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=1500)
        assert done.returncode == 0, f"gradcam-kit {command} failed:\n{done.stdout}\n{done.stderr}"
    results = json.loads((Course.locate(course_arg).grades_dir / "solution.json").read_text())
    return done, results


def assert_same_grade(done: subprocess.CompletedProcess, results: dict) -> None:
    earned = sum(test["points"] for test in results["tests"].values())
    possible = sum(test["max_points"] for test in results["tests"].values())
    failed = {name: test["feedback"] for name, test in results["tests"].items() if test["outcome"] != "passed"}
    assert failed == {} and earned == possible == 12, f"{earned}/{possible}: {failed}"
    assert results["isolation"] == STRONGEST, f"graded at {results['isolation']}, not {STRONGEST}"
    if STRONGEST == "bwrap":
        assert results["zygote"], "the worker was not forked by the zygote"
    assert f"isolation level: {STRONGEST}" in done.stderr


KIT = [sys.executable, "-m", "gradcam_kit"]


def test_a_course_under_tmp(tmp_path):
    course = make_course(tmp_path / "course")
    assert str(course.root).startswith(("/tmp/", os.path.realpath("/tmp") + "/"))
    assert_same_grade(*grade(course.root, KIT, cwd=tmp_path))


def test_a_course_that_is_another_clone_with_its_own_kit(tmp_path):
    """The lead's reproduction: the judge (cwd: the course) imports the course's ``gradcam_kit``."""
    course = make_course(tmp_path / "clone", with_kit=True)
    done, results = grade(course.root, KIT, cwd=course.root)
    assert_same_grade(done, results)


def test_the_kit_installed_with_pip_outside_the_course(tmp_path):
    """A virtual environment under /tmp with the kit installed non-editable (its dependencies come
    from this environment's site-packages through a ``.pth`` file, so torch is not installed again)."""
    venv = tmp_path / "venv"
    # without pip: this environment's pip and setuptools (found through the .pth file) install the kit
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    site = next(venv.glob("lib/python3*/site-packages"))
    import sysconfig

    (site / "kit-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    source = tmp_path / "kit-source"  # pip builds in the source folder: not in this checkout
    shutil.copytree(REPO_ROOT / "gradcam_kit", source / "gradcam_kit",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for part in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / part, source / part)
    python = venv / "bin" / "python"
    installed = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                                "-q", str(source)], capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    where = subprocess.run([str(python), "-c", "import gradcam_kit; print(gradcam_kit.__file__)"], cwd="/",
                           capture_output=True, text=True, timeout=120).stdout.strip()
    assert where.startswith(str(site)), f"the kit is not installed in the new environment: {where}"
    course = make_course(tmp_path / "course")
    assert_same_grade(*grade(course.root, [str(venv / "bin" / "gradcam-kit")], cwd=tmp_path))


def test_a_course_path_with_spaces_through_a_symlink(tmp_path):
    course = make_course(tmp_path / "a folder with spaces" / "TP2 course")
    link = tmp_path / "course link"
    link.symlink_to(course.root, target_is_directory=True)
    assert_same_grade(*grade(link, KIT, cwd=tmp_path))


def test_a_grader_that_cannot_start_its_workers_charges_nobody(tmp_path):
    """A fault of the grader's own files (here the course's helper module, which the worker imports
    before any student code, breaks after the release): the student is not graded, no score is
    written, the run fails, and the summary says why."""
    course = make_course(tmp_path / "course")
    env = kit_env()
    done = subprocess.run([*KIT, "release", "--course", str(course.root)], env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    with open(course.helper_module, "a") as helper:
        helper.write("\nraise ImportError('the grader broke its own helper module')\n")
    done = subprocess.run([*KIT, "grade", "--course", str(course.root)], env=env, capture_output=True,
                          text=True, timeout=1500)
    assert done.returncode == 1, done.stdout + done.stderr
    line = next(line for line in done.stdout.splitlines() if line.startswith("solution"))
    assert "FAILED (grader error:" in line and "/12" not in line, line
    assert not (course.grades_dir / "solution.json").exists()
    assert "solution" not in (course.grades_dir / "TP2_GradCAM.csv").read_text()
