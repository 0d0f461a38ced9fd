"""Grade many notebooks with the real judge, in a few processes side by side.

The kit's validity tests and the mutation benchmark grade whole corpora of sample notebooks. They
do it as ``gradcam-kit grade`` does: ``python -m autograder_tests --prepare`` once (the reference
values, into a cache folder), then the series judge (``python -m autograder_tests --out DIR
NB1.ipynb NB2.ipynb ...``) in ``processes`` processes, each grading its share of the notebooks in
turn. The results are the judge's JSON files, checked as they are read back
(:meth:`~gradcam_kit.judge_results.JudgeResults.from_json`) and kept as their JSON objects.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from gradcam_kit.contract import WEIGHTS_ENV
from gradcam_kit.course import Course
from gradcam_kit.fsutil import kill_group
from gradcam_kit.grading.judge_status import STATUS_FD_OPTION, JudgeStatus
from gradcam_kit.judge_results import JudgeResults

__all__ = ["JudgeRun", "failed_tests", "run_judges"]

@dataclass
class JudgeRun:
    """What a run of the judges gave.

    Attributes
    ----------
    results : dict
        ``notebook stem -> the judge's results`` (its JSON), for every notebook that got one.
    seconds : dict
        ``notebook stem -> seconds`` the judge spent on it, as it reported them.
    log : str
        The judges' output (their processes one after the other).
    ok : bool
        Every judge process ended with status 0 (every notebook graded, whatever its points).
    elapsed : float
        Wall-clock seconds of the whole run, preparation included.
    """

    results: dict[str, dict] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    log: str = ""
    ok: bool = True
    elapsed: float = 0.0


def failed_tests(results: JudgeResults | Mapping) -> frozenset[str]:
    """The tests of one notebook's results that did not pass."""
    return JudgeResults.of(results).failed()


def run_judges(course: Course, notebooks: Sequence[Path], out: Path, cache: Path, processes: int = 1,
               timeout: float = 3600.0, env: Mapping[str, str] | None = None) -> JudgeRun:
    """Grade ``notebooks`` with the judge of ``course``; results in ``out/<stem>.json``.

    Parameters
    ----------
    course : Course
    notebooks : sequence of Path
        Their stems must be unique (they name the results).
    out : Path
        Where the judges write their results and artifacts.
    cache : Path
        The reference-value cache, filled first by ``--prepare`` alone.
    processes : int
        Judge processes side by side; notebook ``i`` goes to process ``i % processes``.
    timeout : float
        Seconds each process may take, preparation included; a process past it is killed.
    env : mapping, optional
        The judges' environment (default: this process's, with ``GRADCAM_WEIGHTS=random`` unless set).
    """
    environment = dict(env if env is not None else os.environ)
    environment.setdefault(WEIGHTS_ENV, "random")
    out.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    run = JudgeRun()
    started = time.perf_counter()
    judge = [sys.executable, "-m", "autograder_tests", "--reference-cache", str(cache), "--course", str(course.root)]
    prepared = subprocess.run([*judge, "--prepare"], cwd=course.root, env=environment, capture_output=True,
                              text=True, timeout=timeout)
    run.log += prepared.stdout + prepared.stderr
    if prepared.returncode != 0:
        run.ok = False
        run.elapsed = time.perf_counter() - started
        return run
    shares = [list(notebooks[index::processes]) for index in range(max(1, processes))]
    running = []
    for index, share in enumerate(share for share in shares if share):
        log = open(out / f"judge-{index}.log", "w+", encoding="utf-8")
        status = open(out / f"judge-{index}.status", "w+b")
        command = [*judge, STATUS_FD_OPTION, str(status.fileno()), "--out", str(out), *map(str, share)]
        running.append((subprocess.Popen(command, cwd=course.root, env=environment, stdout=log,
                                         stderr=subprocess.STDOUT, text=True, pass_fds=(status.fileno(),),
                                         start_new_session=True),
                        log, status))
    for process, log, status in running:
        try:
            run.ok &= process.wait(timeout=timeout) == 0
        except subprocess.TimeoutExpired:
            kill_group(process)  # the judge leads its group: its worker and zygote go with it
            run.ok = False
        log.seek(0)
        run.log += log.read()
        log.close()
        status.seek(0)
        for line in status.read().splitlines():
            done = JudgeStatus.from_line(line)
            run.seconds[Path(done.notebook).stem] = done.seconds
        status.close()
    run.elapsed = time.perf_counter() - started
    for notebook in notebooks:
        path = out / f"{notebook.stem}.json"
        if path.is_file():
            run.results[notebook.stem] = JudgeResults.from_json(path).to_plain()
    return run
