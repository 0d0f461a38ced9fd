"""A small stand-in course for the tests of ``gradcam-kit grade``: a fake course, fixtures, no tests.

A plugin of the kit's tests (``pytest_plugins`` in ``tests/conftest.py``): its fixtures need no import.

The real judge runs DenseNet-121 in a sandboxed worker: seconds per submission. Most grading
tests are about the bookkeeping around it (gradebook, CSV, resume, failures), so they use this
course instead: a notebook with the TP2 cell contract (two graded functions, their test cells
with the hidden-test region, a written answer) released with nbgrader, and a fake judge in
``autograder_tests/`` that honours the judge's command line and results JSON (``docs/design.md``).

The fake judge grades one notebook per pytest session (``python -m pytest autograder_tests
--submission ...``) or a series of notebooks in one process (``python -m autograder_tests --out DIR
NB...``, reporting each notebook done on the status channel), as the real one does, and leaves
the artifacts the real one leaves (``heatmap.npz`` and its picture ``heatmap.png``, the exploration
report). It passes a function unless its cell contains ``BUG`` or still raises
``NotImplementedError``. Markers in a function cell steer it: ``JUDGE_CRASH`` (exit without
results), ``JUDGE_SLEEP=<seconds>`` (take that long); ``$FAKE_JUDGE_NO_PNG`` leaves out
``heatmap.png``. Each finished run appends the ``STUDENT=``
marker of the submission to ``$FAKE_JUDGE_LOG`` when that is set.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from gradcam_kit.course import ASSIGNMENT, HELPER_MODULE, NOTEBOOK, Course

__test__ = False
REPO_ROOT = Path(__file__).resolve().parents[1]
FUNCTIONS = {"channel_weights": 1.0, "grad_cam": 2.0}

FAKE_CONFTEST = '''
import json, os, sys, time
from pathlib import Path

import numpy as np
import pytest

COURSE = Path(__file__).resolve().parents[1]
SOURCE = COURSE / "source" / "TP2_GradCAM" / "TP2_GradCAM.ipynb"


def pytest_addoption(parser):
    parser.addoption("--submission", required=True)
    parser.addoption("--results-json", default=None)
    parser.addoption("--artifacts", default=None)
    parser.addoption("--exploration", action="store_true")


def exploration_ids():
    cells = json.loads(SOURCE.read_text())["cells"]
    ids = []
    for c in cells:
        meta = c["metadata"].get("nbgrader", {})
        grade_id = meta.get("grade_id", "")
        if c["cell_type"] == "code" and meta.get("solution") and not meta.get("grade") \
                and grade_id not in points_functions() and not grade_id.startswith("setup_"):
            ids.append(grade_id)
    return ids


def points_functions():
    return {name[len("test_"):] for name in points()}


def write_exploration(config, folder):
    """What the real judge leaves with --exploration (exploration/report.json and PNGs), made up from
    markers in each exploration cell: EXPLORE_FAIL, EXPLORE_LIMIT, EXPLORE_HOSTILE."""
    import base64
    folder = Path(folder) / "exploration"
    folder.mkdir(parents=True, exist_ok=True)
    png = base64.b64decode(TINY_PNG)
    cells = []
    for grade_id in exploration_ids():
        source = config.gradcam_sources.get(grade_id, "")
        (folder / f"{grade_id}-1.png").write_bytes(png)
        outputs = [{"kind": "text", "name": "stdout", "text": f"shown by {grade_id}\\n"},
                   {"kind": "png", "file": f"{grade_id}-1.png"}]
        status, message = "ran", ""
        if "EXPLORE_FAIL" in source:
            status, message = "failed", f"NameError: name 'oops' is not defined (cell `{grade_id}`, line 2: `oops`)"
        elif "EXPLORE_LIMIT" in source:
            status, message, outputs = "limit", "timed out after 60 s", []
        elif "EXPLORE_HOSTILE" in source:
            (folder / f"{grade_id}-2.png").write_bytes(b"<script>alert(1)</script>")
            outputs += [{"kind": "html", "text": "<script>alert(1)</script>"},
                        {"kind": "png", "file": f"{grade_id}-2.png"},
                        {"kind": "png", "file": "../../../etc/passwd"},
                        {"kind": "text", "name": "stdout", "text": "bell\\x07 and \\ud800 surrogate\\n"}]
        cells.append({"grade_id": grade_id, "status": status, "message": message, "seconds": 0.1, "outputs": outputs})
    (folder / "report.json").write_text(json.dumps({"cells": cells}))


TINY_PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAFklEQVR4nGP8z8DAwMDAxMDAwMDAAAANHQEDasKb6QAAAABJ"
            "RU5ErkJggg==")


def points():
    cells = json.loads(SOURCE.read_text())["cells"]
    return {c["metadata"]["nbgrader"]["grade_id"]: float(c["metadata"]["nbgrader"]["points"])
            for c in cells if c["metadata"].get("nbgrader", {}).get("grade_id", "").startswith("test_")}


def cell_sources(path):
    cells = json.loads(Path(path).read_text())["cells"]
    found = {}
    for c in cells:
        grade_id = c.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if grade_id:
            src = c["source"]
            found[grade_id] = "".join(src) if isinstance(src, list) else src
    return found


def pytest_configure(config):
    config.gradcam_results = {}  # on the config: several notebooks may be judged in one process
    config.gradcam_sources = cell_sources(config.getoption("--submission"))
    everything = "\\n".join(config.gradcam_sources.values())
    if "JUDGE_CRASH" in everything:
        os._exit(3)
    for word in everything.split():
        if word.startswith("JUDGE_SLEEP="):
            time.sleep(float(word.split("=", 1)[1]))


def judge(config, test_name):
    function = test_name[len("test_"):]
    source = config.gradcam_sources.get(function)
    possible = points()[test_name]
    if source is None:
        ok, feedback = False, f"`{function}` is missing from the notebook."
    elif "NotImplementedError" in source:
        ok, feedback = False, f"`{function}` is not written yet (it still raises NotImplementedError)."
    elif "BUG" in source:
        ok, feedback = False, f"`{function}` gives a wrong result."
    else:
        ok, feedback = True, ""
    config.gradcam_results[test_name] = {"outcome": "passed" if ok else "failed", "points": possible if ok else 0.0,
                          "max_points": possible, "feedback": feedback}
    assert ok, feedback


def pytest_sessionfinish(session, exitstatus):
    config = session.config
    artifacts = config.getoption("--artifacts")
    data = {"submission": config.getoption("--submission"), "isolation": os.environ.get("GRADCAM_ISOLATION", "fake"),
            "notes": ["fake judge"],
            "tests": config.gradcam_results, "artifacts": {}}
    if artifacts and config.getoption("--exploration"):
        write_exploration(config, artifacts)
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        np.savez(Path(artifacts) / "heatmap.npz", image=rng.normal(size=(3, 224, 224)).astype("float32"),
                 student=rng.random((224, 224)).astype("float32"),
                 reference=rng.random((224, 224)).astype("float32"))
        if not os.environ.get("FAKE_JUDGE_NO_PNG"):  # a judge from before it drew its heatmap
            import base64
            (Path(artifacts) / "heatmap.png").write_bytes(base64.b64decode(TINY_PNG))
            data["artifacts"]["heatmap_png"] = "heatmap.png"
        data["artifacts"]["heatmap"] = "heatmap.npz"
    if config.getoption("--results-json"):
        Path(config.getoption("--results-json")).write_text(json.dumps(data))
    log = os.environ.get("FAKE_JUDGE_LOG")
    if log:
        everything = "\\n".join(config.gradcam_sources.values())
        who = [w.split("=", 1)[1] for w in everything.split() if w.startswith("STUDENT=")]
        with open(log, "a") as stream:
            stream.write((who[0] if who else "?") + "\\n")
'''

FAKE_TESTS = '''
import pytest

from conftest import judge, points


def _make(name):
    def test(request):
        judge(request.config, name)
    test.__name__ = name
    return test


for _name in points():
    globals()[_name] = _make(_name)
'''


FAKE_MAIN = '''
"""Grade several notebooks in one process, like the real judge's ``python -m autograder_tests``."""
import argparse
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
parser = argparse.ArgumentParser()
parser.add_argument("notebooks", nargs="*", type=Path)
parser.add_argument("--out", type=Path)
parser.add_argument("--prepare", action="store_true")
parser.add_argument("--status-fd", type=int)
parser.add_argument("--exploration", action="store_true")
options = parser.parse_args()
if options.prepare:  # notes its run, and what it found in the cache folder, in $FAKE_PREPARE_LOG
    import os
    cache = Path(os.environ["GRADCAM_REFERENCE_CACHE"])
    marker = (cache / ".preparing").read_text() if (cache / ".preparing").exists() else "none"
    if os.environ.get("FAKE_PREPARE_LOG"):
        with open(os.environ["FAKE_PREPARE_LOG"], "a") as stream:
            print(f"prepare pid={os.getpid()} marker={marker}", file=stream)
    if os.environ.get("FAKE_PREPARE_FAILS"):
        sys.exit("the reference cannot be computed")
    sys.exit(0)
