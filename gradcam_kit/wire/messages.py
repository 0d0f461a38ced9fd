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

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from gradcam_kit.wire.failures import Failure, StudentError
from gradcam_kit.wire.frames import ModelSpec, ProtocolError, record_of, require, text_of
from gradcam_kit.wire.limits import Limits

__all__ = [
    "BYE",
    "Answer",
    "CallRequest",
    "ExploreRequest",
    "LoadAnswer",
    "ProbeRequest",
    "Request",
    "StartMessage",
    "TripwireRules",
    "cell_event",
    "failed_event",
    "request_from_plain",
    "request_to_plain",
    "running_event",
]

# ------------------------------------------------------------------------------------------------
# the start message
# ------------------------------------------------------------------------------------------------
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
        record = dict(record_of(message, "the start message"))
        require(record.pop("op", None) == "start", "the first message must be the start message")
        rules = record.get("tripwire")
        if rules is not None:
            rules = record_of(rules, "the tripwire rules")
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
    record = dict(record_of(message, "a request"))
    op = record.pop("op", None)
    if op == "bye":
        return None
    kind = _REQUESTS.get(op) if isinstance(op, str) else None
    if kind is None:
        raise ProtocolError(f"malformed message: unknown request {op!r}")
    try:
        request = kind(**record)
    except TypeError as error:
        raise ProtocolError(f"malformed message: {error}") from None
    for name in ("function", "layer", "grade_id", "code", "source"):
        if hasattr(request, name):
            text_of(getattr(request, name), name)
    if isinstance(request, ProbeRequest):
        require(isinstance(request.model, ModelSpec) and type(request.class_idx) is int, "a malformed probe")
    if isinstance(request, CallRequest):
        require(isinstance(request.args, (list, tuple)) and isinstance(request.kwargs, dict), "malformed arguments")
        require(isinstance(request.substitutes, dict), "malformed substitutes")
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
        record = record_of(message, "an answer")
        observations = record.get("observations")
        observations = {} if observations is None else observations
        seconds = record.get("seconds")
        seconds = 0.0 if seconds is None else seconds
        require(isinstance(observations, dict), "observations must be a record")
        require(type(seconds) in (int, float), "seconds must be a number")
        return cls(bool(record.get("ok")), record.get("value"), StudentError.from_plain(record.get("error")),
                   Failure.from_plain(record.get("failure")), text_of(record.get("restart"), "restart", True),
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
        record = dict(record_of(message, "the load answer"))
        require(record.pop("event", None) == "loaded", "not a load answer")
        try:
            answer = cls(**record)
        except TypeError as error:
            raise ProtocolError(f"malformed message: {error}") from None
        require(isinstance(answer.defined, dict) and isinstance(answer.errors, dict)
               and isinstance(answer.notes, list), "a malformed load answer")
        for name in ("restart", "failed_cell", "failed_reason"):
            text_of(getattr(answer, name), name, True)
        return answer

