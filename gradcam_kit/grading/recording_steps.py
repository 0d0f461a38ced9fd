"""The steps of recording one student, declared as a list (:data:`STEPS`), in the order they run.

Each step is a small function of the recorder (:class:`~gradcam_kit.grading.recorder.StudentRecorder`,
which holds what the whole run shares) and of the student's
:class:`~gradcam_kit.grading.recording.StudentRecord`; how its failures are contained is declared
with it (:class:`~gradcam_kit.grading.recording.RecordingStep`). The files for people come first,
then the gradebook (one transaction), then the "done" marker ``grades/<student>.json``, last and
atomically: a student whose marker exists is fully recorded. The CSV row follows.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from gradcam_kit.course import ASSIGNMENT
from gradcam_kit.fsutil import write_atomically
from gradcam_kit.grading import reports
from gradcam_kit.grading.autograded_copy import (
    annotate_tests,
    copy_assignment_files,
    sanitize,
    write_notebook_atomically,
)
from gradcam_kit.grading.exploration import PNG_SIGNATURE, ExplorationReport, annotate_exploration
from gradcam_kit.grading.gradebook import GradebookError, StudentGrades, read_timestamp
from gradcam_kit.grading.judge_launch import JudgedSubmission
from gradcam_kit.grading.recording import GraderError, NotGraded, RecordingStep, StudentRecord
from gradcam_kit.judge_results import JudgeResults, JudgeResultsError
from gradcam_kit.safe_text import encodable, shown

if TYPE_CHECKING:
    from gradcam_kit.grading.recorder import StudentRecorder

__all__ = ["STEPS", "keep_artifacts", "read_results"]


# -- what the judge left ---------------------------------------------------------------------------
def keep_judge_log(recorder: StudentRecorder, record: StudentRecord) -> None:
    """Copy the judge's output next to the grades (it explains failures)."""
    destination = recorder.folder.log(record.student)
    destination.parent.mkdir(parents=True, exist_ok=True)
    try:
        shutil.copyfile(record.run.log, destination)
    except OSError:
        pass


def check_judge_finished(recorder: StudentRecorder, record: StudentRecord) -> None:
    """A judge that crashed or ran out of time fails the student, as the grader's fault."""
    if record.run.error:
        raise GraderError(f"{record.run.error}; see {recorder.folder.log(record.student)}")


def read_results(run: JudgedSubmission, expected: Mapping[str, float]) -> dict[str, Any]:
    """The judge's results for a finished run, checked against the gradebook's test cells.

    Parameters
    ----------
    run : JudgedSubmission
        A run that exited normally.
    expected : Mapping[str, float]
        The autograded test cells of the released notebook and their points.

    Returns
    -------
    dict
        The results, with every string made encodable (:func:`~gradcam_kit.safe_text.encodable`).

    Raises
    ------
    GraderError
        When the results are missing, malformed, disagree with the gradebook, or report an error
        of the grader (``"outcome": "error"``, with its ``grader_error``): the student is then not
        graded, and a rerun tries again.
    """
    try:
        results = JudgeResults.for_gradebook(run.results_path, expected)
    except FileNotFoundError:
        raise GraderError(f"the judge wrote no results (exit status {run.returncode})") from None
    except JudgeResultsError as error:
        raise GraderError(str(error)) from None
    return encodable(results.to_plain())


def take_judge_results(recorder: StudentRecorder, record: StudentRecord) -> None:
    """The judge's checked results, graded at the isolation level asked for."""
    results = read_results(record.run, recorder.expected)
    isolation = recorder.isolation
    if isolation is not None and results.get("isolation") != isolation.level:
        raise GraderError(f"the judge graded at the isolation level {results.get('isolation')!r}, "
                          f"not {isolation.level!r} as asked")
    results["notes"] = [shown(note, 2000) for note in results.get("notes") or []]
    results["isolation"] = str(results.get("isolation") or "")
    results["isolation_policy"] = isolation.to_plain() if isolation is not None else None
    record.results = results