for notebook in options.notebooks:
    started = time.perf_counter()
    status = pytest.main([str(HERE), "--submission", str(notebook), "--results-json",
                          str(options.out / f"{notebook.stem}.json"), "--artifacts", str(options.out / notebook.stem),
                          "-p", "no:cacheprovider", "-qq", *(["--exploration"] if options.exploration else [])])
    sys.stdout.flush()
    if options.status_fd is not None:
        from gradcam_kit.grading.judge_status import JudgeStatus, write_status

        write_status(options.status_fd, JudgeStatus(notebook.name, int(status), time.perf_counter() - started))
    else:  # an older grader, which read this line from the judge's output
        print(f"[autograder] {notebook.name}: exit status {int(status)}, {time.perf_counter() - started:.1f} s",
              flush=True)
'''


def source_notebook() -> nbformat.NotebookNode:
    """A tiny instructor notebook with the TP2 cell contract."""

    def meta(grade_id, *, grade=False, solution=False, locked=False, points=None):
        data = {"grade": grade, "grade_id": grade_id, "locked": locked, "schema_version": 3, "solution": solution}
        if points is not None:
            data["points"] = points
        return {"nbgrader": data}

    cells = [
        new_markdown_cell("# A stand-in for TP2"),
        new_code_cell("import math", metadata=meta("setup_imports", locked=True)),
    ]
    for function, points in FUNCTIONS.items():
        cells.append(new_code_cell(
            f"def {function}(x):\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION",
            metadata=meta(function, solution=True)))
        cells.append(new_code_cell(
            f"assert callable({function})\nprint('{function}: the visible checks pass')\n\n"
            f"### BEGIN HIDDEN TESTS\nfrom gradcam_kit.hidden import run_hidden_test\n"
            f"run_hidden_test(\"test_{function}\")\n### END HIDDEN TESTS",
            metadata=meta(f"test_{function}", grade=True, locked=True, points=points)))
    cells.append(new_markdown_cell("**Question 2.** Why?"))
    cells.append(new_markdown_cell("Because.", metadata=meta("part2_answer", grade=True, solution=True, points=2)))
    notebook = new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    return notebook


def nbgrader(course_root: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the nbgrader command line in a course (raises with its output on failure)."""
    result = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course_root, capture_output=True,
                            text=True, env=env or kit_env(), timeout=600)
    if result.returncode != 0:
        raise AssertionError(f"nbgrader {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def build_fake_course(root: Path) -> Course:
    """Write the stand-in course at ``root`` and release it with nbgrader."""
    (root / "source" / ASSIGNMENT).mkdir(parents=True)
    (root / "nbgrader_config.py").write_text("c = get_config()\nc.Execute.timeout = 300\n")
    nbformat.write(source_notebook(), str(root / "source" / ASSIGNMENT / NOTEBOOK))
    shutil.copy(REPO_ROOT / "source" / ASSIGNMENT / HELPER_MODULE, root / "source" / ASSIGNMENT / HELPER_MODULE)
    (root / "autograder_tests").mkdir()
    (root / "autograder_tests" / "conftest.py").write_text(FAKE_CONFTEST)
    (root / "autograder_tests" / "test_fake_judge.py").write_text(FAKE_TESTS)
    (root / "autograder_tests" / "__main__.py").write_text(FAKE_MAIN)
    nbgrader(root, "generate_assignment", ASSIGNMENT, "--force")
    return Course.locate(root)


@pytest.fixture(scope="session")
def fake_course_template(tmp_path_factory) -> Path:
    """The stand-in course, released once per test session (copy it before use)."""
    return build_fake_course(tmp_path_factory.mktemp("fake-course") / "course").root


@pytest.fixture
def fake_course(fake_course_template, tmp_path) -> Course:
    """A fresh copy of the released stand-in course."""
    root = tmp_path / "course"
    shutil.copytree(fake_course_template, root)
    return Course.locate(root)


def submit(course: Course, student: str, *, bugs: tuple[str, ...] = (), marker: str = "",
           answer: str | None = "Because the gradients say so.", content: bytes | None = None) -> Path:
    """Place a submission for ``student``: the released notebook with the functions written.

    ``bugs`` names functions left wrong; ``marker`` is added to the first function's cell (e.g.
    ``JUDGE_SLEEP=5``); ``answer`` replaces the written answer (``None``: left as released);
    ``content`` replaces the whole file.
    """
    path = course.submission(student)
    path.parent.mkdir(parents=True, exist_ok=True)
    if content is not None:
        path.write_bytes(content)
        return path
    notebook = nbformat.read(str(course.release_dir / NOTEBOOK), as_version=4)
    first = True
    for cell in notebook.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in FUNCTIONS:
            body = "return x  # BUG" if grade_id in bugs else "return x"
            extra = f"  # STUDENT={student} {marker if first else ''}"
            cell.source = cell.source.replace("raise NotImplementedError()", body + extra)
            first = False
        elif grade_id == "part2_answer" and answer is not None:
            cell.source = answer
    nbformat.write(notebook, str(path))
    return path


def tree_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``, by relative path (to check that nothing changed)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def gradebook_scores(course: Course) -> dict[str, dict[str, float | None]]:
    """``{student: {cell: auto_score}}`` for every submission in the course's gradebook."""
    from nbgrader.api import Gradebook

    from gradcam_kit.grading.nbgrader_settings import NbgraderSettings

    settings = NbgraderSettings.of(course)
    with Gradebook(settings.db_url, settings.course_id) as gradebook:
        found = {}
        for submission in gradebook.assignment_submissions(ASSIGNMENT):
            for notebook in submission.notebooks:
                found[submission.student.id] = {g.cell.name: g.auto_score for g in notebook.grades}
        return found


def kit_env(**extra: str) -> dict[str, str]:
    """The environment for the kit's commands: offline weights, and the venv's scripts on PATH
    (nbgrader runs ``alembic`` when it creates a gradebook)."""
    env = dict(os.environ, GRADCAM_WEIGHTS=os.environ.get("GRADCAM_WEIGHTS", "random"))
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(extra)
    return env


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture
def judge_log(tmp_path, monkeypatch) -> Path:
    """The file where the fake judge notes each finished run."""
    log = tmp_path / "judge-runs.log"
    monkeypatch.setenv("FAKE_JUDGE_LOG", str(log))
    return log


def runs(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []
