"""Recording students in ``gradcam-kit grade``: the CSV kept as students finish, the judge's heatmap.

On the stand-in course (fake judge, see ``fake_course``). The CSV must list every student
recorded so far, each once, whenever the grader stops, without reading every kept result again
after each student (which made a class quadratic to grade). The feedback page shows the picture
the judge drew; the grader's process never imports torch for it.
"""

from __future__ import annotations

import base64
import csv
import io
import subprocess
import sys
from pathlib import Path

from fake_course import kit_env, submit

from gradcam_kit.course import ASSIGNMENT, GradesFolder
from gradcam_kit.grading import reports
from gradcam_kit.grading.batch import grade_course
from gradcam_kit.grading.grades_csv import GradesCsv


def results(points: float, possible: float = 2.0) -> dict:
    return {"tests": {"test_a": {"outcome": "passed", "points": points, "max_points": possible}},
            "isolation": "bwrap", "isolation_policy": None}


def csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def test_the_csv_lists_each_student_once_with_the_kept_grade_after_every_step(tmp_path):
    path = tmp_path / "grades.csv"
    kept = {"bob": results(1.0), "alice": results(0.0)}
    reads = []
    table = GradesCsv(path, ["test_a"], lambda: reads.append(1) or dict(kept))

    steps = [("carol", 2.0), ("alice", 2.0), ("dave", 1.0), ("carol", 0.5), ("eve\nnewline, \"quoted\"", 1.0)]
    for student, points in steps:
        kept[student] = results(points)
        table.add(student, kept[student])
        # what a crash would leave now: every student so far, once, with the grade kept for them
        rows = csv_rows(path)
        assert sorted(row["student_id"] for row in rows) == sorted(kept)
        assert {row["student_id"]: float(row["test_a"]) for row in rows} == {
            student: value["tests"]["test_a"]["points"] for student, value in kept.items()}
    assert reads == [1], "the kept results were read again after the first student"

    table.rewrite(kept)  # the end of the run: sorted, as reports.csv_text writes it
    assert path.read_text(encoding="utf-8") == reports.csv_text(kept, ["test_a"])


def test_grading_does_not_read_every_kept_result_after_each_student(fake_course, monkeypatch):
    students = [f"s{index}" for index in range(6)]
    for student in students:
        submit(fake_course, student)
    reads: list[str] = []
    original = GradesFolder.load_marker

    def counted(self, student):
        reads.append(student)
        return original(self, student)

    monkeypatch.setattr(GradesFolder, "load_marker", counted)
    assert grade_course(fake_course, workers=1, out=io.StringIO(), exploration=False) == 0

    # the plan reads each student's marker, the end of the run reads them all once more (CSV,
    # histogram): linear in the class, where rebuilding the CSV after each student is quadratic
    assert len(reads) <= 3 * len(students), f"{len(reads)} reads of the kept results for {len(students)} students"
    assert [row["student_id"] for row in csv_rows(fake_course.grades_dir / f"{ASSIGNMENT}.csv")] == students


def test_the_grader_shows_the_judges_heatmap_and_never_imports_torch(fake_course):
    submit(fake_course, "alice")
    script = ("import io, sys\n"
              "from gradcam_kit.course import Course\n"
              "from gradcam_kit.grading.batch import grade_course\n"
              f"status = grade_course(Course.locate({str(fake_course.root)!r}), workers=1, out=io.StringIO())\n"
              "print(status, 'torch' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", script], env=kit_env(), capture_output=True, text=True,
                          timeout=300)
    assert done.stdout.split() == ["0", "False"], done.stdout + done.stderr

    drawn = (fake_course.grades_dir / "artifacts" / "alice" / "heatmap.png").read_bytes()
    encoded = base64.b64encode(drawn).decode("ascii")
    assert f"data:image/png;base64,{encoded}" in (fake_course.grades_dir / "feedback" / "alice.html").read_text()


def test_a_judge_that_draws_no_heatmap_leaves_the_page_without_one(fake_course, monkeypatch):
    """The grader never draws the picture itself (that would import torch): the page says there is
    none and why, and the student is graded all the same."""
    monkeypatch.setenv("FAKE_JUDGE_NO_PNG", "1")
    submit(fake_course, "bob")
    assert grade_course(fake_course, workers=1, out=io.StringIO(), exploration=False) == 0
    assert not (fake_course.grades_dir / "artifacts" / "bob" / "heatmap.png").exists()
    page = (fake_course.grades_dir / "feedback" / "bob.html").read_text()
    assert "data:image/png;base64," not in page and "No heatmap" in page
    assert "the heatmap could not be shown" in page and "heatmap.png" in page
