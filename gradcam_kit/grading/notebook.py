"""Read a submitted notebook into the program the worker runs, recording every problem found.

The grader runs the ``setup_*`` cells of the *source* notebook (the locked versions, as nbgrader
does) and the seven graded function cells of the *submission* (``grade_id`` = function name), in
the source notebook's order, and nothing else: exploration cells are never run.

:func:`read_submission` never raises because of the submission: an unreadable file, a wrong format,
missing, renamed, duplicated or broken cells are recorded as problems, per function where they
affect one function only, so that only the affected tests lose points. Each problem is written for
the student.

Decisions
---------
* A function cell is looked up by its ``grade_id``. A cell with that id that is no longer a code
  cell, or two cells with the same id, make that function unavailable (the grader cannot tell which
  code is meant).
* A syntax error makes the function of that cell unavailable; the other cells still run.
* IPython syntax (``%magic``, ``!shell``, ``%%time``) is translated to plain Python first; the
  worker ignores magics and shell commands.
* A function defined twice (twice in its cell, or again in a later graded cell) is not an error:
  as when Python runs the notebook, the last definition wins. A note says so.
* A changed or deleted locked cell is not an error either: the original is run and a note says so.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradcam_kit.contract import GRADED_FUNCTIONS, SETUP_PREFIX
from gradcam_kit.errors import KitError
from gradcam_kit.hidden_regions import remove_hidden_regions
from gradcam_kit.program import ProgramCell, SubmissionProgram

__all__ = ["MAX_NOTEBOOK_BYTES", "SourceNotebookError", "cell_text", "compile_cell", "read_submission"]

MAX_NOTEBOOK_BYTES = 50 * 2**20
"""A submission bigger than this is not read (notebooks with many large outputs stay far below)."""

_CELL_MAGIC = re.compile(r"\A\s*%%(\w+)(.*)$", re.MULTILINE)
_PYTHON_CELL_MAGICS = {"time", "timeit", "capture", "prun", "debug"}
"""Cell magics whose body is ordinary Python: the grader runs the body."""


class SourceNotebookError(KitError):
    """The instructor's source notebook cannot be used (a grader set-up error, not the student's)."""


# ------------------------------------------------------------------------------------------------
# reading notebooks
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Cell:
    index: int
    cell_type: str
    source: str
    grade_id: str | None
    nbgrader: dict[str, Any]


class _Unreadable(Exception):
    """The notebook cannot be read; the message is for the student."""


def cell_text(source: Any) -> str | None:
    """A cell's ``source`` as one string (nbformat allows a string or a list of lines), or ``None``
    when it is neither."""
    if isinstance(source, str):
        return source
    if isinstance(source, list) and all(isinstance(line, str) for line in source):
        return "".join(source)
    return None


def _parse_notebook(path: Path) -> tuple[list[_Cell], list[str]]:
    """The cells of a v4 notebook, and notes about malformed cells that were skipped.

    Raises
    ------
    _Unreadable
        With a message for the student.
    """
    try:
        size = path.stat().st_size
        if size > MAX_NOTEBOOK_BYTES:
            raise _Unreadable(
                f"Your notebook file is {size / 2**20:.0f} MB, too big to be graded (the limit is "
                f"{MAX_NOTEBOOK_BYTES / 2**20:.0f} MB). Clear the outputs (Kernel > Restart & Clear "
                "Output), save and submit again."
            )
        raw = path.read_bytes()
    except FileNotFoundError:
        raise _Unreadable("No notebook was found in your submission.") from None
    except IsADirectoryError:
        raise _Unreadable("Your submission is a folder, not a notebook file.") from None
    except OSError as error:
        raise _Unreadable(f"Your notebook file could not be read ({error.strerror}).") from None
    if not raw.strip():
        raise _Unreadable("Your notebook file is empty. Was it saved correctly?")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _Unreadable("Your notebook file is not a text file (not UTF-8): it cannot be read as a "
                          "notebook. Submit the .ipynb file saved by Jupyter.") from None
    try:
        document = json.loads(text)
    except RecursionError:
        raise _Unreadable("Your notebook file is not valid JSON (it is nested too deeply).") from None
    except json.JSONDecodeError as error:
        raise _Unreadable(
            f"Your notebook file is not valid JSON (line {error.lineno}, column {error.colno}: "
            f"{error.msg}), so it cannot be opened. Was it edited outside Jupyter? Open it in "
            "Jupyter, fix or restore it from the release, save and submit again."
        ) from None
    if not isinstance(document, dict):
        raise _Unreadable("Your notebook file is valid JSON but not a notebook (no cells).")
    version = document.get("nbformat")
    if version != 4:
        shown = "none" if version is None else repr(version)
        raise _Unreadable(
            f"Your notebook is in notebook format {shown}, not format 4, which the grader reads. "
            "Open it in a recent Jupyter, save it (File > Save) and submit again."
        )
    cells_document = document.get("cells")
    if not isinstance(cells_document, list):
        raise _Unreadable("Your notebook has no list of cells: it cannot be graded. Restore it from the release.")

    cells: list[_Cell] = []
    notes: list[str] = []
    for index, entry in enumerate(cells_document):
        source = cell_text(entry.get("source")) if isinstance(entry, dict) else None
        cell_type = entry.get("cell_type") if isinstance(entry, dict) else None
        if source is None or not isinstance(cell_type, str):
            notes.append(f"Cell number {index + 1} of your notebook is malformed and was ignored.")
            continue
        metadata = entry.get("metadata")
        nbgrader = metadata.get("nbgrader") if isinstance(metadata, dict) else None
        nbgrader = nbgrader if isinstance(nbgrader, dict) else {}
        grade_id = nbgrader.get("grade_id")
        cells.append(_Cell(index, cell_type, source, grade_id if isinstance(grade_id, str) else None, nbgrader))
    return cells, notes


# ------------------------------------------------------------------------------------------------
# code of a cell
# ------------------------------------------------------------------------------------------------
def _comment_cell_magic(source: str) -> tuple[str, str | None]:
    """Turn a first-line ``%%time``-like magic into a comment; return (code, other magic name)."""
    match = _CELL_MAGIC.match(source)
    if not match:
        return source, None
    name = match.group(1)
    if name in _PYTHON_CELL_MAGICS:
        start, end = match.span()
        return source[:start] + "#" + source[start:end].lstrip() + source[end:], None
    return source, name


def _ipython_to_python(source: str) -> str:
    """Translate IPython syntax with IPython's own transformer (imported only when needed)."""
    from IPython.core.inputtransformer2 import TransformerManager

    return TransformerManager().transform_cell(source)


