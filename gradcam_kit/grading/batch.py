"""``gradcam-kit grade``: grade every submission with the judge, a few at a time, and keep the grades.

The batch is a pipeline, one module per job:

1. :func:`~gradcam_kit.grading.planning.plan`: who to grade, and why (:mod:`~gradcam_kit.grading.planning`);
2. :class:`~gradcam_kit.grading.judge_runner.JudgeRunner`: the judges, ``--workers`` processes at a
   time, on copies of the notebooks, each process grading a series of students in turn
   (:mod:`~gradcam_kit.grading.judge_runner`, :mod:`~gradcam_kit.grading.judge_launch`); each
   notebook gets a fresh sandboxed worker, and only that worker runs student code;
3. :class:`~gradcam_kit.grading.recorder.StudentRecorder`: as soon as a judge finishes with a
   student, in this process, the recording steps (:data:`~gradcam_kit.grading.recording_steps.STEPS`):
   autograded copy, exploration outputs, feedback page, gradebook, the "done" marker
   ``grades/<student>.json`` (last, atomically), the CSV row (:mod:`~gradcam_kit.grading.grades_csv`);
4. the histogram and the summary table (:mod:`~gradcam_kit.grading.batch_summary`).

A judge that crashes or runs out of time fails that student only; the batch goes on. Killing the
grader loses nothing that was recorded, and a rerun resumes with the students not yet done. The
layout of ``grades/`` is :class:`gradcam_kit.course.GradesFolder`; the use of the machine (workers,
threads, memory) is :mod:`gradcam_kit.grading.resources`.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Callable, Iterator, Sequence, TextIO

from gradcam_kit.contract import judge_timeout
from gradcam_kit.course import ASSIGNMENT, NOTEBOOK, Course, GradesFolder
from gradcam_kit.errors import KitError
from gradcam_kit.grading import reports
from gradcam_kit.grading.batch_summary import (
    common_reason,
    print_exploration_problems,
    print_reasons,
    print_summary,
    resume_command,
)
from gradcam_kit.grading.fingerprint import GradingInputs
from gradcam_kit.grading.gradebook import GradebookWriter
from gradcam_kit.grading.interrupts import InterruptLatch
from gradcam_kit.grading.judge_runner import JudgeRunner, discard, remove_own_work, remove_stale_work
from gradcam_kit.grading.nbgrader_settings import NbgraderSettings
from gradcam_kit.grading.planning import StudentOutcome, Submission, plan
from gradcam_kit.grading.recorder import StudentRecorder, column_order, read_notebook
from gradcam_kit.grading.recording import GraderError, NotGraded
from gradcam_kit.grading.resources import default_workers, threads_per_judge
from gradcam_kit.host.isolation import choose_isolation
from gradcam_kit.progress import ProgressBar
from gradcam_kit.safe_text import shown_line

__all__ = ["grade_course", "judge_all"]


def grade_course(
    course: Course,
    students: Sequence[str] | None = None,
    workers: int | None = None,
    force: bool = False,
    csv_path: str | Path | None = None,
    *,
    timeout: float | None = None,
    out: TextIO | None = None,
    show_paths: bool = True,
    isolation: str | None = None,
    exploration: bool = True,
) -> int:
    """Grade the submissions of ``course`` (see the module docstring).

    Parameters
    ----------
    course : Course
        The nbgrader course (``gradcam-kit release`` must have been run).
    students : Sequence[str], optional
        Only these students (default: every folder of ``submitted/``).
    workers : int, optional
        Judges run at the same time (default: :func:`~gradcam_kit.grading.resources.default_workers`).
    force : bool
        Grade again the students whose results are kept.
    csv_path : str or Path, optional
        Where to write the CSV (default: ``grades/TP2_GradCAM.csv``).
    timeout : float, optional
        Seconds per judge (default: :func:`gradcam_kit.contract.judge_timeout`).
    out : TextIO, optional
        Where the summary goes (default: standard output); the progress bar uses standard error.
    show_paths : bool
        End the summary with where the outputs are.
    isolation : str, optional
        ``--isolation``: grade at this level even if it is weaker than the strongest this machine
        supports (default: the strongest, and refuse when it does not work; see
        :mod:`gradcam_kit.host.isolation`).
    exploration : bool
        Also run the exploration cells (Parts 2-4, bonus) in the sandbox and show what they printed
        and drew in the autograded copies, for formgrader (:mod:`gradcam_kit.grading.exploration`).

    Returns
    -------
    int
        0 when every student asked for is graded, 1 when some could not be, 130 if interrupted.
    """
    out = out if out is not None else sys.stdout
    if workers is not None and workers < 1:
        raise KitError(f"--workers must be at least 1 (got {workers})")
    if not course.autograder_dir.is_dir():
        raise KitError(f"{course.autograder_dir}: no such folder (the judge is missing)")
    timeout = judge_timeout() if timeout is None else timeout
    folder = GradesFolder(course.grades_dir)
    settings = NbgraderSettings.of(course)

    asked_workers = workers
    with GradebookWriter(settings) as writer:
        expected = writer.check_assignment()
        inputs = GradingInputs.of(course)
        recorder = StudentRecorder(course, folder, settings, writer, expected, column_order(course, expected),
                                   Path(csv_path).resolve() if csv_path else folder.csv,
                                   read_notebook(course.release_dir / NOTEBOOK), inputs=inputs)
        work = plan(course, folder, writer, students, force, inputs)
        for problem in work.problems:
            print(f"gradcam-kit grade: {problem.message}", file=sys.stderr)
        if not work.found_any:
            print(f"Nothing to grade: no {course.submitted_dir}/<student>/{ASSIGNMENT}/ folder.", file=out)
            return 0
        print_reasons(work, sys.stderr)

        workers = workers or default_workers(len(work.todo))
        remove_stale_work(folder.work)
        choice = choose_isolation(isolation) if work.todo else None  # refuses before anything is graded
        recorder.isolation = choice
        runner = JudgeRunner(course, folder.work, timeout, threads_per_judge(workers), folder.reference_cache,
                             choice.level if choice is not None else None, exploration)
        if choice is not None:
            print(f"Grading {len(work.todo)} submission(s) with {workers} worker(s)"
                  f" ({len(work.outcomes)} other(s) left as they are); {choice.describe()}.", file=sys.stderr)
        outcomes = list(work.outcomes)
        interrupted = False
        try:
            with InterruptLatch() as latch:
                if work.todo:
                    runner.start_preparing()
                outcomes.extend(judge_all(work.todo, runner, recorder, workers, latch.check))
        except KeyboardInterrupt:
            interrupted = True
            done = {o.student for o in outcomes if o.status == "graded"}
            remaining = [s.student for s in work.todo if s.student not in done]
            command = resume_command(course, remaining, force, students, asked_workers, csv_path, exploration)
            print(f"\ngradcam-kit grade: interrupted; the {len(done & set(work.reasons))} student(s) graded "
                  f"in this run are kept. To grade the {len(remaining)} others, run:\n  {command}",
                  file=sys.stderr)

        if runner.preparation_problem is not None:
            print(f"gradcam-kit grade: the reference values could not be prepared ahead "
                  f"({runner.preparation_problem}); each judge computed those it needed.", file=sys.stderr)
        kept = folder.all_results()
        recorder.csv.rewrite(kept)
        if kept:
            reports.write_histogram(folder.histogram, kept, ASSIGNMENT)
        for outcome in outcomes:
            if outcome.status == "graded":
                outcome.reason = work.reasons.get(outcome.student, "")
        print_summary(out, outcomes, recorder.csv_path, folder, course, settings, show_paths)
        if choice is not None:
            print(f"\n{choice.describe()[0].upper()}{choice.describe()[1:]}.", file=out)
        print_exploration_problems(out, outcomes)
        if work.stale:
            print(f"\n{len(work.stale)} other student(s) were graded with other inputs "
                  f"({common_reason(work.stale)}): run `gradcam-kit grade` to regrade them.", file=out)

    if interrupted:
        return 130
    failed = any(o.status.startswith("FAILED") for o in outcomes)
    return 1 if failed or work.problems else 0


def judge_all(todo: Sequence[Submission], runner: JudgeRunner, recorder: StudentRecorder,
              workers: int, check_interrupt: Callable[[], None] = lambda: None) -> Iterator[StudentOutcome]:
    """Run the judges, ``workers`` at a time, and record each student as it finishes.

    Interrupting it (Ctrl-C; ``check_interrupt`` raises one that was swallowed) kills the running
    judges; what was recorded stays.
    """
    with ProgressBar(len(todo), "grading") as bar:
        try:
            for run in runner.judge(todo, workers, check_interrupt):
                check_interrupt()
                student = run.submission.student
                try:
                    kept = recorder.record(run)
                except NotGraded as error:
                    bar.message(f"gradcam-kit grade: {shown_line(student)}: {error.status}")
                    bar.advance(f"{shown_line(student, 40)}: failed")
                    yield StudentOutcome(student, error.status)
                except Exception as error:  # a bug of the grader: this student only
                    failure = GraderError(f"{type(error).__name__}: {error}")
                    note_traceback(recorder.folder.log(student))
                    bar.message(f"gradcam-kit grade: {shown_line(student)}: {failure.status}")
                    bar.advance(f"{shown_line(student, 40)}: failed")
                    yield StudentOutcome(student, failure.status)
                else:
                    earned, possible = reports.total(kept)
                    bar.advance(f"{shown_line(student, 40)}: {reports.number(earned)}/{reports.number(possible)}")
                    yield StudentOutcome(student, "graded", kept)
                finally:
                    discard(run)
        finally:
            remove_own_work(runner.work)


def note_traceback(log: Path) -> None:
    """Append the exception being handled to a student's log."""
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a", encoding="utf-8", errors="replace") as stream:
            stream.write("\n[gradcam-kit grade] recording failed:\n")
            traceback.print_exc(file=stream)
    except OSError:
        pass
