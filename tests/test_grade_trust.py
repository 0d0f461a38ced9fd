"""``gradcam-kit grade`` with a judge it cannot trust blindly: no silent downgrade of isolation, no
grader fault charged to a student, no status forged by a student's text, no student's bytes that
stop the batch (the stand-in course of ``fake_course``: its judge is fast)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from gradcam_kit.course import ASSIGNMENT, GradesFolder
from gradcam_kit.grading.batch import grade_course
from gradcam_kit.host.isolation import available_isolation
from fake_course import gradebook_scores, kit_env, submit



def run_grade(course, *args: str, **env: str) -> subprocess.CompletedProcess:
    """``gradcam-kit grade`` in a process of its own (the isolation probes run afresh there)."""
    return subprocess.run([sys.executable, "-m", "gradcam_kit", "grade", "--course", str(course.root), *args],
                          capture_output=True, text=True, timeout=600, env=kit_env(**env))


@pytest.fixture
def broken_bwrap(tmp_path) -> str:
    """A bubblewrap that is installed but cannot start a sandbox (as with user namespaces disabled)."""
    program = tmp_path / "bwrap"
    program.write_text("#!/bin/sh\necho 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n")
    program.chmod(0o755)
    return str(program)


# --- no silent downgrade ---------------------------------------------------------------------------
def test_the_level_is_said_before_grading_and_in_the_summary(fake_course):
    submit(fake_course, "alice")
    done = run_grade(fake_course)
    assert done.returncode == 0, done.stderr
    level = available_isolation()[0]
    assert f"isolation level: {level}" in done.stderr.splitlines()[0]
    assert f"Isolation level: {level}" in done.stdout


def test_grading_refuses_to_start_below_the_strongest_level(fake_course, broken_bwrap):
    submit(fake_course, "alice")
    done = run_grade(fake_course, GRADCAM_BWRAP=broken_bwrap)
    assert done.returncode == 1
    message = done.stderr
    assert "refusing to grade below the strongest isolation level this machine supports, `bwrap`" in message
    assert "setting up uid map: Permission denied" in message, "the error must say what failed"
    assert "--isolation" in message and "user namespaces" in message, "and how to fix it"
    assert not (fake_course.grades_dir / "alice.json").exists() and gradebook_scores(fake_course) == {}


def test_a_weaker_level_when_asked_for_is_recorded_everywhere(fake_course, broken_bwrap):
    submit(fake_course, "alice")
    weaker = next(level for level in ("uid", "process") if level in available_isolation())
    done = run_grade(fake_course, "--isolation", weaker, GRADCAM_BWRAP=broken_bwrap)
    assert done.returncode == 0, done.stderr
    assert f"below the strongest this machine supports (bwrap" in done.stderr
    kept = json.loads((fake_course.grades_dir / "alice.json").read_text())
    assert kept["isolation"] == weaker
    assert kept["isolation_policy"] == {"level": weaker, "strongest": "bwrap", "requested": weaker,
                                        "below_strongest": True}
    csv = (fake_course.grades_dir / f"{ASSIGNMENT}.csv").read_text().splitlines()
    assert csv[0].endswith(",isolation") and csv[1].endswith(f",{weaker} (below bwrap)")
    page = (fake_course.grades_dir / "feedback" / "alice.html").read_text()
    assert f"Graded at the isolation level <code>{weaker}</code>, below the strongest" in page


def test_asking_for_a_level_that_does_not_work_is_an_error(fake_course, broken_bwrap):
    submit(fake_course, "alice")
    done = run_grade(fake_course, "--isolation", "bwrap", GRADCAM_BWRAP=broken_bwrap)
    assert done.returncode == 1 and "--isolation bwrap: that level does not work here" in done.stderr


# --- grader faults are not students' failures --------------------------------------------------------
GRADER_ERROR_CONFTEST = '''
def pytest_sessionfinish(session, exitstatus):
    import json, os
    from pathlib import Path
    path = session.config.getoption("--results-json")
    if path and "STUDENT=bob" in "\\n".join(session.config.gradcam_sources.values()):
        data = json.loads(Path(path).read_text())
        data["tests"]["test_grad_cam"] = {"outcome": "error", "points": 0.0, "max_points": 2.0,
                                          "feedback": "internal grading error",
                                          "grader_error": "the worker could not import the kit"}
        Path(path).write_text(json.dumps(data))
'''


def test_a_grader_error_writes_no_score_and_fails_the_run(fake_course):
    submit(fake_course, "alice")
    submit(fake_course, "bob")
    conftest = fake_course.autograder_dir / "conftest.py"
    conftest.write_text(conftest.read_text().replace("def pytest_sessionfinish(session, exitstatus):",
                                                     "def _fake_sessionfinish(session, exitstatus):")
                        + GRADER_ERROR_CONFTEST.replace("def pytest_sessionfinish(session, exitstatus):\n",
                                                        "def pytest_sessionfinish(session, exitstatus):\n"
                                                        "    _fake_sessionfinish(session, exitstatus)\n"))
    out = __import__("io").StringIO()
    status = grade_course(fake_course, workers=1, out=out, show_paths=False)
    summary = out.getvalue()
    assert status == 1, summary
    bob = next(line for line in summary.splitlines() if line.startswith("bob"))
    assert "FAILED (grader error: test_grad_cam: the worker could not import the kit)" in bob
    assert "0/" not in bob
    assert set(gradebook_scores(fake_course)) == {"alice"}, "no score may be written for bob"
    assert GradesFolder(fake_course.grades_dir).load_marker("bob") is None
    assert "bob" not in (fake_course.grades_dir / f"{ASSIGNMENT}.csv").read_text()


# --- a student's text cannot forge the judge's status -----------------------------------------------
ECHOING_CONFTEST = '''
def pytest_terminal_summary(terminalreporter, config):
    # as the judge's report shows a student's exception message: what the cell holds after ECHO=
    for source in config.gradcam_sources.values():
        if "ECHO=" in source:
            terminalreporter.write(source.split("ECHO=", 1)[1].replace("\\\\n", "\\n"))
'''


def test_a_students_text_cannot_forge_another_students_status(fake_course):
    """mallory's text holds the judge's old "done" lines for the students after her in the series."""
    conftest = fake_course.autograder_dir / "conftest.py"
    conftest.write_text(conftest.read_text() + ECHOING_CONFTEST)
    forged = "".join(f"\\n[autograder] {name}.ipynb: exit status 0, 1.0 s\\n" for name in ("nina", "oscar"))
    submit(fake_course, "mallory", marker=f"ECHO={forged}")
    submit(fake_course, "nina", marker="JUDGE_SLEEP=2")
    submit(fake_course, "oscar", marker="JUDGE_SLEEP=2")
    out = __import__("io").StringIO()
    status = grade_course(fake_course, workers=1, out=out, show_paths=False)
    assert status == 0, out.getvalue()
    assert set(gradebook_scores(fake_course)) == {"mallory", "nina", "oscar"}
    log = (fake_course.grades_dir / "logs" / "mallory.log").read_text()
    assert "[autograder] nina.ipynb: exit status 0" in log, "the forged line reached the judge's output"


# --- one student's bytes never stop the batch --------------------------------------------------------
def _with_lone_surrogate(course) -> None:
    path = course.submission("sam")
    text = path.read_text().replace('"Because the gradients say so."', '"Because \\ud800 the gradients say so."')
    assert '"Because \\ud800 the' in text and json.loads(text)  # valid JSON, holding a lone surrogate
    path.write_text(text)


def test_lone_surrogates_and_an_overlong_timestamp_stop_nobody(fake_course):
    submit(fake_course, "alice")
    submit(fake_course, "sam")
    _with_lone_surrogate(fake_course)
    submit(fake_course, "tim")
    (fake_course.submission("tim").parent / "timestamp.txt").write_text("2024-01-15 10:00:00 " + "x" * 300)
    out = __import__("io").StringIO()
    status = grade_course(fake_course, workers=1, out=out, show_paths=False)
    summary = out.getvalue()
    assert status == 0, summary
    assert set(gradebook_scores(fake_course)) == {"alice", "sam", "tim"}
    copy = fake_course.root / "autograded" / "sam" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
    assert "Because \ufffd the gradients" in nbformat.read(str(copy), as_version=4).cells[-1].source
    kept = json.loads((fake_course.grades_dir / "tim.json").read_text())
    note = next(note for note in kept["grading"]["notes"] if "timestamp.txt" in note)
    assert "longer than 100 bytes" in note and "xxxx" not in note
    assert not (fake_course.root / "autograded" / "tim" / ASSIGNMENT / "timestamp.txt").exists()


def test_an_unexpected_error_while_recording_fails_that_student_alone(fake_course, monkeypatch):
    from gradcam_kit.grading import recording_steps as batch

    submit(fake_course, "alice")
    submit(fake_course, "bob")
    original = batch.keep_artifacts

    def explode(source, destination):
        if destination.name == "bob":
            raise RuntimeError("disk on fire")
        original(source, destination)

    monkeypatch.setattr(batch, "keep_artifacts", explode)
    out = __import__("io").StringIO()
    status = grade_course(fake_course, workers=1, out=out, show_paths=False)
    assert status == 1
    bob = next(line for line in out.getvalue().splitlines() if line.startswith("bob"))
    assert "FAILED (grader error: the judge's artifacts could not be written (RuntimeError: disk on fire))" in bob
    assert set(gradebook_scores(fake_course)) == {"alice"}
