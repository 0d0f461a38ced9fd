"""Benchmark of the notebook's visible tests of Part 1, as a student runs them: in a Jupyter kernel.

Two notebooks run side by side in one run, each in a fresh kernel (torch's default threads, as a
student's kernel has), each the release notebook with the source's solution in its seven function
cells:

* *now*: this checkout's ``release/`` and ``source/``;
* *before*: the same files at a git revision (default ``59366c2``, the main of issue "Students",
  whose ``test_show_grad_cam`` made five DenseNet passes).

The seven test cells are timed one by one from the kernel's own clock (``%time``-free: the cells'
``execution`` metadata that nbclient records). The setup cells, which build DenseNet-121 once, are
not part of the visible tests and are reported apart. The two runs alternate ``--repeats`` times
so that a change of machine load hits both alike; the table reports the median of each cell.

Run from the repository root::

    python benchmarks/visible_tests.py [--repeats 3] [--before 59366c2]

It prints a markdown table (for the README), the machine's load before and after, and the ratio.
Target: the visible tests of Part 1 take less than 20 s in all on the project's machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import nbformat

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from gradcam_kit.contract import GRADED_FUNCTIONS, IMAGES_DIR_ENV, SETUP_PREFIX, TEST_PREFIX, WEIGHTS_ENV, test_name

os.environ.setdefault(WEIGHTS_ENV, "random")

from gradcam_kit.course import NOTEBOOK, Course
from gradcam_kit.grading.samples import solution_sources

TARGET_S = 20.0


def part1_notebook(release: nbformat.NotebookNode, source: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The release's setup cells, then its seven function cells (with the solution) and test cells."""
    solutions = solution_sources(source)
    cells = []
    for cell in release.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id", "")
        if grade_id.startswith((SETUP_PREFIX, TEST_PREFIX)):
            cells.append(cell)
        elif grade_id in GRADED_FUNCTIONS:
            cells.append(nbformat.v4.new_code_cell(solutions[grade_id], metadata=cell.metadata))
    notebook = nbformat.v4.new_notebook(cells=cells, metadata=release.metadata)
    return notebook


def at_revision(revision: str, path: str) -> nbformat.NotebookNode:
    text = subprocess.run(["git", "show", f"{revision}:{path}"], cwd=REPO_ROOT, check=True, capture_output=True,
                          text=True).stdout
    return nbformat.reads(text, as_version=4)


def run(notebook: nbformat.NotebookNode, folder: Path, course: Course) -> dict[str, float]:
    """Execute ``notebook`` in ``folder``; seconds per timed cell (``setup`` for all setup cells)."""
    from nbclient import NotebookClient

    notebook = nbformat.reads(nbformat.writes(notebook), as_version=4)   # a fresh copy per run
    client = NotebookClient(notebook, kernel_name="python3", timeout=600, record_timing=True,
                            resources={"metadata": {"path": str(folder)}})
    client.execute()
    seconds: dict[str, float] = {"setup": 0.0}
    for cell in notebook.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id", "")
        timing = cell.metadata.get("execution", {})
        if not timing:
            continue
        start = datetime.fromisoformat(timing["iopub.execute_input"].replace("Z", "+00:00"))
        end = datetime.fromisoformat(timing["shell.execute_reply"].replace("Z", "+00:00"))
        elapsed = (end - start).total_seconds()
        if grade_id.startswith(SETUP_PREFIX):
            seconds["setup"] += elapsed
        elif grade_id.startswith(TEST_PREFIX):
            seconds[grade_id] = elapsed
    return seconds


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--before", default="59366c2", help="the git revision to compare with")
    options = parser.parse_args()
    course = Course.locate(REPO_ROOT)
    source = nbformat.read(course.source_notebook, as_version=4)
    notebooks = {
        "now": part1_notebook(nbformat.read(course.release_dir / NOTEBOOK, as_version=4), source),
        f"before ({options.before})": part1_notebook(
            at_revision(options.before, f"release/TP2_GradCAM/{NOTEBOOK}"),
            at_revision(options.before, f"source/TP2_GradCAM/{NOTEBOOK}")),
    }
    os.environ[IMAGES_DIR_ENV] = str(course.images_dir)
    load_before = load()
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in notebooks}
    with tempfile.TemporaryDirectory(prefix="visible-tests-") as scratch:
        folder = Path(scratch)
        (folder / "tp2_utils.py").write_bytes(course.helper_module.read_bytes())
        for _ in range(options.repeats):
            for name, notebook in notebooks.items():
                runs[name].append(run(notebook, folder, course))
    load_after = load()

    tests = [test_name(name) for name in GRADED_FUNCTIONS]
    medians = {name: {key: statistics.median(r[key] for r in rs) for key in ["setup", *tests]}
               for name, rs in runs.items()}
    totals = {name: sum(m[t] for t in tests) for name, m in medians.items()}
    names = list(notebooks)
    print(f"\nThe visible tests of Part 1 in a Jupyter kernel, median of {options.repeats} runs (seconds):\n")
    print("| cell | " + " | ".join(names) + " |")
    print("| --- | " + " | ".join("---:" for _ in names) + " |")
    for key in tests:
        print(f"| `{key}` | " + " | ".join(f"{medians[n][key]:.2f}" for n in names) + " |")
    print("| **all seven** | " + " | ".join(f"**{totals[n]:.2f}**" for n in names) + " |")
    print("| (setup cells, not part of the tests) | " + " | ".join(f"{medians[n]['setup']:.2f}" for n in names) + " |")
    ratio = totals[names[1]] / totals[names[0]] if totals[names[0]] else float("inf")
    met = totals[names[0]] < TARGET_S
    print(f"\nnow: {totals[names[0]]:.2f} s, {ratio:.1f}x faster than before; target < {TARGET_S:.0f} s: "
          f"{'met' if met else 'NOT met'}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} logical CPUs, load average (1, 5, 15 min) "
          f"{load_before} before and {load_after} after; {WEIGHTS_ENV}={os.environ[WEIGHTS_ENV]}")
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
