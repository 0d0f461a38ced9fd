"""The exploration cells of a submission (Parts 2-4, the bonus), run for the graders' eyes.

The written answers of Parts 2-5 and the bonus are graded by hand in formgrader, next to the figures
the student's code draws. ``gradcam-kit grade`` runs those cells in the sandboxed worker, after the
graded tests and with the same limits, and shows what they printed and drew in the autograded copy
that formgrader reads. Nothing of it changes a grade.

* :func:`exploration_cells`: which cells they are: the code cells of the source notebook marked
  ``solution: true``, ``grade: false`` that are neither a setup cell nor a graded function
  (``part2_code``, ``part3_code``, ``part4_code``, ``bonus_code``), taken from the submission, in
  the source notebook's order;
* :func:`run_exploration`: runs them in the submission's :class:`WorkerSession`
  (``WorkerSession.run_cell``), each after the ones before it, and returns an
  :class:`ExplorationReport`: per cell, ``ran``, ``failed`` (an exception, with the line of the
  student's cell), ``limit`` (time, memory, output... as for a graded call) or ``not run``;
* :meth:`ExplorationReport.write` / :meth:`ExplorationReport.read`: ``exploration/report.json`` and
  one PNG per figure in the judge's artifacts folder; reading checks everything again;
* :func:`annotate_exploration`: the outputs on the autograded copy's cells.

Only safe types reach the instructor's browser: plain text (stream outputs, which nbconvert
escapes) and PNG images, each checked (signature, size, dimensions) and re-encoded here, so that
nothing but pixels is kept. No HTML, SVG or JavaScript from student code is ever stored.
"""

from __future__ import annotations

import base64
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Literal

import nbformat
from nbformat import NotebookNode

from gradcam_kit.grading import nbgrader_settings
from gradcam_kit.safe_text import without_controls
from gradcam_kit.wire.failures import LIMIT_FAILURES

if TYPE_CHECKING:
    from gradcam_kit.host.session import WorkerSession

__all__ = ["CellOutput", "CellReport", "ExplorationCell", "ExplorationReport", "annotate_exploration",
           "exploration_cells", "run_exploration"]

FOLDER = "exploration"
REPORT = "report.json"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_PNG_BYTES = 2 * 2**20
MAX_SIDE = 4096
MAX_TEXT_CHARS = 20_000
MAX_OUTPUTS = 64
Status = Literal["ran", "failed", "limit", "not run"]
_GRADE_ID = re.compile(r"^[A-Za-z0-9_-]{1,100}$")


# ---------------------------------------------------------------------------------------------
# which cells
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExplorationCell:
    """An exploration cell of the submission: its id, its text and the Python to run."""

    grade_id: str
    source: str
    code: str


def _nbgrader(cell: dict[str, Any]) -> dict[str, Any]:
    metadata = cell.get("metadata")
    info = metadata.get("nbgrader") if isinstance(metadata, dict) else None
    return info if isinstance(info, dict) else {}


def _read_cells(path: Path) -> list[dict[str, Any]]:
    from gradcam_kit.grading.notebook import MAX_NOTEBOOK_BYTES

    if path.stat().st_size > MAX_NOTEBOOK_BYTES:
        raise ValueError(f"{path.name} is larger than {MAX_NOTEBOOK_BYTES // 2**20} MB")
    document = json.loads(path.read_bytes().decode("utf-8-sig"))
    cells = document.get("cells") if isinstance(document, dict) else None
    if not isinstance(cells, list):
        raise ValueError(f"{path.name} has no list of cells")
    return [cell for cell in cells if isinstance(cell, dict)]


def exploration_ids(source_notebook: Path, functions: Iterable[str]) -> list[str]:
    """The ids of the exploration cells of the source notebook, in order (module docstring)."""
    from gradcam_kit.contract import SETUP_PREFIX

    functions = set(functions)
    ids = []
    for cell in _read_cells(source_notebook):
        info = _nbgrader(cell)
        grade_id = info.get("grade_id")
        if (cell.get("cell_type") == "code" and info.get("solution") and not info.get("grade")
                and isinstance(grade_id, str) and grade_id not in functions and not grade_id.startswith(SETUP_PREFIX)):
            ids.append(grade_id)
    return ids


