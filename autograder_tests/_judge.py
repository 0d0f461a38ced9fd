"""The student's side, as the judge sees it: calls through the worker, and the verdict of each check.

:class:`Judge` holds one submission's worker session and the references. The student's functions
are only ever called through the worker (:class:`gradcam_kit.host.session.WorkerSession`);
what comes back is plain data, turned here into numpy arrays or a :class:`CheckFailure` whose
message is the feedback.

Each graded function has a check (``_checks.CHECKS``); :meth:`Judge.verdict` runs it once and
keeps the result, so that a check may ask for the verdict of another.

A bug is charged once
---------------------
:data:`CALLS` says which graded functions each graded function calls (the one place for that
fact). A helper is *broken* when its own test fails, or when a helper it calls is broken (the
student's ``grad_cam`` is broken inside ``show_grad_cam`` when their hooks fail). When a function
is wrong and some of its helpers are broken, :meth:`Judge.substitutes` gives the grader's own
versions of exactly those, and the check calls the function once more with them in place
(:meth:`Judge.call` with ``substitutes``); it passes if it is right then. What such a call returns
or raises never reaches the feedback: the student's code could read the grader's code during that
call, so the checks use only whether it was right, and say so in a fixed sentence.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from gradcam_kit.contract import CALLS, helpers_of, weights_policy
from gradcam_kit.fsutil import write_atomically
from gradcam_kit.grading.feedback import CheckFailure, describe_value, fmt_shape
from gradcam_kit.grading.reports import comparison_png
from gradcam_kit.host.outcomes import LoadResult, Outcome
from gradcam_kit.host.session import WorkerSession
from gradcam_kit.safe_text import shown_line
from gradcam_kit.wire.failures import RETRIED_FAILURES, Failure

from ._inputs import Case
from ._reference import References
from ._substitutes import SOURCES

# A call that ends with one of RETRIED_FAILURES (the worker itself failed, not a Python exception in
# the student's code) is made once more on a fresh worker, so that a worker killed from outside (the
# machine's out-of-memory killer, an operator) does not cost the student a test. Code that kills its
# worker kills the second one too. Timeouts and memory limits are not retried.

SUBSTITUTED_ERROR = "(the error of a call made with the grader's own helpers is not shown)"
"""What :meth:`Judge.call` keeps of the error of a call with substitutes."""

HEATMAP_NPZ = "heatmap.npz"
"""The student's map and the reference, with the image and the case, for the feedback page."""
HEATMAP_PNG = "heatmap.png"
"""The same, drawn: the picture, the student's map over it, the reference map over it."""


@dataclass
class Verdict:
    """The result of one check.

    Attributes
    ----------
    passed : bool
    message : str
        The feedback: why it failed, or a remark about a pass (the convention that matched...).
    """

    passed: bool
    message: str = ""


class InternalError(Exception):
    """A check could not run for a reason that is not the student's (reported generically)."""


class GraderFault(Exception):
    """The grader itself failed (its worker could not start or import, its own files were refused,
    a ``grader``-kind outcome after its retry): the student is not graded, never charged for it.

    Raised in one place, :class:`Judge`, from what the worker session reports; the results plugin
    records the test as an ``error`` with this reason, and ``gradcam-kit grade`` then marks the
    student ``FAILED (grader error: ...)`` and writes no score.
    """


