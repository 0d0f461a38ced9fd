"""What a release must never show: a line of a solution, of a hidden test, of the answer key or of the judge.

``gradcam-kit release`` refuses a release that shows one (:func:`release_leaks`), and the kit's tests
run the same check on the committed release.

The secret lines are read from the source notebook the way nbgrader's own preprocessors clear
them, with the delimiters and stubs of the course's configuration (:class:`NbgraderMarkers`):

* in a code cell, the lines between ``BEGIN SOLUTION`` and ``END SOLUTION``, and between
  ``BEGIN HIDDEN TESTS`` and ``END HIDDEN TESTS``; a solution cell without a solution region is
  secret as a whole (nbgrader replaces all of it with the code stub);
* in a markdown answer cell (``solution: true``), its solution regions, or the whole cell when it
  has none (nbgrader replaces it with the text stub); ``BEGIN MARK SCHEME`` regions anywhere;
* every line of ``solutions/*.py``, ``solutions/*.md`` and ``autograder_tests/**/*.py``.

Public lines never count as leaks, even when a secret region repeats them: the code of the cells
outside the regions, the helper module, and nbgrader's stubs (``YOUR ANSWER HERE``, ``# YOUR CODE
HERE``, ``raise NotImplementedError()``), which nbgrader itself writes into the release. Lines too
generic to reveal anything (blank, punctuation, a lone keyword) are ignored. A secret line leaks
when the release holds it as a line, or, for lines of 24 characters or more, inside a line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import nbformat
from nbformat import NotebookNode
from traitlets.config import Config

from gradcam_kit.course import HELPER_MODULE, NOTEBOOK, Course
from gradcam_kit.hidden_regions import BEGIN_HIDDEN_TESTS, END_HIDDEN_TESTS

__all__ = ["Leak", "NbgraderMarkers", "find_leaks", "release_leaks", "split_source"]

MIN_INSIDE = 24
"""Secret lines at least this long also count when found inside a longer released line."""


@dataclass(frozen=True)
class NbgraderMarkers:
    """The region delimiters and stubs that nbgrader uses in this course."""

    begin_solution: str = "BEGIN SOLUTION"
    end_solution: str = "END SOLUTION"
    begin_hidden: str = BEGIN_HIDDEN_TESTS
    end_hidden: str = END_HIDDEN_TESTS
    begin_mark_scheme: str = "BEGIN MARK SCHEME"
    end_mark_scheme: str = "END MARK SCHEME"
    code_stub: str = "# YOUR CODE HERE\nraise NotImplementedError()"
    text_stub: str = "YOUR ANSWER HERE"

    @classmethod
    def of(cls, config: Config | None = None) -> "NbgraderMarkers":
        """The markers of nbgrader's preprocessors under ``config`` (the course's configuration)."""
        from nbgrader.preprocessors import ClearHiddenTests, ClearMarkScheme, ClearSolutions

        solutions = ClearSolutions(config=config or Config())
        hidden = ClearHiddenTests(config=config or Config())
        scheme = ClearMarkScheme(config=config or Config())
        return cls(solutions.begin_solution_delimeter, solutions.end_solution_delimeter,
                   hidden.begin_test_delimeter, hidden.end_test_delimeter,
                   scheme.begin_mark_scheme_delimeter, scheme.end_mark_scheme_delimeter,
                   solutions.code_stub.get("python", cls.code_stub), solutions.text_stub)

    @property
    def stub_lines(self) -> list[str]:
        """The lines nbgrader writes in place of solutions: public by construction."""
        return self.code_stub.splitlines() + self.text_stub.splitlines()


@dataclass(frozen=True)
class Leak:
    """A secret line found in the release, and where the secret comes from."""

    line: str
    origin: str


# ---------------------------------------------------------------------------------------------
# lines
# ---------------------------------------------------------------------------------------------
def normalise(line: str) -> str:
    """The line with its white space collapsed (indentation and spacing do not hide a leak)."""
    return " ".join(line.split())


def is_trivial(line: str) -> bool:
    """Lines too generic to reveal anything: blank, punctuation, a lone keyword or delimiter."""
    if len(re.sub(r"[^A-Za-z0-9]", "", line)) < 4:
        return True
    return line in {"else:", "try:", "finally:", "pass", "return", '"""', "'''", "```", "```python"}