def compile_cell(source: str, grade_id: str) -> tuple[str, tuple[str, ...], str | None]:
    """Return (code to run, functions defined, syntax error message for the student or None)."""
    code, foreign_magic = _comment_cell_magic(source)
    if foreign_magic is not None:
        return "", (), (
            f"The cell `{grade_id}` starts with the cell magic %%{foreign_magic}, so it is not Python "
            "code and the grader cannot run it. Remove that line."
        )
    try:
        tree = ast.parse(code)
    except SyntaxError as error:
        try:
            translated = _ipython_to_python(code)
            tree = ast.parse(translated)
            code = translated
        except Exception:
            return "", (), _syntax_message(error, grade_id, source)
    except (ValueError, RecursionError, MemoryError) as error:  # null bytes, absurd nesting
        return "", (), f"The cell `{grade_id}` cannot be compiled ({type(error).__name__}: {error})."
    defines = tuple(
        node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    )
    return code, defines, None


def _syntax_message(error: SyntaxError, grade_id: str, source: str) -> str:
    line = error.lineno or 0
    text = (error.text or "").strip("\n")
    if not text and 0 < line <= len(source.splitlines()):
        text = source.splitlines()[line - 1]
    where = f", line {line}" if line else ""
    shown = f": `{text.strip()}`" if text.strip() else ""
    return (f"Syntax error in the cell `{grade_id}`{where}{shown} ({error.msg}). The grader could not "
            "run this cell, so this function was not tested.")


def _normalized(source: str) -> str:
    return "\n".join(line.rstrip() for line in source.strip().splitlines())


# ------------------------------------------------------------------------------------------------
# the program
# ------------------------------------------------------------------------------------------------
def _read_source(source_path: Path, functions: tuple[str, ...]) -> list[_Cell]:
    try:
        cells, _ = _parse_notebook(source_path)
    except _Unreadable as error:
        raise SourceNotebookError(f"the source notebook {source_path} cannot be used: {error}") from None
    ids = [cell.grade_id for cell in cells if cell.grade_id]
    duplicates = sorted({grade_id for grade_id in ids if ids.count(grade_id) > 1})
    if duplicates:
        raise SourceNotebookError(f"the source notebook {source_path} has duplicate grade ids: {duplicates}")
    missing = [name for name in functions if name not in ids]
    if missing:
        raise SourceNotebookError(f"the source notebook {source_path} has no cell for {missing}")
    if not any(grade_id.startswith(SETUP_PREFIX) for grade_id in ids):
        raise SourceNotebookError(f"the source notebook {source_path} has no setup_* cell")
    return cells


def _missing_message(name: str, cells: list[_Cell]) -> str:
    message = (f"The cell `{name}` is missing from your notebook — was it deleted or renamed? Restore it "
               "from the release (with its code) and submit again.")
    pattern = re.compile(rf"^\s*(?:async\s+)?def\s+{re.escape(name)}\s*\(", re.MULTILINE)
    elsewhere = [cell for cell in cells if cell.cell_type == "code" and pattern.search(cell.source)]
    if elsewhere:
        message += (f" (A function `{name}` is defined in another cell, but the grader only runs the "
                    f"cell `{name}` of the release: put your code in that cell.)")
    return message


