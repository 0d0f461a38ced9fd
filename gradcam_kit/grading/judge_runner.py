"""A small executor: judge the submissions, a few judge processes at a time, series by series.

The submissions are cut into series (:func:`~gradcam_kit.grading.resources.series_length`); a pool
of ``workers`` slots takes series from a queue, each slot running one judge process at a time
(:mod:`gradcam_kit.grading.judge_launch`), and every submission is handed back, as a
:class:`~gradcam_kit.grading.judge_launch.JudgedSubmission`, as soon as the judge is done with it.
A judge that crashes or exceeds its time on a notebook fails that student only: the rest of its
series goes back to the queue, for a new process.

Beside the judges, :meth:`JudgeRunner.start_preparing` computes the reference values once
(``python -m autograder_tests --prepare``); the judges wait for it rather than compute them too.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator, Sequence

from gradcam_kit.contract import REFERENCE_CACHE_ENV
from gradcam_kit.course import Course
from gradcam_kit.fsutil import kill_group, process_alive
from gradcam_kit.grading.judge_launch import (
    JudgedSubmission,
    JudgeProcesses,
    copy_log,
    judge_environment,
    prepare_command,
    series_command,
)
from gradcam_kit.grading.judge_status import JudgeStatus
from gradcam_kit.grading.planning import Submission
from gradcam_kit.grading.reference_cache import PREPARING
from gradcam_kit.grading.resources import SERIES_EXIT_GRACE, THREAD_JOIN_TIMEOUT, series_length
from gradcam_kit.grading.status_reader import StatusLineReader

__all__ = ["JudgeRunner", "discard", "remove_own_work", "remove_stale_work"]

Emit = Callable[[JudgedSubmission], None]


class JudgeRunner:
    """Run the judges, ``workers`` processes at a time, and hand over each student as it is done.

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
    isolation : str, optional
        The isolation level every worker must use (``None``: the judge decides).
    exploration : bool
        Have the judges run the exploration cells too (for formgrader; grades nothing).
    """

    def __init__(self, course: Course, work: Path, timeout: float, threads: int, reference_cache: Path,
                 isolation: str | None = None, exploration: bool = False) -> None:
        self.course = course
        self.work = work
        self.timeout = timeout
        self.exploration = exploration
        self.processes = JudgeProcesses(course.root, judge_environment(threads, reference_cache, isolation))
        self._preparing: threading.Thread | None = None
        self.preparation_problem: str | None = None
        """Why the reference values could not be prepared ahead (``None``: they were, or not tried)."""

    @property
    def env(self) -> dict[str, str]:
        """The judges' environment."""
        return self.processes.env

    # -- the executor -----------------------------------------------------------------------
    def judge(self, todo: Sequence[Submission], workers: int,
              check_interrupt: Callable[[], None] = lambda: None) -> Iterator[JudgedSubmission]:
        """Judge every submission of ``todo``; yield each as soon as it is finished.

        Stopping the iteration (or an exception in the consumer) kills the running judges.
        ``check_interrupt`` is called twice a second while waiting: it raises
        :class:`KeyboardInterrupt` to stop (see :class:`~gradcam_kit.grading.interrupts.InterruptLatch`).
        """
        if not todo:
            return
        size = series_length(len(todo), workers)
        pending: queue.Queue[list[Submission]] = queue.Queue()
        for index in range(0, len(todo), size):
            pending.put(list(todo[index:index + size]))
        finished: queue.Queue[JudgedSubmission] = queue.Queue()
        slots = [threading.Thread(target=self._slot, args=(pending, finished.put), daemon=True,
                                  name=f"judge-{n}") for n in range(min(workers, pending.qsize()))]
        for slot in slots:
            slot.start()
        waiting = {submission.student: submission for submission in todo}
        try:
            while waiting:
                check_interrupt()
                try:
                    run = finished.get(timeout=0.5)
                except queue.Empty:
                    if any(slot.is_alive() for slot in slots) or not finished.empty():
                        continue
                    for submission in waiting.values():  # cannot happen; never wait forever though
                        yield JudgedSubmission.lost(submission, self.work, "the grader lost track of this notebook")
                    return
                waiting.pop(run.submission.student, None)
                yield run
        finally:
            self.stop_all()
            for thread in [*slots, *([self._preparing] if self._preparing else [])]:
                thread.join(timeout=THREAD_JOIN_TIMEOUT)

    def _slot(self, pending: "queue.Queue[list[Submission]]", emit: Emit) -> None:
        """One worker slot: take series from the queue until it is empty."""
        while not self.processes.stopping:
            try:
                batch = pending.get_nowait()
            except queue.Empty:
                return
            done: set[str] = set()

            def hand_over(run: JudgedSubmission, done: set[str] = done) -> None:
                done.add(run.submission.student)
                emit(run)

            folder = self.work / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
            try:
                folder.mkdir(parents=True)
                rest = self._judge_series(batch, folder, hand_over)
            except Exception as error:  # a fault of the grader itself: fail the series, not the batch
                for submission in batch:
                    if submission.student not in done:
                        emit(JudgedSubmission.lost(submission, folder,
                                                   f"the grader could not run the judge ({error})"))
                continue
            if rest and not self.processes.stopping:
                pending.put(rest)

    # -- one judge process ------------------------------------------------------------------
    def _judge_series(self, batch: Sequence[Submission], folder: Path, emit: Emit) -> list[Submission]:
        """``python -m autograder_tests`` on a series of notebooks; returns those to judge again.

        Each notebook is done when the judge says so on the status pipe; its part of the judge's
        output (from the previous record to this one) becomes its log.
        """
        runs = {run.notebook.name: run for run in (JudgedSubmission.planned(s, folder) for s in batch)}
        pending = list(runs)
        status_read, status_write = os.pipe()
        output = folder / "judge-output.log"
        with open(output, "wb") as log:
            try:
                process = self.processes.start(series_command(list(runs.values()), status_write, self.exploration),
                                               log, pass_fds=(status_write,))
            finally:
                os.close(status_write)
        if process is None:
            os.close(status_read)
            return []
        reader = StatusLineReader(os.fdopen(status_read, "rb", buffering=0))
        last = time.monotonic()
        offset = 0
        error = None
        try:
            while pending:
                line = reader.readline(deadline=last + self.timeout)
                if line is None:  # no notebook finished in time
                    kill_group(process)
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
                offset = copy_log(output, offset, run.log)
                emit(run.finish(done.exit_status, now - last))
                last = now
            if not pending:
                try:
                    process.wait(timeout=SERIES_EXIT_GRACE)
                except subprocess.TimeoutExpired:
                    kill_group(process)
        finally:
            if process.poll() is None and pending:
                kill_group(process)
            returncode = process.wait()
            self.processes.forget(process)
            reader.close()
        if not pending:
            return []
        # the notebook in progress failed; the rest of the series goes to a new process
        failed = runs[pending[0]]
        copy_log(output, offset, failed.log)
        emit(failed.finish(returncode, time.monotonic() - last, error or
                           (f"the judge crashed (exit status {returncode})" if returncode not in (0, 1)
                            else "the judge stopped without grading this notebook")))
        return [runs[name].submission for name in pending[1:]]

    # -- the reference values, beside the judges ---------------------------------------------
    def start_preparing(self) -> None:
        """Start computing the judges' reference values into their shared cache, beside the judges.

        ``python -m autograder_tests --prepare`` runs in a process of its own while the judges start
        their workers; a judge that needs a value before it is done waits for it (the cache folder
        holds a :data:`PREPARING` file naming the process) instead of building the same models
        beside it. If it fails, each judge computes what it needs, as a judge without
        ``--prepare`` (an older ``autograder_tests/``) always does; :attr:`preparation_problem`
        then says why.
        """
        cache = Path(self.env[REFERENCE_CACHE_ENV])
        cache.mkdir(parents=True, exist_ok=True)
        log = tempfile.TemporaryFile()
        process = self.processes.start(prepare_command(), log)
        if process is None:
            log.close()
            return
        marker = cache / PREPARING
        marker.write_text(str(process.pid))

        def wait() -> None:
            try:
                returncode = process.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                kill_group(process)
                returncode = None
            finally:
                self.processes.forget(process)
                marker.unlink(missing_ok=True)
            if returncode != 0 and not self.processes.stopping:
                log.seek(0)
                lines = log.read().decode("utf-8", "replace").strip().splitlines()
                self.preparation_problem = ((f"exit status {returncode}" if returncode is not None
                                             else f"it did not finish within {self.timeout:g} s")
                                            + (f": {lines[-1]}" if lines else ""))
            log.close()

        self._preparing = threading.Thread(target=wait, daemon=True, name="prepare-references")
        self._preparing.start()

    def stop_all(self) -> None:
        """Kill every running judge (and its worker) and start no more."""
        self.processes.stop_all()


# -- the judges' scratch folders ------------------------------------------------------------------
def discard(run: JudgedSubmission) -> None:
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


def remove_stale_work(work: Path) -> None:
    """Remove the work folders left by graders that are no longer running."""
    if not work.is_dir():
        return
    for folder in work.iterdir():
        owner = folder.name.split("-", 1)[0]
        if owner.isdigit() and int(owner) != os.getpid() and process_alive(int(owner)):
            continue
        shutil.rmtree(folder, ignore_errors=True)