def exploration_cells(submission: Path, source_notebook: Path) -> tuple[list[ExplorationCell], list["CellReport"]]:
    """The exploration cells to run, and a report for each one that cannot run (missing, not a
    code cell, duplicated, not Python)."""
    from gradcam_kit.contract import GRADED_FUNCTIONS
    from gradcam_kit.grading.notebook import cell_text, compile_cell

    ids = exploration_ids(source_notebook, GRADED_FUNCTIONS)
    try:
        cells = _read_cells(submission)
    except (OSError, ValueError) as error:
        reason = f"The notebook could not be read ({error})."
        return [], [CellReport(grade_id, "not run", reason) for grade_id in ids]
    found: list[ExplorationCell] = []
    problems: list[CellReport] = []
    for grade_id in ids:
        copies = [cell for cell in cells if _nbgrader(cell).get("grade_id") == grade_id]
        source = cell_text(copies[0].get("source")) if len(copies) == 1 else None
        if not copies:
            problems.append(CellReport(grade_id, "not run", f"The cell `{grade_id}` is missing from the notebook."))
        elif len(copies) > 1:
            problems.append(CellReport(grade_id, "not run", f"The notebook has {len(copies)} cells `{grade_id}`."))
        elif copies[0].get("cell_type") != "code" or source is None:
            problems.append(CellReport(grade_id, "not run", f"The cell `{grade_id}` is not a code cell."))
        else:
            code, _, compile_error = compile_cell(source, grade_id)
            if compile_error is not None:
                problems.append(CellReport(grade_id, "not run", compile_error))
            else:
                found.append(ExplorationCell(grade_id, source, code))
    return found, problems


# ---------------------------------------------------------------------------------------------
# what they showed
# ---------------------------------------------------------------------------------------------
def output_text(value: Any, limit: int = MAX_TEXT_CHARS) -> str:
    """``value`` as text that is safe to store and show: valid UTF-8, no control characters but
    tabs and newlines (no escape sequences, no bidirectional overrides), at most ``limit`` characters."""
    text = value if isinstance(value, str) else str(value)
    text = text.encode("utf-8", "replace").decode("utf-8")  # a lone surrogate becomes "?"
    text = without_controls(text.replace("\r\n", "\n"))
    return text if len(text) <= limit else text[:limit] + "\n[output cut]\n"


def clean_png(data: bytes) -> bytes:
    """``data`` checked to be a PNG image of reasonable size, and re-encoded (only the pixels stay).

    Raises
    ------
    ValueError
        When it is not a PNG, is too large, or cannot be decoded.
    """
    from PIL import Image

    if len(data) > MAX_PNG_BYTES or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        raise ValueError("not a PNG image of an acceptable size")
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
        raise ValueError(f"an image of {width}x{height} pixels")
    with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
        image.load()
        pixels = image.convert("RGBA") if image.mode not in ("RGB", "RGBA", "L", "LA") else image.copy()
    buffer = io.BytesIO()
    pixels.save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass(frozen=True)
class CellOutput:
    """One thing a cell showed: text on ``stdout``/``stderr``, or a PNG image."""

    kind: Literal["text", "png"]
    text: str = ""
    name: Literal["stdout", "stderr"] = "stdout"
    png: bytes = b""

    @classmethod
    def from_worker(cls, value: Any) -> "CellOutput | None":
        """The output the worker described, checked; ``None`` for anything else."""
        if not isinstance(value, dict):
            return None
        if value.get("kind") == "text" and isinstance(value.get("text"), str):
            return cls("text", output_text(value["text"]), "stderr" if value.get("name") == "stderr" else "stdout")
        if value.get("kind") == "png":
            import numpy as np

            data = value.get("data")
            if isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 1:
                try:
                    return cls("png", png=clean_png(data.tobytes()))
                except (ValueError, OSError):
                    return cls("text", "[a figure that is not a valid PNG image was left out]\n", "stderr")
        return None


@dataclass
class CellReport:
    """How one exploration cell went, and what it showed.

    Attributes
    ----------
    grade_id : str
    status : {"ran", "failed", "limit", "not run"}
    message : str
        Why it failed, hit a limit or did not run (empty when it ran).
    outputs : list of CellOutput
    seconds : float
    """

    grade_id: str
    status: Status
    message: str = ""
    outputs: list[CellOutput] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def note(self) -> str | None:
        """A sentence for the notes of the student's results, or ``None`` when the cell ran."""
        if self.status == "ran":
            return None
        what = {"failed": "failed", "limit": "hit a limit", "not run": "was not run"}[self.status]
        return f"The exploration cell `{self.grade_id}` {what} when the grader ran it: {self.message}"


