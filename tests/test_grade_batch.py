"""``gradcam-kit grade`` on the stand-in course (fake judge): outputs, resume, failures, bad input."""

from __future__ import annotations

import csv
import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from fake_course import gradebook_scores, kit_env, nbgrader, read_json, runs, submit, tree_hashes

from gradcam_kit.course import ASSIGNMENT, NOTEBOOK, GradesFolder
from gradcam_kit.grading.batch import grade_course
from gradcam_kit.grading.gradebook import GradebookError, GradebookWriter, StudentGrades
from gradcam_kit.grading.nbgrader_settings import NbgraderSettings
from gradcam_kit.host.isolation import available_isolation


def grade(course, capsys=None, **options) -> tuple[int, str]:
    out = io.StringIO()
    status = grade_course(course, out=out, **options)
    return status, out.getvalue()


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as stream:
        return list(csv.DictReader(stream))


# ---------------------------------------------------------------------------------------------
def test_grade_writes_gradebook_csv_feedback_and_histogram(fake_course, judge_log):
    submit(fake_course, "alice")
    submit(fake_course, "bob", bugs=("grad_cam",))
    submit(fake_course, "carol", answer=None)
    before = tree_hashes(fake_course.submitted_dir)

    status, summary = grade(fake_course, workers=2)

    assert status == 0, summary
    assert tree_hashes(fake_course.submitted_dir) == before, "submitted/ was modified"
    assert sorted(runs(judge_log)) == ["alice", "bob", "carol"]

    # the CSV: one column per test, in notebook order, then the totals
    rows = read_csv(fake_course.grades_dir / f"{ASSIGNMENT}.csv")
    assert list(rows[0]) == ["student_id", "test_channel_weights", "test_grad_cam", "autograded_score",
                             "autograded_max", "isolation"]
    level = available_isolation()[0]
    assert [list(r.values()) for r in rows] == [
        ["alice", "1", "2", "3", "3", level],
        ["bob", "1", "0", "1", "3", level],
        ["carol", "1", "2", "3", "3", level],
    ]

    # the gradebook: the tests' auto scores; the written answer to grade by hand, or zero if untouched
    assert gradebook_scores(fake_course) == {
        "alice": {"test_channel_weights": 1.0, "test_grad_cam": 2.0, "part2_answer": None},
        "bob": {"test_channel_weights": 1.0, "test_grad_cam": 0.0, "part2_answer": None},
        "carol": {"test_channel_weights": 1.0, "test_grad_cam": 2.0, "part2_answer": 0.0},
    }

    # the feedback pages: every test, the feedback, the notes, and the heatmaps (embedded PNG)
    page = (fake_course.grades_dir / "feedback" / "bob.html").read_text()
    for expected in ("test_channel_weights", "test_grad_cam", "gives a wrong result", "fake judge",
                     "1 / 3", "reference Grad-CAM", "data:image/png;base64,"):
        assert expected in page
    assert "data:image/png;base64," in (fake_course.grades_dir / "feedback" / "alice.html").read_text()

    # the histogram and the per-student results
    assert (fake_course.grades_dir / f"{ASSIGNMENT}_scores.png").read_bytes().startswith(b"\x89PNG")
    kept = read_json(fake_course.grades_dir / "bob.json")
    assert kept["tests"]["test_grad_cam"]["outcome"] == "failed"
    assert kept["grading"]["submission"] == f"submitted/bob/{ASSIGNMENT}/{NOTEBOOK}"
    assert (fake_course.grades_dir / "artifacts" / "bob" / "heatmap.npz").is_file()
    assert not any((fake_course.grades_dir / ".work").iterdir()), "work folders left behind"

    # the summary table
    assert "alice" in summary and "1/3" in summary and "graded" in summary


def test_autograded_copy_restores_locked_cells_and_shows_the_verdicts(fake_course):
    path = submit(fake_course, "mallory", bugs=("grad_cam",))
    notebook = nbformat.read(str(path), as_version=4)
    for cell in notebook.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "test_grad_cam":
            cell.source = "pass  # the student emptied the test"
    nbformat.write(notebook, str(path))

    assert grade(fake_course)[0] == 0

    autograded = nbformat.read(str(fake_course.root / "autograded" / "mallory" / ASSIGNMENT / NOTEBOOK), as_version=4)
    cells = {c.metadata.get("nbgrader", {}).get("grade_id"): c for c in autograded.cells}
    assert "run_hidden_test(\"test_grad_cam\")" in cells["test_grad_cam"].source, "locked cell not restored"
    assert cells["test_grad_cam"].outputs[0].output_type == "error"
    assert "wrong result" in cells["test_grad_cam"].outputs[0].evalue
    assert any("image/png" in o.get("data", {}) for o in cells["test_grad_cam"].outputs)
    assert "passed" in cells["test_channel_weights"].outputs[0].text
    notes = read_json(fake_course.grades_dir / "mallory.json")["grading"]["notes"]
    assert notes == ["the locked cell test_grad_cam was edited; it was restored from the source for grading"]
    assert "restored from the source" in (fake_course.grades_dir / "feedback" / "mallory.html").read_text()


