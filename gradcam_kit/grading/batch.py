"""``gradcam-kit grade``: grade every submission with the judge, a few at a time, and keep the grades.

The batch is a pipeline of small steps:

1. :func:`find_submissions`: the students to grade, from ``submitted/`` or ``--student``;
2. :func:`inspect_submission`: read each notebook once (a missing or unreadable one is reported,
   naming the file, and left out);
3. :func:`why_grade`: skip a student whose kept grade still holds (unless ``--force``): results
   kept for this exact notebook, graded with the same inputs (points, setup and test cells, helper
   module, answer key, judge, weights policy: :mod:`gradcam_kit.grading.fingerprint`), in the
   gradebook, with the autograded copy in place; otherwise say why the student is (re)graded.
   Steps 1-3 make the :func:`plan`;
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
import selectors
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence, TextIO

import nbformat

from gradcam_kit.contract import ISOLATION_ENV, REFERENCE_CACHE_ENV, judge_timeout
from gradcam_kit.fsutil import process_alive
from gradcam_kit.course import ASSIGNMENT, NOTEBOOK, Course
from gradcam_kit.errors import KitError
from gradcam_kit.grading import reports
from gradcam_kit.grading.gradebook import (
    GradebookError,
    GradebookWriter,
    NbgraderSettings,
    StudentGrades,
    annotate_tests,
    copy_assignment_files,
    read_timestamp,
    sanitize,
    test_cells,
    write_notebook_atomically,
)
from gradcam_kit.host.isolation import IsolationChoice, choose_isolation
from gradcam_kit.grading.judge_status import STATUS_FD_OPTION, JudgeStatus
from gradcam_kit.grading.exploration import ExplorationReport, annotate_exploration
from gradcam_kit.grading.fingerprint import GradingInputs
from gradcam_kit.grading.safe_text import encodable, shown, shown_line
from gradcam_kit.grading.reference_cache import PREPARING
from gradcam_kit.progress import ProgressBar

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
            data = encodable(json.loads(self.marker(student).read_text(encoding="utf-8")))
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


# --- staleness: whether a student's kept grade still holds (see gradcam_kit.grading.fingerprint) ---
def why_grade(course: Course, folder: GradesFolder, writer: GradebookWriter, submission: Submission,
              inputs: GradingInputs) -> str | None:
    """Why ``submission`` must be graded now, in words; ``None`` when its kept grade still holds.

    A kept grade holds when the results in ``grades/<student>.json`` are for this exact notebook
    (same sha256), were graded with the same :class:`GradingInputs` (points, setup and test cells,
    helper module, answer key, judge, weights policy), are in the gradebook, and the autograded
    copy that formgrader reads is in place.
    """
    student = submission.student
    kept = folder.load_marker(student)
    if kept is None:
        return "not graded yet"
    if kept["grading"].get("sha256") != submission.sha256:
        return "the notebook changed since it was graded"
    changes = inputs.changes(GradingInputs.from_plain(kept["grading"].get("inputs")))
    if changes:
        return "; ".join(changes)
    if not writer.has_autograded(student):
        return "its grades are missing from the gradebook"
    if not (course.root / "autograded" / student / ASSIGNMENT / NOTEBOOK).is_file():
        return "its autograded copy (what formgrader shows) is missing"
    return None


def stale_others(folder: GradesFolder, inputs: GradingInputs, students: Sequence[str]) -> dict[str, str]:
    """Students graded before, not among ``students``, whose kept grade came from other inputs."""
    stale = {}
    for student, kept in folder.all_results().items():
        if student not in students:
            changes = inputs.changes(GradingInputs.from_plain(kept["grading"].get("inputs")))
            if changes:
                stale[student] = "; ".join(changes)
    return stale


# ---------------------------------------------------------------------------------------------
# 4: the judge
# ---------------------------------------------------------------------------------------------
#: The judge can grade a series of notebooks in one process (``python -m autograder_tests
#: --status-fd N --out DIR NB1.ipynb NB2.ipynb ...``): each notebook gets its own pytest session and
#: its own fresh sandboxed worker, but the judge's imports and reference computations are shared.
#: After each notebook it writes a status record on descriptor N, a pipe of its own
#: (:mod:`gradcam_kit.grading.judge_status`); its output, which carries students' text, is a log.
SERIES_ENTRY = "__main__.py"
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


def judge_command(course: Course, run: JudgeRun, exploration: bool = False) -> list[str]:
    """The judge's command line for one notebook (see ``docs/design.md``); ``exploration``: also run
    the exploration cells, for formgrader."""
    return _launch([
        "-m", "pytest", str(course.autograder_dir),
        "--submission", str(run.notebook),
        "--results-json", str(run.results_path),
        "--artifacts", str(run.artifacts),
        "-q", "-p", "no:cacheprovider",
        *(["--exploration"] if exploration else []),
    ])


def series_command(runs: Sequence[JudgeRun], status_fd: int, exploration: bool = False) -> list[str]:
    """The judge's command line for a series of notebooks (run in the course folder), reporting each
    notebook done on ``status_fd``; with ``exploration`` the judge also runs the exploration cells."""
    return _launch(["-m", "autograder_tests", STATUS_FD_OPTION, str(status_fd), "--out",
                    str(runs[0].results_path.parent), *(["--exploration"] if exploration else []),
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

    def __init__(self, course: Course, work: Path, timeout: float, threads: int, reference_cache: Path,
                 isolation: str | None = None, exploration: bool = False) -> None:
        self.course = course
        self.exploration = exploration
        """Have the judges run the exploration cells too (for formgrader; grades nothing)."""
        self.work = work
        self.timeout = timeout
        self.env = judge_environment(threads, reference_cache)
        if isolation is not None:  # every session of the judges uses exactly this level, or fails as a grader fault
            self.env[ISOLATION_ENV] = isolation
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

    def _start(self, command: list[str], stdout, pass_fds: tuple[int, ...] = ()) -> subprocess.Popen | None:
        with self._lock:
            if self._stopping:
                return None
            process = subprocess.Popen(command, cwd=self.course.root, env=self.env, stdin=subprocess.DEVNULL,
                                       stdout=stdout, stderr=subprocess.STDOUT, start_new_session=True,
                                       pass_fds=pass_fds)
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
            process = self._start(judge_command(self.course, run, self.exploration), log)
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
        """``python -m autograder_tests`` on a series of notebooks; returns those to judge again.

        Each notebook is done when the judge says so on the status pipe; its part of the judge's
        output (from the previous record to this one) becomes its log.
        """
        runs = {run.notebook.name: run for run in (JudgeRun.planned(submission, folder) for submission in batch)}
        pending = list(runs)
        status_read, status_write = os.pipe()
        output = folder / "judge-output.log"
        with open(output, "wb") as log:
            try:
                process = self._start(series_command(list(runs.values()), status_write, self.exploration), log,
                                      pass_fds=(status_write,))
            finally:
                os.close(status_write)
        if process is None:
            os.close(status_read)
            return []
        reader = _LineReader(os.fdopen(status_read, "rb", buffering=0))
        last = time.monotonic()
        offset = 0
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
                try:
                    done = JudgeStatus.from_line(line)
                except ValueError:
                    continue  # not from this judge (it writes nothing else there): ignored
                if done.notebook not in pending:
                    continue
                now = time.monotonic()
                run = runs[done.notebook]
                pending.remove(done.notebook)
                offset = _copy_log(output, offset, run.log)
                emit(run.finish(done.exit_status, now - last))
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
        _copy_log(output, offset, failed.log)
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


def _copy_log(output: Path, offset: int, destination: Path) -> int:
    """Copy ``output`` from ``offset`` to its current end into ``destination``; the new offset."""
    try:
        with open(output, "rb") as source:
            source.seek(offset)
            data = source.read()
    except OSError:
        return offset
    destination.write_bytes(data)
    return offset + len(data)


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
    """This student could not be graded; the message says why. Nothing of it reaches the gradebook,
    and a rerun tries again."""

    cause = "submission"
    """Whose fault it is: ``submission`` (the notebook cannot be prepared for grading)."""

    def __init__(self, message: str) -> None:
        super().__init__(shown_line(message, 600))

    @property
    def status(self) -> str:
        """The student's line in the summary."""
        return f"FAILED (submission: {self})"


