"""Fuzzing the per-student boundary of ``gradcam-kit grade`` with Hypothesis.

Whatever bytes a submission holds (notebook JSON with odd strings, encodings, sizes and metadata;
``timestamp.txt``; the texts of the judge's results, which quote students' exceptions), reading it
(:func:`~gradcam_kit.grading.planning.inspect_submission`) gives a submission or a problem, and
recording it (:meth:`~gradcam_kit.grading.recorder.StudentRecorder.record`) writes the student or raises
:class:`~gradcam_kit.grading.recording.NotGraded`: nothing else may come out, and what is written
is valid UTF-8.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import nbformat
import pytest
from fake_course import FUNCTIONS, build_fake_course
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gradcam_kit.course import NOTEBOOK, Course, GradesFolder
from gradcam_kit.grading.gradebook import GradebookWriter
from gradcam_kit.grading.nbgrader_settings import NbgraderSettings
from gradcam_kit.grading.judge_launch import JudgedSubmission
from gradcam_kit.grading.planning import Problem, Submission, inspect_submission
from gradcam_kit.grading.recorder import StudentRecorder
from gradcam_kit.grading.recorder import column_order, read_notebook
from gradcam_kit.grading.recording import NotGraded

# strings a student controls: any code point, lone surrogates and control characters included
ODD_TEXT = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=()),
                   max_size=300) | st.sampled_from(["\ud800", "\udfff x", "\x1b[2J\x1b[31mred", "\u202egnp.exe",
                                                    "\0", "A" * 5000])
JSON_LEAF = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | ODD_TEXT
JSON = st.recursive(JSON_LEAF, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ODD_TEXT, inner, max_size=4),
                    max_leaves=12)


@pytest.fixture(scope="module")
def recorder_course(tmp_path_factory):
    """One released stand-in course for the whole module, its gradebook open for writing."""
    course = build_fake_course(tmp_path_factory.mktemp("fuzz") / "course")
    settings_ = NbgraderSettings.of(course)
    with GradebookWriter(settings_) as writer:
        expected = writer.check_assignment()
        folder = GradesFolder(course.grades_dir)
        recorder = StudentRecorder(course, folder, settings_, writer, expected, column_order(course, expected),
                            folder.csv, read_notebook(course.release_dir / NOTEBOOK))
        yield course, recorder


def notebook_bytes(cells_text: list[str], metadata: object, encoding: str) -> bytes:
    """A submission: the released notebook's cell structure with odd text in every cell, odd metadata."""
    cells = [{"cell_type": "markdown", "metadata": {"x": metadata}, "source": text} for text in cells_text]
    document = {"nbformat": 4, "nbformat_minor": 5, "metadata": {"odd": metadata}, "cells": cells}
    text = json.dumps(document, ensure_ascii=False)  # lone surrogates stay \\uXXXX escapes when not encodable
    try:
        return text.encode(encoding)
    except UnicodeEncodeError:
        return json.dumps(document).encode(encoding, "replace")


def released_submission(course: Course, answer: str, metadata: object) -> bytes:
    """The stand-in's release with the functions written and odd text as the written answer."""
    notebook = nbformat.read(str(course.release_dir / NOTEBOOK), as_version=4)
    for cell in notebook.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in FUNCTIONS:
            cell.source = cell.source.replace("raise NotImplementedError()", "return x")
        elif grade_id == "part2_answer":
            cell.source = answer
            cell.metadata["student"] = metadata
    return json.dumps(notebook, ensure_ascii=True).encode("ascii")


def judge_results(path: Path, feedback: str, note: str) -> None:
    tests = {f"test_{name}": {"outcome": "failed", "points": 0.0, "max_points": points, "feedback": feedback}
             for name, points in FUNCTIONS.items()}
    path.write_text(json.dumps({"submission": "x", "isolation": "bwrap", "notes": [note], "tests": tests,
                                "artifacts": {}}))


FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                       HealthCheck.too_slow])


@FUZZ
@given(cells=st.lists(ODD_TEXT, max_size=4), metadata=JSON,
       encoding=st.sampled_from(["utf-8", "utf-16", "latin-1", "utf-8-sig"]), raw=st.binary(max_size=200),
       use_raw=st.booleans())
def test_reading_a_submission_never_raises(recorder_course, cells, metadata, encoding, raw, use_raw):
    course, _ = recorder_course
    path = course.submission("fuzz")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw if use_raw else notebook_bytes(cells, metadata, encoding))
    found = inspect_submission(course, "fuzz")
    assert isinstance(found, (Submission, Problem))
    if isinstance(found, Problem):
        found.message.encode("utf-8")


@FUZZ
@given(answer=ODD_TEXT, metadata=JSON, feedback=ODD_TEXT, note=ODD_TEXT,
       timestamp=st.binary(max_size=400) | ODD_TEXT.map(lambda text: text.encode("utf-8", "surrogatepass"))
       | st.sampled_from([b"2024-01-15 10:00:00", b"2024-01-15 10:00:00 " + b"x" * 300, b"", b"\xff\xfe"]),
       mangle=st.sampled_from([None, "cells-not-a-list", "cell-not-a-dict", "source-number", "no-metadata"]))
def test_recording_a_student_never_raises_anything_else(recorder_course, tmp_path, answer, metadata, feedback,
                                                        note, timestamp, mangle):
    course, recorder = recorder_course
    student = "fuzz"
    path = course.submission(student)
    if path.parent.exists():
        shutil.rmtree(path.parent)
    path.parent.mkdir(parents=True)
    content = released_submission(course, answer, metadata)
    if mangle is not None:
        document = json.loads(content)
        if mangle == "cells-not-a-list":
            document["cells"] = {"a": 1}
        elif mangle == "cell-not-a-dict":
            document["cells"][0] = "text"
        elif mangle == "source-number":
            document["cells"][-1]["source"] = 3
        else:
            document["cells"][-1].pop("metadata")
        content = json.dumps(document).encode()
    path.write_bytes(content)
    (path.parent / "timestamp.txt").write_bytes(timestamp)
    work = Path(tempfile.mkdtemp(dir=tmp_path))  # one per example (the function's tmp_path is shared)
    run = JudgedSubmission(Submission(student, path, content), work / f"{student}.ipynb", work / "out" / f"{student}.json",
                   work / "out" / student, work / "logs" / f"{student}.log")
    run.notebook.parent.mkdir(parents=True, exist_ok=True)
    run.notebook.write_bytes(content)
    run.artifacts.mkdir(parents=True)
    run.log.parent.mkdir(parents=True)
    run.log.write_text("log")
    judge_results(run.results_path, feedback, note)
    try:
        kept = recorder.record(run.finish(1, 1.0))
    except NotGraded as failure:
        str(failure).encode("utf-8")
        return
    for written in (recorder.folder.marker(student), recorder.folder.feedback(student), recorder.csv_path,
                    course.root / "autograded" / student / "TP2_GradCAM" / NOTEBOOK):
        written.read_bytes().decode("utf-8")
    assert kept["grading"]["student"] == student