def test_nbgrader_export_sees_the_grades(fake_course):
    submit(fake_course, "alice")
    submit(fake_course, "bob", bugs=("grad_cam", "channel_weights"), answer=None)
    assert grade(fake_course)[0] == 0

    nbgrader(fake_course.root, "export", "--to", "export.csv")

    rows = {r["student_id"]: r for r in read_csv(fake_course.root / "export.csv")}
    assert set(rows) == {"alice", "bob"}
    assert float(rows["alice"]["raw_score"]) == 3.0 and float(rows["alice"]["max_score"]) == 5.0
    assert float(rows["bob"]["raw_score"]) == 0.0

    # nbgrader's own feedback, made from the autograded copies and the gradebook
    nbgrader(fake_course.root, "generate_feedback", ASSIGNMENT)
    page = (fake_course.feedback_dir / "bob" / ASSIGNMENT / "TP2_GradCAM.html").read_text()
    assert "Score: 0.0 / 5.0" in page and "gives a wrong result" in page


def test_csv_option_and_single_student(fake_course, tmp_path):
    submit(fake_course, "alice")
    submit(fake_course, "bob")
    target = tmp_path / "elsewhere" / "points.csv"

    status, _ = grade(fake_course, students=["bob"], csv_path=target)

    assert status == 0
    assert [r["student_id"] for r in read_csv(target)] == ["bob"]
    assert not (fake_course.grades_dir / "alice.json").exists()
    assert not (fake_course.grades_dir / f"{ASSIGNMENT}.csv").exists()


def test_rerun_skips_graded_students_unless_forced_or_changed(fake_course, judge_log):
    submit(fake_course, "alice")
    submit(fake_course, "bob")
    assert grade(fake_course)[0] == 0
    assert sorted(runs(judge_log)) == ["alice", "bob"]

    status, summary = grade(fake_course)
    assert status == 0
    assert sorted(runs(judge_log)) == ["alice", "bob"], "a graded student was graded again"
    assert "already graded" in summary

    submit(fake_course, "bob", bugs=("grad_cam",))  # a new submission from bob
    assert grade(fake_course)[0] == 0
    assert sorted(runs(judge_log)) == ["alice", "bob", "bob"]
    assert gradebook_scores(fake_course)["bob"]["test_grad_cam"] == 0.0

    assert grade(fake_course, force=True)[0] == 0
    assert sorted(runs(judge_log)) == ["alice", "alice", "bob", "bob", "bob"]
    assert len(read_csv(fake_course.grades_dir / f"{ASSIGNMENT}.csv")) == 2

    nbgrader(fake_course.root, "db", "student", "remove", "alice", "--force")  # the gradebook lost alice
    assert grade(fake_course)[0] == 0
    assert sorted(runs(judge_log)) == ["alice", "alice", "alice", "bob", "bob", "bob"]
    assert set(gradebook_scores(fake_course)) == {"alice", "bob"}


def test_bad_input_is_reported_by_file_and_the_batch_goes_on(fake_course, capsys):
    submit(fake_course, "alice")
    (fake_course.submission("nobook").parent).mkdir(parents=True)
    (fake_course.submission("nobook").parent / "my_copy.ipynb").write_text("{}")
    submit(fake_course, "garbage", content=b"\x00\x01 not json")
    submit(fake_course, "truncated", content=b'{"cells": [')
    before = tree_hashes(fake_course.submitted_dir)

    status, summary = grade(fake_course, students=None)
    status_unknown, summary_unknown = grade(fake_course, students=["ghost"])

    assert status == 1 and status_unknown == 1
    errors = capsys.readouterr().err
    assert f"{fake_course.submission('nobook')}: no such notebook (the folder holds: my_copy.ipynb)" in errors
    assert f"{fake_course.submission('garbage')}: " in errors
    assert f"{fake_course.submission('truncated')}: not a readable notebook" in errors
    assert f"{fake_course.submission('ghost')} does not exist" in errors
    assert "not graded" in summary and "ghost" in summary_unknown
    assert read_csv(fake_course.grades_dir / f"{ASSIGNMENT}.csv")[0]["student_id"] == "alice"
    assert set(gradebook_scores(fake_course)) == {"alice"}
    assert tree_hashes(fake_course.submitted_dir) == before


