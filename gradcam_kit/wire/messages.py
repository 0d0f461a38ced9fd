"""The typed messages between the grader and its worker, and their plain form in a frame.

Each message is a frozen dataclass with ``to_plain()`` (the plain data :func:`~gradcam_kit.wire.frames.pack_frame`
sends) and ``from_plain()`` (strict: anything else raises :class:`~gradcam_kit.wire.frames.ProtocolError`,
for the worker's side of the channel may be forged by the student's code).

One worker's conversation::

    host -> worker   StartMessage                       (limits, program, sandbox paths)
    worker -> host   {"event": "cell", "grade_id": ...}  one per cell, in order
    worker -> host   LoadAnswer                          ({"event": "loaded", ...}) or {"event": "failed", ...}
    host -> worker   CallRequest | ProbeRequest | ExploreRequest
    worker -> host   {"event": "running"}                the student's code starts: its clock starts
    worker -> host   Answer                              (``id`` of the request)
    host -> worker   {"op": "bye"}
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from enum import StrEnum
from typing import Any, Mapping

from gradcam_kit.wire.frames import ModelSpec, ProtocolError

__all__ = [
    "BYE",
    "MEMORY_MARKERS",
    "Answer",
    "CallRequest",
    "ExploreRequest",
    "Failure",
    "Limits",
    "LoadAnswer",
    "ProbeRequest",
    "Request",
    "StartMessage",
    "StudentError",
    "TripwireRules",
    "cell_event",
    "describe_bytes",
    "failed_event",
    "request_from_plain",
    "request_to_plain",
    "running_event",
]

MEMORY_MARKERS = ("MemoryError", "bad_alloc", "Cannot allocate memory", "can't allocate memory",
                  "not enough memory", "out of memory")
"""Words by which Python, C++ (``std::bad_alloc``), the C library and torch say an allocation failed:
in an exception's message (the worker) or at the end of a dead worker's log (the grader)."""


def describe_bytes(count: float) -> str:
    """``6442450944`` -> ``"6.0 GB"`` (binary units, the way students read them)."""
    for unit, size in (("GB", 2**30), ("MB", 2**20), ("kB", 2**10)):
        if count >= size:
            return f"{count / size:.1f} GB" if unit == "GB" else f"{count / size:.0f} {unit}"
    return f"{count:.0f} bytes"


def _check(condition: bool, what: str) -> None:
    if not condition:
        raise ProtocolError(f"malformed message: {what}")


def _record(message: Any, what: str) -> Mapping[str, Any]:
    _check(isinstance(message, dict), f"{what} is not a record")
    return message


def _text(value: Any, what: str, optional: bool = False) -> Any:
    _check(type(value) is str or (optional and value is None), f"{what} must be a string")
    return value


# ------------------------------------------------------------------------------------------------
# failures
# ------------------------------------------------------------------------------------------------
class Failure(StrEnum):
    """Why a call (or a cell) gave no value. A ``str``: ``Failure.GRADER == "grader"``."""

    EXCEPTION = "exception"
    """The student's code raised."""
    EXIT = "exit"
    """The student's code called ``sys.exit`` or ended the process."""
    UNAVAILABLE = "unavailable"
    """The function is not defined (or its cell failed), or nothing can be called at all."""
    WRONG_RETURN = "wrong_return"
    """``register_gradcam_hooks`` did not return ``(store, handles)``."""
    TIMEOUT = "timeout"
    CPU = "cpu"
    MEMORY = "memory"
    OUTPUT = "output"
    PROCESSES = "processes"
    """A limit of :class:`Limits` was hit."""
    CRASH = "crash"
    KILLED = "killed"
    """The worker was ended by a signal."""
    RESULT = "result"
    """The value returned is larger than the grader accepts."""
    LOST = "lost"
    """The worker broke or closed the channel."""
    GRADER = "grader"
    """The grader itself failed: never charged to the student."""

    @classmethod
    def from_plain(cls, value: Any) -> "Failure | None":
        if value is None:
            return None
        try:
            return cls(value)
        except ValueError:
            raise ProtocolError(f"malformed message: unknown failure {value!r}") from None


