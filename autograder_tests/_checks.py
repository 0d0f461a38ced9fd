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
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from gradcam_kit.grading.feedback import (
    StudentFailure,
    array_summary,
    describe_value,
    fmt_shape,
    fmt_value,
    largest_error,
)
from gradcam_kit.wire.frames import LayerRef

from . import _figures
from ._judge import Judge, TensorValue, as_tensor, expect_shape, returned_tensor
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
    resized,
)

# ------------------------------------------------------------------------------------------------
# the cases shared by several checks
# ------------------------------------------------------------------------------------------------
def features_case(refs: References) -> Case:
    """DenseNet-121 at ``features`` (1024 maps of 7x7), two cats, a class that is not the argmax."""
    return refs.distinct_class(DENSENET, CATS, "features")


def block3_case(refs: References) -> Case:
    """DenseNet-121 at ``features.denseblock3`` (1024 maps of 14x14), another image."""
    return refs.distinct_class(DENSENET, WOMAN_DOG, "features.denseblock3")


OTHER_SIZE = (160, 192)
"""The (H, W) of the image of ``grad_cam``'s ResNet-18 case: the map must have the image's size."""


def grad_cam_cases(refs: References) -> list[tuple[str, Case]]:
    """The situations ``grad_cam`` must handle, with what each one is for."""
    return [
        ("the output of `features` (7x7 maps, upsampled to 224x224)", features_case(refs)),
        ("an intermediate layer", block3_case(refs)),
        ("ResNet-18, on an image of another size than 224x224",
         refs.distinct_class(RESNET, resized(SECOND_DOG, *OTHER_SIZE), "layer4")),
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


def with_grader_helpers(judge: Judge, function: str, substitutes: Mapping[str, str], purposes: Sequence[str]) -> str:
    """The remark of a pass established with the grader's helpers (a fixed sentence: see ``_judge``)."""
    failing = [name for name in substitutes if not judge.verdict(name).passed]
    return (f"With the grader's own {_helpers_words(substitutes)} in place of yours, your `{function}` is right on "
            f"{'; '.join(purposes)}. What your {_helpers_words(failing)} got wrong is counted in "
            f"{'its own test' if len(failing) == 1 else 'their own tests'}, not here.")


def not_even_with_grader_helpers(function: str, substitutes: Mapping[str, str]) -> str:
    """The sentence added to a failure that the grader's helpers do not fix either (fixed: see ``_judge``)."""
    return (f" Your `{function}` is not right with the grader's own {_helpers_words(substitutes)} in place of "
            "yours either, so this error is its own.")


def check_grad_cam(judge: Judge) -> str:
    """Grad-CAM on five models/layers against the reference (any of the three conventions at
    ``features``), a class that is not the argmax, a model where explaining the softmax fails; the
    result is a detached CPU tensor (H, W) in [0, 1]; no hook is left, even after an error; the
    model stays in eval mode.

    A case that is wrong counts as right when some helper of ``grad_cam`` is broken and the call
    made again with the grader's versions of the broken helpers (:meth:`Judge.substitutes`) is
    right in every respect above: every case is checked, directly or so, or ``grad_cam`` fails.

    Tolerance on the maps (in [0, 1]): ``References.map_tolerance`` -- the reordering bound of the
    weighted sum and of the means, times the case's ``kappa``; plus a scale factor within
    :data:`SCALE_SLACK` for an ``eps`` in the denominator of the normalisation.
    """
    judge.require("grad_cam")
    refs = judge.refs
    remarks: list[str] = []
    substituted: list[str] = []
    for purpose, case in grad_cam_cases(refs):
        call = call_text("grad_cam", case)
        where = f"On {case.describe()} ({purpose}): "
        arguments = (case.spec, refs.image(case.image), case.class_idx, LayerRef(case.layer))
        outcome = judge.call("grad_cam", *arguments)
        if case == features_case(refs):
            _save_heatmap(judge, case, _returned_map(outcome))
        try:
            convention = _grad_cam_verdict(judge, case, outcome, where, call)
        except StudentFailure as failure:
            substitutes = judge.substitutes("grad_cam")
            if not substitutes:
                raise
            if not _right_with(judge, case, arguments, substitutes):
                raise StudentFailure(failure.message + not_even_with_grader_helpers("grad_cam", substitutes)) from None
            substituted.append(purpose)
            continue
        if case == features_case(refs) and refs.capture(case).modified_in_place:
            remarks.append(f"At `{case.layer}` your map matched convention '{convention}' "
                           f"({CONVENTION_WORDS[convention]}); all three are accepted.")
    _check_error_path(judge)
    if substituted:
        remarks.append(with_grader_helpers(judge, "grad_cam", judge.substitutes("grad_cam"), substituted))
    return " ".join(remarks)


def _save_heatmap(judge: Judge, case: Case, got: np.ndarray | None) -> None:
    """The student's map (from their own call only) beside the reference that it is closest to."""
    maps = judge.refs.maps(case)
    matched = min(maps, key=lambda c: map_error(got, maps[c])) if got is not None else "pre_relu"
    student = got if got is not None and got.ndim == 2 else None
    judge.save_heatmap(judge.refs.image(case.image)[0], maps[matched], student, case)


def _returned_map(outcome: Any) -> np.ndarray | None:
    value = outcome.value if outcome.ok else None
    if isinstance(value, dict) and value.get("kind") == "tensor" and value.get("array") is not None:
        return np.asarray(value["array"], dtype=np.float32)
    return None


def _grad_cam_verdict(judge: Judge, case: Case, outcome: Any, where: str, call: str) -> str:
    """The convention that ``grad_cam``'s result on ``case`` matched, or a :class:`StudentFailure`
    saying what is wrong with it: hooks left, training mode, an error, the map, its kind."""
    _check_model_left_clean(outcome, where, call)
    if not outcome.ok:
        raise StudentFailure(f"{where}`{call}` failed: {outcome.error}")
    result = as_tensor(outcome.value, f"What `{call}` returned")
    got = result.array.astype(np.float32)
    maps = judge.refs.maps(case)
    tolerance = judge.refs.map_tolerance(case)
    errors = {convention: map_error(got, maps[convention]) for convention in CONVENTIONS}
    best = min(errors, key=errors.get)
    if errors[best] > tolerance:
        raise StudentFailure(where + _map_mismatch(judge, case, call, got, maps, errors, tolerance))
    _check_tensor_kind(result, where, call)
    return best


def _right_with(judge: Judge, case: Case, arguments: tuple, substitutes: Mapping[str, str]) -> bool:
    """Whether ``grad_cam`` called with the grader's ``substitutes`` is right on ``case`` in every
    respect :func:`_grad_cam_verdict` checks. Only the answer crosses: what went wrong is never said."""
    outcome = judge.call("grad_cam", *arguments, substitutes=substitutes)
    try:
        _grad_cam_verdict(judge, case, outcome, "", "")
    except StudentFailure:
        return False
    return True


def _helpers_words(helpers: Iterable[str]) -> str:
    return ", ".join(f"`{h}`" for h in helpers)


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


def _check_tensor_kind(result: TensorValue, where: str, call: str) -> None:
    if result.requires_grad:
        raise StudentFailure(f"{where}`{call}` returned a tensor that requires grad: return it detached "
                             "(.detach()).")
    if not result.device.startswith("cpu"):
        raise StudentFailure(f"{where}`{call}` returned a tensor on {result.device}: return it on the CPU (.cpu()).")
    if result.array.size and (result.array.min() < -1e-6 or result.array.max() > 1 + 1e-6):
        raise StudentFailure(f"{where}`{call}` returned values outside [0, 1] ({array_summary(result.array)}).")


def _check_error_path(judge: Judge) -> None:
    """``grad_cam`` with a class index out of range must fail without leaving hooks (with the
    grader's versions of its broken helpers, if it leaves some with the student's)."""
    case = features_case(judge.refs)
    bad = Case(case.spec, case.image, 1000, case.layer)
    call = call_text("grad_cam", bad)
    arguments = (bad.spec, judge.refs.image(bad.image), bad.class_idx, LayerRef(bad.layer))
    outcome = judge.call("grad_cam", *arguments)
    left = outcome.observations.get("hooks_left") or []
    if not left:
        return
    happened = "returned" if outcome.ok else f"failed ({outcome.error})"
    message = (f"`{call}` asks for class 1000, which does not exist (the classes are 0 to 999). Your function "
               f"{happened}, and left hooks attached to {', '.join(f'`{n}`' for n in left)}: remove them in a "
               "`finally:` block so that they go also when something fails.")
    substitutes = judge.substitutes("grad_cam")
    if not substitutes:
        raise StudentFailure(message)
    if judge.call("grad_cam", *arguments, substitutes=substitutes).observations.get("hooks_left"):
        raise StudentFailure(message + not_even_with_grader_helpers("grad_cam", substitutes))


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
FIGURE_LAYER = "features"
"""``show_grad_cam`` is judged on DenseNet-121 at ``features``, on the two cats."""


def _names_in_order(titles: Sequence[str], names: Sequence[str]) -> bool:
    """Whether each title names its class (as a whole word or phrase)."""
    return len(titles) == len(names) and all(
        re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", title) for title, name in zip(titles, names))


def figure_classes(refs: References) -> list[int]:
    """The classes of the four panels: the three most likely, best first, then the least likely."""
    return refs.key.top_and_least(torch.from_numpy(refs.scores(DENSENET, CATS)))


def check_show_grad_cam(judge: Judge) -> str:
    """DenseNet-121, two cats, at ``features``: a Figure with four image panels, titled with the
    names of the three most likely classes (best first) and of the least likely one, each showing
    the Grad-CAM map of its class (:func:`figure_problem`).

    When the figure is wrong and a helper of ``show_grad_cam`` is broken, it is drawn again with
    the grader's versions of the broken helpers (:meth:`Judge.substitutes`); it passes if that
    figure is right.
    """
    judge.require("show_grad_cam")
    refs = judge.refs
    arguments = (refs.image(CATS), DENSENET, LayerRef(FIGURE_LAYER), refs.class_names())
    problem = figure_problem(judge, judge.call("show_grad_cam", *arguments))
    if problem is None:
        return ""
    substitutes = judge.substitutes("show_grad_cam")
    if not substitutes:
        raise StudentFailure(problem)
    if figure_problem(judge, judge.call("show_grad_cam", *arguments, substitutes=substitutes)) is not None:
        raise StudentFailure(problem + not_even_with_grader_helpers("show_grad_cam", substitutes))
    return with_grader_helpers(judge, "show_grad_cam", substitutes, ["the two cats at `features`"])


def figure_problem(judge: Judge, outcome: Any) -> str | None:
    """What is wrong with the figure that ``show_grad_cam`` gave, in the student's terms, or ``None``.

    Four panels (axes with an image), titled in order with the names of :func:`figure_classes`;
    each shows the Grad-CAM map of its class over the image, in any colormap, with any alpha, as
    separate images or blended into one (``_figures``): one of its visible images has a heat score
    of at least ``HEAT_MIN`` for that map (any convention), and no other panel class's map scores
    better. A panel whose class has a constant map (the least likely class often has none left
    after the ReLU) must not show another class's map.
    """
    refs = judge.refs
    names = refs.class_names()
    classes = figure_classes(refs)
    call = f"show_grad_cam(image, model, model.{FIGURE_LAYER}, class_names)"
    if not outcome.ok:
        return f"`{call}` failed: {outcome.error}"
    figure = outcome.value
    if not (isinstance(figure, dict) and figure.get("kind") == "figure"):
        return (f"`{call}` should return the matplotlib Figure; it returned {describe_value(figure)}. "
                "Return the figure (do not only show it).")
    panels = [ax for ax in figure.get("axes", []) if isinstance(ax, dict) and int(ax.get("n_images", 0) or 0) > 0]
    if len(panels) != 4:
        return (f"The figure of `{call}` has {len(panels)} panels with an image; expected 4: the three most likely "
                "classes and the least likely one, one panel each.")
    titles = [str(ax.get("title", "")) for ax in panels]
    if not _names_in_order(titles, [names[i] for i in classes]):
        wanted = ", ".join(repr(names[i]) for i in classes)
        return (f"The panel titles of `{call}` are {titles}; they should name, in this order, {wanted} (the three "
                "most likely classes, best first, then the least likely one).")
    maps = refs.class_maps(DENSENET, CATS, FIGURE_LAYER, classes)
    grids = {c: [_figures.map_grid(m) for m in maps[c].values()] for c in classes}
    photo = _figures.photo_grid(refs.image(CATS))
    for position, (axis, class_idx) in enumerate(zip(panels, classes), start=1):
        layers = _figures.panel_layers(axis)
        scores = {c: _figures.panel_score(layers, photo, grids[c]) for c in classes
                  if any(_figures.informative(g) for g in grids[c])}
        best = max(scores, key=scores.get, default=None)
        label = f"Panel {position} ({titles[position - 1]!r})"
        own = f"class {class_idx} ({names[class_idx]})"
        if class_idx not in scores:
            if best is not None and scores[best] >= _figures.HEAT_MIN:
                return (f"{label} shows the Grad-CAM map of class {best} ({names[best]}); the map of {own} is "
                        "blank here (nothing is left after the ReLU), so the panel should show no heat.")
            continue
        if scores[class_idx] >= _figures.HEAT_MIN and scores[class_idx] >= scores[best] - _figures.HEAT_MARGIN:
            continue
        if scores[best] >= _figures.HEAT_MIN and best != class_idx:
            return (f"{label} shows the Grad-CAM map of class {best} ({names[best]}), not that of {own}, which its "
                    f"title names: compute each panel's map with its own class index.")
        return (f"{label} does not show the Grad-CAM map of {own}: the grader sees no heatmap of that class in "
                "what the panel draws (blank, constant, hidden under an opaque image, or nearly transparent). "
                "Draw the image, then the heatmap over it, e.g. `ax.imshow(heatmap, cmap=\"jet\", alpha=0.5)`, "
                "or use `tp2_utils.show_cam_on_image`.")
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
    refs.class_maps(DENSENET, CATS, FIGURE_LAYER, figure_classes(refs))  # the scores and maps of show_grad_cam
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