def read_submission(submission_path: str | Path, source_notebook_path: str | Path,
                    functions: tuple[str, ...] = GRADED_FUNCTIONS) -> SubmissionProgram:
    """Read a submission into the program the worker runs.

    Parameters
    ----------
    submission_path : path
        The student's notebook. It is only read, never modified.
    source_notebook_path : path
        The instructor's source notebook: the setup cells and the cell order come from it.
    functions : tuple of str
        The graded functions (default: the seven of the contract).

    Returns
    -------
    SubmissionProgram
        Never raises because of the submission; see its ``problems``, ``notes`` and ``fatal``.

    Raises
    ------
    SourceNotebookError
        When the source notebook itself is unusable (a set-up error of the grader).
    """
    submission_path, source_path = Path(submission_path), Path(source_notebook_path)
    source_cells = _read_source(source_path, functions)
    program = SubmissionProgram(submission_path, source_path, functions=tuple(functions))
    try:
        cells, malformed = _parse_notebook(submission_path)
    except _Unreadable as error:
        program.fatal = str(error)
        program.problems = {name: str(error) for name in functions}
        return program
    program.notes += malformed

    by_id: dict[str, list[_Cell]] = {}
    for cell in cells:
        if cell.grade_id:
            by_id.setdefault(cell.grade_id, []).append(cell)

    defined_in: dict[str, list[str]] = {}
    for original in source_cells:
        grade_id = original.grade_id
        if grade_id is None:
            continue
        if grade_id.startswith(SETUP_PREFIX) and original.cell_type == "code":
            _check_locked(original, by_id.get(grade_id, []), program)
            code, defines, failure = compile_cell(original.source, grade_id)
            if failure is not None:
                raise SourceNotebookError(f"the source notebook {source_path}: {failure}")
            program.cells.append(ProgramCell(grade_id, "setup", original.source, code, "source", defines))
        elif original.nbgrader.get("locked") and original.cell_type == "code" and grade_id not in functions:
            _check_locked(original, by_id.get(grade_id, []), program)
        elif grade_id in functions:
            function_cell = _function_cell(grade_id, by_id.get(grade_id, []), cells, program)
            if function_cell is not None:
                program.cells.append(function_cell)
                for name in function_cell.defines:
                    defined_in.setdefault(name, []).append(grade_id)

    _note_redefinitions(defined_in, program)
    return program


def _check_locked(original: _Cell, copies: list[_Cell], program: SubmissionProgram) -> None:
    grade_id = original.grade_id
    if not copies:
        program.notes.append(f"The locked cell `{grade_id}` was deleted from your notebook; the grader used "
                             "the original.")
    elif len(copies) > 1 or _normalized(copies[0].source) not in {
        _normalized(original.source), _normalized(remove_hidden_regions(original.source))
    }:
        program.notes.append(f"The locked cell `{grade_id}` was changed in your notebook; the grader used the "
                             "original (changes to locked cells are ignored).")


def _function_cell(name: str, copies: list[_Cell], cells: list[_Cell],
                   program: SubmissionProgram) -> ProgramCell | None:
    if not copies:
        program.problems[name] = _missing_message(name, cells)
        return None
    if len(copies) > 1:
        program.problems[name] = (
            f"Your notebook has {len(copies)} cells with the id `{name}` (was the cell copied?). The grader "
            f"cannot tell which one holds your answer, so `{name}` was not run. Keep only one of them."
        )
        return None
    cell = copies[0]
    if cell.cell_type != "code":
        program.problems[name] = (
            f"The cell `{name}` is no longer a code cell (it is a {cell.cell_type} cell), so it was not run. "
            "Change it back to a code cell."
        )
        return None
    code, defines, error = compile_cell(cell.source, name)
    if error is not None:
        program.problems[name] = error
        return None
    return ProgramCell(name, "function", cell.source, code, "submission", defines)


def _note_redefinitions(defined_in: dict[str, list[str]], program: SubmissionProgram) -> None:
    for name, cell_ids in defined_in.items():
        if len(cell_ids) < 2:
            continue
        if len(set(cell_ids)) == 1:
            program.notes.append(f"`{name}` is defined {len(cell_ids)} times in the cell `{cell_ids[0]}`; as in "
                                 "Python, the last definition is the one graded.")
        else:
            places = ", ".join(f"`{cell_id}`" for cell_id in dict.fromkeys(cell_ids))
            program.notes.append(f"`{name}` is defined in several graded cells ({places}); as when the notebook "
                                 f"runs, the definition in `{cell_ids[-1]}` is the one graded.")
