"""``gradcam-kit grade``: grade every submission with the judge, a few at a time, and keep the grades.

The batch is a pipeline of small steps:

1. :func:`find_submissions`: the students to grade, from ``submitted/`` or ``--student``;
2. :func:`inspect_submission`: read each notebook once (a missing or unreadable one is reported,
   naming the file, and left out);
3. :func:`already_graded`: skip a student whose results are kept, in the gradebook too, and whose
   notebook has not changed since (unless ``--force``); steps 1-3 make the :func:`plan`;
4. :meth:`JudgeRunner.judge`: judge subprocesses, ``--workers`` of them at a time, on copies of
   the notebooks. When the judge can grade a series of notebooks in one process (``python -m
   autograder_tests --out DIR NB...``), each process grades a few students in turn, sharing its
   imports and reference computations; otherwise each student gets ``python -m pytest
   autograder_tests --submission ... --results-json ... --artifacts ...``. Either way each notebook
   gets a fresh sandboxed worker (forked by the judge's zygote at the ``bwrap`` level), and only
   that worker runs student code.
   Beside them, :meth:`JudgeRunner.start_preparing` computes the reference values once (``python
   -m autograder_tests --prepare``); the judges wait for it rather than compute them too, and so
   never build a model nor import torchvision;
5. :meth:`Recorder.record`: as soon as a judge finishes, in this process: the autograded copy, the
   feedback page, the student's transaction in ``gradebook.db``, then ``grades/<student>.json`` (the
   "done" marker, written last and atomically) and the CSV; steps 4-5 are :func:`judge_all`;
6. the histogram and the summary table (:func:`grade_course`).

A judge that crashes or runs out of time fails that student only; the batch goes on. Killing the
grader loses nothing that was recorded, and a rerun resumes with the students not yet done.

Layout of ``grades/``::

    grades/TP2_GradCAM.csv              the autograded points (--csv overrides the path)
    grades/TP2_GradCAM_scores.png       the histogram of the scores
    grades/<student>.json               the judge's results for the student (the "done" marker)
    grades/feedback/<student>.html      the feedback page, with the two heatmaps
    grades/artifacts/<student>/         what the judge left (heatmap.npz)
    grades/logs/<student>.log           the judge's output
    grades/.reference-cache/            the judges' shared reference arrays (safe to delete)
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence, TextIO

import nbformat

from gradcam_kit.course import ASSIGNMENT, NOTEBOOK, Course
from gradcam_kit.errors import KitError
from gradcam_kit.grading import reports
from gradcam_kit.grading.gradebook import (
    GradebookError,
    GradebookWriter,
    NbgraderSettings,
    StudentGrades,
    annotate_tests,
    read_timestamp,
    sanitize,
    test_cells,
    write_notebook_atomically,
)
from gradcam_kit.grading.processes import process_alive
from gradcam_kit.grading.reference_cache import CACHE_ENV as REFERENCE_CACHE_ENV
from gradcam_kit.grading.reference_cache import PREPARING
from gradcam_kit.progress import ProgressBar

TIMEOUT_ENV = "GRADCAM_JUDGE_TIMEOUT"
DEFAULT_TIMEOUT_S = 900.0
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
#: Memory to plan for each judge and its sandboxed worker (see benchmarks/grading.py).
MEMORY_PER_WORKER = 2 * 2**30


# ---------------------------------------------------------------------------------------------
# Where things go
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GradesFolder:
    """The paths under ``grades/`` (see the module docstring)."""

    root: Path

    def marker(self, student: str) -> Path:
        return self.root / f"{student}.json"

    def feedback(self, student: str) -> Path:
        return self.root / "feedback" / f"{student}.html"

    def artifacts(self, student: str) -> Path:
        return self.root / "artifacts" / student

    def log(self, student: str) -> Path:
        return self.root / "logs" / f"{student}.log"

    @property
    def work(self) -> Path:
        """Scratch space of the judges (one folder per run and student, removed after use)."""
        return self.root / ".work"

    @property
    def reference_cache(self) -> Path:
        """The judges' shared cache of reference arrays (safe to delete)."""
        return self.root / ".reference-cache"

    @property
    def csv(self) -> Path:
        return self.root / f"{ASSIGNMENT}.csv"

    @property
    def histogram(self) -> Path:
        return self.root / f"{ASSIGNMENT}_scores.png"

    def load_marker(self, student: str) -> dict | None:
        """The kept results of ``student``, or ``None`` if absent or unreadable."""
        try:
            data = json.loads(self.marker(student).read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and isinstance(data.get("grading"), dict) else None

    def all_results(self) -> dict[str, dict]:
        """The kept results of every student graded so far."""
        found = {}
        for path in sorted(self.root.glob("*.json")):
            data = self.load_marker(path.stem)
            if data is not None and data["grading"].get("student") == path.stem:
                found[path.stem] = data
        return found


# ---------------------------------------------------------------------------------------------
# 1-3: what to grade
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Submission:
    """A submitted notebook, read once: the judge and the sanitize step get these exact bytes."""

    student: str
    path: Path
    content: bytes = field(repr=False)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


@dataclass(frozen=True)
class Problem:
    """A student that could not be graded, and why (in words that name the file)."""

    student: str
    message: str


def valid_student_id(student: str) -> bool:
    """A plain folder name: not empty, no path separator, not hidden."""
    return bool(student) and "/" not in student and "\\" not in student and "\0" not in student \
        and not student.startswith(".")


def find_submissions(course: Course, students: Sequence[str] | None) -> tuple[list[str], list[Problem]]:
    """The students to consider, and the ones asked for that have no submission folder.

    Without ``students``, every folder of ``submitted/`` that holds the assignment's folder (hidden
    folders are ignored). With ``students``, exactly those.
    """
    problems: list[Problem] = []
    if students:
        chosen: list[str] = []
        for student in dict.fromkeys(students):
            if not valid_student_id(student):
                problems.append(Problem(student, f"{student!r} is not a valid student id"))
            elif not course.submission(student).parent.is_dir():
                problems.append(Problem(student, f"no submission: {course.submission(student)} does not exist"))
            else:
                chosen.append(student)
        return chosen, problems
    if not course.submitted_dir.is_dir():
        return [], []
    found = sorted(p.name for p in course.submitted_dir.iterdir()
                   if p.is_dir() and valid_student_id(p.name) and (p / ASSIGNMENT).is_dir())
    return found, problems


def inspect_submission(course: Course, student: str) -> Submission | Problem:
    """Read the student's notebook and check that it is one."""
    path = course.submission(student)
    if not path.is_file():
        others = sorted(p.name for p in path.parent.glob("*.ipynb")) if path.parent.is_dir() else []
        hint = f" (the folder holds: {', '.join(others)})" if others else ""
        return Problem(student, f"{path}: no such notebook{hint}")
    try:
        content = path.read_bytes()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            notebook = nbformat.reads(content.decode("utf-8"), as_version=4)
        if not isinstance(notebook.get("cells"), list):
            raise ValueError("it has no list of cells")
    except (OSError, UnicodeDecodeError) as error:
        return Problem(student, f"{path}: cannot be read ({error})")
    except Exception as error:  # nbformat raises many kinds of errors on malformed JSON
        return Problem(student, f"{path}: not a readable notebook ({type(error).__name__}: {error})")
    return Submission(student, path, content)


def already_graded(folder: GradesFolder, writer: GradebookWriter, submission: Submission) -> bool:
    """Whether results are kept for this exact notebook (same sha256) and are in the gradebook."""
    kept = folder.load_marker(submission.student)
    return (kept is not None and kept["grading"].get("sha256") == submission.sha256
            and writer.has_autograded(submission.student))


# ---------------------------------------------------------------------------------------------
# 4: the judge
# ---------------------------------------------------------------------------------------------
#: The judge can grade a series of notebooks in one process (``python -m autograder_tests --out
#: DIR NB1.ipynb NB2.ipynb ...``): each notebook gets its own pytest session and its own fresh
#: sandboxed worker, but the judge's imports and reference computations are shared. After each
#: notebook it prints a line matching :data:`SERIES_DONE`.
SERIES_ENTRY = "__main__.py"
SERIES_DONE = re.compile(r"^\[autograder\] (?P<name>.+)\.ipynb: exit status (?P<status>-?\d+), [0-9.]+ s\s*$")
#: The most notebooks given to one judge process (a crash costs the rest of its series a restart).
MAX_SERIES = 8


@dataclass
class JudgeRun:
    """What the judge left for one submission."""

    submission: Submission
    notebook: Path
    results_path: Path
    artifacts: Path
    log: Path
    returncode: int | None = None
    seconds: float = 0.0
    error: str | None = None

    @classmethod
    def planned(cls, submission: Submission, folder: Path) -> "JudgeRun":
        """The paths of ``submission`` in a series folder (where its copy is written)."""
        student = submission.student
        run = cls(submission, folder / f"{student}.ipynb", folder / "out" / f"{student}.json",
                  folder / "out" / student, folder / "logs" / f"{student}.log")
        run.notebook.write_bytes(submission.content)
        run.artifacts.mkdir(parents=True, exist_ok=True)
        run.log.parent.mkdir(exist_ok=True)
        return run

    def finish(self, returncode: int | None, seconds: float, error: str | None = None) -> "JudgeRun":
        self.returncode, self.seconds = returncode, seconds
        if error is None and returncode not in (0, 1):
            error = f"the judge crashed (exit status {returncode})"
        self.error = error
        return self


# Linux: the judge dies with the grader (PR_SET_PDEATHSIG), so a killed batch leaves no orphans.
_LAUNCHER = (
    "import ctypes, os, signal, sys\n"
    "try:\n"
    "    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)\n"
    "    if os.getppid() != int(sys.argv[1]): os._exit(1)\n"
    "except (OSError, AttributeError): pass\n"
    "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])\n"
)


def _launch(arguments: list[str]) -> list[str]:
    if sys.platform.startswith("linux"):
        return [sys.executable, "-c", _LAUNCHER, str(os.getpid()), *arguments]
    return [sys.executable, *arguments]


def judge_command(course: Course, run: JudgeRun) -> list[str]:
    """The judge's command line for one notebook (see ``docs/design.md``)."""
    return _launch([
        "-m", "pytest", str(course.autograder_dir),
        "--submission", str(run.notebook),
        "--results-json", str(run.results_path),
        "--artifacts", str(run.artifacts),
        "-q", "-p", "no:cacheprovider",
    ])


def series_command(runs: Sequence[JudgeRun]) -> list[str]:
    """The judge's command line for a series of notebooks (run in the course folder)."""
    return _launch(["-m", "autograder_tests", "--out", str(runs[0].results_path.parent),
                    *(str(run.notebook) for run in runs)])


def judge_environment(threads: int, reference_cache: Path) -> dict[str, str]:
    """The grader's environment for the judges, unless the user set these variables already.

    * ``threads`` BLAS/OpenMP threads per judge;
    * ``$GRADCAM_REFERENCE_CACHE``: one folder where the judges keep the reference arrays, so
      that only the first judge of a course computes them (the judge writes it atomically).
    """
    env = dict(os.environ)
    for name in THREAD_VARIABLES:
        env.setdefault(name, str(threads))
    env.setdefault(REFERENCE_CACHE_ENV, str(reference_cache))
    return env


def series_length(jobs: int, workers: int) -> int:
    """Notebooks per judge process: the jobs shared among the workers, at most :data:`MAX_SERIES`."""
    return max(1, min(MAX_SERIES, -(-jobs // max(1, workers))))


class JudgeRunner:
    """Run the judges, ``workers`` processes at a time, and hand over each student as it is done.

    With a judge that grades series of notebooks (``autograder_tests/__main__.py``), each process
    grades up to :data:`MAX_SERIES` submissions; otherwise each gets its own ``pytest`` process.
    A judge that crashes or exceeds ``timeout`` seconds on a notebook fails that student only:
    the rest of its series is judged again by a new process.

    Parameters
    ----------
    course : Course
        The course (the judge is its ``autograder_tests/``).
    work : Path
        Where each judge process gets its own folder.
    timeout : float
        Seconds the judge may spend on one notebook.
    threads : int
        BLAS/OpenMP threads for each judge.
    reference_cache : Path
        The judges' shared cache of reference arrays.
    """

    def __init__(self, course: Course, work: Path, timeout: float, threads: int, reference_cache: Path) -> None:
        self.course = course
        self.work = work
        self.timeout = timeout
        self.env = judge_environment(threads, reference_cache)
        self.series = (course.autograder_dir / SERIES_ENTRY).is_file()
        self._running: dict[int, subprocess.Popen] = {}
        self._lock = threading.Lock()
        self._stopping = False
        self._preparing: threading.Thread | None = None
        self.preparation_problem: str | None = None
        """Why the reference values could not be prepared ahead (``None``: they were, or not tried)."""

    # -----------------------------------------------------------------------------------------
    def judge(self, todo: Sequence[Submission], workers: int) -> Iterator[JudgeRun]:
        """Judge every submission of ``todo``; yield each run as soon as it is finished."""
        if not todo:
            return
        size = series_length(len(todo), workers) if self.series else 1
        batches: queue.Queue[list[Submission]] = queue.Queue()
        for index in range(0, len(todo), size):
            batches.put(list(todo[index:index + size]))
        finished: queue.Queue[JudgeRun] = queue.Queue()
        slots = [threading.Thread(target=self._slot, args=(batches, finished.put), daemon=True,
                                  name=f"judge-{n}") for n in range(min(workers, batches.qsize()))]
        for slot in slots:
            slot.start()
        waiting = {submission.student: submission for submission in todo}
        try:
            while waiting:
                try:
                    run = finished.get(timeout=0.5)
                except queue.Empty:
                    if any(slot.is_alive() for slot in slots) or not finished.empty():
                        continue
                    for submission in waiting.values():  # cannot happen; never wait forever though
                        nowhere = self.work / "missing"
                        yield JudgeRun(submission, nowhere, nowhere, nowhere, nowhere).finish(
                            None, 0.0, "the grader lost track of this notebook")
                    return
                waiting.pop(run.submission.student, None)
                yield run
        finally:
            self.stop_all()
            for thread in [*slots, *([self._preparing] if self._preparing else [])]:
                thread.join(timeout=15)

    def start_preparing(self) -> None:
        """Start computing the judges' reference values into their shared cache, beside the judges.

        ``python -m autograder_tests --prepare`` runs in a process of its own while the judges start
        their workers; a judge that needs a value before it is done waits for it (the cache folder
        holds a :data:`PREPARING` file naming the process) instead of building the same models
        beside it. If it fails, each judge computes what it needs, as a judge without
        ``--prepare`` (an older ``autograder_tests/``) always does; :attr:`preparation_problem`
        then says why.
        """
        if not self.series:
            return
        cache = Path(self.env[REFERENCE_CACHE_ENV])
        cache.mkdir(parents=True, exist_ok=True)
        log = tempfile.TemporaryFile()
        process = self._start(_launch(["-m", "autograder_tests", "--prepare"]), log)
        if process is None:
            log.close()
            return
        marker = cache / PREPARING
        marker.write_text(str(process.pid))

        def wait() -> None:
            try:
                returncode = process.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                _kill_group(process)
                returncode = None
            finally:
                self._forget(process)
                marker.unlink(missing_ok=True)
            if returncode != 0 and not self._stopping:
                log.seek(0)
                lines = log.read().decode("utf-8", "replace").strip().splitlines()
                self.preparation_problem = ((f"exit status {returncode}" if returncode is not None
                                             else f"it did not finish within {self.timeout:g} s")
                                            + (f": {lines[-1]}" if lines else ""))
            log.close()

        self._preparing = threading.Thread(target=wait, daemon=True, name="prepare-references")
        self._preparing.start()

    def _slot(self, batches: "queue.Queue[list[Submission]]", emit) -> None:
        """One worker slot: take series from the queue until it is empty."""
        while not self._stopping:
            try:
                batch = batches.get_nowait()
            except queue.Empty:
                return
            done: set[str] = set()

            def hand_over(run: JudgeRun) -> None:
                done.add(run.submission.student)
                emit(run)

            folder = self.work / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
            try:
                folder.mkdir(parents=True)
                retry = self._run_series(batch, folder, hand_over) if self.series else \
                    self._run_single(batch[0], folder, hand_over)
            except Exception as error:  # a fault of the grader itself: fail the series, not the batch
                for submission in batch:
                    if submission.student not in done:
                        nowhere = folder / "missing"
                        run = JudgeRun(submission, nowhere, nowhere, nowhere, nowhere)
                        emit(run.finish(None, 0.0, f"the grader could not run the judge ({error})"))
                continue
            if retry and not self._stopping:
                batches.put(retry)

    def _start(self, command: list[str], stdout) -> subprocess.Popen | None:
        with self._lock:
            if self._stopping:
                return None
            process = subprocess.Popen(command, cwd=self.course.root, env=self.env, stdin=subprocess.DEVNULL,
                                       stdout=stdout, stderr=subprocess.STDOUT, start_new_session=True)
            self._running[process.pid] = process
            return process

    def _forget(self, process: subprocess.Popen) -> None:
        with self._lock:
            self._running.pop(process.pid, None)

    def _run_single(self, submission: Submission, folder: Path, emit) -> list[Submission]:
        """``pytest autograder_tests`` on one notebook."""
        run = JudgeRun.planned(submission, folder)
        started = time.monotonic()
        with open(run.log, "wb") as log:
            process = self._start(judge_command(self.course, run), log)
            if process is None:
                emit(run.finish(None, 0.0, "not started: the grading was interrupted"))
                return []
            try:
                returncode, error = process.wait(timeout=self.timeout), None
            except subprocess.TimeoutExpired:
                _kill_group(process)
                returncode, error = None, f"the judge did not finish within {self.timeout:g} s and was stopped"
            finally:
                self._forget(process)
        emit(run.finish(returncode, time.monotonic() - started, error))
        return []

    def _run_series(self, batch: Sequence[Submission], folder: Path, emit) -> list[Submission]:
        """``python -m autograder_tests`` on a series of notebooks; returns those to judge again."""
        runs = {submission.student: JudgeRun.planned(submission, folder) for submission in batch}
        pending = list(runs)
        process = self._start(series_command(list(runs.values())), subprocess.PIPE)
        if process is None:
            return []
        reader = _LineReader(process.stdout)
        last = time.monotonic()
        piece = bytearray()
        error = None
        try:
            while pending:
                line = reader.readline(deadline=last + self.timeout)
                if line is None:  # no notebook finished in time
                    _kill_group(process)
                    error = f"the judge did not finish within {self.timeout:g} s and was stopped"
                    break
                if line == b"":  # the process ended
                    break
                piece += line
                done = SERIES_DONE.match(line.decode("utf-8", "replace"))
                if done and done["name"] in pending:
                    now = time.monotonic()
                    run = runs[done["name"]]
                    pending.remove(done["name"])
                    run.log.write_bytes(bytes(piece))
                    piece.clear()
                    emit(run.finish(int(done["status"]), now - last))
                    last = now
            if not pending:
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    _kill_group(process)
        finally:
            if process.poll() is None and pending:
                _kill_group(process)
            returncode = process.wait()
            self._forget(process)
            reader.close()
        if not pending:
            return []
        # the notebook in progress failed; the rest of the series goes to a new process
        failed = runs[pending[0]]
        failed.log.write_bytes(bytes(piece) + reader.rest())
        emit(failed.finish(returncode, time.monotonic() - last, error or
                           (f"the judge crashed (exit status {returncode})" if returncode not in (0, 1)
                            else "the judge stopped without grading this notebook")))
        return [runs[name].submission for name in pending[1:]]

    def stop_all(self) -> None:
        """Kill every running judge (and its worker) and start no more."""
        with self._lock:
            self._stopping = True
            running = list(self._running.values())
        for process in running:
            _kill_group(process)


class _LineReader:
    """Lines from a pipe, with a deadline (``readline`` returns ``None`` when it passes)."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.fd = stream.fileno()
        self.buffer = bytearray()
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.fd, selectors.EVENT_READ)
        self.eof = False

    def readline(self, deadline: float) -> bytes | None:
        while True:
            newline = self.buffer.find(b"\n")
            if newline >= 0:
                line = bytes(self.buffer[:newline + 1])
                del self.buffer[:newline + 1]
                return line
            if self.eof:
                line, self.buffer = bytes(self.buffer), bytearray()
                return line
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            if self.selector.select(timeout=min(remaining, 1.0)):
                data = os.read(self.fd, 65536)
                if data:
                    self.buffer += data
                else:
                    self.eof = True

    def rest(self) -> bytes:
        return bytes(self.buffer)

    def close(self) -> None:
        self.selector.close()
        self.stream.close()


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def remove_stale_work(work: Path) -> None:
    """Remove the work folders left by graders that are no longer running."""
    if not work.is_dir():
        return
    for folder in work.iterdir():
        owner = folder.name.split("-", 1)[0]
        if owner.isdigit() and int(owner) != os.getpid() and process_alive(int(owner)):
            continue
        shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# 5: recording one student
# ---------------------------------------------------------------------------------------------
class StudentFailure(Exception):
    """This student could not be graded; the message says why."""


def read_results(run: JudgeRun, expected: Mapping[str, float]) -> dict:
    """The judge's results for a finished run, checked against the gradebook's test cells.

    Parameters
    ----------
    run : JudgeRun
        A run that exited normally.
    expected : Mapping[str, float]
        The autograded test cells of the released notebook and their points.

    Raises
    ------
    StudentFailure
        When the results are missing, malformed, disagree with the gradebook, or report an
        internal error of the judge (``"outcome": "error"``): the student is then not graded, and
        a rerun tries again.
    """
    try:
        results = json.loads(run.results_path.read_text())
    except FileNotFoundError:
        raise StudentFailure(f"the judge wrote no results (exit status {run.returncode})") from None
    except (OSError, ValueError) as error:
        raise StudentFailure(f"the judge's results are not valid JSON ({error})") from None
    tests = results.get("tests") if isinstance(results, dict) else None
    if not isinstance(tests, dict) or not tests:
        raise StudentFailure("the judge's results hold no tests")
    for name, test in tests.items():
        try:
            points, possible = float(test["points"]), float(test["max_points"])
            str(test["outcome"])
        except (KeyError, TypeError, ValueError):
            raise StudentFailure(f"the judge's result for {name} is malformed: {test!r}") from None
        if not 0.0 <= points <= possible:
            raise StudentFailure(f"the judge gave {points:g} of {possible:g} points for {name}")
        if test["outcome"] == "error":  # the judge's own fault (a bug, a reference it could not compute)
            raise StudentFailure(f"the judge had an internal error in {name} ({test.get('feedback') or 'no message'})")
    missing = sorted(set(expected) - set(tests))
    if missing:
        raise StudentFailure(f"the judge gave no result for {', '.join(missing)}")
    for name, possible in expected.items():
        if abs(float(tests[name]["max_points"]) - possible) > 1e-9:
            raise StudentFailure(
                f"{name} is worth {possible:g} points in the gradebook but {tests[name]['max_points']:g} "
                "for the judge: run `gradcam-kit release` again after changing the points"
            )
    return results


@dataclass
class Recorder:
    """Everything the main process needs to record students as their judges finish."""

    course: Course
    folder: GradesFolder
    settings: NbgraderSettings
    writer: GradebookWriter
    expected: Mapping[str, float]
    columns: Sequence[str]
    csv_path: Path
    release: nbformat.NotebookNode | None = None
    _tp2_utils: object = None

    def heatmap(self, results: Mapping, artifacts: Path) -> tuple[bytes | None, str | None]:
        """The heatmap comparison PNG, or a note saying why there is none."""
        name = (results.get("artifacts") or {}).get("heatmap") if isinstance(results.get("artifacts"), dict) else None
        if not name:
            return None, None
        try:
            if self._tp2_utils is None:
                self._tp2_utils = self.course.tp2_utils
            return reports.heatmap_png(artifacts / name, self._tp2_utils), None
        except Exception as error:
            return None, f"the heatmap could not be drawn ({type(error).__name__}: {error})"

    def heatmap_case(self, results: Mapping, artifacts: Path) -> reports.HeatmapCase | None:
        """What the heatmap is of (class, layer, image, weights), for its caption; ``None`` if unknown."""
        name = (results.get("artifacts") or {}).get("heatmap") if isinstance(results.get("artifacts"), dict) else None
        if not name or self._tp2_utils is None:
            return None
        return reports.heatmap_case(artifacts / name, self._tp2_utils.class_names())

    def record(self, run: JudgeRun) -> dict:
        """Record one finished run; returns the kept results.

        Raises
        ------
        StudentFailure
            When this student cannot be graded (nothing of it is written to the gradebook).
        """
        submission = run.submission
        student = submission.student
        keep_log(run, self.folder.log(student))
        if run.error:
            raise StudentFailure(f"{run.error}; see {self.folder.log(student)}")
        results = read_results(run, self.expected)

        try:
            sanitized = sanitize(run.notebook, self.settings, student, self.release)
        except Exception as error:
            raise StudentFailure(
                f"{submission.path}: nbgrader cannot prepare it for grading ({type(error).__name__}: {error})"
            ) from None
        notes = list(sanitized.warnings)
        timestamp, problem = read_timestamp(submission.path.parent)
        notes += [problem] if problem else []
        png, problem = self.heatmap(results, run.artifacts)
        notes += [problem] if problem else []
        graded_at = datetime.now().astimezone()

        # files for people: the autograded copy (formgrader), the artifacts, the feedback page
        autograded = self.course.root / "autograded" / student / ASSIGNMENT
        annotate_tests(sanitized.notebook, results, png)
        write_notebook_atomically(sanitized.notebook, autograded / NOTEBOOK)
        if (submission.path.parent / "timestamp.txt").is_file():
            reports.write_atomically(autograded / "timestamp.txt",
                                     (submission.path.parent / "timestamp.txt").read_bytes())
        keep_artifacts(run.artifacts, self.folder.artifacts(student))
        reports.write_atomically(
            self.folder.feedback(student),
            reports.feedback_html(student, ASSIGNMENT, results, png, notes, graded_at,
                                  heatmap_case=self.heatmap_case(results, run.artifacts) if png else None),
        )

        # the gradebook: one transaction
        tests = {name: float(test["points"]) for name, test in results["tests"].items()}
        try:
            self.writer.record(StudentGrades(student, tests, sanitized.notebook, timestamp))
        except GradebookError as error:
            raise StudentFailure(f"gradebook not updated ({error})") from None

        # the "done" marker, last
        kept = dict(results)
        kept["grading"] = {
            "student": student,
            "submission": str(submission.path.relative_to(self.course.root)),
            "sha256": submission.sha256,
            "graded_at": graded_at.isoformat(timespec="seconds"),
            "judge_seconds": round(run.seconds, 2),
            "notes": notes,
            "feedback": str(self.folder.feedback(student).relative_to(self.course.root)),
            "autograded": str((autograded / NOTEBOOK).relative_to(self.course.root)),
        }
        reports.write_atomically(self.folder.marker(student), json.dumps(kept, indent=2) + "\n")
        self.write_csv()
        return kept

    def write_csv(self) -> None:
        reports.write_csv(self.csv_path, self.folder.all_results(), self.columns)


def keep_log(run: JudgeRun, destination: Path) -> None:
    """Copy the judge's output next to the grades (it explains failures)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    try:
        shutil.copyfile(run.log, destination)
    except OSError:
        pass


def keep_artifacts(source: Path, destination: Path) -> None:
    """Replace ``destination`` by the judge's artifacts folder."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    staged = destination.with_name(f".{destination.name}.{uuid.uuid4().hex[:8]}")
    shutil.copytree(source, staged)
    if destination.exists():
        shutil.rmtree(destination)
    os.replace(staged, destination)


def read_notebook(path: Path) -> nbformat.NotebookNode | None:
    """The notebook at ``path``, or ``None`` if it cannot be read."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return nbformat.read(str(path), as_version=4)
    except Exception:
        return None


def column_order(course: Course, expected: Mapping[str, float]) -> list[str]:
    """The test columns of the CSV: the source notebook's test cells in notebook order."""
    notebook = read_notebook(course.source_notebook)
    order = [name for name in test_cells(notebook) if name in expected] if notebook is not None else []
    return order + sorted(set(expected) - set(order))


# ---------------------------------------------------------------------------------------------
# 6: the whole batch
# ---------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    """How one student fared in this run, for the summary table."""

    student: str
    status: str
    results: Mapping | None = None


@dataclass
class Plan:
    """What this run does: the submissions to judge, and the students already settled."""

    todo: list[Submission]
    outcomes: list[Outcome]
    problems: list[Problem]
    found_any: bool


def available_memory() -> int | None:
    """Bytes of memory available now (Linux ``MemAvailable``), or ``None`` when unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def default_workers(jobs: int) -> int:
    """One judge per CPU, no more than there are jobs, nor than the memory allows."""
    workers = min(os.cpu_count() or 1, jobs)
    memory = available_memory()
    if memory is not None:
        workers = min(workers, memory // MEMORY_PER_WORKER)
    return max(1, workers)


def judge_timeout() -> float:
    """Seconds per judge: ``$GRADCAM_JUDGE_TIMEOUT`` or the default."""
    value = os.environ.get(TIMEOUT_ENV, "").strip()
    try:
        return float(value) if value else DEFAULT_TIMEOUT_S
    except ValueError:
        raise KitError(f"${TIMEOUT_ENV}={value!r} is not a number of seconds") from None


def plan(course: Course, folder: GradesFolder, writer: GradebookWriter, students: Sequence[str] | None,
         force: bool) -> Plan:
    """Steps 1-3: find, read and sort out the submissions."""
    names, problems = find_submissions(course, students)
    outcomes = [Outcome(p.student, f"not graded: {p.message}") for p in problems]
    todo: list[Submission] = []
    for student in names:
        found = inspect_submission(course, student)
        if isinstance(found, Problem):
            problems.append(found)
            outcomes.append(Outcome(student, f"not graded: {found.message}"))
        elif not force and already_graded(folder, writer, found):
            outcomes.append(Outcome(student, "already graded (--force to regrade)", folder.load_marker(student)))
        else:
            todo.append(found)
    return Plan(todo, outcomes, problems, bool(names or problems))


def judge_all(todo: Sequence[Submission], runner: JudgeRunner, recorder: Recorder, workers: int) -> Iterator[Outcome]:
    """Steps 4-5: run the judges, ``workers`` at a time, and record each student as it finishes.

    Interrupting it (Ctrl-C) kills the running judges; what was recorded stays.
    """
    with ProgressBar(len(todo), "grading") as bar:
        try:
            for run in runner.judge(todo, workers):
                student = run.submission.student
                try:
                    kept = recorder.record(run)
                except StudentFailure as error:
                    bar.message(f"gradcam-kit grade: {student}: {error}")
                    bar.advance(f"{student}: failed")
                    yield Outcome(student, f"FAILED: {error}")
                else:
                    earned, possible = reports.total(kept)
                    bar.advance(f"{student}: {reports.number(earned)}/{reports.number(possible)}")
                    yield Outcome(student, "graded", kept)
                finally:
                    discard(run)
        finally:
            remove_own_work(runner.work)


def discard(run: JudgeRun) -> None:
    """Remove what the judge left for a student once it is recorded (or failed)."""
    for path in (run.notebook, run.results_path, run.log):
        if path.is_file():
            path.unlink(missing_ok=True)
    if run.artifacts.is_dir():
        shutil.rmtree(run.artifacts, ignore_errors=True)


def remove_own_work(work: Path) -> None:
    """Remove this process's work folders (every student is recorded by then)."""
    if work.is_dir():
        for folder in work.glob(f"{os.getpid()}-*"):
            shutil.rmtree(folder, ignore_errors=True)


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
) -> int:
    """Grade the submissions of ``course`` (see the module docstring).

    Parameters
    ----------
    course : Course
        The nbgrader course (``gradcam-kit release`` must have been run).
    students : Sequence[str], optional
        Only these students (default: every folder of ``submitted/``).
    workers : int, optional
        Judges run at the same time (default: the CPU count).
    force : bool
        Grade again the students whose results are kept.
    csv_path : str or Path, optional
        Where to write the CSV (default: ``grades/TP2_GradCAM.csv``).
    timeout : float, optional
        Seconds per judge (default: ``$GRADCAM_JUDGE_TIMEOUT`` or 900).
    out : TextIO, optional
        Where the summary goes (default: standard output); the progress bar uses standard error.
    show_paths : bool
        End the summary with where the outputs are.

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

    with GradebookWriter(settings) as writer:
        expected = writer.check_assignment()
        recorder = Recorder(course, folder, settings, writer, expected, column_order(course, expected),
                            Path(csv_path).resolve() if csv_path else folder.csv,
                            read_notebook(course.release_dir / NOTEBOOK))
        work = plan(course, folder, writer, students, force)
        for problem in work.problems:
            print(f"gradcam-kit grade: {problem.message}", file=sys.stderr)
        if not work.found_any:
            print(f"Nothing to grade: no {course.submitted_dir}/<student>/{ASSIGNMENT}/ folder.", file=out)
            return 0

        workers = workers or default_workers(len(work.todo))
        threads = max(1, (os.cpu_count() or 1) // workers)
        remove_stale_work(folder.work)
        runner = JudgeRunner(course, folder.work, timeout, threads, folder.reference_cache)
        if work.todo:
            print(f"Grading {len(work.todo)} submission(s) with {workers} worker(s)"
                  f" ({len(work.outcomes)} other(s) left as they are).", file=sys.stderr)
        outcomes = list(work.outcomes)
        interrupted = False
        try:
            if work.todo:
                runner.start_preparing()
            outcomes.extend(judge_all(work.todo, runner, recorder, workers))
        except KeyboardInterrupt:
            interrupted = True
            print("\ngradcam-kit grade: interrupted; the students graded so far are kept: "
                  "run the same command again to grade the others.", file=sys.stderr)

        if runner.preparation_problem is not None:
            print(f"gradcam-kit grade: the reference values could not be prepared ahead "
                  f"({runner.preparation_problem}); each judge computed those it needed.", file=sys.stderr)
        kept = folder.all_results()
        recorder.write_csv()
        if kept:
            reports.write_histogram(folder.histogram, kept, ASSIGNMENT)
        print_summary(out, outcomes, recorder, folder, course, settings, show_paths)

    if interrupted:
        return 130
    failed = any(o.status.startswith("FAILED") for o in outcomes)
    return 1 if failed or work.problems else 0


def print_summary(out: TextIO, outcomes: Iterable[Outcome], recorder: Recorder, folder: GradesFolder,
                  course: Course, settings: NbgraderSettings, show_paths: bool = True) -> None:
    """The table of this run's students, then where the outputs are."""
    rows = []
    for outcome in sorted(outcomes, key=lambda o: o.student):
        score = ""
        if outcome.results is not None:
            earned, possible = reports.total(outcome.results)
            score = f"{reports.number(earned)}/{reports.number(possible)}"
        rows.append([outcome.student, score, outcome.status])
    if rows:
        print(reports.text_table(["student", "autograded", "status"], rows), file=out)
    if not show_paths:
        return
    where = [
        ("CSV", recorder.csv_path),
        ("histogram", folder.histogram),
        ("feedback pages", folder.feedback("<student>")),
        ("gradebook", settings.db_url),
        ("autograded notebooks (formgrader)", course.root / "autograded" / "<student>" / ASSIGNMENT),
    ]
    print("", file=out)
    for label, path in where:
        print(f"{label + ':':36} {path}", file=out)
