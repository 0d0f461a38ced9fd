"""How ``gradcam-kit grade`` starts the judge: its command lines, its environment, its processes.

The judge is ``autograder_tests/`` in the course. It grades a series of notebooks in one process
(``python -m autograder_tests``, :func:`series_command`): each notebook gets its own pytest session
and its own fresh sandboxed worker, while the judge's imports and reference computations are
shared. After each notebook the judge writes a status record on a pipe of its own
(:mod:`gradcam_kit.grading.judge_status`); its output, which carries students' text, is a log.

Every judge runs in the course folder, in its own process group (so that :func:`kill_group` ends
it with its worker), and on Linux dies with the grader (``PR_SET_PDEATHSIG``): a killed batch
leaves no orphans. :class:`JudgeProcesses` keeps the table of the running ones.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Sequence

from gradcam_kit.contract import ISOLATION_ENV, REFERENCE_CACHE_ENV
from gradcam_kit.fsutil import kill_group
from gradcam_kit.grading.judge_status import STATUS_FD_OPTION
from gradcam_kit.grading.planning import Submission
from gradcam_kit.grading.resources import THREAD_VARIABLES

__all__ = [
    "JudgeProcesses",
    "JudgedSubmission",
    "copy_log",
    "judge_environment",
    "prepare_command",
    "series_command",
]


@dataclass
class JudgedSubmission:
    """One submission through the judge: where its copy and what the judge left are, and how it ended.

    Attributes
    ----------
    submission : Submission
    notebook : Path
        The copy of the notebook given to the judge.
    results_path : Path
        The judge's results JSON.
    artifacts : Path
        The judge's artifacts folder (``heatmap.npz``, ``heatmap.png``, ``exploration/``).
    log : Path
        The judge's output for this notebook.
    returncode : int, optional
        The judge's exit status for this notebook (``None``: it did not end by itself).
    seconds : float
    error : str, optional
        Why the judge failed on it (a crash, a timeout...); ``None`` when it graded it.
    """

    submission: Submission
    notebook: Path
    results_path: Path
    artifacts: Path
    log: Path
    returncode: int | None = None
    seconds: float = 0.0
    error: str | None = None

    @classmethod
    def planned(cls, submission: Submission, folder: Path) -> "JudgedSubmission":
        """The paths of ``submission`` in a series folder, with its copy written there."""
        student = submission.student
        run = cls(submission, folder / f"{student}.ipynb", folder / "out" / f"{student}.json",
                  folder / "out" / student, folder / "logs" / f"{student}.log")
        run.notebook.write_bytes(submission.content)
        run.artifacts.mkdir(parents=True, exist_ok=True)
        run.log.parent.mkdir(exist_ok=True)
        return run

    @classmethod
    def lost(cls, submission: Submission, folder: Path, error: str) -> "JudgedSubmission":
        """A submission the judge never got to, and why."""
        nowhere = folder / "missing"
        return cls(submission, nowhere, nowhere, nowhere, nowhere).finish(None, 0.0, error)

    def finish(self, returncode: int | None, seconds: float, error: str | None = None) -> "JudgedSubmission":
        """Note how the judge ended on this notebook (an exit status other than 0 or 1 is a crash)."""
        self.returncode, self.seconds = returncode, seconds
        if error is None and returncode not in (0, 1):
            error = f"the judge crashed (exit status {returncode})"
        self.error = error
        return self


_LAUNCHER = (
    "import ctypes, os, signal, sys\n"
    "try:\n"
    "    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)\n"
    "    if os.getppid() != int(sys.argv[1]): os._exit(1)\n"
    "except (OSError, AttributeError): pass\n"
    "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])\n"
)
"""Linux: ask to be killed with the grader (``PR_SET_PDEATHSIG``), then become the judge."""


def _launch(arguments: list[str]) -> list[str]:
    """``python ARGUMENTS``, through :data:`_LAUNCHER` on Linux."""
    if sys.platform.startswith("linux"):
        return [sys.executable, "-c", _LAUNCHER, str(os.getpid()), *arguments]
    return [sys.executable, *arguments]


def series_command(runs: Sequence[JudgedSubmission], status_fd: int, exploration: bool = False) -> list[str]:
    """The judge's command line for a series of notebooks (run in the course folder), reporting each
    notebook done on ``status_fd``; with ``exploration`` the judge also runs the exploration cells."""
    return _launch(["-m", "autograder_tests", STATUS_FD_OPTION, str(status_fd), "--out",
                    str(runs[0].results_path.parent), *(["--exploration"] if exploration else []),
                    *(str(run.notebook) for run in runs)])


def prepare_command() -> list[str]:
    """``python -m autograder_tests --prepare``: compute the reference values into the shared cache."""
    return _launch(["-m", "autograder_tests", "--prepare"])


def judge_environment(threads: int, reference_cache: Path, isolation: str | None = None) -> dict[str, str]:
    """The grader's environment for the judges.

    Parameters
    ----------
    threads : int
        BLAS/OpenMP threads per judge (:data:`~gradcam_kit.grading.resources.THREAD_VARIABLES`),
        unless the user set them already.
    reference_cache : Path
        ``$GRADCAM_REFERENCE_CACHE``, unless set already: one folder where the judges keep the
        reference arrays, so that only the first judge of a course computes them.
    isolation : str, optional
        ``$GRADCAM_ISOLATION``: every worker session of the judges uses exactly this level, or
        fails as a grader fault.
    """
    env = dict(os.environ)
    for name in THREAD_VARIABLES:
        env.setdefault(name, str(threads))
    env.setdefault(REFERENCE_CACHE_ENV, str(reference_cache))
    if isolation is not None:
        env[ISOLATION_ENV] = isolation
    return env


class JudgeProcesses:
    """The judge processes running now: started in the course folder, all killed at once on a stop.

    Parameters
    ----------
    cwd : Path
        Where the judges run (the course folder).
    env : dict
        Their environment (:func:`judge_environment`).
    """

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.cwd = cwd
        self.env = env
        self._running: dict[int, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()
        self.stopping = False
        """Set by :meth:`stop_all`: no judge starts any more."""

    def start(self, command: list[str], stdout: IO[Any] | int,
              pass_fds: tuple[int, ...] = ()) -> subprocess.Popen[bytes] | None:
        """Start ``command`` with its output (both streams) to ``stdout``; ``None`` once stopping."""
        with self._lock:
            if self.stopping:
                return None
            process = subprocess.Popen(command, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
                                       stdout=stdout, stderr=subprocess.STDOUT, start_new_session=True,
                                       pass_fds=pass_fds)
            self._running[process.pid] = process
            return process

    def forget(self, process: subprocess.Popen[bytes]) -> None:
        """``process`` has ended (and was collected)."""
        with self._lock:
            self._running.pop(process.pid, None)

    def stop_all(self) -> None:
        """Kill every running judge (and its worker) and start no more."""
        with self._lock:
            self.stopping = True
            running = list(self._running.values())
        for process in running:
            kill_group(process)


def copy_log(output: Path, offset: int, destination: Path) -> int:
    """Copy ``output`` from ``offset`` to its current end into ``destination``; the new offset."""
    try:
        with open(output, "rb") as source:
            source.seek(offset)
            data = source.read()
    except OSError:
        return offset
    destination.write_bytes(data)
    return offset + len(data)