class GraderError(StudentFailure):
    """The grader itself failed on this student (a judge that crashed or ran out of time, a worker
    that could not start, the kit's own files refused, results that cannot be read, a gradebook or
    a file that cannot be written): never a student's failure, never a score."""

    cause = "grader"

    @property
    def status(self) -> str:
        return f"FAILED (grader error: {self})"


@contextmanager
def recording(what: str) -> Iterator[None]:
    """Turn any error of one step of recording a student into a :class:`GraderError` naming the step."""
    try:
        yield
    except StudentFailure:
        raise
    except Exception as error:  # noqa: BLE001 - one student's step must never stop the batch
        raise GraderError(f"{what} could not be written ({type(error).__name__}: {error})") from error


def read_results(run: JudgeRun, expected: Mapping[str, float]) -> dict:
    """The judge's results for a finished run, checked against the gradebook's test cells.

    Parameters
    ----------
    run : JudgeRun
        A run that exited normally.
    expected : Mapping[str, float]
        The autograded test cells of the released notebook and their points.

    Returns
    -------
    dict
        The results, with every string made encodable (:func:`~gradcam_kit.grading.safe_text.encodable`).

    Raises
    ------
    GraderError
        When the results are missing, malformed, disagree with the gradebook, or report an error
        of the grader (``"outcome": "error"``, with its ``grader_error``): the student is then not
        graded, and a rerun tries again.
    """
    try:
        results = encodable(json.loads(run.results_path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise GraderError(f"the judge wrote no results (exit status {run.returncode})") from None
    except (OSError, ValueError) as error:
        raise GraderError(f"the judge's results are not valid JSON ({error})") from None
    tests = results.get("tests") if isinstance(results, dict) else None
    if not isinstance(tests, dict) or not tests:
        raise GraderError("the judge's results hold no tests")
    for name, test in tests.items():
        try:
            points, possible = float(test["points"]), float(test["max_points"])
            str(test["outcome"])
        except (KeyError, TypeError, ValueError):
            raise GraderError(f"the judge's result for {name} is malformed: {test!r}") from None
        if not 0.0 <= points <= possible:
            raise GraderError(f"the judge gave {points:g} of {possible:g} points for {name}")
        if test["outcome"] == "error":  # the grader's own fault (its worker, a bug, a reference it could not compute)
            reason = test.get("grader_error") or test.get("feedback") or "no message"
            raise GraderError(f"{name}: {reason}")
    missing = sorted(set(expected) - set(tests))
    if missing:
        raise GraderError(f"the judge gave no result for {', '.join(missing)}")
    for name, possible in expected.items():
        if abs(float(tests[name]["max_points"]) - possible) > 1e-9:
            raise GraderError(
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
    isolation: IsolationChoice | None = None
    """The isolation level this run grades at, and why (``None``: not decided by this grader)."""
    _tp2_utils: object = None
    inputs: GradingInputs | None = None
    """What decides the grades of this run, kept with each student's results (see :func:`why_grade`)."""

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

        Every step is contained: whatever the submission holds (lone surrogates, odd metadata, an
        overlong ``timestamp.txt``) and whatever fails on the way, this student is recorded or gets
        a :class:`StudentFailure`, and the rest of the class is not affected.

        Raises
        ------
        StudentFailure
            When this student cannot be graded (nothing of it is written to the gradebook): a
            :class:`GraderError` when the grader is at fault.
        """
        submission = run.submission
        student = submission.student
        keep_log(run, self.folder.log(student))
        if run.error:
            raise GraderError(f"{run.error}; see {self.folder.log(student)}")
        results = read_results(run, self.expected)
        if self.isolation is not None and results.get("isolation") != self.isolation.level:
            raise GraderError(f"the judge graded at the isolation level {results.get('isolation')!r}, "
                              f"not {self.isolation.level!r} as asked")
        results["notes"] = [shown(note, 2000) for note in results.get("notes") or []]
        results.update(self.isolation_record(results))

        try:
            sanitized = sanitize(run.notebook, self.settings, student, self.release)
        except Exception as error:  # noqa: BLE001 - the notebook itself is malformed
            raise StudentFailure(
                f"{submission.path}: nbgrader cannot prepare it for grading ({type(error).__name__}: {error})"
            ) from None
        notebook = encodable(sanitized.notebook)  # lone surrogates cannot be written as UTF-8
        notes = [shown(note, 2000) for note in sanitized.warnings]
        timestamp, problem = read_timestamp(submission.path.parent)
        notes += [problem] if problem else []
        png, problem = self.heatmap(results, run.artifacts)
        notes += [problem] if problem else []
        notes += self.isolation_notes(results)
        graded_at = datetime.now().astimezone()

        # what the exploration cells showed, for formgrader (gradcam_kit/grading/exploration.py)
        exploration = ExplorationReport.read(run.artifacts)
        if exploration is not None:
            with recording("the outputs of the exploration cells"):
                annotate_exploration(notebook, exploration)
                notebook = encodable(notebook)
            notes += [shown(note, 2000) for note in exploration.notes]

        # files for people: the autograded copy (formgrader), the artifacts, the feedback page
        autograded = self.course.root / "autograded" / student / ASSIGNMENT
        with recording("the autograded copy of the notebook"):
            annotate_tests(notebook, results, png)
            write_notebook_atomically(notebook, autograded / NOTEBOOK)
        with recording("the helper module beside the autograded copy"):
            copy_assignment_files(self.course, self.settings, autograded)
        if timestamp is not None:  # nbgrader's own file, copied only when it holds a timestamp
            with recording("the autograded copy of timestamp.txt"):
                reports.write_atomically(autograded / "timestamp.txt",
                                         (submission.path.parent / "timestamp.txt").read_bytes())
        with recording("the judge's artifacts"):
            keep_artifacts(run.artifacts, self.folder.artifacts(student))
        with recording("the feedback page"):
            reports.write_atomically(
                self.folder.feedback(student),
                reports.feedback_html(student, ASSIGNMENT, results, png, notes, graded_at,
                                      heatmap_case=self.heatmap_case(results, run.artifacts) if png else None),
            )

        # the gradebook: one transaction
        tests = {name: float(test["points"]) for name, test in results["tests"].items()}
        try:
            self.writer.record(StudentGrades(student, tests, notebook, timestamp))
        except GradebookError as error:
            raise GraderError(f"gradebook not updated ({error})") from None

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
            "inputs": (self.inputs or GradingInputs.of(self.course)).to_plain(),
            "exploration": {cell.grade_id: cell.status for cell in exploration.cells} if exploration else {},
        }
        with recording("the results file (the \"done\" marker)"):
            reports.write_atomically(self.folder.marker(student), json.dumps(kept, indent=2) + "\n")
        try:
            self.write_csv()
        except Exception as error:  # noqa: BLE001 - the student is graded; the CSV is written again at the end
            print(f"gradcam-kit grade: the CSV could not be updated ({type(error).__name__}: {error})",
                  file=sys.stderr)
        return kept

    def isolation_record(self, results: Mapping) -> dict:
        """What the results keep about the sandbox: the level the judge used and the policy's verdict."""
        return {"isolation": str(results.get("isolation") or ""),
                "isolation_policy": self.isolation.to_plain() if self.isolation is not None else None}

    def isolation_notes(self, results: Mapping) -> list[str]:
        """A note for the feedback when the student was graded below the strongest level available."""
        if self.isolation is None or not self.isolation.below_strongest:
            return []
        return [self.isolation.note()]

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
    """How one student fared in this run, for the summary table (``reason``: why it was graded)."""

    student: str
    status: str
    results: Mapping | None = None
    reason: str = ""


@dataclass
class Plan:
    """What this run does: the submissions to judge, and the students already settled.

    ``reasons`` says, for each student to judge, why (:func:`why_grade`, or ``--force``);
    ``stale`` lists the students left out by ``--student`` whose kept grade is stale.
    """

    todo: list[Submission]
    outcomes: list[Outcome]
    problems: list[Problem]
    found_any: bool
    reasons: dict[str, str] = field(default_factory=dict)
    stale: dict[str, str] = field(default_factory=dict)


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


def plan(course: Course, folder: GradesFolder, writer: GradebookWriter, students: Sequence[str] | None,
         force: bool, inputs: GradingInputs | None = None) -> Plan:
    """Steps 1-3: find, read and sort out the submissions (``inputs``: what decides a grade now)."""
    inputs = inputs or GradingInputs.of(course)
    names, problems = find_submissions(course, students)
    outcomes = [Outcome(p.student, f"not graded: {p.message}") for p in problems]
    todo: list[Submission] = []
    reasons: dict[str, str] = {}
    for student in names:
        try:
            found = inspect_submission(course, student)
            reason = None if isinstance(found, Problem) else why_grade(course, folder, writer, found, inputs)
        except Exception as error:  # noqa: BLE001 - one student's files must not stop the planning
            found, reason = Problem(student, f"{course.submission(student)}: cannot be read ({error})"), None
        if isinstance(found, Problem):
            found = Problem(student, shown_line(found.message, 600))
            problems.append(found)
            outcomes.append(Outcome(student, f"not graded: {found.message}"))
        elif reason is None and not force:
            outcomes.append(Outcome(student, "already graded (--force to regrade)", folder.load_marker(student)))
        else:
            todo.append(found)
            reasons[student] = reason or "--force"
    stale = stale_others(folder, inputs, names) if students else {}
    return Plan(todo, outcomes, problems, bool(names or problems), reasons, stale)


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
                    bar.message(f"gradcam-kit grade: {shown_line(student)}: {error.status}")
                    bar.advance(f"{shown_line(student, 40)}: failed")
                    yield Outcome(student, error.status)
                except Exception as error:  # noqa: BLE001 - a bug of the grader: this student only
                    failure = GraderError(f"{type(error).__name__}: {error}")
                    note_traceback(recorder.folder.log(student))
                    bar.message(f"gradcam-kit grade: {shown_line(student)}: {failure.status}")
                    bar.advance(f"{shown_line(student, 40)}: failed")
                    yield Outcome(student, failure.status)
                else:
                    earned, possible = reports.total(kept)
                    bar.advance(f"{shown_line(student, 40)}: {reports.number(earned)}/{reports.number(possible)}")
                    yield Outcome(student, "graded", kept)
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
        recorder = Recorder(course, folder, settings, writer, expected, column_order(course, expected),
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
        threads = max(1, (os.cpu_count() or 1) // workers)
        remove_stale_work(folder.work)
        choice = choose_isolation(isolation) if work.todo else None  # refuses before anything is graded
        recorder.isolation = choice
        runner = JudgeRunner(course, folder.work, timeout, threads, folder.reference_cache,
                             choice.level if choice is not None else None, exploration)
        if work.todo:
            print(f"Grading {len(work.todo)} submission(s) with {workers} worker(s)"
                  f" ({len(work.outcomes)} other(s) left as they are); {choice.describe()}.", file=sys.stderr)
        outcomes = list(work.outcomes)
        interrupted = False
        try:
            if work.todo:
                runner.start_preparing()
            outcomes.extend(judge_all(work.todo, runner, recorder, workers))
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
        recorder.write_csv()
        if kept:
            reports.write_histogram(folder.histogram, kept, ASSIGNMENT)
        for outcome in outcomes:
            if outcome.status == "graded":
                outcome.reason = work.reasons.get(outcome.student, "")
        print_summary(out, outcomes, recorder, folder, course, settings, show_paths)
        if choice is not None:
            print(f"\n{choice.describe()[0].upper()}{choice.describe()[1:]}.", file=out)
        print_exploration_problems(out, outcomes)
        if work.stale:
            print(f"\n{len(work.stale)} other student(s) were graded with other inputs "
                  f"({_common_reason(work.stale)}): run `gradcam-kit grade` to regrade them.", file=out)

    if interrupted:
        return 130
    failed = any(o.status.startswith("FAILED") for o in outcomes)
    return 1 if failed or work.problems else 0


# --- what the instructor is told about the plan: why students are (re)graded, how to resume ------
def _common_reason(reasons: Mapping[str, str]) -> str:
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


def print_exploration_problems(out: TextIO, outcomes: Iterable[Outcome]) -> None:
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


def print_summary(out: TextIO, outcomes: Iterable[Outcome], recorder: Recorder, folder: GradesFolder,
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
        ("CSV", recorder.csv_path),
        ("histogram", folder.histogram),
        ("feedback pages", folder.feedback("<student>")),
        ("gradebook", settings.db_url),
        ("autograded notebooks (formgrader)", course.root / "autograded" / "<student>" / ASSIGNMENT),
    ]
    print("", file=out)
    for label, path in where:
        print(f"{label + ':':36} {path}", file=out)