@dataclass(frozen=True)
class StudentError:
    """What went wrong, located in the student's notebook when it happened in one of their cells.

    Attributes
    ----------
    message : str
        What happened, for the student (``"ValueError: bad shape (3, 4)"``, ``"timed out after 60 s"``).
    cell : str or None
        The ``grade_id`` of the cell whose code was running (the innermost of the student's frames).
    line : int or None
        The line in that cell.
    code : str
        That line of code as written (at most 200 characters; empty when unknown).
    hint : str
        Advice appended after the location (``" — the grader runs on a CPU: ..."``), or empty.
    step : str or None
        The step of a hook probe that failed (``register``, ``returned``, ``forward``, ``backward``,
        ``store``, ``remove``), or ``None``.
    """

    message: str
    cell: str | None = None
    line: int | None = None
    code: str = ""
    hint: str = ""
    step: str | None = None

    def location(self) -> str:
        """``" (cell `grad_cam`, line 12: `cam = ...`)"``, or empty."""
        if self.cell is None:
            return ""
        shown = f": `{self.code}`" if self.code else ""
        return f" (cell `{self.cell}`, line {self.line}{shown})"

    def __str__(self) -> str:
        text = f"{self.message}{self.location()}{self.hint}"
        return f"at step '{self.step}': {text}" if self.step else text

    def at_step(self, step: str | None) -> "StudentError":
        return replace(self, step=step)

    def to_plain(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_plain(cls, message: Any) -> "StudentError | None":
        if message is None:
            return None
        record = _record(message, "an error")
        _check(set(record) <= {item.name for item in fields(cls)}, "unknown fields of an error")
        line = record.get("line")
        _check(line is None or type(line) is int, "the line of an error must be an integer")
        return cls(_text(record.get("message"), "an error's message"), _text(record.get("cell"), "cell", True),
                   line, _text(record.get("code", ""), "code"), _text(record.get("hint", ""), "hint"),
                   _text(record.get("step"), "step", True))


# ------------------------------------------------------------------------------------------------
# the start message
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Limits:
    """Resource limits of one submission's worker.

    Attributes
    ----------
    call_seconds : float
        Wall-clock time of one call of a student's function, and of one cell while loading.
    startup_seconds : float
        Wall-clock time to start the worker (interpreter, torch, matplotlib) before the first cell.
    cpu_seconds : int
        CPU time of one call or one cell (all threads together).
    cpu_total_seconds : int
        CPU time of one worker process over its whole life (a hard limit).
    memory_bytes : int
        Address space of the worker (``RLIMIT_AS``). A worker that imported the CUDA build of torch
        and ran DenseNet-121 forward and backward on one image maps about 3.8 GB, most of it
        libraries that are never touched; the default leaves about 2 GB of margin.
    output_bytes : int
        What the student's code may print (stdout and stderr together), and the largest file it
        may write (``RLIMIT_FSIZE``).
    max_processes : int
        Processes and threads of the worker's user (``RLIMIT_NPROC``). Set only when the worker has
        a uid of its own (the grader runs as root, level ``uid`` or ``bwrap``): the limit counts
        every process of a user, and it is not enforced for root.
    scratch_bytes : int
        Size of the scratch folder and of /tmp (``bwrap`` level: they are tmpfs).
    result_bytes : int
        Largest answer of one call.
    max_restarts : int
        Worker restarts allowed per session; then every call fails at once.
    """

    call_seconds: float = 60.0
    startup_seconds: float = 120.0
    cpu_seconds: int = 120
    cpu_total_seconds: int = 1800
    memory_bytes: int = 6 * 2**30
    output_bytes: int = 10 * 2**20
    max_processes: int = 64
    scratch_bytes: int = 256 * 2**20
    result_bytes: int = 64 * 2**20
    max_restarts: int = 10

    def to_plain(self) -> dict[str, float | int]:
        return asdict(self)

    @classmethod
    def from_plain(cls, message: Any) -> "Limits":
        record = _record(message, "the limits")
        names = {item.name for item in fields(cls)}
        _check(set(record) == names, "the limits must name every limit")
        _check(all(type(value) in (int, float) for value in record.values()), "limits must be numbers")
        return cls(**record)


@dataclass(frozen=True)
class TripwireRules:
    """The folders the worker's audit hook lets it read (``allow``, unless under a more specific
    ``deny``) and write (``writable``); see :class:`gradcam_kit.worker.tripwire.Tripwire`."""

    allow: tuple[str, ...]
    deny: tuple[str, ...]
    writable: tuple[str, ...]


@dataclass(frozen=True)
class StartMessage:
    """The first message to a worker: everything it needs to load the notebook.

    Attributes
    ----------
    limits : Limits
        The resource limits (the worker sets them on itself).
    program : dict
        ``SubmissionProgram.to_plain()``: the cells to run and the functions to define.
    home, workdir : str
        The scratch folder and the notebook's folder, as the worker sees them.
    helper_name : str
        The file name of the helper module in ``workdir`` (the worker imports a private copy).
    own_uid : bool
        The worker runs as a uid of its own (then the process limit is set).
    font_cache, font_cache_name : str or None
        The grader's matplotlib font list, and the name matplotlib gives it.
    tripwire : TripwireRules or None
        The audit hook's rules (``None``: no audit hook).
    syscall_filter : bool
        The worker loads the system-call filter itself (``uid`` and ``process`` levels).
    skip : dict
        Cells not to run (they killed an earlier worker) -> why.
    notebook : dict or None
        ``{"name", "data"}`` (uint8 array): the submission, for a worker whose sandbox does not
        bind it (one forked by the zygote).
    """

    limits: Limits
    program: dict[str, Any]
    home: str
    workdir: str
    helper_name: str
    own_uid: bool = False
    font_cache: str | None = None
    font_cache_name: str | None = None
    tripwire: TripwireRules | None = None
    syscall_filter: bool = False
    skip: dict[str, str] = field(default_factory=dict)
    notebook: dict[str, Any] | None = None

    def to_plain(self) -> dict[str, Any]:
        plain = {item.name: getattr(self, item.name) for item in fields(self)}
        plain.update(op="start", limits=self.limits.to_plain(),
                     tripwire=None if self.tripwire is None else {key: list(value) for key, value
                                                                  in asdict(self.tripwire).items()})
        return plain

    @classmethod
    def from_plain(cls, message: Any) -> "StartMessage":
        record = dict(_record(message, "the start message"))
        _check(record.pop("op", None) == "start", "the first message must be the start message")
        rules = record.get("tripwire")
        if rules is not None:
            rules = _record(rules, "the tripwire rules")
            record["tripwire"] = TripwireRules(*(tuple(rules[key]) for key in ("allow", "deny", "writable")))
        record["limits"] = Limits.from_plain(record.get("limits"))
        try:
            return cls(**record)
        except TypeError as error:
            raise ProtocolError(f"malformed message: {error}") from None


# ------------------------------------------------------------------------------------------------
# requests
# ------------------------------------------------------------------------------------------------
BYE = {"op": "bye"}
"""The last request: the worker leaves at once."""


@dataclass(frozen=True)
class CallRequest:
    """Call the student's ``function(*args, **kwargs)``; ``substitutes`` maps helper names to the
    source of the grader's own version, bound in their place for this call only."""

    function: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    substitutes: dict[str, str] = field(default_factory=dict)
    id: int | None = None
    op = "call"


@dataclass(frozen=True)
class ProbeRequest:
    """Check ``function`` (``register_gradcam_hooks``) step by step on a fresh ``model``, at the
    submodule ``layer``, with ``image`` (1, 3, H, W) and the score of ``class_idx``."""

    function: str
    model: ModelSpec
    layer: str
    image: Any
    class_idx: int
    id: int | None = None
    op = "probe"


@dataclass(frozen=True)
class ExploreRequest:
    """Run the exploration cell ``grade_id`` (its ``code``, shown as ``source`` in tracebacks)."""

    grade_id: str
    code: str
    source: str
    id: int | None = None
    op = "explore"


Request = CallRequest | ProbeRequest | ExploreRequest
_REQUESTS: dict[str, type] = {kind.op: kind for kind in (CallRequest, ProbeRequest, ExploreRequest)}


def request_to_plain(request: Request) -> dict[str, Any]:
    return {"op": request.op, **{item.name: getattr(request, item.name) for item in fields(request)}}


def request_from_plain(message: Any) -> Request | None:
    """The request in ``message``, or ``None`` for :data:`BYE`.

    Raises
    ------
    ProtocolError
        For an unknown ``op`` or fields of the wrong kind.
    """
    record = dict(_record(message, "a request"))
    op = record.pop("op", None)
    if op == "bye":
        return None
    kind = _REQUESTS.get(op) if isinstance(op, str) else None
    _check(kind is not None, f"unknown request {op!r}")
    try:
        request = kind(**record)
    except TypeError as error:
        raise ProtocolError(f"malformed message: {error}") from None
    for name in ("function", "layer", "grade_id", "code", "source"):
        if hasattr(request, name):
            _text(getattr(request, name), name)
    if isinstance(request, ProbeRequest):
        _check(isinstance(request.model, ModelSpec) and type(request.class_idx) is int, "a malformed probe")
    if isinstance(request, CallRequest):
        _check(isinstance(request.args, (list, tuple)) and isinstance(request.kwargs, dict), "malformed arguments")
        _check(isinstance(request.substitutes, dict), "malformed substitutes")
    return request


# ------------------------------------------------------------------------------------------------
# answers and events
# ------------------------------------------------------------------------------------------------
def running_event() -> dict[str, Any]:
    """The student's code starts now (the call's clock starts)."""
    return {"event": "running"}


def cell_event(grade_id: str) -> dict[str, Any]:
    """The cell ``grade_id`` starts (while loading)."""
    return {"event": "cell", "grade_id": grade_id}


def failed_event(error: str) -> dict[str, Any]:
    """The worker could not start (before any cell ran)."""
    return {"event": "failed", "error": error}


@dataclass
class Answer:
    """The worker's answer to one request.

    Attributes
    ----------
    ok : bool
        The function returned; ``value`` describes what (plain data).
    value : Any
        The description of what the function returned (or the probe's record, or the outputs of an
        exploration cell).
    error : StudentError or None
        Why not, when not ``ok``.
    failure : Failure or None
        The kind of failure.
    restart : str or None
        Why the worker must be restarted before the next call (a :class:`Failure`'s value, or
        ``"substitutes"``); the worker leaves after sending this answer.
    seconds : float
        Time spent in the student's code.
    observations : dict
        What the call did to its model (see ``ModelWatch``).
    id : int or None
        The request's ``id``.
    """

    ok: bool
    value: Any = None
    error: StudentError | None = None
    failure: Failure | None = None
    restart: str | None = None
    seconds: float = 0.0
    observations: dict[str, Any] = field(default_factory=dict)
    id: int | None = None

    def fail(self, error: StudentError, failure: Failure, restart: str | None = None) -> None:
        """Turn this answer into a failure."""
        self.ok, self.value, self.error, self.failure = False, None, error, failure
        self.restart = self.restart or restart

    def to_plain(self) -> dict[str, Any]:
        return {"ok": self.ok, "value": self.value, "error": None if self.error is None else self.error.to_plain(),
                "failure": None if self.failure is None else self.failure.value, "restart": self.restart,
                "seconds": float(self.seconds), "observations": self.observations, "id": self.id}

    @classmethod
    def from_plain(cls, message: Any) -> "Answer":
        record = _record(message, "an answer")
        observations = record.get("observations") or {}
        seconds = record.get("seconds") or 0.0
        _check(isinstance(observations, dict), "observations must be a record")
        _check(type(seconds) in (int, float), "seconds must be a number")
        return cls(bool(record.get("ok")), record.get("value"), StudentError.from_plain(record.get("error")),
                   Failure.from_plain(record.get("failure")), _text(record.get("restart"), "restart", True),
                   float(seconds), dict(observations), record.get("id"))


@dataclass
class LoadAnswer:
    """The worker's answer once the notebook's cells ran (``{"event": "loaded"}``).

    Attributes
    ----------
    ok : bool
        Every graded function is defined and no cell failed.
    defined : dict
        Function -> whether it can be called.
    errors : dict
        Function (or setup cell) -> why it cannot be called (why the cell failed).
    notes : list of str
        Remarks that cost no points.
    restart : str or None
        A cell hit a limit: the worker leaves (the :class:`Failure`'s value).
    failed_cell, failed_reason : str or None
        With ``restart``: that cell, and what it did.
    """

    ok: bool
    defined: dict[str, bool]
    errors: dict[str, str]
    notes: list[str] = field(default_factory=list)
    restart: str | None = None
    failed_cell: str | None = None
    failed_reason: str | None = None

    def to_plain(self) -> dict[str, Any]:
        return {"event": "loaded", **asdict(self)}

    @classmethod
    def from_plain(cls, message: Any) -> "LoadAnswer":
        record = dict(_record(message, "the load answer"))
        _check(record.pop("event", None) == "loaded", "not a load answer")
        try:
            answer = cls(**record)
        except TypeError as error:
            raise ProtocolError(f"malformed message: {error}") from None
        _check(isinstance(answer.defined, dict) and isinstance(answer.errors, dict)
               and isinstance(answer.notes, list), "a malformed load answer")
        for name in ("restart", "failed_cell", "failed_reason"):
            _text(getattr(answer, name), name, True)
        return answer

