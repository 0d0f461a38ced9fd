"""Loading a notebook in the worker: run its setup and graded cells, and say what each defined.

:func:`load_cells` runs the cells of the ``start`` message's program in order, each compiled with
the file name ``<cell GRADE_ID>`` (so that errors are located in the student's code and nowhere
else) and under the CPU budget of a call, announcing each one to the grader first (whose clock then
restarts). A cell that hits a limit ends the load at once (the worker is restarted without it);
any other failure is kept, and its function is graded anyway when it was defined before the error.
"""

from __future__ import annotations

import linecache
import os
from typing import Any, Callable, Protocol

from gradcam_kit.wire.failures import Failure
from gradcam_kit.wire.limits import Limits, describe_bytes
from gradcam_kit.wire.messages import LoadAnswer, StartMessage, cell_event
from gradcam_kit.worker.boot import allow_cpu
from gradcam_kit.worker.describe import type_name
from gradcam_kit.worker.failures import CELL_PREFIX, CallFailure, failure_from

__all__ = ["CellRunner", "load_cells"]


class CellRunner(Protocol):
    """What running a notebook's cells needs of the worker (:class:`gradcam_kit.worker.runtime.Worker`)."""

    start: StartMessage
    limits: Limits
    namespace: dict[str, Any]
    main_pid: int

    def send(self, message: Any) -> None: ...
    def reset_state(self) -> None: ...
    def harness_cpu(self) -> None: ...
    def flush_streams(self) -> None: ...
    def output_exceeded(self) -> bool: ...
    def run_student(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any: ...
    def after_call(self) -> str | None: ...


def load_cells(worker: CellRunner) -> LoadAnswer:
    """Run the program's cells in ``worker``'s namespace (skipping the ``start`` message's ``skip``)."""
    program = worker.start.program
    skip = worker.start.skip
    errors: dict[str, str] = {}
    failed_cells: dict[str, str] = {}
    for cell in program["cells"]:
        grade_id = cell["grade_id"]
        if grade_id in skip:
            errors[grade_id] = skip[grade_id]
            continue
        filename = f"{CELL_PREFIX}{grade_id}>"
        source_lines = cell["source"].splitlines(True)
        code_lines = cell["code"].splitlines(True)
        shown = source_lines if len(source_lines) == len(code_lines) else code_lines
        linecache.cache[filename] = (len(cell["code"]), None, shown, filename)
        worker.send(cell_event(grade_id))
        allow_cpu(worker.limits.cpu_seconds)
        failure: CallFailure | None = None
        try:
            worker.reset_state()
            exec(compile(cell["code"], filename, "exec"), worker.namespace)  # the point
        except BaseException as error:  # anything the cell raises
            failure = failure_from(error, worker.limits)
        finally:
            if os.getpid() != worker.main_pid:
                os._exit(0)
            worker.harness_cpu()
        worker.flush_streams()
        if worker.output_exceeded() and (failure is None or failure.kind != Failure.OUTPUT):
            failure = CallFailure(f"printed more than {describe_bytes(worker.limits.output_bytes)}", Failure.OUTPUT,
                                  restart=True)
        if failure is not None:
            failed_cells[grade_id] = failure.message
            if failure.restart:
                return _load_answer(worker, errors, failed_cells, restart=failure.kind.value, current=grade_id)
    return _load_answer(worker, errors, failed_cells, restart=None, current=None)


def _load_answer(worker: CellRunner, errors: dict[str, str], failed_cells: dict[str, str], restart: str | None,
                 current: str | None) -> LoadAnswer:
    """What the notebook defined: each graded function, callable or why not."""
    program: dict[str, Any] = worker.start.program
    problems: dict[str, str] = program["problems"]
    functions: list[str] = program["functions"]
    cells = {cell["grade_id"]: cell for cell in program["cells"]}
    notes: list[str] = []
    defined: dict[str, bool] = {}
    for name in functions:
        value = worker.namespace.get(name)
        if name in problems:
            errors[name] = problems[name]
        elif name in errors:  # its cell was skipped: it killed an earlier worker
            pass
        elif name in failed_cells and (value is None or name == current):
            errors[name] = f"The cell `{name}` failed when it ran: {failed_cells[name]}"
        elif value is None:
            cell = cells.get(name)
            others = ", ".join(f"`{other}`" for other in (cell or {}).get("defines", []) if other != name)
            errors[name] = (f"The cell `{name}` does not define a function named `{name}`"
                            + (f" (it defines {others})" if others else "")
                            + ". Keep the name and the signature given in the release.")
        elif not callable(value):
            errors[name] = f"`{name}` is not a function (it is a {type_name(value)})."
        elif name in failed_cells:
            notes.append(f"The cell `{name}` raised an error after defining `{name}` "
                         f"({failed_cells[name]}); the function is graded anyway.")
        defined[name] = name not in errors
    for grade_id, message in failed_cells.items():
        if grade_id not in functions:
            errors[grade_id] = f"The setup cell `{grade_id}` failed: {message}"
    return LoadAnswer(all(defined.values()) and not failed_cells, defined, errors, notes, restart,
                      current if restart else None, failed_cells.get(current) if restart and current else None)