class Judge:
    """One submission, its worker and the references.

    Parameters
    ----------
    session : WorkerSession
        The submission's worker (started lazily by its first call).
    references : References
    checks : mapping of function name to check
        ``check(judge) -> str`` returns a remark (possibly empty) or raises :class:`CheckFailure`.
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
        """Raise the student's reason why ``name`` cannot be called, if any (a :class:`GraderFault`
        when the reason is the grader's)."""
        load = self.load
        if load.failure == Failure.GRADER:
            raise GraderFault(load.fatal or "the worker could not be started")
        if load.fatal:
            raise CheckFailure(load.fatal)
        if not load.defined.get(name, False):
            reason = load.errors.get(name) or f"`{name}` is not defined by your notebook."
            raise CheckFailure(reason)

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
            except CheckFailure as failure:
                self.verdicts[name] = Verdict(False, failure.message)
            finally:
                self._running.discard(name)
        return self.verdicts[name]

    def broken(self, name: str) -> bool:
        """Whether the student's ``name`` fails its own test, or calls a helper that is broken."""
        return not self.verdict(name).passed or any(self.broken(helper) for helper in CALLS.get(name, ()))

    def substitutes(self, name: str) -> dict[str, str]:
        """The grader's own versions of the broken helpers of ``name`` (see the module docstring):
        ``{helper: source}``, empty when none of its helpers is broken."""
        return {helper: SOURCES[helper] for helper in helpers_of(name) if self.broken(helper)}

    def defined(self, name: str) -> bool:
        """Whether the student's ``name`` can be called."""
        if self.load.failure == Failure.GRADER:
            raise GraderFault(self.load.fatal or "the worker could not be started")
        return not self.load.fatal and bool(self.load.defined.get(name, False))

    # -- calls ----------------------------------------------------------------------------------
    def call(self, name: str, *args: Any, substitutes: Mapping[str, str] | None = None, **kwargs: Any) -> Outcome:
        """Call the student's ``name`` in the worker (arrays cross as float32 tensors).

        A function that cannot be called gives a failed :class:`Outcome` (``failure="unavailable"``)
        with the reason, as the worker would. With ``substitutes`` (``{helper: source}``, see
        :meth:`substitutes`) the grader's versions of those helpers are in place for this call
        only, and the error of a failed call is replaced by :data:`SUBSTITUTED_ERROR`: it may hold
        what the student's code read of the grader's.
        """
        if not substitutes:
            return self._retried(lambda: self.session.call(name, *args, **kwargs))
        outcome = self._retried(lambda: self.session.call(name, *args, substitutes=dict(substitutes), **kwargs),
                                quiet=True)
        return outcome if outcome.ok else replace(outcome, error=SUBSTITUTED_ERROR)

    @staticmethod
    def _retried(run: Callable[[], Outcome], quiet: bool = False) -> Outcome:
        outcome = run()
        if not outcome.ok and outcome.failure in RETRIED_FAILURES:
            detail = "" if quiet else f": {shown_line(outcome.error, 600)}"
            print(f"[judge] the worker failed ({outcome.failure}{detail}); trying the call once more")
            outcome = run()
        if not outcome.ok and outcome.failure == Failure.GRADER:
            raise GraderFault(outcome.error or "the worker failed")
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
        """The heatmap of the feedback page, in the artifacts folder.

        ``heatmap.npz`` (:data:`HEATMAP_NPZ`): ``image`` (3, H, W), ``reference`` and ``student``
        (H, W), and, with ``case``, what the maps are of: ``arch``, ``layer``, ``image_name`` (the course
        image's file name), ``class_idx``, ``class_name`` and ``weights`` (the weights policy of the
        models). With ``case``, also
        ``heatmap.png`` (:data:`HEATMAP_PNG`): the student's map beside the reference, over the
        picture (``reports.comparison_png``). Recorded in :attr:`artifacts` as ``heatmap`` and
        ``heatmap_png``; a file that cannot be made is left out (the traceback goes to the log).
        """
        if self.artifacts_dir is None:
            return
        arrays = {"image": np.asarray(image, dtype=np.float32), "reference": np.asarray(reference, dtype=np.float32)}
        if case is not None:
            arrays.update(arch=np.array(case.spec.arch), layer=np.array(case.layer),
                          image_name=np.array(case.image.name), class_idx=np.array(int(case.class_idx)),
                          class_name=np.array(self.refs.class_names()[int(case.class_idx)]),
                          weights=np.array(case.spec.weights or weights_policy()))
        if student is not None and student.shape == reference.shape:
            arrays["student"] = np.asarray(student, dtype=np.float32)
        try:
            write_atomically(self.artifacts_dir / HEATMAP_NPZ,
                             lambda stream: np.savez_compressed(stream, **arrays),  # type: ignore[arg-type]
                             durable=False)
            self.artifacts["heatmap"] = HEATMAP_NPZ
        except OSError:
            traceback.print_exc()
            return
        if case is None:
            return
        try:
            png = comparison_png(self.refs.picture(case.image), arrays["reference"], arrays.get("student"))
            write_atomically(self.artifacts_dir / HEATMAP_PNG, png, durable=False)
            self.artifacts["heatmap_png"] = HEATMAP_PNG
        except Exception:  # only the picture is lost, never the grade
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
    """The tensor described by ``value``, or a :class:`CheckFailure` saying what ``what`` was instead."""
    if not isinstance(value, dict) or value.get("kind") != "tensor":
        hint = ""
        if isinstance(value, dict) and value.get("kind") == "ndarray":
            hint = " Return a torch tensor, not a NumPy array."
        raise CheckFailure(f"{what} should be a torch tensor, but it is {describe_value(value)}.{hint}")
    array = value.get("array")
    if array is None:
        raise CheckFailure(f"{what} is a tensor whose values cannot be read "
                           f"({value.get('note', 'unknown reason')}).")
    array = np.asarray(array)
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise CheckFailure(f"{what} is a tensor of dtype {value.get('dtype')}; a floating-point tensor was expected.")
    return TensorValue(array, str(value.get("dtype")), str(value.get("device")), bool(value.get("requires_grad")))


def returned_tensor(outcome: Outcome, call: str, where: str = "") -> TensorValue:
    """The tensor that ``call`` returned, or a :class:`CheckFailure` in the student's terms.

    Parameters
    ----------
    outcome : Outcome
        What the worker reported of the call.
    call : str
        The call as the student's notebook reads, e.g. ``channel_weights(gradients)``.
    where : str
        The case, put before the message when the call failed (``"On densenet121, ...: "``).

    Raises
    ------
    CheckFailure
        When the call failed, or returned something else than a tensor of numbers (:func:`as_tensor`).
    """
    if not outcome.ok:
        raise CheckFailure(f"{where}`{call}` failed: {outcome.error}")
    return as_tensor(outcome.value, f"What `{call}` returned")


def expect_shape(got: np.ndarray, expected: tuple[int, ...], call: str, meaning: str,
                 hints: Mapping[tuple, str] | None = None) -> None:
    """Fail unless ``got`` has shape ``expected``; ``hints`` maps wrong shapes to explanations."""
    if tuple(got.shape) == tuple(expected):
        return
    hint = (hints or {}).get(tuple(got.shape), "")
    raise CheckFailure(f"`{call}` returned a tensor of shape {fmt_shape(got.shape)}; expected "
                       f"{fmt_shape(expected)} ({meaning}).{' ' + hint if hint else ''}")
