"""What ``gradcam-kit grade`` tells the instructor: why students are graded, the table, how to resume."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Iterable, Mapping, Sequence, TextIO

from gradcam_kit.course import Course, GradesFolder
from gradcam_kit.grading import reports
from gradcam_kit.grading.nbgrader_settings import NbgraderSettings
from gradcam_kit.grading.planning import Plan, StudentOutcome
from gradcam_kit.safe_text import shown_line

__all__ = ["common_reason", "print_exploration_problems", "print_reasons", "print_summary", "resume_command"]


def common_reason(reasons: Mapping[str, str]) -> str:
    """The reason shared by the most students, and how many others there are."""
    counts: dict[str, int] = {}
    for reason in reasons.values():
        counts[reason] = counts.get(reason, 0) + 1
    common = max(counts, key=lambda reason: counts[reason])
    others = len(counts) - 1
    return common + (f"; {others} other reason(s) in the summary" if others else "")


def print_reasons(work: Plan, stream: TextIO) -> None:
    """One line per reason for regrading students graded before (new submissions are not listed)."""
    regraded: dict[str, list[str]] = {}
    for student, reason in work.reasons.items():
        if reason not in ("not graded yet", "--force"):
            regraded.setdefault(reason, []).append(student)
    for reason, names in regraded.items():
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        print(f"Regrading {len(names)} student(s) ({shown}): {reason}.", file=stream)


def resume_command(course: Course, remaining: Sequence[str], force: bool, students: Sequence[str] | None,
                   workers: int | None, csv_path: str | Path | None, exploration: bool = True) -> str:
    """The command that grades what an interrupted run left, and only that.

    Without ``--force`` it is the same command (the students graded are skipped). With ``--force``,
    running it again would regrade everyone; the command names the students left instead.
    """
    words = ["gradcam-kit", "grade", "--course", str(course.root)]
    if force:
        words.append("--force")
        for student in remaining:
            words += ["--student", student]
    else:
        for student in students or ():
            words += ["--student", student]
    if workers is not None:
        words += ["--workers", str(workers)]
    if csv_path is not None:
        words += ["--csv", str(csv_path)]
    if not exploration:
        words.append("--no-exploration")
    return shlex.join(words)


def print_exploration_problems(out: TextIO, outcomes: Iterable[StudentOutcome]) -> None:
    """The exploration cells of this run that failed, hit a limit or were not run, by student."""
    lines = []
    for outcome in sorted(outcomes, key=lambda o: o.student):
        if outcome.status != "graded" or outcome.results is None:
            continue
        statuses = outcome.results.get("grading", {}).get("exploration") or {}
        bad = [f"{cell} ({status})" for cell, status in statuses.items() if status != "ran"]
        if bad:
            lines.append(f"  {outcome.student}: {', '.join(bad)}")
    if lines:
        print("\nExploration cells that did not run to the end (their messages are in the autograded "
              "notebooks and the feedback):", file=out)
        print("\n".join(lines), file=out)


def print_summary(out: TextIO, outcomes: Iterable[StudentOutcome], csv_path: Path, folder: GradesFolder,
                  course: Course, settings: NbgraderSettings, show_paths: bool = True) -> None:
    """The table of this run's students (with why each was graded), then where the outputs are."""
    rows = []
    for outcome in sorted(outcomes, key=lambda o: o.student):
        score = ""
        if outcome.results is not None:
            earned, possible = reports.total(outcome.results)
            score = f"{reports.number(earned)}/{reports.number(possible)}"
        rows.append([shown_line(outcome.student, 60), score, shown_line(outcome.status, 400),
                     shown_line(outcome.reason, 400)])
    if rows:
        print(reports.text_table(["student", "autograded", "status", "why"], rows), file=out)
    if not show_paths:
        return
    where = [
        ("CSV", csv_path),
        ("histogram", folder.histogram),
        ("feedback pages", folder.feedback("<student>")),
        ("gradebook", settings.db_url),
        ("autograded notebooks (formgrader)", course.autograded_dir("<student>")),
    ]
    print("", file=out)
    for label, path in where:
        print(f"{label + ':':36} {path}", file=out)
