"""``gradcam-kit grade`` regrades a student whenever what decides the grade changed, and says why.

What decides a grade besides the notebook (``gradcam_kit.grading.fingerprint``): the points and the
setup and test cells of the source notebook, the helper module, the answer key, the judge and the
weights policy. A change to any of them makes the kept grades stale: a plain ``gradcam-kit grade``
regrades, without ``--force``, and the summary says why. Also here: grading before any release,
and resuming an interrupted ``--force`` run.
"""

from __future__ import annotations

import csv
import io
import json
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from fake_course import gradebook_scores, kit_env, nbgrader, read_json, runs, submit

from gradcam_kit.course import ASSIGNMENT, NOTEBOOK, GradesFolder
from gradcam_kit.errors import KitError
from gradcam_kit.grading.batch import grade_course
from gradcam_kit.grading.fingerprint import GradingInputs
from gradcam_kit.release import generate_release


def grade(course, **options) -> tuple[int, str]:
    out = io.StringIO()
    return grade_course(course, out=out, **options), out.getvalue()


def rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as stream:
        return {row["student_id"]: row for row in csv.DictReader(stream)}


def summary_line(summary: str, student: str) -> str:
    return next(line for line in summary.splitlines() if line.split()[:1] == [student])


def set_points(course, grade_id: str, points: float) -> None:
    notebook = nbformat.read(str(course.source_notebook), as_version=4)
    for cell in notebook.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == grade_id:
            cell.metadata.nbgrader["points"] = points
    nbformat.write(notebook, str(course.source_notebook))


@pytest.fixture
def graded(fake_course, judge_log):
    """alice and bob graded once (bob's grad_cam is wrong)."""
    submit(fake_course, "alice")
    submit(fake_course, "bob", bugs=("grad_cam",))
    (fake_course.solutions_dir).mkdir()
    (fake_course.solutions_dir / "answer_key.py").write_text("ANSWER = 1\n")
    assert grade(fake_course)[0] == 0
    assert sorted(runs(judge_log)) == ["alice", "bob"]
    return fake_course


def test_changing_the_points_regrades_everyone_without_force(graded, judge_log, capsys):
    set_points(graded, "test_channel_weights", 2)
    generate_release(graded)  # the gradebook learns the new maximum
    capsys.readouterr()

    status, summary = grade(graded)

    assert status == 0, summary
    assert sorted(runs(judge_log)) == ["alice", "alice", "bob", "bob"], "the stale grades were kept"
    why = "the points changed (test_channel_weights 1 → 2)"
    assert why in summary_line(summary, "alice") and why in summary_line(summary, "bob")
    assert f"Regrading 2 student(s) (alice, bob): {why}." in capsys.readouterr().err
    # the CSV, the kept results, the gradebook and nbgrader's export agree on the new maximum
    csv_rows = rows(graded.grades_dir / f"{ASSIGNMENT}.csv")
    assert csv_rows["alice"]["test_channel_weights"] == "2" and csv_rows["alice"]["autograded_max"] == "4"
    assert gradebook_scores(graded)["alice"]["test_channel_weights"] == 2.0
    nbgrader(graded.root, "export", "--to", "export.csv")
    exported = rows(graded.root / "export.csv")
    manual_points = 2.0  # part2_answer
    for student in ("alice", "bob"):
        assert float(exported[student]["max_score"]) == float(csv_rows[student]["autograded_max"]) + manual_points

    # nothing changed since: nobody is graded again
    status, summary = grade(graded)
    assert status == 0 and len(runs(judge_log)) == 4
    assert "already graded" in summary_line(summary, "alice")


@pytest.mark.parametrize("change, why", [
    ("judge", "the judge changed"),
    ("answer key", "the answer key changed"),
    ("weights", "the weights policy changed (random → imagenet)"),
    ("test cell", "the setup and test cells changed"),
    ("helper", "the helper module tp2_utils.py changed"),
])
def test_each_input_that_decides_a_grade_regrades(graded, judge_log, monkeypatch, change, why):
    if change == "judge":
        with (graded.autograder_dir / "conftest.py").open("a") as stream:
            stream.write("\n# a fix of the judge\n")
    elif change == "answer key":
        (graded.solutions_dir / "answer_key.py").write_text("ANSWER = 2\n")
    elif change == "weights":
        monkeypatch.setenv("GRADCAM_WEIGHTS", "imagenet")
    elif change == "test cell":
        notebook = nbformat.read(str(graded.source_notebook), as_version=4)
        cell = next(c for c in notebook.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "test_grad_cam")
        cell.source = cell.source.replace("assert callable(grad_cam)", "assert callable(grad_cam), 'stricter'")
        nbformat.write(notebook, str(graded.source_notebook))
        generate_release(graded)
    elif change == "helper":
        with graded.helper_module.open("a") as stream:
            stream.write("\n# a new helper\n")
        generate_release(graded)

    status, summary = grade(graded)

    assert status == 0, summary
    assert sorted(runs(judge_log)) == ["alice", "alice", "bob", "bob"]
    assert why in summary_line(summary, "alice"), summary
    assert read_json(graded.grades_dir / "alice.json")["grading"]["inputs"] == GradingInputs.of(graded).to_plain()


def test_what_does_not_decide_a_grade_does_not_regrade(graded, judge_log):
    notebook = nbformat.read(str(graded.source_notebook), as_version=4)
    notebook.cells[0].source += "\n\nA clearer sentence in the instructions."
    nbformat.write(notebook, str(graded.source_notebook))
    generate_release(graded)
    (graded.solutions_dir / "rubric.md").write_text("model answers\n")
    status, summary = grade(graded)
    assert status == 0 and len(runs(judge_log)) == 2, summary


