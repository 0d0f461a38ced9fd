"""How fast ``gradcam-kit grade`` is, against ``nbgrader autograde``, and how much memory it takes.

Run it with ``./kit bench grading`` (or ``.venv/bin/python benchmarks/grading.py``). It builds a
scratch course (a copy of this one, released with nbgrader), places N copies of the solution in
``submitted/``, then grades them, side by side in one run:

* ``gradcam-kit grade`` with 1 worker, then with 2 workers (``grade_course(..., force=True)``);
* ``nbgrader autograde TP2_GradCAM`` (which executes every notebook, and whose hidden-test cells run
  the same judge through :mod:`gradcam_kit.nbgrader_bridge`), in a twin of the course.

Two passes. The timing pass runs the three graders with nothing else sampling the machine. The
memory pass runs them again (nbgrader on ``--memory-copies`` submissions: its peak does not grow
with their number) while a sampler thread reads ``/proc`` every 0.25 s (reading the PSS of large
processes costs CPU, which would slow the timed graders, the busiest the most) and sums the
resident set size (RSS) of each process tree that grades submissions: a judge, its zygote and the
worker forked from it for ``gradcam-kit grade`` (the process preparing the reference values is a
tree of its own); the kernel, the judge and its worker for ``nbgrader autograde``. The peak of
those sums is the "peak memory per worker". RSS counts the pages of the shared libraries (torch) in
each process of the tree, and the pages a forked worker shares with its zygote twice, so it errs
high; the proportional set size (PSS, which splits shared pages among the processes that map them)
is shown too. So is the peak of the sum over all the trees at once, divided by the number of
workers: the whole grading's footprint per worker.

The figures are printed as a markdown table. It is a script, not a test: nothing fails.

Two options measure the grader's own work, old against new:

* ``--fake-judge``: grade the stand-in course of ``tests/fake_course.py`` instead, whose judge
  takes no time: what is left is the grader (planning, starting judge processes, recording each
  student: autograded copy, feedback page, gradebook, marker, CSV). No nbgrader, no memory pass.
* ``--baseline-kit DIR``: another checkout of the kit (``git worktree add /tmp/base main``): the
  same measures are run with it first, then with this one (each in a process of its own, the
  course taken from that checkout), and both are shown side by side with their ratio.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat

import gradcam_kit
from gradcam_kit.course import ASSIGNMENT, Course
from gradcam_kit.demo import copy_course
from gradcam_kit.grading.batch import grade_course
from gradcam_kit.grading.samples import build_samples
from gradcam_kit.release import generate_release

try:
    from gradcam_kit.course import GradesFolder
except ImportError:  # a kit from before issue 14 (--baseline-kit)
    from gradcam_kit.grading.batch import GradesFolder

REPO_ROOT = Path(__file__).resolve().parents[1]
KIT_ROOT = Path(gradcam_kit.__file__).resolve().parents[1]
"""The checkout of the kit being measured (another one than this script's with ``--baseline-kit``)."""
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
TARGET_SPEEDUP = 5.0
TARGET_SCALING = 1.6
TARGET_MEMORY_MB = 1536.0


# ---------------------------------------------------------------------------------------------
# Memory: process trees from /proc
# ---------------------------------------------------------------------------------------------
def parents() -> dict[int, int]:
    """``pid -> ppid`` of every process we can see."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            found[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    return found


def rss(pid: int) -> int:
    """Resident set size of ``pid`` in bytes (0 if it is gone)."""
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def pss(pid: int) -> int:
    """Proportional set size of ``pid`` in bytes: shared pages split among their users (0 if unknown)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    return 0


def subtree(root: int, tree: dict[int, int]) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, ppid in tree.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


class MemorySampler(threading.Thread):
    """Track the peak RSS of each process tree that grades one submission.

    Parameters
    ----------
    depth : int
        How far below this process the grading trees start: 1 for the judges started by
        ``grade_course`` (children of this process), 2 for the kernels started by the nbgrader
        subprocess (grandchildren).
    """

    def __init__(self, depth: int, interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.depth = depth
        self.interval = interval
        self.peaks: dict[int, int] = {}
        self.pss_peaks: dict[int, int] = {}
        self.total_pss_peak = 0
        self._done = threading.Event()

    def run(self) -> None:
        me = os.getpid()
        while not self._done.is_set():
            tree = parents()
            roots = [me]
            for _ in range(self.depth):
                roots = [pid for pid, ppid in tree.items() if ppid in roots]
            total = 0
            for root in roots:
                members = subtree(root, tree)
                self.peaks[root] = max(self.peaks.get(root, 0), sum(rss(pid) for pid in members))
                tree_pss = sum(pss(pid) for pid in members)
                self.pss_peaks[root] = max(self.pss_peaks.get(root, 0), tree_pss)
                total += tree_pss
            self.total_pss_peak = max(self.total_pss_peak, total)
            self._done.wait(self.interval)

    def stop(self) -> tuple[float, float, float]:
        """Stop sampling; the largest peaks (RSS, PSS) of one tree, and of the PSS of all, in MB."""
        self._done.set()
        self.join()
        return (max(self.peaks.values(), default=0) / 2**20, max(self.pss_peaks.values(), default=0) / 2**20,
                self.total_pss_peak / 2**20)


# ---------------------------------------------------------------------------------------------
# The runs
# ---------------------------------------------------------------------------------------------
@dataclass
class Measure:
    label: str
    submissions: int
    seconds: float
    peak_mb: float
    peak_pss_mb: float
    total_pss_mb: float
    workers: int
    scores: dict[str, float]

    @property
    def per_submission(self) -> float:
        return self.seconds / self.submissions


def make_course(base: Path, copies: int) -> Course:
    """A released scratch course with ``copies`` copies of the solution in ``submitted/``."""
    base.mkdir(parents=True)
    course = copy_course(Course.locate(KIT_ROOT), base)
    generate_release(course)
    solution = build_samples(course, names=["solution"])["solution"].notebook
    for index in range(1, copies + 1):
        path = course.submission(f"s{index:02d}")
        path.parent.mkdir(parents=True)
        nbformat.write(solution, str(path))
    return course


def make_fake_course(base: Path, copies: int) -> Course:
    """The stand-in course of ``tests/fake_course.py`` (a judge that takes no time), with ``copies``
    submissions that pass."""
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from fake_course import build_fake_course, submit

    course = build_fake_course(base)
    for index in range(1, copies + 1):
        submit(course, f"s{index:03d}")
    return course


def clear_grades(course: Course) -> None:
    """Forget earlier gradings (kept results and nbgrader's autograded copies)."""
    for name in ("grades", "autograded", ".hidden-cache"):
        shutil.rmtree(course.root / name, ignore_errors=True)


def start_sampler(depth: int, memory: bool) -> MemorySampler | None:
    if not memory:
        return None
    sampler = MemorySampler(depth)
    sampler.start()
    return sampler


def stop_sampler(sampler: MemorySampler | None) -> tuple[float, float, float]:
    return sampler.stop() if sampler is not None else (float("nan"),) * 3


def measure_grade(course: Course, workers: int, copies: int, memory: bool) -> Measure:
    clear_grades(course)
    sampler = start_sampler(1, memory)
    started = time.monotonic()
    status = grade_course(course, workers=workers, force=True, out=io.StringIO(), exploration=False)
    seconds = time.monotonic() - started
    peak, peak_pss, total_pss = stop_sampler(sampler)
    if status != 0:
        print(f"warning: gradcam-kit grade exited with status {status}", file=sys.stderr)
    scores = {student: sum(t["points"] for t in data["tests"].values())
              for student, data in GradesFolder(course.grades_dir).all_results().items()}
    return Measure(f"gradcam-kit grade, {workers} worker{'s' if workers > 1 else ''}", copies, seconds, peak,
                   peak_pss, total_pss, workers, scores)


def measure_autograde(course: Course, copies: int, memory: bool) -> Measure:
    clear_grades(course)
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["GRADCAM_HIDDEN_CACHE"] = str(course.root / ".hidden-cache")  # cold, like the kit's first run
    sampler = start_sampler(2, memory)
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "nbgrader", "autograde", ASSIGNMENT, "--force"],
                            cwd=course.root, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - started
    peak, peak_pss, total_pss = stop_sampler(sampler)
    if result.returncode != 0:
        print(f"warning: nbgrader autograde failed:\n{result.stderr[-3000:]}", file=sys.stderr)
    return Measure("nbgrader autograde", copies, seconds, peak, peak_pss, total_pss, 1, autograde_scores(course))


def autograde_scores(course: Course) -> dict[str, float]:
    from nbgrader.api import Gradebook

    try:
        from gradcam_kit.grading.nbgrader_settings import NbgraderSettings
    except ImportError:  # a kit from before the split (--baseline-kit)
        from gradcam_kit.grading.gradebook import NbgraderSettings  # type: ignore[no-redef]

    settings = NbgraderSettings.of(course)
    with Gradebook(settings.db_url, settings.course_id) as gradebook:
        return {s.student.id: sum(g.auto_score or 0.0 for n in s.notebooks for g in n.grades
                                  if g.cell.name.startswith("test_"))
                for s in gradebook.assignment_submissions(ASSIGNMENT)}


# ---------------------------------------------------------------------------------------------
def table(timed: list[Measure], sampled: list[Measure] | None, baseline: Measure | None) -> str:
    """One row per grader: seconds from the timing pass, memory from the memory pass (if any)."""
    lines = ["| grader | submissions | wall time (s) | s / submission | speed-up vs nbgrader autograde "
             "| peak RSS per worker (MB) | peak PSS per worker (MB) | peak PSS of all / workers (MB) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for index, m in enumerate(timed):
        speedup = f"{baseline.per_submission / m.per_submission:.1f}×" if baseline else "n/a"
        memory = "| n/a | n/a | n/a |"
        if sampled is not None:
            mem = sampled[index]
            memory = f"| {mem.peak_mb:.0f} | {mem.peak_pss_mb:.0f} | {mem.total_pss_mb / mem.workers:.0f} |"
        lines.append(f"| {m.label} | {m.submissions} | {m.seconds:.1f} | {m.per_submission:.2f} | {speedup} {memory}")
    return "\n".join(lines)


def compare(argv: list[str], baseline_kit: Path) -> int:
    """Run this script with the kit at ``baseline_kit``, then with this one; show both timings."""
    child_argv = list(argv)
    index = child_argv.index("--baseline-kit") if "--baseline-kit" in child_argv else None
    if index is not None:
        del child_argv[index:index + 2]
    else:
        child_argv = [a for a in child_argv if not a.startswith("--baseline-kit=")]
    timings = {}
    with tempfile.TemporaryDirectory(prefix="gradcam-bench-compare-") as scratch:
        for label, kit in (("baseline", baseline_kit), ("this kit", REPO_ROOT)):
            figures = Path(scratch) / f"{label.replace(' ', '-')}.json"
            # only the kit's package on the path: the checkout's autograder_tests/ would take the place
            # of a course's judge that is not a regular package (the stand-in's)
            path = Path(scratch) / label.replace(" ", "-")
            path.mkdir()
            (path / "gradcam_kit").symlink_to(kit / "gradcam_kit", target_is_directory=True)
            env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(path), os.environ.get("PYTHONPATH", "")]))
            print(f"--- {label}: {kit}", file=sys.stderr)
            subprocess.run([sys.executable, __file__, *child_argv, "--json", str(figures)], env=env, check=True)
            timings[label] = json.loads(figures.read_text())["timing"]
    print(f"\nbaseline: {baseline_kit}; this kit: {REPO_ROOT}\n")
    print("| grader | submissions | baseline s / submission | this kit s / submission "
          "| speed-up (baseline / this kit) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for old, new in zip(timings["baseline"], timings["this kit"], strict=True):
        print(f"| {new['label']} | {new['submissions']} | {old['per_submission']:.3f} | {new['per_submission']:.3f} "
              f"| {old['per_submission'] / new['per_submission']:.2f}× |")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=10, help="copies of the solution (default 10)")
    parser.add_argument("--autograde-copies", type=int, default=None,
                        help="copies for nbgrader autograde (default: the same number)")
    parser.add_argument("--skip-autograde", action="store_true", help="do not run nbgrader autograde")
    parser.add_argument("--skip-memory", action="store_true", help="no memory pass (timings only)")
    parser.add_argument("--memory-copies", type=int, default=2,
                        help="copies for nbgrader autograde in the memory pass (default 2)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], metavar="N",
                        help="the worker counts of gradcam-kit grade to time (default: 1 2)")
    parser.add_argument("--fake-judge", action="store_true",
                        help="grade the stand-in course of tests/fake_course.py (its judge takes no time): the "
                             "grader's own work; implies --skip-autograde --skip-memory")
    parser.add_argument("--baseline-kit", metavar="DIR",
                        help="another checkout of the kit: time it first, then this one, and show both")
    parser.add_argument("--scratch", metavar="DIR", help="where to build the courses (default: a temporary folder)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    if args.baseline_kit:
        return compare(argv, Path(args.baseline_kit).resolve())
    if args.fake_judge:
        args.skip_autograde = args.skip_memory = True

    os.environ.setdefault("GRADCAM_WEIGHTS", "random")
    base = Path(args.scratch).resolve() if args.scratch else Path(tempfile.mkdtemp(prefix="gradcam-bench-"))
    print(f"scratch courses in {base}; GRADCAM_WEIGHTS={os.environ['GRADCAM_WEIGHTS']}; "
          f"{os.cpu_count()} CPUs; kit {KIT_ROOT}", file=sys.stderr)
    try:
        course = (make_fake_course if args.fake_judge else make_course)(base / "kit", args.copies)
        copies = args.autograde_copies or args.copies
        twin = None if args.skip_autograde else make_course(base / "nbgrader", copies)
        small = min(args.memory_copies, copies)
        twin_small = None if args.skip_autograde or args.skip_memory else make_course(base / "nbgrader-memory", small)
        passes: dict[bool, list[Measure]] = {}
        for memory in (False, True) if not args.skip_memory else (False,):
            what = "memory pass (sampling /proc)" if memory else "timing pass"
            passes[memory] = []
            for workers in args.workers:
                print(f"{what}: grading {args.copies} submissions with {workers} worker(s)...", file=sys.stderr)
                passes[memory].append(measure_grade(course, workers, args.copies, memory))
            twin_here = twin_small if memory else twin
            if twin_here is not None:
                count = small if memory else copies
                print(f"{what}: nbgrader autograde on {count} submissions...", file=sys.stderr)
                passes[memory].append(measure_autograde(twin_here, count, memory))
        measures, sampled = passes[False], passes.get(True)
        baseline = measures[len(args.workers)] if twin is not None else None
    finally:
        if not args.scratch:
            shutil.rmtree(base, ignore_errors=True)

    print(table(measures, sampled, baseline))
    print()
    if len(measures) >= 2 and args.workers[:2] == [1, 2]:
        scaling = measures[0].per_submission / measures[1].per_submission
        print(f"* 2 workers against 1: {scaling:.2f}× (target ≥ {TARGET_SCALING}×)")
    if baseline:
        graders = measures[:len(args.workers)]
        speedup = baseline.per_submission / min(m.per_submission for m in graders)
        print(f"* best gradcam-kit grade against nbgrader autograde: {speedup:.1f}× per submission "
              f"(target ≥ {TARGET_SPEEDUP:g}×); with {graders[0].workers} worker(s): "
              f"{baseline.per_submission / graders[0].per_submission:.1f}×")
    if sampled:
        peak = max(m.peak_mb for m in sampled[:len(args.workers)])
        peak_pss = max(m.peak_pss_mb for m in sampled[:len(args.workers)])
        print(f"* peak memory per worker (judge + zygote + sandboxed worker): RSS {peak:.0f} MB, PSS {peak_pss:.0f} MB "
              f"(target ≤ {TARGET_MEMORY_MB:.0f} MB, on PSS)")
    for m in measures + (sampled or []):
        distinct = sorted(set(round(v, 3) for v in m.scores.values()))
        print(f"* {m.label}: {len(m.scores)} graded, autograded scores {distinct}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "timing": [m.__dict__ | {"per_submission": m.per_submission} for m in measures],
            "memory": [m.__dict__ for m in sampled or []]}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
