"""The student's side, as the judge sees it: calls through the worker, and the verdict of each check.

:class:`Judge` holds one submission's worker session and the references. The student's functions
are only ever called through the worker (:class:`gradcam_kit.grading.session.WorkerSession`);
what comes back is plain data, turned here into numpy arrays or a :class:`StudentFailure` whose
message is the feedback.

Each graded function has a check (``_checks.CHECKS``); :meth:`Judge.verdict` runs it once and
keeps the result, so that a check may ask for the verdict of another (a bug is charged once: a
failure of ``grad_cam`` that comes from a failing helper is not charged to ``grad_cam``).
"""

from __future__ import annotations

import re
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from gradcam_kit.grading.feedback import StudentFailure, describe_value, fmt_shape
from gradcam_kit.grading.session import LoadResult, Outcome, WorkerSession

from ._reference import Case, References, weights_policy

GRADED = ("register_gradcam_hooks", "channel_weights", "weighted_cam", "upsample_normalize", "grad_cam",
          "top_and_least", "show_grad_cam")

HELPERS: Mapping[str, tuple[str, ...]] = {
    "grad_cam": ("register_gradcam_hooks", "channel_weights", "weighted_cam", "upsample_normalize"),
    "show_grad_cam": ("top_and_least", "grad_cam", "register_gradcam_hooks", "channel_weights", "weighted_cam",
                      "upsample_normalize"),
}
"""The graded functions each graded function is meant to call (transitively)."""

RETRIED_FAILURES = frozenset({"killed", "lost", "crash", "grader"})
"""Failures of the worker itself, not of a Python exception in the student's code: a call that
ends so is made once more (on a fresh worker), so that a worker killed from outside (the
machine's out-of-memory killer, an operator) does not cost the student a test. Code that kills
its worker kills the second one too. Timeouts and memory limits are not retried."""

_LOCATION = re.compile(r" \(cell `(?P<cell>[^`]+)`, line \d+(?::\s`.*?`)?\)")
_STEP = re.compile(r"^at step '[a-z_]+': ")


@dataclass(frozen=True)
class ErrorInfo:
    """An error message of the worker, taken apart.

    Attributes
    ----------
    text : str
        As the worker wrote it (for the student).
    signature : str
        The exception and its message, without the location in the student's cells.
    cell : str or None
        The student's cell where it was raised (the innermost of their frames), if any.
    """

    text: str
    signature: str
    cell: str | None

    @classmethod
    def parse(cls, text: str | None) -> "ErrorInfo":
        text = text or ""
        match = _LOCATION.search(text)
        signature = _STEP.sub("", _LOCATION.sub("", text)).strip()
        return cls(text, signature, match.group("cell") if match else None)


@dataclass
class Verdict:
    """The result of one check.

    Attributes
    ----------
    passed : bool
    message : str
        The feedback: why it failed, or a remark about a pass (the convention that matched...).
    excused : list of str
        Situations not charged to this function because one of its helpers failed there.
    """

    passed: bool
    message: str = ""
    excused: list[str] = field(default_factory=list)


class InternalError(Exception):
    """A check could not run for a reason that is not the student's (reported generically)."""