def test_results_of_an_older_kit_or_without_their_autograded_copy_are_regraded(graded, judge_log):
    marker = graded.grades_dir / "alice.json"
    kept = read_json(marker)
    del kept["grading"]["inputs"]  # as the kit wrote it before it recorded the inputs
    marker.write_text(json.dumps(kept))
    (graded.root / "autograded" / "bob" / ASSIGNMENT / NOTEBOOK).unlink()

    status, summary = grade(graded)

    assert status == 0 and sorted(runs(judge_log)) == ["alice", "alice", "bob", "bob"]
    assert "graded before the kit recorded what decides a grade" in summary_line(summary, "alice")
    assert "autograded copy" in summary_line(summary, "bob")


def test_grading_some_students_names_the_others_left_stale(graded, judge_log):
    set_points(graded, "test_grad_cam", 3)
    generate_release(graded)
    status, summary = grade(graded, students=["alice"])
    assert status == 0 and sorted(runs(judge_log)) == ["alice", "alice", "bob"]
    assert "1 other student(s) were graded with other inputs (the points changed (test_grad_cam 2 → 3))" in summary
    assert "run `gradcam-kit grade` to regrade them" in summary


# ---------------------------------------------------------------------------------------------
def test_grading_before_any_release_says_so_and_creates_no_gradebook(fake_course):
    fake_course.gradebook.unlink()
    submit_path = fake_course.submission("alice")
    submit_path.parent.mkdir(parents=True)
    submit_path.write_text("{}")
    with pytest.raises(KitError, match="run `gradcam-kit release` first"):
        grade(fake_course)
    assert not fake_course.gradebook.exists(), "an empty gradebook was left behind"


def test_an_interrupted_forced_run_names_the_command_that_resumes_it(graded, judge_log):
    for student in ("carol", "dave", "erin"):
        submit(graded, student, marker="JUDGE_SLEEP=2")
    command = [sys.executable, "-m", "gradcam_kit", "grade", "--course", str(graded.root), "--force",
               "--workers", "1"]
    grader = subprocess.Popen(command, env=kit_env(FAKE_JUDGE_LOG=str(judge_log)), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    folder = GradesFolder(graded.grades_dir)
    before = {student: kept["grading"]["graded_at"] for student, kept in folder.all_results().items()}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # alice and bob (judged first, at once) are regraded ...
        now = folder.all_results()
        if all(now[s]["grading"]["graded_at"] != before[s] for s in before):
            break
        time.sleep(0.05)
    time.sleep(0.5)  # ... and carol's judge is sleeping: press Ctrl-C
    grader.send_signal(signal.SIGINT)
    _, err = grader.communicate(timeout=120)
    assert grader.returncode == 130, err

    resume = next(line.strip() for line in err.splitlines() if line.strip().startswith("gradcam-kit grade --"))
    words = shlex.split(resume)
    assert "--force" in words
    left = {words[i + 1] for i, word in enumerate(words) if word == "--student"}
    after = folder.all_results()
    recorded = {s for s in after if after[s]["grading"]["graded_at"] != before.get(s)}  # in the interrupted run
    assert {"alice", "bob"} <= recorded and left, err
    assert left == {"alice", "bob", "carol", "dave", "erin"} - recorded, err
    judged_before = runs(judge_log)

    result = subprocess.run([sys.executable, "-m", "gradcam_kit", *words[1:]], env=kit_env(FAKE_JUDGE_LOG=str(judge_log)),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    newly = runs(judge_log)[len(judged_before):]
    assert sorted(newly) == sorted(left), "the resume command graded someone twice or missed someone"


def test_every_module_of_the_kit_is_part_of_the_judge_unless_declared_outside(tmp_path, monkeypatch):
    """Moving the worker or its host into a package of its own must not take them out of the
    judge's digest: a module counts wherever it lives, unless it is declared outside grading."""
    import gradcam_kit
    from gradcam_kit.grading import fingerprint

    package = tmp_path / "gradcam_kit"
    for name in ("__init__.py", "cli.py", "contract.py", "efficientnet.py", "grading/__init__.py",
                 "grading/batch.py", "grading/recorder.py", "grading/notebook.py", "worker/__init__.py",
                 "worker/runtime.py", "host/session.py", "wire/frames.py"):
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(f"# {name}\n")
    monkeypatch.setattr(gradcam_kit, "__file__", str(package / "__init__.py"))

    engine = {path.relative_to(package).as_posix() for path in fingerprint.engine_files()}
    assert engine == {"contract.py", "efficientnet.py", "grading/notebook.py", "worker/runtime.py",
                      "host/session.py", "wire/frames.py"}

    before = fingerprint._digest_files(fingerprint.engine_files(), package)
    (package / "worker" / "runtime.py").write_text("# changed\n")
    assert fingerprint._digest_files(fingerprint.engine_files(), package) != before


def test_every_module_declared_outside_grading_exists():
    """A module that moved or was renamed must not stay listed under its old name (its new one would
    then count as the judge, and an edit of it would regrade the class)."""
    from pathlib import Path

    import gradcam_kit
    from gradcam_kit.grading import fingerprint

    package = Path(gradcam_kit.__file__).parent
    assert sorted(name for name in fingerprint.OUTSIDE_GRADING if not (package / name).is_file()) == []
    judged = {path.relative_to(package).as_posix() for path in fingerprint.engine_files()}
    assert not {"grading/samples.py", "grading/sample_corpus.py", "grading/sample_mutations.py", "grading/mutator.py",
                "grading/styles.py", "grading/typical_bugs.py"} & judged