@dataclass
class ExplorationReport:
    """Every exploration cell of one submission, in the source notebook's order."""

    cells: list[CellReport] = field(default_factory=list)

    @property
    def notes(self) -> list[str]:
        return [cell.note for cell in self.cells if cell.note]

    def write(self, artifacts: Path) -> None:
        """``artifacts/exploration/report.json`` and one PNG per image."""
        folder = artifacts / FOLDER
        folder.mkdir(parents=True, exist_ok=True)
        cells = []
        for cell in self.cells:
            outputs = []
            for number, output in enumerate(cell.outputs):
                if output.kind == "png":
                    name = f"{cell.grade_id}-{number}.png"
                    (folder / name).write_bytes(output.png)
                    outputs.append({"kind": "png", "file": name})
                else:
                    outputs.append({"kind": "text", "name": output.name, "text": output.text})
            cells.append({"grade_id": cell.grade_id, "status": cell.status, "message": cell.message,
                          "seconds": round(cell.seconds, 2), "outputs": outputs})
        (folder / REPORT).write_text(json.dumps({"cells": cells}, indent=1), encoding="utf-8")

    @classmethod
    def read(cls, artifacts: Path) -> "ExplorationReport | None":
        """The report in ``artifacts`` (``None`` when there is none), checked again: only the
        statuses, text and PNG files of the format survive."""
        folder = artifacts / FOLDER
        try:
            data = json.loads((folder / REPORT).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return ExplorationReport()
        report = cls()
        entries = data.get("cells") if isinstance(data, dict) else None
        for entry in entries[:MAX_OUTPUTS] if isinstance(entries, list) else []:
            if not isinstance(entry, dict) or not _GRADE_ID.match(str(entry.get("grade_id", ""))):
                continue
            known = entry.get("status") in ("ran", "failed", "limit", "not run")
            status: Status = entry["status"] if known else "not run"
            seconds = entry.get("seconds")
            cell = CellReport(str(entry["grade_id"]), status, output_text(entry.get("message", ""), 2000),
                              seconds=float(seconds or 0.0) if isinstance(seconds, (int, float)) else 0.0)
            outputs = entry.get("outputs")
            for output in outputs[:MAX_OUTPUTS] if isinstance(outputs, list) else []:
                if not isinstance(output, dict):
                    continue
                if output.get("kind") == "text" and isinstance(output.get("text"), str):
                    cell.outputs.append(CellOutput("text", output_text(output["text"]),
                                                   "stderr" if output.get("name") == "stderr" else "stdout"))
                elif output.get("kind") == "png" and isinstance(output.get("file"), str) \
                        and re.fullmatch(r"[A-Za-z0-9_-]+-\d+\.png", output["file"]):
                    try:
                        cell.outputs.append(CellOutput("png", png=clean_png((folder / output["file"]).read_bytes())))
                    except (OSError, ValueError):
                        continue
            report.cells.append(cell)
        return report


# ---------------------------------------------------------------------------------------------
# running them
# ---------------------------------------------------------------------------------------------
def run_exploration(session: "WorkerSession", submission: Path, source_notebook: Path) -> ExplorationReport:
    """Run the exploration cells of ``submission`` in ``session`` (see the module docstring)."""
    cells, problems = exploration_cells(submission, source_notebook)
    reports = {report.grade_id: report for report in problems}
    for cell in cells:
        outcome = session.run_cell(cell.grade_id, cell.code, cell.source)
        value = outcome.value if isinstance(outcome.value, dict) else {}
        outputs = [checked for raw in (value.get("outputs") or [])[:MAX_OUTPUTS]
                   if (checked := CellOutput.from_worker(raw)) is not None]
        if outcome.ok:
            status: Status = "ran"
        elif outcome.failure in LIMIT_FAILURES:
            status = "limit"
        elif outcome.failure == "unavailable":
            status = "not run"
        else:
            status = "failed"
        message = "" if outcome.ok else output_text(outcome.error or outcome.failure or "unknown", 2000)
        reports[cell.grade_id] = CellReport(cell.grade_id, status, message, outputs, outcome.seconds)
    from gradcam_kit.contract import GRADED_FUNCTIONS

    order = exploration_ids(source_notebook, GRADED_FUNCTIONS)
    return ExplorationReport([reports[grade_id] for grade_id in order if grade_id in reports])


# ---------------------------------------------------------------------------------------------
# the autograded copy
# ---------------------------------------------------------------------------------------------
def annotate_exploration(notebook: NotebookNode, report: ExplorationReport) -> None:
    """Give each exploration cell of the autograded ``notebook`` the outputs of its report:
    stream outputs for the text, ``image/png`` for the figures, and a last ``stderr`` line when
    the cell failed, hit a limit or was not run."""
    by_id = {cell.grade_id: cell for cell in report.cells}
    for cell in notebook.cells:
        name = nbgrader_settings.grade_id(cell)
        if cell.cell_type != "code" or name not in by_id:
            continue
        found = by_id[name]
        outputs = []
        for output in found.outputs:
            if output.kind == "png":
                outputs.append(nbformat.v4.new_output("display_data", data={
                    "image/png": base64.b64encode(output.png).decode("ascii"),
                    "text/plain": f"<a figure drawn by {name}>"}))
            else:
                outputs.append(nbformat.v4.new_output("stream", name=output.name, text=output.text))
        if found.note:
            outputs.append(nbformat.v4.new_output("stream", name="stderr", text=f"gradcam-kit: {found.note}\n"))
        cell.outputs = outputs