def test_a_crashing_or_slow_judge_fails_one_student_only(fake_course):
    submit(fake_course, "crash", marker="JUDGE_CRASH")
    submit(fake_course, "slow", marker="JUDGE_SLEEP=60")
    submit(fake_course, "alice")  # judged after the two others in a series: by a new process
    started = time.monotonic()

    status, summary = grade(fake_course, workers=1, timeout=8)

    assert time.monotonic() - started < 45
    assert status == 1
    lines = {line.split()[0]: line for line in summary.splitlines() if line.strip()}
    assert "FAILED (grader error: the judge crashed (exit status 3)" in lines["crash"]
    assert "FAILED (grader error: the judge did not finish within 8 s" in lines["slow"]
    assert "graded" in lines["alice"]
    assert set(gradebook_scores(fake_course)) == {"alice"}
    folder = GradesFolder(fake_course.grades_dir)
    assert folder.load_marker("crash") is None and folder.load_marker("slow") is None
    assert (fake_course.grades_dir / "logs" / "crash.log").is_file()


def test_a_gradebook_failure_rolls_the_student_back(fake_course):
    submit(fake_course, "alice")
    notebook = nbformat.read(str(fake_course.submission("alice")), as_version=4)
    settings = NbgraderSettings.of(fake_course)
    with GradebookWriter(settings) as writer:
        # test_grad_cam is missing: the writer fails after creating the student and a grade
        with pytest.raises(GradebookError, match="test_grad_cam"):
            writer.record(StudentGrades("alice", {"test_channel_weights": 1.0}, notebook))
        with pytest.raises(Exception):
            writer.scores("alice")
        writer.record(StudentGrades("alice", {"test_channel_weights": 1.0, "test_grad_cam": 0.0}, notebook))
        writer.record(StudentGrades("alice", {"test_channel_weights": 0.0, "test_grad_cam": 2.0}, notebook))
    assert gradebook_scores(fake_course) == {
        "alice": {"test_channel_weights": 0.0, "test_grad_cam": 2.0, "part2_answer": None}}


def test_killing_the_grader_midway_loses_nothing_and_grades_nobody_twice(fake_course, judge_log):
    students = ["s1", "s2", "s3", "s4"]
    for student in students:
        submit(fake_course, student, marker="JUDGE_SLEEP=1.5")
    command = [sys.executable, "-m", "gradcam_kit", "grade", "--course", str(fake_course.root), "--workers", "1"]
    env = kit_env(FAKE_JUDGE_LOG=str(judge_log))
    grader = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    folder = GradesFolder(fake_course.grades_dir)
    deadline = time.monotonic() + 60
    while not folder.all_results() and time.monotonic() < deadline:
        time.sleep(0.1)
    grader.send_signal(signal.SIGKILL)
    grader.wait()
    judged_at_kill = runs(judge_log)
    time.sleep(4)  # a judge that outlived the grader would finish (and note it) by now
    assert runs(judge_log) == judged_at_kill, "a judge outlived the grader"

    done = folder.all_results()
    assert 1 <= len(done) < len(students)
    assert set(gradebook_scores(fake_course)) >= set(done)

    rerun = subprocess.run([*command[:-1], "2"], env=env, capture_output=True, text=True, timeout=300)

    assert rerun.returncode == 0, rerun.stderr
    after = folder.all_results()
    assert set(after) == set(students), "a student was lost"
    for student in done:  # recorded before the kill: kept as it was, not judged again
        assert after[student]["grading"] == done[student]["grading"]
        assert runs(judge_log).count(student) == judged_at_kill.count(student) == 1
    for student in set(students) - set(done):
        assert runs(judge_log).count(student) - judged_at_kill.count(student) == 1
    assert set(gradebook_scores(fake_course)) == set(students)
    assert [r["student_id"] for r in read_csv(folder.csv)] == students
    for student in students:
        assert gradebook_scores(fake_course)[student]["test_grad_cam"] == 2.0