def _cell_info(cell: NotebookNode) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def split_source(notebook: NotebookNode, markers: NbgraderMarkers | None = None) -> tuple[list[str], list[str]]:
    """(secret lines, public lines) of the source notebook, as nbgrader clears them (module docstring)."""
    markers = markers or NbgraderMarkers()
    regions = [(markers.begin_solution, markers.end_solution), (markers.begin_hidden, markers.end_hidden),
               (markers.begin_mark_scheme, markers.end_mark_scheme)]
    secret: list[str] = []
    public: list[str] = list(markers.stub_lines)
    for cell in notebook.cells:
        info = _cell_info(cell)
        lines = cell.source.splitlines()
        has_region = any(begin in line for line in lines for begin, _ in regions[:1])
        if info.get("solution") and not has_region:  # nbgrader replaces the whole cell
            secret += lines
            continue
        inside: str | None = None
        for line in lines:
            begin = next((end for start, end in regions if start in line), None)
            if inside is None and begin is not None:
                inside = begin
            elif inside is not None and inside in line:
                inside = None
            elif inside is not None:
                secret.append(line)
            elif cell.cell_type == "code":
                public.append(line)
    return secret, public


def find_leaks(secret: Iterable[str], public: Iterable[str], released: Iterable[str]) -> list[str]:
    """The non-trivial secret lines (normalised) that the released lines show."""
    public_set = {normalise(line) for line in public}
    released = [normalise(line) for line in released]
    released_set = set(released)
    released_text = "\n".join(released)
    leaks = []
    for line in dict.fromkeys(normalise(s) for s in secret):
        if is_trivial(line) or line in public_set:
            continue
        if line in released_set or (len(line) >= MIN_INSIDE and line in released_text):
            leaks.append(line)
    return leaks


# ---------------------------------------------------------------------------------------------
# a course's release
# ---------------------------------------------------------------------------------------------
def released_lines(release_dir: Path) -> list[str]:
    """Every line of the released notebook's cells and of the released helper module."""
    notebook = nbformat.read(str(release_dir / NOTEBOOK), as_version=4)
    lines = [line for cell in notebook.cells for line in cell.source.splitlines()]
    helper = release_dir / HELPER_MODULE
    if helper.is_file():
        lines += helper.read_text(encoding="utf-8").splitlines()
    return lines


def secret_files(course: Course) -> list[Path]:
    """The files whose every line is secret: ``solutions/`` and the judge."""
    files = sorted(course.solutions_dir.glob("*.py")) + sorted(course.solutions_dir.glob("*.md"))
    if course.autograder_dir.is_dir():
        files += sorted(p for p in course.autograder_dir.rglob("*.py") if "__pycache__" not in p.parts)
    return files


def release_leaks(course: Course, release_dir: Path, config: Config | None = None) -> list[Leak]:
    """The secret lines that the release in ``release_dir`` shows (see the module docstring)."""
    markers = NbgraderMarkers.of(config)
    secret, public = split_source(nbformat.read(str(course.source_notebook), as_version=4), markers)
    if course.helper_module.is_file():
        public += course.helper_module.read_text(encoding="utf-8").splitlines()
    released = released_lines(release_dir)
    found = [Leak(line, f"{course.source_notebook.name} (a solution or hidden-test region)")
             for line in find_leaks(secret, public, released)]
    for path in secret_files(course):
        origin = str(path.relative_to(course.root))
        found += [Leak(line, origin)
                  for line in find_leaks(path.read_text(encoding="utf-8").splitlines(), public, released)]
    return found
