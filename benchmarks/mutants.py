"""Mutation testing of the judge: every mutant of the answer key, graded by the real judge.

Run it with ``./kit bench mutants`` (or ``.venv/bin/python benchmarks/mutants.py``). It derives every
mutant of the seven graded functions (:mod:`gradcam_kit.grading.mutator`: small AST edits of the
source notebook's solution code), writes each as a submission (the solution notebook with that one
cell mutated), grades them all with the series judge in ``--jobs`` processes side by side
(``python -m autograder_tests``, as ``gradcam-kit grade`` runs it), and reports, as markdown:

* the mutation score: killed / (mutants - listed equivalents), where a mutant is killed when it
  loses exactly the points of the function it edits and keeps every other point (a bug is charged
  once);
* every mutant that is not as it should be: a survivor (keeps every point, not listed as
  equivalent), an overcharged or misplaced one (loses other functions' points), a listed
  equivalent that loses points;
* the equivalent mutants, with the reason each is listed (``mutant_verdicts.EQUIVALENT``).

Options: ``--jobs N`` (default 2), ``--only TEXT`` (mutants whose key or name contains TEXT),
``--list`` (list the mutants and stop), ``--keep DIR`` (grade in DIR and keep it). The exit status
is 1 when a mutant is not as it should be, else 0. Models use ``GRADCAM_WEIGHTS=random`` unless
the environment says otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import nbformat

REPO_ROOT = Path(__file__).resolve().parents[1]
from gradcam_kit.contract import GRADED_FUNCTIONS, WEIGHTS_ENV

os.environ.setdefault(WEIGHTS_ENV, "random")

from gradcam_kit.course import Course
from gradcam_kit.grading import mutant_verdicts, mutator
from gradcam_kit.grading.judge_runs import failed_tests, run_judges
from gradcam_kit.grading.samples import release_notebook, solution_notebook, solution_sources, with_cells


def all_mutants(course: Course) -> tuple[list[mutator.Mutant], nbformat.NotebookNode]:
    """Every mutant of the course's answer key, and the solution notebook they are put into."""
    source = nbformat.read(course.source_notebook, as_version=4)
    solution = solution_notebook(release_notebook(course), source)
    return mutator.mutants(solution_sources(source), GRADED_FUNCTIONS), solution


def write_mutants(mutants: list[mutator.Mutant], solution: nbformat.NotebookNode, folder: Path) -> list[Path]:
    """Each mutant as ``folder/<mutant name>.ipynb``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for mutant in mutants:
        path = folder / f"{mutant.name}.ipynb"
        nbformat.write(with_cells(solution, {mutant.function: mutant.source}), path)
        paths.append(path)
    return paths


def _code(text: str, limit: int = 110) -> str:
    """``text`` as inline code in a table cell (it may hold backquotes and bars), cut to ``limit``."""
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return "`` " + text.replace("|", "\\|") + " ``"


def report(mutants: list[mutator.Mutant], verdicts: dict[str, str], failures: dict[str, frozenset[str]],
           seconds: float, jobs: int) -> str:
    """The markdown report (see the module docstring)."""
    counts = Counter(verdicts.values())
    equivalent = sum(1 for m in mutants if m.key in mutant_verdicts.EQUIVALENT)
    killable = len(mutants) - equivalent
    lines = [f"**{len(mutants)} mutants** of the answer key's seven functions, graded by the judge in "
             f"{seconds:.0f} s ({jobs} judge process{'es' if jobs > 1 else ''}).", ""]
    score = counts["killed"] / killable if killable else 1.0
    lines.append(f"**Mutation score: {counts['killed']} / {killable} = {score:.1%}** "
                 f"({equivalent} listed as equivalent and left out).")
    lines += ["", "| verdict | mutants | meaning |", "| --- | ---: | --- |"]
    lines += [f"| {name} | {counts[name]} | {meaning} |" for name, meaning in mutant_verdicts.VERDICTS.items()]
    lines += ["", "| function | mutants | killed | equivalent | other |", "| --- | ---: | ---: | ---: | ---: |"]
    for function in GRADED_FUNCTIONS:
        own = [m for m in mutants if m.function == function]
        tally = Counter(verdicts[m.name] for m in own)
        lines.append(f"| `{function}` | {len(own)} | {tally['killed']} | {tally['equivalent']} | "
                     f"{len(own) - tally['killed'] - tally['equivalent']} |")
    wrong = [m for m in mutants if verdicts[m.name] not in ("killed", "equivalent")]
    lines += ["", f"**Not as they should be: {len(wrong)}**"]
    if wrong:
        lines += ["", "| mutant | verdict | tests failed |", "| --- | --- | --- |"]
        lines += [f"| {_code(m.key)} | {verdicts[m.name]} | {', '.join(sorted(failures[m.name])) or 'none'} |"
                  for m in wrong]
    listed = [m for m in mutants if m.key in mutant_verdicts.EQUIVALENT]
    lines += ["", f"**Equivalent mutants: {len(listed)}**", "", "| mutant | why it is equivalent |", "| --- | --- |"]
    lines += [f"| {_code(m.key)} | {mutant_verdicts.EQUIVALENT[m.key]} |" for m in listed]
    stale = sorted(set(mutant_verdicts.EQUIVALENT) - {m.key for m in mutants})
    if stale:
        lines += ["", "Listed as equivalent but no longer produced (update `mutant_verdicts.EQUIVALENT`):", ""]
        lines += [f"- `{key}`" for key in stale]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/mutants.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2, help="judge processes side by side (default 2)")
    parser.add_argument("--only", help="only the mutants whose key or name contains this text")
    parser.add_argument("--list", action="store_true", help="list the mutants and stop")
    parser.add_argument("--keep", type=Path, help="grade in this folder and keep it")
    options = parser.parse_args(argv)
    course = Course.locate(REPO_ROOT)
    mutants, solution = all_mutants(course)
    if options.only:
        mutants = [m for m in mutants if options.only in m.key or options.only in m.name]
    if options.list:
        for mutant in mutants:
            listed = "  [equivalent]" if mutant.key in mutant_verdicts.EQUIVALENT else ""
            print(f"{mutant.name:48} {mutant.key}{listed}")
        print(f"{len(mutants)} mutants")
        return 0
    folder = options.keep or Path(tempfile.mkdtemp(prefix="tp2-mutants-"))
    started = time.perf_counter()
    paths = write_mutants(mutants, solution, folder / "submissions")
    print(f"grading {len(paths)} mutants in {folder} with {options.jobs} judge process(es)...", file=sys.stderr)
    run = run_judges(course, paths, folder / "results", folder / "reference-cache", processes=options.jobs)
    missing = [m.name for m in mutants if m.name not in run.results]
    if missing:
        print(run.log[-5000:], file=sys.stderr)
        print(f"no results for {len(missing)} mutants: {missing[:5]} ...", file=sys.stderr)
        return 1
    failures = {m.name: failed_tests(run.results[m.name]) for m in mutants}
    verdicts = {m.name: mutant_verdicts.judged(m, failures[m.name]) for m in mutants}
    print(report(mutants, verdicts, failures, time.perf_counter() - started, options.jobs))
    if not options.keep:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
    return 0 if all(v in ("killed", "equivalent") for v in verdicts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