def test_results_that_disagree_with_the_gradebook_fail_the_student(tmp_path):
    from gradcam_kit.grading.judge_launch import JudgedSubmission as JudgeRun
    from gradcam_kit.grading.planning import Submission
    from gradcam_kit.grading.recording import GraderError
    from gradcam_kit.grading.recording_steps import read_results

    def results(text: str) -> dict:
        path = tmp_path / "r.json"
        path.write_text(text)
        run = JudgeRun(Submission("x", tmp_path / "x.ipynb", b""), tmp_path / "x.ipynb", path, tmp_path, tmp_path)
        return read_results(run.finish(1, 1.0), {"test_a": 1.0, "test_b": 2.0})

    ok = {"outcome": "passed", "points": 1.0, "max_points": 1.0, "feedback": ""}
    assert results(json.dumps({"tests": {"test_a": ok, "test_b": {**ok, "points": 0.0, "max_points": 2.0}}}))
    for text, message in [
        ("{not json", "not valid JSON"),
        (json.dumps({"tests": {}}), "hold no tests"),
        (json.dumps({"tests": {"test_a": ok}}), "no result for test_b"),
        (json.dumps({"tests": {"test_a": ok, "test_b": ok}}), "worth 2 points in the gradebook but 1"),
        (json.dumps({"tests": {"test_a": {**ok, "points": 3.0}, "test_b": ok}}), "gave 3 of 1 points"),
        (json.dumps({"tests": {"test_a": {"outcome": "passed"}, "test_b": ok}}), "malformed"),
        (json.dumps({"tests": {"test_a": {**ok, "outcome": "error", "points": 0.0, "feedback": "oops"},
                               "test_b": {**ok, "max_points": 2.0}}}), "test_a: oops"),
        (json.dumps({"tests": {"test_a": {**ok, "outcome": "error", "points": 0.0, "feedback": "internal",
                                          "grader_error": "the worker could not be started"},
                               "test_b": {**ok, "max_points": 2.0}}}), "test_a: the worker could not be started"),
    ]:
        with pytest.raises(GraderError, match=message):
            results(text)


def test_formgrader_sees_the_submissions_as_autograded(fake_course):
    from nbgrader.apps.api import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    from gradcam_kit.grading.nbgrader_settings import NbgraderSettings

    submit(fake_course, "alice")
    submit(fake_course, "bob", bugs=("grad_cam",))
    (fake_course.submission("bob").parent / "timestamp.txt").write_text("2026-01-15 10:00:00.000000 UTC")
    assert grade(fake_course)[0] == 0

    settings = NbgraderSettings.of(fake_course)
    api = NbGraderAPI(coursedir=CourseDirectory(config=settings.config), config=settings.config)
    assert api.get_autograded_students(ASSIGNMENT) == {"alice", "bob"}
    bob = api.get_submission(ASSIGNMENT, "bob")
    assert bob["autograded"] and bob["score"] == 1.0 and bob["max_score"] == 5.0
    assert bob["timestamp"].startswith("2026-01-15")
    notebooks = api.get_student_notebook_submissions("bob", ASSIGNMENT)
    assert [n["name"] for n in notebooks] == ["TP2_GradCAM"]
    assert notebooks[0]["needs_manual_grade"] and notebooks[0]["code_score"] == 1.0


def test_the_reference_values_are_prepared_once_beside_the_judges(fake_course, tmp_path, monkeypatch, capsys):
    log = tmp_path / "prepare.log"
    monkeypatch.setenv("FAKE_PREPARE_LOG", str(log))
    for student in ("alice", "bob", "carol"):
        submit(fake_course, student)
    assert grade(fake_course, workers=2)[0] == 0
    lines = log.read_text().splitlines()
    assert len(lines) == 1, lines
    pid = lines[0].split()[1].split("=")[1]
    assert lines[0].endswith(f"marker={pid}"), "the judges are told which process fills the cache"
    cache = fake_course.grades_dir / ".reference-cache"
    assert not (cache / ".preparing").exists()
    assert "could not be prepared" not in capsys.readouterr().err


def test_a_failed_preparation_is_reported_and_the_judges_go_on(fake_course, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_PREPARE_FAILS", "1")
    submit(fake_course, "alice")
    status, _ = grade(fake_course)
    assert status == 0 and (fake_course.grades_dir / "alice.json").is_file()
    err = capsys.readouterr().err
    assert "could not be prepared ahead" in err and "the reference cannot be computed" in err
    assert not (fake_course.grades_dir / ".reference-cache" / ".preparing").exists()