# -- the submission ----------------------------------------------------------------------------------
def prepare_notebook(recorder: StudentRecorder, record: StudentRecord) -> None:
    """The submission as nbgrader prepares it for grading (locked cells restored, and what it said)."""
    submission = record.run.submission
    try:
        sanitized = sanitize(record.run.notebook, recorder.settings, submission.student, recorder.release)
    except Exception as error:  # the notebook itself is malformed
        raise NotGraded(
            f"{submission.path}: nbgrader cannot prepare it for grading ({type(error).__name__}: {error})"
        ) from None
    record.notebook = encodable(sanitized.notebook)  # lone surrogates cannot be written as UTF-8
    record.notes += [shown(note, 2000) for note in sanitized.warnings]


def take_timestamp(recorder: StudentRecorder, record: StudentRecord) -> None:
    """The submission's ``timestamp.txt`` (a problem with it is a note, never a failure)."""
    record.timestamp, problem = read_timestamp(record.run.submission.path.parent)
    record.notes += [problem] if problem else []


# -- the heatmap -----------------------------------------------------------------------------------
def take_heatmap(recorder: StudentRecorder, record: StudentRecord) -> None:
    """The judge's picture of the student's heatmap beside the reference one, and what it is of.

    The judge leaves ``heatmap.npz`` (the maps, and the case they are of: artifact ``heatmap``)
    and draws ``heatmap.png`` beside it (artifact ``heatmap_png``; when not named, the ``.png``
    beside the ``.npz``); the picture is taken as it is, never drawn here (the grader does not
    import torch). Without a picture, the feedback page says there is none, with a note.
    """
    npz, picture = _artifact(record, "heatmap"), _artifact(record, "heatmap_png")
    if npz is None and picture is None:
        return
    if picture is None and npz is not None:
        picture = npz.with_suffix(".png")
    try:
        if picture is not None and picture.is_file():
            png = picture.read_bytes()
            if not png.startswith(PNG_SIGNATURE):
                raise ValueError(f"{picture.name} is not a PNG file")
        else:
            raise FileNotFoundError(f"the judge left no {picture.name if picture else 'heatmap picture'}")
    except Exception as error:
        record.notes.append(f"the heatmap could not be shown ({type(error).__name__}: {error})")
        return
    record.heatmap = png
    try:
        record.heatmap_case = reports.heatmap_case(npz) if npz is not None else None
    except Exception:  # the picture is shown without saying what it is of
        record.heatmap_case = None


def _artifact(record: StudentRecord, key: str) -> Path | None:
    """The file the judge's results name under ``artifacts[key]`` (a plain file name), if any."""
    named = record.results.get("artifacts")
    name = named.get(key) if isinstance(named, dict) else None
    if not isinstance(name, str) or not name or Path(name).name != name:
        return None
    return record.run.artifacts / name


def note_isolation(recorder: StudentRecorder, record: StudentRecord) -> None:
    """A note for the feedback when the student was graded below the strongest level available."""
    isolation = recorder.isolation
    if isolation is not None and isolation.below_strongest:
        record.notes.append(isolation.note())


# -- files for people ------------------------------------------------------------------------------
def add_exploration_outputs(recorder: StudentRecorder, record: StudentRecord) -> None:
    """What the exploration cells showed, as their outputs in the autograded copy (for formgrader)."""
    record.exploration = ExplorationReport.read(record.run.artifacts)
    if record.exploration is None:
        return
    assert record.notebook is not None
    annotate_exploration(record.notebook, record.exploration)
    record.notebook = encodable(record.notebook)
    record.notes += [shown(note, 2000) for note in record.exploration.notes]


def write_autograded_copy(recorder: StudentRecorder, record: StudentRecord) -> None:
    """``autograded/<student>/TP2_GradCAM/``: the notebook with the judge's verdicts, for formgrader."""
    assert record.notebook is not None
    annotate_tests(record.notebook, record.results, record.heatmap)
    write_notebook_atomically(record.notebook, recorder.course.autograded_notebook(record.student))


def copy_helper_module(recorder: StudentRecorder, record: StudentRecord) -> None:
    copy_assignment_files(recorder.course, recorder.settings, recorder.course.autograded_dir(record.student))


