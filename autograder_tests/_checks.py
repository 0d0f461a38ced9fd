"""The seven checks, one per graded function.

Each check calls the student's function through the worker on several cases, compares with the
answer key, and stops at the first failure with a :class:`StudentFailure` whose message says, in
the student's terms, what was expected and what came back. A check returns a remark for a pass
(for instance which Grad-CAM convention matched), possibly empty.

Every tolerance is derived from float32 arithmetic (see ``_reference``'s module docstring for the
notation: ``u = 2**-24``); each is stated next to its use.
"""

from __future__ import annotations

import re
from itertools import product
from typing import Any, Callable, Iterator, NoReturn, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from gradcam_kit.grading.feedback import (StudentFailure, array_summary, fmt_shape, fmt_value, grouped_remarks,
                                          largest_error)
from gradcam_kit.grading.protocol import LayerRef

from ._judge import HELPERS, ErrorInfo, Judge, TensorValue, as_tensor, expect_shape, returned_tensor
from ._reference import (
    CATS,
    CONVENTION_WORDS,
    CONVENTIONS,
    DENSENET,
    EFFICIENTNET,
    EFFICIENTNET_LAYER,
    FORWARD_RELATIVE,
    RESNET,
    SECOND_DOG,
    U32,
    WOMAN_DOG,
    Case,
    References,
    min_distance,
)
from ._substitutes import substitutes_for

# ------------------------------------------------------------------------------------------------
# the cases shared by several checks
# ------------------------------------------------------------------------------------------------
def features_case(refs: References) -> Case:
    """DenseNet-121 at ``features`` (1024 maps of 7x7), two cats, a class that is not the argmax."""
    return refs.distinct_class(DENSENET, CATS, "features")


def block3_case(refs: References) -> Case:
    """DenseNet-121 at ``features.denseblock3`` (1024 maps of 14x14), another image."""
    return refs.distinct_class(DENSENET, WOMAN_DOG, "features.denseblock3")


def grad_cam_cases(refs: References) -> list[tuple[str, Case]]:
    """The situations ``grad_cam`` must handle, with what each one is for."""
    return [
        ("the output of `features` (7x7 maps, upsampled to 224x224)", features_case(refs)),
        ("an intermediate layer", block3_case(refs)),
        ("ResNet-18", refs.distinct_class(RESNET, SECOND_DOG, "layer4")),
        ("a model whose softmax and raw-score maps differ", refs.contrast_case()),
        ("a pretrained EfficientNet-Lite0", refs.distinct_class(EFFICIENTNET, CATS, EFFICIENTNET_LAYER)),
    ]


def call_text(function: str, case: Case) -> str:
    """How the call reads in the student's notebook."""
    return f"{function}(model, image, {case.class_idx}, model.{case.layer})"


