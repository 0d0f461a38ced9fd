"""Grade several notebooks in one process: ``python -m autograder_tests --out DIR NB1.ipynb NB2.ipynb ...``.

``python -m autograder_tests --prepare [--reference-cache DIR]`` computes the reference values
instead (see ``_checks.prepare_references``) and grades nothing: ``gradcam-kit grade`` runs it once
before starting the judges, so that they all find the values in the cache.

Each notebook gets its own pytest session of the judge (its own worker, its own results), exactly
as ``python -m pytest autograder_tests --submission NB.ipynb`` would grade it, but the process,
its imports and the reference computations are shared: after the first notebook, a submission
costs only its worker and the student's own computations.

For each ``NB.ipynb`` it writes ``DIR/NB.json`` (the results) and ``DIR/NB/`` (the artifacts).
With ``--status-fd N`` it then writes one status record on descriptor ``N`` (see
:mod:`gradcam_kit.grading.judge_status`): ``gradcam-kit grade`` learns there, and nowhere else,
that a notebook is done. Its standard output (pytest's report, which shows students' messages) is
only a log. The exit status is 0 when every notebook was graded (whatever its points), 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path

import pytest

from gradcam_kit.contract import REFERENCE_CACHE_ENV
from gradcam_kit.grading.judge_status import STATUS_FD_OPTION, JudgeStatus, write_status

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autograder_tests", description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--out", type=Path, help="where to write NB.json and NB/ for each notebook")
    parser.add_argument("--prepare", action="store_true", help="only compute the reference values (into the cache)")
    parser.add_argument("--course", type=Path, help="the course folder (default: the one holding the judge)")
    parser.add_argument("--reference-cache", type=Path, help="keep reference arrays in this folder")
    parser.add_argument("--verbose", action="store_true", help="show pytest's report of each notebook")
    parser.add_argument(STATUS_FD_OPTION, type=int, dest="status_fd", metavar="N",
                        help="write one status record per notebook on this file descriptor")
    parser.add_argument("--exploration", action="store_true",
                        help="also run the exploration cells of each notebook, for formgrader")
    options = parser.parse_args(argv)
    if options.prepare:
        return prepare(options.course, options.reference_cache)
    if not options.notebooks or options.out is None:
        parser.error("give --out DIR and at least one notebook (or --prepare)")
    options.out.mkdir(parents=True, exist_ok=True)
    graded = True
    for notebook in options.notebooks:
        stem = notebook.stem
        arguments = [str(HERE), "--submission", str(notebook), "--results-json", str(options.out / f"{stem}.json"),
                     "--artifacts", str(options.out / stem), "-p", "no:cacheprovider",
                     "-q" if options.verbose else "-qq"]
        if options.course:
            arguments += ["--course", str(options.course)]
        if options.reference_cache:
            arguments += ["--reference-cache", str(options.reference_cache)]
        if options.exploration:
            arguments.append("--exploration")
        started = time.perf_counter()
        try:
            status = int(pytest.main(arguments))
        except Exception:  # the judge itself broke on this notebook: say so, go on
            traceback.print_exc()
            status = int(pytest.ExitCode.INTERNAL_ERROR)
        done = JudgeStatus(notebook.name, status, round(time.perf_counter() - started, 3))
        graded &= done.graded
        print(f"[autograder] {done.notebook}: exit status {done.exit_status}, {done.seconds:.1f} s")
        sys.stdout.flush()
        sys.stderr.flush()  # the log holds all of this notebook's output before the grader hears of it
        if options.status_fd is not None:
            write_status(options.status_fd, done)
    return 0 if graded else 1


def prepare(course_dir: Path | None, cache: Path | None) -> int:
    """Compute the reference values into ``cache`` (default ``$GRADCAM_REFERENCE_CACHE``)."""
    from gradcam_kit.course import Course

    from ._checks import prepare_references
    from ._reference import References, use_judge_threads

    if cache is None and not os.environ.get(REFERENCE_CACHE_ENV):
        print(f"--prepare needs --reference-cache DIR or ${REFERENCE_CACHE_ENV}", file=sys.stderr)
        return 2
    use_judge_threads()
    started = time.perf_counter()
    references = References(Course.locate(course_dir or HERE.parent), cache)
    prepare_references(references)
    print(f"[autograder] reference values: {len(references.computed)} computed, "
          f"{time.perf_counter() - started:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