class Judge:
    """One submission, its worker and the references.

    Parameters
    ----------
    session : WorkerSession
        The submission's worker (started lazily by its first call).
    references : References
    checks : mapping of function name to check
        ``check(judge) -> str`` returns a remark (possibly empty) or raises :class:`StudentFailure`.
    artifacts : Path, optional
        Where to leave files for the feedback page.
    """

    def __init__(self, session: WorkerSession, references: References,
                 checks: Mapping[str, Callable[["Judge"], str]], artifacts: Path | None = None) -> None:
        self.session = session
        self.refs = references
        self.checks = checks
        self.artifacts_dir = artifacts
        self.artifacts: dict[str, str] = {}
        self.verdicts: dict[str, Verdict] = {}
        self._running: set[str] = set()
        self._memo: dict[tuple, Any] = {}

    # -- loading --------------------------------------------------------------------------------
    @property
    def load(self) -> LoadResult:
        return self.session.load()

    def require(self, name: str) -> None:
        """Raise the student's reason why ``name`` cannot be called, if any."""
        load = self.load
        if load.fatal:
            raise StudentFailure(load.fatal)
        if not load.defined.get(name, False):
            reason = load.errors.get(name) or f"`{name}` is not defined by your notebook."
            raise StudentFailure(reason)

    # -- verdicts -------------------------------------------------------------------------------
    def verdict(self, name: str) -> Verdict:
        """Run the check of ``name`` (once) and return its verdict."""
        if name not in self.verdicts:
            if name in self._running:
                raise InternalError(f"the check of {name} depends on itself")
            self._running.add(name)
            try:
                note = self.checks[name](self)
                self.verdicts[name] = Verdict(True, note or "")
            except StudentFailure as failure:
                self.verdicts[name] = Verdict(False, failure.message)
            finally:
                self._running.discard(name)
        return self.verdicts[name]

    def helpers_failing(self, name: str) -> list[str]:
        """The helpers of ``name`` (transitively) whose own check failed."""
        return [helper for helper in HELPERS.get(name, ()) if not self.verdict(helper).passed]

    def defined(self, name: str) -> bool:
        """Whether the student's ``name`` can be called."""
        return not self.load.fatal and bool(self.load.defined.get(name, False))

    # -- calls ----------------------------------------------------------------------------------
    def call(self, name: str, *args: Any, **kwargs: Any) -> Outcome:
        """Call the student's ``name`` in the worker (arrays cross as float32 tensors).

        A function that cannot be called gives a failed :class:`Outcome` (``failure="unavailable"``)
        with the reason, as the worker would.
        """
        return self._retried(lambda: self.session.call(name, *args, **kwargs))

    @staticmethod
    def _retried(run: Callable[[], Outcome]) -> Outcome:
        outcome = run()
        if not outcome.ok and outcome.failure in RETRIED_FAILURES:
            print(f"[judge] the worker failed ({outcome.failure}: {outcome.error}); trying the call once more")
            outcome = run()
        return outcome

    def memo(self, key: tuple, compute: Callable[[], Any]) -> Any:
        """Keep a value for the rest of this submission's grading (e.g. a probe of the hooks)."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def probe(self, case: Case) -> Outcome:
        """The student's hooks on ``case`` (see ``WorkerSession.probe_hooks``), once per case."""
        return self.memo(("probe", case), lambda: self._retried(lambda: self.session.probe_hooks(
            case.spec, case.layer, self.refs.image(case.image), class_idx=case.class_idx)))

    # -- artifacts ------------------------------------------------------------------------------
    def save_heatmap(self, image: np.ndarray, reference: np.ndarray, student: np.ndarray | None,
                     case: Case | None = None) -> None:
        """``heatmap.npz`` for the feedback page: ``image`` (3, H, W), ``reference`` and ``student`` (H, W),
        and, with ``case``, what the maps are of: ``arch``, ``layer``, ``image_name``, ``class_idx`` and
        ``weights`` (the weights policy of the models)."""
        if self.artifacts_dir is None:
            return
        arrays = {"image": np.asarray(image, dtype=np.float32), "reference": np.asarray(reference, dtype=np.float32)}
        if case is not None:
            arrays.update(arch=np.array(case.spec.arch), layer=np.array(case.layer), image_name=np.array(case.image),
                          class_idx=np.array(int(case.class_idx)), weights=np.array(case.spec.weights or weights_policy()))
        if student is not None and student.shape == reference.shape:
            arrays["student"] = np.asarray(student, dtype=np.float32)
        try:
            self.artifacts_dir.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(self.artifacts_dir / "heatmap.npz", **arrays)
            self.artifacts["heatmap"] = "heatmap.npz"
        except OSError:
            traceback.print_exc()


# ------------------------------------------------------------------------------------------------
# reading what came back
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TensorValue:
    """A tensor returned by the student's code."""

    array: np.ndarray
    dtype: str
    device: str
    requires_grad: bool


def as_tensor(value: Any, what: str) -> TensorValue:
    """The tensor described by ``value``, or a :class:`StudentFailure` saying what ``what`` was instead."""
    if not isinstance(value, dict) or value.get("kind") != "tensor":
        hint = ""
        if isinstance(value, dict) and value.get("kind") == "ndarray":
            hint = " Return a torch tensor, not a NumPy array."
        raise StudentFailure(f"{what} should be a torch tensor, but it is {describe_value(value)}.{hint}")
    array = value.get("array")
    if array is None:
        raise StudentFailure(f"{what} is a tensor whose values cannot be read "
                             f"({value.get('note', 'unknown reason')}).")
    array = np.asarray(array)
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise StudentFailure(f"{what} is a tensor of dtype {value.get('dtype')}; a floating-point tensor was expected.")
    return TensorValue(array, str(value.get("dtype")), str(value.get("device")), bool(value.get("requires_grad")))


def returned_tensor(outcome: Outcome, call: str) -> TensorValue:
    """The tensor that ``call`` returned, or the failure in the student's terms."""
    if not outcome.ok:
        raise StudentFailure(f"`{call}` failed: {outcome.error}")
    return as_tensor(outcome.value, f"What `{call}` returned")


def expect_shape(got: np.ndarray, expected: tuple[int, ...], call: str, meaning: str, hints: Mapping[tuple, str] = {}) -> None:
    """Fail unless ``got`` has shape ``expected``; ``hints`` maps wrong shapes to explanations."""
    if tuple(got.shape) == tuple(expected):
        return
    hint = hints.get(tuple(got.shape), "")
    raise StudentFailure(f"`{call}` returned a tensor of shape {fmt_shape(got.shape)}; expected "
                         f"{fmt_shape(expected)} ({meaning}).{' ' + hint if hint else ''}")
