"""The check of ``register_gradcam_hooks``: what the student's hooks record, and that they go.

The student's hooks run in the worker (``WorkerSession.probe_hooks``: register, a forward and a
backward pass, then ``handle.remove()``); the judge compares what ``store`` held with the
layer's output and gradient under each Grad-CAM convention (:data:`gradcam_kit.contract.CONVENTIONS`).
"""

from __future__ import annotations

import numpy as np

from gradcam_kit.contract import CONVENTIONS
from gradcam_kit.grading.feedback import CheckFailure, array_summary, fmt_shape, fmt_value

from ._cases import block3_case, features_case
from ._inputs import Case
from ._judge import Judge, as_tensor
from ._tolerances import FORWARD_RELATIVE

__all__ = ["HOOK_OUTLIERS", "HOOK_RELATIVE", "check_register_gradcam_hooks", "tensors_agree"]

HOOK_RELATIVE = 10 * FORWARD_RELATIVE
"""Captured activations and gradients are compared element by element, to 1e-4 of the tensor's
largest magnitude: ten times :data:`FORWARD_RELATIVE`, the allowance for two processes' passes
(the judge and the worker both use one thread, and then agree exactly in practice)."""
HOOK_OUTLIERS = 1e-3
"""Fraction of elements allowed beyond :data:`HOOK_RELATIVE`: a ReLU of the backward pass whose
input rounds to the other side of 0 in the other process passes or blocks a whole gradient
element. The three conventions differ on about half of the elements."""

_STEP_WORDS = {
    "register": "`register_gradcam_hooks(layer)` raised an error",
    "returned": "`register_gradcam_hooks(layer)` did not return `(store, handles)`",
    "forward": "with your hooks attached, the forward pass `model(image)` failed",
    "backward": "with your hooks attached, the backward pass `scores[:, class_idx].sum().backward()` failed",
    "store": "after a forward and a backward pass, `store[\"activations\"]` and `store[\"gradients\"]` could "
             "not both be read",
    "remove": "calling `handle.remove()` on the handles you returned failed",
}


def tensors_agree(got: np.ndarray, expected: np.ndarray) -> tuple[bool, float, float]:
    """Whether ``got`` matches ``expected`` (see :data:`HOOK_RELATIVE`, :data:`HOOK_OUTLIERS`).

    Returns
    -------
    (ok, largest error relative to the largest magnitude, fraction of elements beyond the tolerance)
    """
    scale = float(np.abs(expected).max()) or 1.0
    error = np.abs(got.astype(np.float64) - expected)
    error = np.where(np.isnan(error), np.inf, error)
    beyond = float((error > HOOK_RELATIVE * scale).mean())
    return beyond <= HOOK_OUTLIERS, float(error.max() / scale), beyond


def check_register_gradcam_hooks(judge: Judge) -> str:
    """On DenseNet-121 at ``features.denseblock3`` and at ``features``: only ``layer`` is hooked;
    ``store`` holds the layer's output and the gradient of the score with respect to it (any of the
    three conventions at ``features``); removing the returned handles leaves no hook."""
    judge.require("register_gradcam_hooks")
    remark = ""
    for case in (block3_case(judge.refs), features_case(judge.refs)):
        outcome = judge.probe(case)
        value = outcome.value if isinstance(outcome.value, dict) else {}
        where = f"On {case.describe()}: "
        if not outcome.ok:
            step = value.get("step")
            raise CheckFailure(f"{where}{_STEP_WORDS.get(str(step), 'your hooks failed')}: {outcome.error}")
        added = value.get("hooks_added") or {}
        if case.layer not in added:
            raise CheckFailure(f"{where}`register_gradcam_hooks(model.{case.layer})` attached no hook to "
                               f"`model.{case.layer}`.")
        others = sorted(name for name in added if name != case.layer)
        if others:
            raise CheckFailure(f"{where}`register_gradcam_hooks(model.{case.layer})` also attached hooks to "
                               f"{', '.join(f'`{n}`' for n in others)}: attach them to the given layer only.")
        left = outcome.observations.get("hooks_left") or []
        if left:
            raise CheckFailure(f"{where}after `handle.remove()` on every handle you returned, hooks were still "
                               f"attached to {', '.join(f'`{n}`' for n in left)}: return the handle of every "
                               "hook you register.")
        activations = as_tensor(value.get("activations"), 'store["activations"]').array
        gradients = as_tensor(value.get("gradients"), 'store["gradients"]').array
        capture = judge.refs.capture(case)
        expected_shape = capture.returned.shape
        for name, got in (("activations", activations), ("gradients", gradients)):
            if tuple(got.shape) != tuple(expected_shape):
                raise CheckFailure(f'{where}store["{name}"] has shape {fmt_shape(got.shape)}; the output of '
                                   f"`{case.layer}` has shape {fmt_shape(expected_shape)} (N, K, h, w).")
        matches, report = [], {}
        for convention in CONVENTIONS:
            ref_activations, ref_gradients = capture.pair(convention)
            a = tensors_agree(activations, ref_activations)
            g = tensors_agree(gradients, ref_gradients)
            report[convention] = (a, g)
            if a[0] and g[0]:
                matches.append(convention)
        if not matches:
            raise CheckFailure(where + _hooks_mismatch(case, activations, gradients, report))
        if capture.modified_in_place:
            convention = matches[0]
            remark = (f"At `features` your hooks recorded {CONVENTIONS[convention].words} "
                      f"(convention '{convention}'); all three conventions are accepted.")
    return remark


def _hooks_mismatch(case: Case, activations: np.ndarray, gradients: np.ndarray, report: dict) -> str:
    act_ok = [c for c, (a, _) in report.items() if a[0]]
    grad_ok = [c for c, (_, g) in report.items() if g[0]]
    best = min(report, key=lambda c: report[c][0][1] + report[c][1][1])
    (_, a_err, a_frac), (_, g_err, g_frac) = report[best]
    if not act_ok:
        return (f'store["activations"] is not the output of `{case.layer}`: it differs from it by up to '
                f"{fmt_value(a_err)} of the output's largest value, on {a_frac:.1%} of the elements "
                f"(yours: {array_summary(activations)}). Keep the `output` argument of the forward hook.")
    if not grad_ok:
        return (f'store["gradients"] is not the gradient of the score with respect to the output of '
                f"`{case.layer}`: it differs by up to {fmt_value(g_err)} of the gradient's largest value, on "
                f"{g_frac:.1%} of the elements (yours: {array_summary(gradients)}).")
    return ("your activations and your gradient do not go together: the activations are "
            f"{' or '.join(CONVENTIONS[c].words for c in act_ok)}, but the gradient is the one that goes with "
            f"{' or '.join(CONVENTIONS[c].words for c in grad_ok)}. If you keep a copy of the output from before "
            "the in-place ReLU, take the gradient with respect to that same value.")