def copy_timestamp(recorder: StudentRecorder, record: StudentRecord) -> None:
    """nbgrader's own ``timestamp.txt``, copied only when it holds a timestamp."""
    if record.timestamp is not None:
        write_atomically(recorder.course.autograded_dir(record.student) / "timestamp.txt",
                         (record.run.submission.path.parent / "timestamp.txt").read_bytes())


def keep_artifacts(source: Path, destination: Path) -> None:
    """Replace ``destination`` by the judge's artifacts folder."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    staged = destination.with_name(f".{destination.name}.{uuid.uuid4().hex[:8]}")
    shutil.copytree(source, staged)
    if destination.exists():
        shutil.rmtree(destination)
    os.replace(staged, destination)


def keep_judge_artifacts(recorder: StudentRecorder, record: StudentRecord) -> None:
    keep_artifacts(record.run.artifacts, recorder.folder.artifacts(record.student))


def write_feedback_page(recorder: StudentRecorder, record: StudentRecord) -> None:
    write_atomically(
        recorder.folder.feedback(record.student),
        reports.feedback_html(record.student, ASSIGNMENT, record.results, record.heatmap, record.notes,
                              record.graded_at, heatmap_case=record.heatmap_case if record.heatmap else None),
    )


# -- the grades --------------------------------------------------------------------------------------
def record_in_gradebook(recorder: StudentRecorder, record: StudentRecord) -> None:
    """The student's points in ``gradebook.db``: one transaction."""
    tests = {name: float(test["points"]) for name, test in record.results["tests"].items()}
    assert record.notebook is not None
    try:
        recorder.writer.record(StudentGrades(record.student, tests, record.notebook, record.timestamp))
    except GradebookError as error:
        raise GraderError(f"gradebook not updated ({error})") from None


def write_marker(recorder: StudentRecorder, record: StudentRecord) -> None:
    """``grades/<student>.json``: the results and how they were obtained; the student is then done."""
    course, folder, submission = recorder.course, recorder.folder, record.run.submission
    exploration = record.exploration
    kept = dict(record.results)
    kept["grading"] = {
        "student": record.student,
        "submission": str(submission.path.relative_to(course.root)),
        "sha256": submission.sha256,
        "graded_at": record.graded_at.isoformat(timespec="seconds"),
        "judge_seconds": round(record.run.seconds, 2),
        "notes": record.notes,
        "feedback": str(folder.feedback(record.student).relative_to(course.root)),
        "autograded": str(course.autograded_notebook(record.student).relative_to(course.root)),
        "inputs": recorder.grading_inputs().to_plain(),
        "exploration": {cell.grade_id: cell.status for cell in exploration.cells} if exploration else {},
    }
    write_atomically(folder.marker(record.student), json.dumps(kept, indent=2) + "\n")
    record.kept = kept


def add_csv_row(recorder: StudentRecorder, record: StudentRecord) -> None:
    assert record.kept is not None
    recorder.csv.add(record.student, record.kept)


STEPS: tuple[RecordingStep, ...] = (
    RecordingStep("the judge's log", keep_judge_log, contained=False),
    RecordingStep("the judge's run", check_judge_finished, contained=False),
    RecordingStep("the judge's results", take_judge_results, contained=False),
    RecordingStep("the submission", prepare_notebook, contained=False),
    RecordingStep("the submission's timestamp.txt", take_timestamp, contained=False),
    RecordingStep("the heatmap", take_heatmap, contained=False),
    RecordingStep("the isolation note", note_isolation, contained=False),
    RecordingStep("the outputs of the exploration cells", add_exploration_outputs),
    RecordingStep("the autograded copy of the notebook", write_autograded_copy),
    RecordingStep("the helper module beside the autograded copy", copy_helper_module),
    RecordingStep("the autograded copy of timestamp.txt", copy_timestamp),
    RecordingStep("the judge's artifacts", keep_judge_artifacts),
    RecordingStep("the feedback page", write_feedback_page),
    RecordingStep("the gradebook", record_in_gradebook, contained=False),
    RecordingStep("the results file (the \"done\" marker)", write_marker),
    RecordingStep("the CSV", add_csv_row, required=False),
)
"""How a student is recorded, step by step (see the module docstring)."""
