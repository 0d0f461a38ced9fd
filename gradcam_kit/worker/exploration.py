"""Inside the worker: run one exploration cell of the student's notebook and keep what it shows.

The ``explore`` request of the worker (``{"op": "explore", "grade_id", "code", "source"}``) runs the
cell's code in the notebook's namespace, after the setup and graded cells, the way Jupyter's inline
backend would show it:

* what the cell prints (``sys.stdout``, ``sys.stderr``) is kept as text;
* every figure, when ``plt.show()`` is called and at the end of the cell (as the inline backend
  does), is kept as a PNG and closed; ``display(obj)`` and the value of a last expression that is
  not a figure are kept as their ``repr``;
* nothing else: no HTML, no JavaScript, no rich representation of any kind.

The cell runs under the limits of a call (``Worker.run_student``: the CPU budget, and the session's
wall clock). The answer is plain data for :mod:`gradcam_kit.grading.exploration`, which checks it
again: ``{"ok", "error", "failure", "seconds", "value": {"outputs": [...]}}`` with outputs
``{"kind": "text", "name": "stdout" | "stderr", "text": str}`` or ``{"kind": "png", "data": uint8
array}``, in the order they were produced, within :data:`MAX_TEXT_CHARS` of text,
:data:`MAX_IMAGES` images and :data:`MAX_PNG_BYTES` per image.
"""

from __future__ import annotations

import ast
import io
import linecache
import sys
import time
from typing import Any

import numpy as np

from gradcam_kit.wire.failures import Failure, StudentError
from gradcam_kit.wire.messages import Answer, ExploreRequest, running_event
from gradcam_kit.worker.failures import CELL_PREFIX, CallFailure
from gradcam_kit.worker.loading import CellRunner

MAX_TEXT_CHARS = 20_000
MAX_IMAGES = 12
MAX_PNG_BYTES = 2 * 2**20
DPI = 72


class CellOutputs:
    """What one cell shows, in order, within the budgets of the module docstring."""

    def __init__(self) -> None:
        self.outputs: list[dict[str, Any]] = []
        self.text_chars = 0
        self.images = 0
        self.notes: list[str] = []

    def write(self, name: str, text: Any) -> int:
        if not isinstance(text, str):
            text = str(text)
        room = MAX_TEXT_CHARS - self.text_chars
        if room <= 0:
            self._note(f"[output cut: the grader keeps the first {MAX_TEXT_CHARS} characters]")
            return len(text)
        kept = text[:room]
        self.text_chars += len(kept)
        last = self.outputs[-1] if self.outputs else None
        if last is not None and last["kind"] == "text" and last["name"] == name:
            last["text"] += kept
        else:
            self.outputs.append({"kind": "text", "name": name, "text": kept})
        return len(text)

    def _note(self, note: str) -> None:
        if note not in self.notes:
            self.notes.append(note)

    def figure(self, figure: Any) -> None:
        """Keep ``figure`` as a PNG (within the budgets)."""
        if self.images >= MAX_IMAGES:
            self._note(f"[more than {MAX_IMAGES} figures: the grader keeps the first {MAX_IMAGES}]")
            return
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
        data = buffer.getvalue()
        if len(data) > MAX_PNG_BYTES:
            self._note(f"[a figure larger than {MAX_PNG_BYTES // 2**20} MB as a PNG was left out]")
            return
        self.images += 1
        self.outputs.append({"kind": "png", "data": np.frombuffer(data, dtype=np.uint8).copy()})

    def flush_figures(self) -> None:
        """Keep every open figure, then close them all (``plt.show()`` under the inline backend)."""
        import matplotlib.pyplot as plt

        for number in list(plt.get_fignums()):
            figure = plt.figure(number)
            try:
                self.figure(figure)
            finally:
                plt.close(figure)

    def display(self, *objects: Any, **_: Any) -> None:
        """``display(obj)``: a figure as a PNG, anything else as its ``repr``."""
        from matplotlib.figure import Figure

        for value in objects:
            if isinstance(value, Figure):
                self.figure(value)
            else:
                self.write("stdout", _safe_repr(value) + "\n")

    def result(self) -> list[dict[str, Any]]:
        return self.outputs + [{"kind": "text", "name": "stderr", "text": note + "\n"} for note in self.notes]


class _Stream(io.TextIOBase):
    """``sys.stdout`` / ``sys.stderr`` of the cell: into its outputs."""

    def __init__(self, shown: CellOutputs, name: str) -> None:
        self.shown, self.name_ = shown, name

    def writable(self) -> bool:
        return True

    def write(self, text: Any) -> int:
        return self.shown.write(self.name_, text)


def _safe_repr(value: Any) -> str:
    try:
        text = repr(value)
    except BaseException:  # a hostile __repr__
        return f"<{type(value).__name__} object>"
    return text if isinstance(text, str) else f"<{type(value).__name__} object>"


def _split_last_expression(code: str, filename: str) -> tuple[Any, Any]:
    """(the cell without its last expression, that expression) compiled, as IPython runs a cell."""
    tree = ast.parse(code, filename)
    last = None
    final = tree.body[-1] if tree.body else None
    if isinstance(final, ast.Expr):
        tree.body.pop()
        last = ast.Expression(final.value)
    body = compile(tree, filename, "exec")
    return body, (compile(last, filename, "eval") if last is not None else None)


def run_exploration_cell(worker: CellRunner, request: ExploreRequest) -> Answer:
    """Answer an ``explore`` request (see the module docstring).

    ``worker`` runs the code (``run_student``: the limits of a call, failures as ``CallFailure``).
    """
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    grade_id, code, source = request.grade_id, request.code, request.source
    filename = f"{CELL_PREFIX}{grade_id}>"
    source_lines, code_lines = source.splitlines(True), code.splitlines(True)
    linecache.cache[filename] = (len(code), None, source_lines if len(source_lines) == len(code_lines)
                                 else code_lines, filename)
    shown = CellOutputs()
    namespace = worker.namespace
    saved_streams, saved_show, saved_display = (sys.stdout, sys.stderr), plt.show, namespace.get("display")
    answer = Answer(True)
    started = time.perf_counter()
    try:
        body, last = _split_last_expression(code, filename)
        worker.reset_state()
        worker.send(running_event())
        started = time.perf_counter()
        sys.stdout, sys.stderr = _Stream(shown, "stdout"), _Stream(shown, "stderr")
        plt.show = lambda *args, **kwargs: shown.flush_figures()
        namespace["display"] = shown.display

        def cell() -> None:
            exec(body, namespace)  # the student's cell, in the sandbox
            value = eval(last, namespace) if last is not None else None
            if value is not None and not (isinstance(value, Figure) and plt.fignum_exists(value.number)):
                shown.display(value)  # an open figure is shown once, at the end, as Jupyter would
            shown.flush_figures()

        worker.run_student(cell)
    except CallFailure as failure:
        answer = failure.answer()
    except SyntaxError as error:  # the host compiled it already; a cell that is not Python after all
        answer = Answer(False, error=StudentError(f"SyntaxError: {error.msg} (line {error.lineno})"),
                        failure=Failure.EXCEPTION)
    finally:
        sys.stdout, sys.stderr = saved_streams
        plt.show = saved_show
        namespace["display"] = saved_display
    answer.seconds = time.perf_counter() - started
    if not answer.ok and not answer.restart:  # what was drawn before the failure is kept too
        try:
            worker.run_student(shown.flush_figures)
        except CallFailure:  # a figure the student broke
            pass
    answer.value = {"outputs": shown.result()}
    answer.observations = {}
    answer.restart = answer.restart or worker.after_call()
    return answer
