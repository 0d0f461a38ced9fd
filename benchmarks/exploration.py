"""What running the exploration cells for formgrader costs ``gradcam-kit grade``.

Run it with ``./kit bench exploration`` (or ``.venv/bin/python benchmarks/exploration.py``). In a
scratch course with N copies of the solution (``benchmarks/grading.py``'s ``make_course``), it grades
them with ``gradcam-kit grade --no-exploration`` and with ``gradcam-kit grade`` (the exploration
cells of Parts 2-4 and the bonus run in the sandbox after the tests), side by side in one run, with
the same number of workers, and prints seconds per submission, their ratio, and the size of the
autograded notebooks (which hold the figures). It is a script, not a test: nothing fails.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from grading import clear_grades, make_course

from gradcam_kit.course import ASSIGNMENT, NOTEBOOK
from gradcam_kit.grading.batch import grade_course


def measure(course, workers: int, exploration: bool) -> tuple[float, float]:
    """(seconds per submission, mean size of an autograded notebook in MB)."""
    clear_grades(course)
    started = time.monotonic()
    status = grade_course(course, workers=workers, force=True, out=io.StringIO(), exploration=exploration)
    seconds = time.monotonic() - started
    if status != 0:
        print(f"warning: gradcam-kit grade exited with status {status}", file=sys.stderr)
    notebooks = list((course.root / "autograded").glob(f"*/{ASSIGNMENT}/{NOTEBOOK}"))
    size = sum(path.stat().st_size for path in notebooks) / max(1, len(notebooks)) / 2**20
    return seconds / max(1, len(notebooks)), size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=4, help="copies of the solution to grade")
    parser.add_argument("--workers", type=int, default=2)
    options = parser.parse_args(argv)
    os.environ.setdefault("GRADCAM_WEIGHTS", "random")
    with tempfile.TemporaryDirectory(prefix="gradcam-bench-") as scratch:
        course = make_course(Path(scratch) / "course", options.copies)
        without, small = measure(course, options.workers, exploration=False)
        with_cells, large = measure(course, options.workers, exploration=True)
    print(f"| `gradcam-kit grade`, {options.workers} workers, {options.copies} solutions | s / submission "
          "| autograded notebook |")
    print("| --- | ---: | ---: |")
    print(f"| `--no-exploration` | {without:.2f} | {small:.2f} MB |")
    print(f"| with the exploration cells | {with_cells:.2f} | {large:.2f} MB |")
    print(f"\nratio: {with_cells / without:.2f}x the time of `--no-exploration`")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