# ------------------------------------------------------------------------------------------------
# 1. register_gradcam_hooks
# ------------------------------------------------------------------------------------------------
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
            raise StudentFailure(f"{where}{_STEP_WORDS.get(step, 'your hooks failed')}: {outcome.error}")
        added = value.get("hooks_added") or {}
        if case.layer not in added:
            raise StudentFailure(f"{where}`register_gradcam_hooks(model.{case.layer})` attached no hook to "
                                 f"`model.{case.layer}`.")
        others = sorted(name for name in added if name != case.layer)
        if others:
            raise StudentFailure(f"{where}`register_gradcam_hooks(model.{case.layer})` also attached hooks to "
                                 f"{', '.join(f'`{n}`' for n in others)}: attach them to the given layer only.")
        left = outcome.observations.get("hooks_left") or []
        if left:
            raise StudentFailure(f"{where}after `handle.remove()` on every handle you returned, hooks were still "
                                 f"attached to {', '.join(f'`{n}`' for n in left)}: return the handle of every "
                                 "hook you register.")
        activations = as_tensor(value.get("activations"), 'store["activations"]').array
        gradients = as_tensor(value.get("gradients"), 'store["gradients"]').array
        capture = judge.refs.capture(case)
        expected_shape = capture.returned.shape
        for name, got in (("activations", activations), ("gradients", gradients)):
            if tuple(got.shape) != tuple(expected_shape):
                raise StudentFailure(f'{where}store["{name}"] has shape {fmt_shape(got.shape)}; the output of '
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
            raise StudentFailure(where + _hooks_mismatch(case, activations, gradients, report))
        if capture.modified_in_place:
            convention = matches[0]
            remark = (f"At `features` your hooks recorded {CONVENTION_WORDS[convention]} "
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
            f"{' or '.join(CONVENTION_WORDS[c] for c in act_ok)}, but the gradient is the one that goes with "
            f"{' or '.join(CONVENTION_WORDS[c] for c in grad_ok)}. If you keep a copy of the output from before "
            "the in-place ReLU, take the gradient with respect to that same value.")


# ------------------------------------------------------------------------------------------------
# 2. channel_weights
# ------------------------------------------------------------------------------------------------
def check_channel_weights(judge: Judge) -> str:
    """Random gradients (2, 5, 3, 4) and DenseNet's real gradients (1, 1024, 7, 7): shape (N, K), the
    spatial mean.

    Tolerance: a mean of ``n = hw`` float32 values, in any order, is within ``(n + 1) u`` of the
    mean of their absolute values from the exact mean (the reference is computed in float64); twice
    that is allowed.
    """
    judge.require("channel_weights")
    rng = np.random.default_rng(20240601)
    random = (rng.standard_normal((2, 5, 3, 4)) + rng.uniform(-2, 2, (2, 5, 1, 1))).astype(np.float32)
    real = judge.refs.capture(features_case(judge.refs)).grad_returned
    for label, gradients in (("random gradients", random), ("the gradients of DenseNet-121 at `features`", real)):
        n, k, h, w = gradients.shape
        got = returned_tensor(judge.call("channel_weights", gradients), "channel_weights(gradients)").array
        expect_shape(got, (n, k), "channel_weights(gradients)", f"one weight per image and channel, for "
                     f"gradients of shape {fmt_shape(gradients.shape)}",
                     {(n, k, 1, 1): "Drop the two spatial dimensions (no keepdim).",
                      (n, h, w): "That is a mean over the channels: average over the two spatial dimensions.",
                      (n, w): "Average over the two spatial dimensions (2 and 3).",
                      (n, h): "Average over the two spatial dimensions (2 and 3)."})
        expected = gradients.astype(np.float64).mean(axis=(2, 3))
        tolerance = 2 * (h * w + 1) * U32 * np.abs(gradients.astype(np.float64)).mean(axis=(2, 3)) + 1e-30
        error = np.abs(got - expected)
        if np.isnan(error).any() or (error > tolerance).any():
            worst, (i, j) = largest_error(got, expected)
            hint = ""
            if np.allclose(got, expected * h * w, rtol=1e-4, atol=0):
                hint = " That is the sum of the gradients: divide by the number of pixels (h * w)."
            raise StudentFailure(
                f"On {label} of shape {fmt_shape(gradients.shape)}, weights[{i}, {j}] should be the mean of "
                f"gradients[{i}, {j}] over its {h}x{w} pixels, {fmt_value(expected[i, j])}; yours is "
                f"{fmt_value(got[i, j])}.{hint}")
    return ""


# ------------------------------------------------------------------------------------------------
# 3. weighted_cam
# ------------------------------------------------------------------------------------------------
def weighted_cam_inputs(judge: Judge) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Random maps whose weighted sums have both signs, and DenseNet's real ones."""
    rng = np.random.default_rng(20240602)
    activations = rng.uniform(0.0, 2.0, (2, 6, 3, 5)).astype(np.float32)
    weights = rng.standard_normal((2, 6)).astype(np.float32)
    raw = np.einsum("nk,nkhw->nhw", weights.astype(np.float64), activations)
    scale = np.abs(raw).max()
    if not (raw.min() < -0.1 * scale and raw.max() > 0.1 * scale):
        raise AssertionError("the random weighted_cam case must have clearly negative and positive sums")
    activations_real, gradients_real = judge.refs.capture(features_case(judge.refs)).pair("pre_relu")
    weights_real = gradients_real.astype(np.float64).mean(axis=(2, 3)).astype(np.float32)
    return [("random maps", activations, weights),
            ("DenseNet-121's maps at `features`", activations_real, weights_real)]


def check_weighted_cam(judge: Judge) -> str:
    """Random (2, 6, 3, 5) maps with weights of both signs, and DenseNet's (1, 1024, 7, 7): shape
    (N, h, w), ``ReLU(sum_k w[n, k] A[n, k])``, one set of weights per image.

    Tolerance: a sum of ``K`` products in float32, in any order, is within ``(K + 1) u`` of the sum
    of the products' absolute values from the exact value (reference in float64), and the ReLU does
    not increase differences; twice that is allowed.
    """
    judge.require("weighted_cam")
    for label, activations, weights in weighted_cam_inputs(judge):
        n, k, h, w = activations.shape
        call = "weighted_cam(activations, weights)"
        got = returned_tensor(judge.call("weighted_cam", activations, weights), call).array
        expect_shape(got, (n, h, w), call, f"one map per image, for activations of shape {fmt_shape(activations.shape)}",
                     {(n, 1, h, w): "Remove the channel dimension: sum over it.",
                      (n, k, h, w): "Sum the weighted maps over the channels (dimension 1)."})
        terms = weights.astype(np.float64)[:, :, None, None] * activations
        raw = terms.sum(axis=1)
        expected = np.maximum(raw, 0.0)
        tolerance = 2 * (k + 1) * U32 * np.abs(terms).sum(axis=1) + 1e-30
        error = np.abs(got - expected)
        if np.isnan(error).any() or (error > tolerance).any():
            worst, index = largest_error(got, expected)
            where = "[" + ", ".join(map(str, index)) + "]"
            if got.min() < -tolerance.max():
                hint = " Your map has negative values: apply the ReLU to the weighted sum."
            elif np.allclose(got, expected / k, rtol=1e-4, atol=1e-30):
                hint = " That is the mean over the channels: Grad-CAM sums them."
            else:
                hint = ""
            raise StudentFailure(f"On {label}, cam{where} should be ReLU(sum over k of weights[n, k] * "
                                 f"activations[n, k]) = {fmt_value(expected[index])}; yours is "
                                 f"{fmt_value(got[index])} (largest difference {fmt_value(worst)}).{hint}")
    return ""


# ------------------------------------------------------------------------------------------------
# 4. upsample_normalize
# ------------------------------------------------------------------------------------------------
UPSAMPLE_TOLERANCE = 1e-4
"""On maps in [0, 1]. Bilinear interpolation is a convex combination of 4 values (float32 error
about ``4u`` of the largest input), and normalising divides by the range; the test maps have
``max|x| / range <= 3``, so a correct float32 result is within ``1e-6``. The rest of the allowance
covers a small ``eps`` added to the denominator (``range + eps``, with ``eps <= 1e-4 * range``)."""

RESAMPLINGS = {
    "bilinear with align_corners=True": dict(mode="bilinear", align_corners=True),
    "nearest": dict(mode="nearest"),
    "nearest-exact": dict(mode="nearest-exact"),
    "bicubic": dict(mode="bicubic", align_corners=False),
    "area": dict(mode="area"),
}
"""Wrong resamplings that the test inputs tell apart from bilinear (checked by the kit's tests)."""


def upsample_inputs() -> list[tuple[np.ndarray, tuple[int, int]]]:
    """Maps of different scales (per-map normalisation matters), a non-square size."""
    rng = np.random.default_rng(20240603)
    first = rng.uniform(0.0, 4.0, (7, 7))
    second = 10.0 + 5.0 * rng.uniform(0.0, 1.0, (7, 7))
    third = rng.uniform(1.0, 3.0, (1, 5, 4))
    return [(np.stack([first, second]).astype(np.float32), (224, 224)),
            (third.astype(np.float32), (37, 23))]


def resample(cam: np.ndarray, size: tuple[int, int], **how: Any) -> np.ndarray:
    """Resample (N, h, w) to (N, *size) in float64, then min-max each map (the reference when bilinear)."""
    maps = F.interpolate(torch.from_numpy(cam.astype(np.float64))[:, None], size=size, **how)[:, 0].numpy()
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    return (maps - low) / np.where(span > 0, span, 1.0)


def check_upsample_normalize(judge: Judge) -> str:
    """Two maps of different scales to 224x224, one map to a non-square size, constant maps: the
    shape, each map in [0, 1] on its own, bilinear with ``align_corners=False``, no NaN."""
    judge.require("upsample_normalize")
    for cam, size in upsample_inputs():
        call = f"upsample_normalize(cam, size={size})"
        n, h, w = cam.shape
        got = returned_tensor(judge.call("upsample_normalize", cam, size), call).array
        expect_shape(got, (n, *size), call, f"one map per input map, resized to {size}, for cam of shape "
                     f"{fmt_shape(cam.shape)}",
                     {(n, h, w): "The maps were not upsampled.",
                      (n, 1, *size): "Remove the channel dimension that F.interpolate needs, after it.",
                      (n, 224, 224): "Use the `size` argument."})
        if not np.isfinite(got).all():
            raise StudentFailure(f"`{call}` returned NaN or infinite values ({array_summary(got)}).")
        for index, single in enumerate(got):
            low, high = float(single.min()), float(single.max())
            if abs(low) > UPSAMPLE_TOLERANCE or abs(high - 1.0) > UPSAMPLE_TOLERANCE:
                hint = ""
                if n > 1 and min(float(got.min()), 0.0) > -UPSAMPLE_TOLERANCE and abs(float(got.max()) - 1) <= UPSAMPLE_TOLERANCE:
                    hint = " Each map must be scaled on its own (its own min and max), not the whole batch at once."
                raise StudentFailure(f"`{call}`: map {index} has values in [{fmt_value(low)}, {fmt_value(high)}]; "
                                     f"each map should be min-max scaled to exactly [0, 1].{hint}")
        expected = resample(cam, size, mode="bilinear", align_corners=False)
        worst, index = largest_error(got, expected)
        if worst > UPSAMPLE_TOLERANCE:
            like = [name for name, how in RESAMPLINGS.items()
                    if largest_error(got, resample(cam, size, **how))[0] <= UPSAMPLE_TOLERANCE]
            hint = (f" It matches {like[0]} instead." if like else
                    " Upsample first (F.interpolate, mode=\"bilinear\", align_corners=False), then normalise.")
            raise StudentFailure(f"`{call}` is not bilinear interpolation with align_corners=False followed by "
                                 f"min-max scaling: at {list(index)} the value should be "
                                 f"{fmt_value(expected[index])}, yours is {fmt_value(got[index])}.{hint}")
    for value in (0.0, 2.5):
        cam = np.full((1, 7, 7), value, dtype=np.float32)
        call = f"upsample_normalize(cam, size=(16, 16)) for a constant map of {value:g}"
        got = returned_tensor(judge.call("upsample_normalize", cam, (16, 16)), call).array
        if tuple(got.shape) != (1, 16, 16):
            raise StudentFailure(f"`{call}` returned shape {fmt_shape(got.shape)}, expected (1, 16, 16).")
        if not np.isfinite(got).all():
            raise StudentFailure(f"`{call}` returned NaN or infinite values: a constant map has a range of 0, so "
                                 "dividing by it fails. A constant map must become all zeros.")
        if value == 0.0 and np.abs(got).max() > UPSAMPLE_TOLERANCE:
            raise StudentFailure(f"`{call}` returned values in [{fmt_value(got.min())}, {fmt_value(got.max())}]; "
                                 "a constant map must become all zeros.")
        if got.min() < -UPSAMPLE_TOLERANCE or got.max() > 1 + UPSAMPLE_TOLERANCE:
            raise StudentFailure(f"`{call}` returned values in [{fmt_value(got.min())}, {fmt_value(got.max())}], "
                                 "outside [0, 1]; a constant map must become all zeros.")
    return ""


# ------------------------------------------------------------------------------------------------
# 5. grad_cam
# ------------------------------------------------------------------------------------------------
SCALE_SLACK = 1e-3
"""A map normalised as ``(m - min) / (max - min + eps)`` is the reference scaled by
``range / (range + eps)``; scale factors in ``[1 - SCALE_SLACK, 1]`` are accepted."""


def map_error(got: np.ndarray, target: np.ndarray) -> float:
    """Largest absolute difference, after undoing a scale factor in ``[1 - SCALE_SLACK, 1]``."""
    if got.shape != target.shape:
        return float("inf")
    got = got.astype(np.float64)
    top, target_top = float(np.nanmax(got)), float(np.abs(target).max())
    if target_top > 0 and 1 - SCALE_SLACK <= top / target_top < 1:
        got = got * (target_top / top)
    error = np.abs(got - target)
    return float(np.inf if np.isnan(error).any() else error.max())


class _Stage:
    """One step of Grad-CAM, done by the reference (in the judge) or by the student (in the worker)."""

    def __init__(self, judge: Judge, name: str, reference: Callable[..., np.ndarray]) -> None:
        self.judge, self.name, self.reference = judge, name, reference

    def run(self, student: bool, *args: Any) -> np.ndarray | None:
        """The stage's output, or ``None`` if it fails (then that composition is not possible)."""
        if student and not self.judge.defined(self.name):
            return None
        key = ("stage", self.name, student, *(id(a) if isinstance(a, np.ndarray) else a for a in args))
        def compute() -> np.ndarray | None:
            if student:
                outcome = self.judge.call(self.name, *args)
                if not outcome.ok or not isinstance(outcome.value, dict) or outcome.value.get("kind") != "tensor":
                    return None
                array = outcome.value.get("array")
                return None if array is None else np.asarray(array, dtype=np.float32)
            try:
                return self.reference(*args)
            except Exception:  # noqa: BLE001 - the student's intermediate value has the wrong shape
                return None
        return self.judge.memo(key, compute)


def _reference_stages(judge: Judge) -> dict[str, Callable[..., np.ndarray]]:
    key = judge.refs.key

    def as_torch(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(array, dtype=np.float32))

    return {
        "channel_weights": lambda g: key.channel_weights(as_torch(g)).numpy(),
        "weighted_cam": lambda a, w: key.weighted_cam(as_torch(a), as_torch(w)).numpy(),
        "upsample_normalize": lambda c, size: key.upsample_normalize(as_torch(c), size).numpy(),
    }


def compositions(judge: Judge, case: Case) -> Iterator[tuple[list[str], np.ndarray]]:
    """Maps that the student's ``grad_cam`` would return if its only bugs were in its helpers.

    Each step (hooks, weights, cam, upsampling) is done either by the reference, in the judge, or
    by the student's own helper, in the worker, on the same intermediate values; the student's
    version of a step is tried only when that helper failed its own check (otherwise it agrees with
    the reference). Yields the names of the student's helpers used, and the map.
    """
    stages = _reference_stages(judge)
    weights, cam, upsample = (_Stage(judge, name, stages[name])
                              for name in ("channel_weights", "weighted_cam", "upsample_normalize"))
    failing = set(judge.helpers_failing("grad_cam"))
    capture = judge.refs.capture(case)
    hooks: list[tuple[list[str], np.ndarray, np.ndarray]] = []
    if "register_gradcam_hooks" in failing and judge.defined("register_gradcam_hooks"):
        probe = judge.probe(case)
        value = probe.value if isinstance(probe.value, dict) else {}
        pieces = [value.get(name) for name in ("activations", "gradients")]
        if probe.ok and all(isinstance(p, dict) and p.get("kind") == "tensor" and p.get("array") is not None
                            for p in pieces):
            hooks.append((["register_gradcam_hooks"], *(np.asarray(p["array"], dtype=np.float32) for p in pieces)))
    seen: list[tuple[np.ndarray, np.ndarray]] = []
    for convention in CONVENTIONS:
        pair = capture.pair(convention)
        if not any(pair[0] is s[0] and pair[1] is s[1] for s in seen):
            seen.append(pair)
            hooks.append(([], *pair))
    size = tuple(judge.refs.image(case.image).shape[-2:])
    choices = (False, True)
    for (used, activations, gradients), w_student, c_student, u_student in product(hooks, choices, choices, choices):
        mine = list(used)
        for flag, name in ((w_student, "channel_weights"), (c_student, "weighted_cam"), (u_student, "upsample_normalize")):
            if flag:
                if name not in failing:
                    break
                mine.append(name)
        else:
            if not mine:
                continue
            w = weights.run(w_student, gradients)
            c = None if w is None else cam.run(c_student, activations, w)
            u = None if c is None else upsample.run(u_student, c, size)
            if u is not None and u.ndim >= 1 and len(u) >= 1 and _informative(u[0]):
                yield mine, u[0]


def _informative(candidate: np.ndarray) -> bool:
    """Whether matching this map proves anything: a constant map (all zeros, say) is what almost any
    broken pipeline gives, so agreeing with it verifies nothing and earns nothing."""
    values = np.asarray(candidate, dtype=np.float64)
    return bool(np.isfinite(values).all()) and float(values.max() - values.min()) > 1e-6 * max(1.0, float(np.abs(values).max()))


def check_grad_cam(judge: Judge) -> str:
    """Grad-CAM on five models/layers against the reference (any of the three conventions at
    ``features``), a class that is not the argmax, a model where explaining the softmax fails; the
    result is a detached CPU tensor (H, W) in [0, 1]; no hook is left, even after an error; the
    model stays in eval mode.

    Tolerance on the maps (in [0, 1]): ``References.map_tolerance`` -- the reordering bound of the
    weighted sum and of the means, times the case's ``kappa``; plus a scale factor within
    :data:`SCALE_SLACK` for an ``eps`` in the denominator of the normalisation.
    """
    judge.require("grad_cam")
    refs = judge.refs
    remarks: list[str] = []
    excused: list[str] = []
    substituted: list[str] = []
    composed: list[tuple[str, str]] = []
    checked = 0
    for purpose, case in grad_cam_cases(judge.refs):
        call = call_text("grad_cam", case)
        where = f"On {case.describe()} ({purpose}): "
        outcome = judge.call("grad_cam", case.spec, refs.image(case.image), case.class_idx, LayerRef(case.layer))
        _check_model_left_clean(outcome, where, call)
        maps = refs.maps(case)
        if not outcome.ok:
            if _right_with_substitutes(judge, case, where, call):
                substituted.append(purpose)
                checked += 1
                continue
            helper = _explained_by_helpers(judge, case, outcome)
            if helper is None:
                if case == features_case(judge.refs):
                    judge.save_heatmap(refs.image(case.image)[0], maps["pre_relu"], None, case)
                raise StudentFailure(f"{where}`{call}` failed: {outcome.error}")
            excused.append(purpose)
            continue
        result = as_tensor(outcome.value, f"What `{call}` returned")
        got = result.array.astype(np.float32)
        if case == features_case(judge.refs):
            matched = min(maps, key=lambda c: map_error(got, maps[c]))
            judge.save_heatmap(refs.image(case.image)[0], maps[matched], got if got.ndim == 2 else None,
                              case)
        tolerance = refs.map_tolerance(case)
        errors = {convention: map_error(got, maps[convention]) for convention in CONVENTIONS}
        best = min(errors, key=errors.get)
        if errors[best] <= tolerance:
            _check_tensor_kind(result, where, call)
            if case == features_case(judge.refs):
                remarks.append(f"At `{case.layer}` your map matched convention '{best}' "
                               f"({CONVENTION_WORDS[best]}); all three are accepted.")
            checked += 1
            continue
        helpers = next((mine for mine, candidate in compositions(judge, case)
                        if map_error(got, candidate) <= tolerance * max(float(np.abs(candidate).max()), 1e-12)), None)
        if helpers is None:
            if _right_with_substitutes(judge, case, where, call):
                substituted.append(purpose)
                checked += 1
                continue
            raise StudentFailure(where + _map_mismatch(judge, case, call, got, maps, errors, tolerance))
        _check_tensor_kind(result, where, call, normalised=False)
        composed.append((purpose, f"your map is what your `grad_cam` gives with your "
                                  f"{', '.join(f'`{h}`' for h in helpers)}, whose errors are counted in their own tests."))
        checked += 1
    _check_error_path(judge)
    remarks += grouped_remarks(composed)
    if substituted:
        helpers = _helpers_words(_substitutable_failing(judge, "grad_cam"))
        remarks.append(f"With the grader's own {helpers} in place of yours, your `grad_cam` is right on "
                       f"{'; '.join(substituted)} (the errors of your {helpers} are counted in their own tests).")
    if excused:
        culprits = ", ".join(f"`{h}`" for h in judge.helpers_failing("grad_cam"))
        if checked == 0:
            # Points are only ever given for behaviour the judge has seen to be right: a grad_cam
            # that never got past a failing helper is unverified, however it is written.
            raise StudentFailure(
                f"Your `grad_cam` could not be checked: in every case it stopped inside your {culprits}, which "
                f"fails its own test. The grader can only give points for what it sees working; once {culprits} "
                "runs, `grad_cam` is checked on its own (a helper that merely returns wrong values is not charged "
                "again here).")
        else:
            remarks.append(f"Not counted against `grad_cam`: it fails on {'; '.join(excused)}, because your "
                           f"{culprits} fails its own test.")
    return " ".join(remarks)


def _substitutable_failing(judge: Judge, name: str) -> list[str]:
    """The helpers of ``name`` that fail their own test and that the judge may replace by its own
    (never ``register_gradcam_hooks``: see ``_substitutes``)."""
    return list(substitutes_for(judge.helpers_failing(name)))


def _helpers_words(helpers: Sequence[str]) -> str:
    return ", ".join(f"`{h}`" for h in helpers)


def _right_with_substitutes(judge: Judge, case: Case, where: str, call: str) -> bool:
    """Whether the student's ``grad_cam``, called once more with the grader's own versions of its
    failing helpers (in the worker, for that call only), gives the reference map on ``case`` (any
    convention, the same tolerance); ``False`` if no helper can be substituted or the map is still
    wrong. Only a map seen to be right counts: this is real verification, not an excuse."""
    failing = _substitutable_failing(judge, "grad_cam")
    if not failing or not judge.defined("grad_cam"):
        return False
    refs = judge.refs
    outcome = judge._retried(lambda: judge.session.call(
        "grad_cam", case.spec, refs.image(case.image), case.class_idx, LayerRef(case.layer),
        substitutes=substitutes_for(failing)))
    if not outcome.ok or not (isinstance(outcome.value, dict) and outcome.value.get("kind") == "tensor"):
        return False
    _check_model_left_clean(outcome, where, call)
    result = as_tensor(outcome.value, f"What `{call}` returned")
    got = result.array.astype(np.float32)
    maps = refs.maps(case)
    if min(map_error(got, maps[convention]) for convention in CONVENTIONS) > refs.map_tolerance(case):
        return False
    _check_tensor_kind(result, where, call)
    return True


def _check_model_left_clean(outcome: Any, where: str, call: str) -> None:
    """No hook left on the model and the model in eval mode after the call, whatever happened."""
    left = outcome.observations.get("hooks_left") or []
    if left:
        happened = "returned" if outcome.ok else f"failed ({outcome.error})"
        raise StudentFailure(f"{where}after `{call}` {happened}, hooks were still attached to "
                             f"{', '.join(f'`{n}`' for n in left)}. Remove every hook before returning, also when "
                             "something fails (try: ... finally: ...).")
    if outcome.ok and outcome.observations.get("training"):
        raise StudentFailure(f"{where}after `{call}` the model was in training mode. Grad-CAM needs the model in "
                             "eval mode (batch normalisation must use its running statistics), and must leave it so.")


def _check_tensor_kind(result: TensorValue, where: str, call: str, normalised: bool = True) -> None:
    if result.requires_grad:
        raise StudentFailure(f"{where}`{call}` returned a tensor that requires grad: return it detached "
                             "(.detach()).")
    if not result.device.startswith("cpu"):
        raise StudentFailure(f"{where}`{call}` returned a tensor on {result.device}: return it on the CPU (.cpu()).")
    if normalised and result.array.size and (result.array.min() < -1e-6 or result.array.max() > 1 + 1e-6):
        raise StudentFailure(f"{where}`{call}` returned values outside [0, 1] ({array_summary(result.array)}).")


_UNDEFINED = re.compile(r"^NameError: name '(?P<name>\w+)' is not defined")


def _missing_helper(error: ErrorInfo, failing: Sequence[str]) -> str | None:
    """The failing helper whose absence the error is about (``NameError: name 'x' is not defined``)."""
    match = _UNDEFINED.match(error.signature)
    return match.group("name") if match and match.group("name") in failing else None


def _helper_exception(judge: Judge, function: str, outcome: Any) -> str | tuple[list[str], ErrorInfo] | None:
    """The first steps of explaining a failure of ``function`` by its failing helpers.

    Returns None when nothing can explain it (not an exception, or no helper fails its own
    check), the helper's name when the error is that a failing helper does not exist, and
    otherwise the failing helpers with the parsed error, for the caller to look further.
    """
    failing = judge.helpers_failing(function)
    if outcome.failure != "exception" or not failing:
        return None
    error = ErrorInfo.parse(outcome.error)
    missing = _missing_helper(error, failing)
    return missing if missing is not None else (failing, error)


def _explained_by_helpers(judge: Judge, case: Case, outcome: Any) -> str | None:
    """The helper whose own failure makes ``grad_cam`` fail on ``case``, if that is the explanation.

    It is when a helper of ``grad_cam`` failed its own check, and either the error is that the
    helper does not exist (its cell is missing or broken), or running the student's helpers alone
    on the case (their hooks, then their weights, cam and upsampling on what the hooks recorded)
    raises the same exception, from the same cell (or from outside their cells, e.g. a forward
    pass that their hooks break).
    """
    cause = _helper_exception(judge, "grad_cam", outcome)
    if cause is None or isinstance(cause, str):
        return cause
    _, error = cause
    if not judge.defined("register_gradcam_hooks"):
        return None
    probe = judge.probe(case)
    stages: list[tuple[str, Callable[[], Any]]] = [("register_gradcam_hooks", lambda: probe)]
    value = probe.value if isinstance(probe.value, dict) else {}
    if probe.ok:
        arrays = {}
        for name in ("activations", "gradients"):
            piece = value.get(name)
            if not (isinstance(piece, dict) and piece.get("kind") == "tensor" and piece.get("array") is not None):
                return None
            arrays[name] = np.asarray(piece["array"], dtype=np.float32)
        size = tuple(judge.refs.image(case.image).shape[-2:])
        state: dict[str, Any] = {}

        def output_of(key: str) -> np.ndarray | None:
            value = state[key].value if state[key].ok else None
            if not (isinstance(value, dict) and value.get("array") is not None):
                return None
            return np.asarray(value["array"], dtype=np.float32)

        def weights():
            state["w"] = judge.call("channel_weights", arrays["gradients"])
            return state["w"]

        def cam():
            w = output_of("w")
            state["c"] = None if w is None else judge.call("weighted_cam", arrays["activations"], w)
            return state["c"]

        def upsample():
            c = output_of("c")
            return None if c is None else judge.call("upsample_normalize", c, size)

        stages += [("channel_weights", weights), ("weighted_cam", cam), ("upsample_normalize", upsample)]
    for helper, run in stages:
        result = run()
        if result is None:
            return None
        if not result.ok:
            theirs = ErrorInfo.parse(result.error)
            if theirs.signature == error.signature and theirs.cell in (None, error.cell):
                return helper
            return None
    return None


def _check_error_path(judge: Judge) -> None:
    """``grad_cam`` with a class index out of range must fail without leaving hooks."""
    case = features_case(judge.refs)
    bad = Case(case.spec, case.image, 1000, case.layer)
    call = call_text("grad_cam", bad)
    outcome = judge.call("grad_cam", bad.spec, judge.refs.image(bad.image), bad.class_idx, LayerRef(bad.layer))
    left = outcome.observations.get("hooks_left") or []
    if left:
        happened = "returned" if outcome.ok else f"failed ({outcome.error})"
        raise StudentFailure(f"`{call}` asks for class 1000, which does not exist (the classes are 0 to 999). "
                             f"Your function {happened}, and left hooks attached to "
                             f"{', '.join(f'`{n}`' for n in left)}: remove them in a `finally:` block so that "
                             "they go also when something fails.")


def _map_mismatch(judge: Judge, case: Case, call: str, got: np.ndarray, maps: dict[str, np.ndarray],
                  errors: dict[str, float], tolerance: float) -> str:
    expected_shape = next(iter(maps.values())).shape
    if got.shape != expected_shape:
        hint = ""
        if got.ndim == 3 and got.shape[1:] == expected_shape:
            hint = " Return the map of the one image, without the batch dimension."
        return (f"`{call}` returned a tensor of shape {fmt_shape(got.shape)}; expected {fmt_shape(expected_shape)}, "
                f"the size of the image.{hint}")
    best = min(errors, key=errors.get)
    worst, index = largest_error(got, maps[best])
    text = (f"your heatmap differs from the reference: the largest difference is {fmt_value(worst)} at pixel "
            f"{tuple(index)} (accepted: {fmt_value(tolerance)}). Yours: {array_summary(got)}; the reference: "
            f"{array_summary(maps[best])}.")
    if abs(float(got.max()) - 1.0) > 1e-3 or abs(float(got.min())) > 1e-3:
        return text + " The map should be scaled to [0, 1]."
    for label, alternative in _likely_mistakes(judge.refs, case):
        if min_distance({"got": got}, alternative) <= 0.05:
            return text + f" It looks like {label}."
    return text


def _likely_mistakes(refs: References, case: Case) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
    top = refs.ranked_classes(case.spec, case.image)[0]
    if top != case.class_idx:
        yield (f"the map of the predicted class {top} (the argmax), not of class_idx={case.class_idx}",
               refs.class_maps(case.spec, case.image, case.layer, [top])[top])
    yield ("the map of the softmax probability: back-propagate the raw score (the logit) instead",
           {"softmax": refs.softmax_maps(case.spec, case.image, case.layer, [case.class_idx])[case.class_idx]})
    if case.layer != "features" and case.spec.arch == "densenet121":
        yield ("the map at `features`: use the `layer` argument",
               refs.class_maps(case.spec, case.image, "features", [case.class_idx])[case.class_idx])


# ------------------------------------------------------------------------------------------------
# 6. top_and_least
# ------------------------------------------------------------------------------------------------
def top_and_least_inputs() -> list[tuple[np.ndarray, dict[str, int]]]:
    """Scores without ties: 1000 classes (shape (C,) and (1, C)), several k."""
    rng = np.random.default_rng(20240604)
    first = (rng.permutation(1000).astype(np.float32) * 0.37 - 150.0)
    second = (rng.permutation(1000).astype(np.float32) * 0.01 + rng.uniform(-1, 1)).astype(np.float32)[None]
    third = np.array([[2.0, -1.0, 7.0, 0.5, -3.0, 4.0, 6.5, 1.0]], dtype=np.float32)
    return [(first, {}), (second, {"k": 5}), (third[0], {"k": 1}), (third, {"k": 3})]


def _int_list(value: Any) -> list[int] | None:
    if isinstance(value, (list, tuple)) and all(type(item) is int for item in value):
        return list(value)
    return None


def check_top_and_least(judge: Judge) -> str:
    """Scores of shapes (C,) and (1, C) with no ties, k = 3 (default), 5 and 1: the k best classes,
    best first, then the worst, as plain ints (exact comparison)."""
    judge.require("top_and_least")
    key = judge.refs.key
    for scores, kwargs in top_and_least_inputs():
        k = kwargs.get("k", 3)
        call = f"top_and_least(scores{', k=' + str(k) if kwargs else ''})"
        outcome = judge.call("top_and_least", scores, **kwargs)
        if not outcome.ok:
            raise StudentFailure(f"`{call}` with scores of shape {fmt_shape(scores.shape)} failed: {outcome.error}")
        got = _int_list(outcome.value)
        if got is None:
            from gradcam_kit.grading.feedback import describe_value

            hint = ""
            if isinstance(outcome.value, (list, tuple)) and outcome.value and isinstance(outcome.value[0], dict):
                hint = " Convert each index with int(...) (or use .tolist())."
            raise StudentFailure(f"`{call}` should return a list of {k + 1} plain Python ints; it returned "
                                 f"{describe_value(outcome.value)}.{hint}")
        expected = key.top_and_least(torch.from_numpy(scores), k)
        if got != expected:
            flat = scores.reshape(-1)
            shown = ", ".join(f"{i} (score {flat[i]:.4g})" for i in expected)
            hint = ""
            if len(got) == k + 1 and got[:k] == expected[:k][::-1]:
                hint = " The best classes come first: sort by decreasing score."
            elif len(got) == k + 1 and got[:k] == expected[:k]:
                hint = " The last index should be the class with the lowest score."
            elif len(got) != k + 1:
                hint = f" Return k + 1 = {k + 1} indices."
            raise StudentFailure(f"`{call}` on scores of shape {fmt_shape(scores.shape)} should return "
                                 f"[{', '.join(map(str, expected))}]: {shown}; yours returned {got}.{hint}")
    return ""


# ------------------------------------------------------------------------------------------------
# 7. show_grad_cam
# ------------------------------------------------------------------------------------------------
def _names_in_order(titles: Sequence[str], names: Sequence[str]) -> bool:
    """Whether each title names its class (as a whole word or phrase)."""
    return len(titles) == len(names) and all(
        re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", title) for title, name in zip(titles, names))


def check_show_grad_cam(judge: Judge) -> str:
    """DenseNet-121, two cats, at ``features``: a Figure with four image panels titled with the names
    of the three most likely classes (best first) and of the least likely one. Titles in the order
    of the student's own ``top_and_least`` are accepted too (a wrong order there is charged there)."""
    judge.require("show_grad_cam")
    refs = judge.refs
    names = refs.class_names()
    image = refs.image(CATS)
    scores = refs.scores(DENSENET, CATS)
    expected = refs.key.top_and_least(torch.from_numpy(scores))
    orders = [expected]
    if not judge.verdict("top_and_least").passed:
        theirs = judge.call("top_and_least", scores)
        own = _int_list(theirs.value) if theirs.ok else None
        if own is not None and all(0 <= i < len(names) for i in own):
            orders.append(own)
    remark = ""
    layers = ("features", "features.denseblock4")
    for layer in layers:
        call = f"show_grad_cam(image, model, model.{layer}, class_names)"
        outcome = judge.call("show_grad_cam", image, DENSENET, LayerRef(layer), names)
        if outcome.ok:
            break
        helper = _explained_by_show_helpers(judge, outcome, layer)
        if helper is None or "register_gradcam_hooks" not in judge.helpers_failing("show_grad_cam"):
            substituted = _show_with_substitutes(judge, image, layer, names)
            if substituted is not None:
                outcome, remark = substituted
                break
            if helper is None:
                raise StudentFailure(f"`{call}` failed: {outcome.error}")
            _not_checked(judge)  # only hooks that fail at `features` may work at another layer
        remark = (f"`{call}` fails because your `{helper}` fails its own test (not charged again here); the "
                  "figure was checked at `features.denseblock4` instead.")
    else:
        # the student's hooks fail too (never substituted): their other failing helpers may be
        for layer in layers:
            call = f"show_grad_cam(image, model, model.{layer}, class_names)"
            substituted = _show_with_substitutes(judge, image, layer, names)
            if substituted is not None:
                outcome, remark = substituted
                break
        else:
            _not_checked(judge)
    figure = outcome.value
    if not (isinstance(figure, dict) and figure.get("kind") == "figure"):
        from gradcam_kit.grading.feedback import describe_value

        raise StudentFailure(f"`{call}` should return the matplotlib Figure; it returned {describe_value(figure)}. "
                             "Return the figure (do not only show it).")
    panels = [ax for ax in figure.get("axes", []) if int(ax.get("n_images", 0)) > 0]
    if len(panels) != 4:
        raise StudentFailure(f"The figure of `{call}` has {len(panels)} panels with an image; expected 4: the three "
                             "most likely classes and the least likely one, one panel each.")
    titles = [str(ax.get("title", "")) for ax in panels]
    if not any(_names_in_order(titles, [names[i] for i in order]) for order in orders):
        wanted = ", ".join(repr(names[i]) for i in expected)
        raise StudentFailure(f"The panel titles of `{call}` are {titles}; they should name, in this order, "
                             f"{wanted} (the three most likely classes, best first, then the least likely one).")
    return remark


def _show_with_substitutes(judge: Judge, image: np.ndarray, layer: str,
                           names: Sequence[str]) -> tuple[Any, str] | None:
    """``show_grad_cam`` called once more with the grader's own versions of its failing helpers
    (``channel_weights``, ``weighted_cam``, ``upsample_normalize``, ``top_and_least``; never the
    hooks), for that call only: its outcome and a remark if it ran, else ``None``. The figure is
    then checked as usual."""
    failing = _substitutable_failing(judge, "show_grad_cam")
    if not failing:
        return None
    outcome = judge._retried(lambda: judge.session.call(
        "show_grad_cam", image, DENSENET, LayerRef(layer), names, substitutes=substitutes_for(failing)))
    if not outcome.ok:
        return None
    return outcome, (f"With the grader's own {_helpers_words(failing)} in place of yours, your `show_grad_cam` "
                     f"was checked at `{layer}` (the errors of your {_helpers_words(failing)} are counted in their "
                     "own tests).")


def _not_checked(judge: Judge) -> NoReturn:
    """Fail: ``show_grad_cam`` never got past a failing helper, so nothing of it was seen working."""
    culprits = ", ".join(f"`{h}`" for h in judge.helpers_failing("show_grad_cam"))
    raise StudentFailure(
        f"Your `show_grad_cam` could not be checked: it stopped inside your {culprits}, which fails its own test. "
        f"The grader can only give points for what it sees working; once {culprits} runs, `show_grad_cam` is "
        "checked on its own.")


def _explained_by_show_helpers(judge: Judge, outcome: Any, layer: str) -> str | None:
    """The failing helper that explains a failure of ``show_grad_cam``, if any.

    It is when a function that ``show_grad_cam`` uses (directly or not) failed its own check, and
    the exception comes from that function's cell, or ``grad_cam`` alone fails with the same
    exception, from the same place, on this image and layer.
    """
    cause = _helper_exception(judge, "show_grad_cam", outcome)
    if cause is None or isinstance(cause, str):
        return cause
    failing, error = cause
    if error.cell == "show_grad_cam":
        return None
    if error.cell in failing:
        return error.cell
    top = judge.refs.ranked_classes(DENSENET, CATS)[0]
    alone = judge.call("grad_cam", DENSENET, judge.refs.image(CATS), top, LayerRef(layer))
    theirs = ErrorInfo.parse(alone.error)
    if not alone.ok and theirs.signature == error.signature and theirs.cell == error.cell:
        return next((h for h in failing if h in HELPERS["grad_cam"]), failing[0])
    return None


def prepare_references(refs: References) -> None:
    """Compute every reference value that a check may need a model for, and keep it (on disk too).

    The grader runs this once, in a process of its own, before the judges start
    (``python -m autograder_tests --prepare``): the judges then find every value in the cache, never
    build a model, and never import torchvision, which keeps each grading slot (judge and worker)
    small. A value missed here is still computed by the judge that needs it; the tests check that
    grading the corpus of sample submissions misses none.
    """
    refs.class_names()
    refs.ranked_classes(DENSENET, CATS)  # the scores, for show_grad_cam
    for _, case in grad_cam_cases(refs):
        refs.map_tolerance(case)  # the capture, with the image
        refs.maps(case)
        for _ in _likely_mistakes(refs, case):
            pass


CHECKS: dict[str, Callable[[Judge], str]] = {
    "register_gradcam_hooks": check_register_gradcam_hooks,
    "channel_weights": check_channel_weights,
    "weighted_cam": check_weighted_cam,
    "upsample_normalize": check_upsample_normalize,
    "grad_cam": check_grad_cam,
    "top_and_least": check_top_and_least,
    "show_grad_cam": check_show_grad_cam,
}
