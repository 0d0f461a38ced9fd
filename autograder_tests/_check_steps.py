"""The checks of the three pure steps of Grad-CAM: ``channel_weights``, ``weighted_cam`` and
``upsample_normalize``.

Each calls the student's function in the worker on arrays (random ones, then DenseNet's real
activations and gradients), and compares with the definition computed here in float64. Every
tolerance is derived from float32 arithmetic (``u = 2**-24``, see ``_tolerances``) and stated
next to its use.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from gradcam_kit.grading.feedback import CheckFailure, array_summary, fmt_shape, fmt_value, largest_error

from ._cases import features_case
from ._judge import Judge, expect_shape, returned_tensor
from ._tolerances import U32

__all__ = [
    "RESAMPLINGS",
    "UPSAMPLE_TOLERANCE",
    "check_channel_weights",
    "check_upsample_normalize",
    "check_weighted_cam",
    "resample",
    "upsample_inputs",
    "weighted_cam_inputs",
]


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
            raise CheckFailure(
                f"On {label} of shape {fmt_shape(gradients.shape)}, weights[{i}, {j}] should be the mean of "
                f"gradients[{i}, {j}] over its {h}x{w} pixels, {fmt_value(expected[i, j])}; yours is "
                f"{fmt_value(got[i, j])}.{hint}")
    return ""


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
        meaning = f"one map per image, for activations of shape {fmt_shape(activations.shape)}"
        expect_shape(got, (n, h, w), call, meaning,
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
            raise CheckFailure(f"On {label}, cam{where} should be ReLU(sum over k of weights[n, k] * "
                               f"activations[n, k]) = {fmt_value(expected[index])}; yours is "
                               f"{fmt_value(got[index])} (largest difference {fmt_value(worst)}).{hint}")
    return ""


UPSAMPLE_TOLERANCE = 1e-4
"""On maps in [0, 1]. Bilinear interpolation is a convex combination of 4 values (float32 error
about ``4u`` of the largest input), and normalising divides by the range; the test maps have
``max|x| / range <= 3``, so a correct float32 result is within ``1e-6``. The rest of the allowance
covers a small ``eps`` added to the denominator (``range + eps``, with ``eps <= 1e-4 * range``)."""

RESAMPLINGS: dict[str, dict[str, Any]] = {
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
            raise CheckFailure(f"`{call}` returned NaN or infinite values ({array_summary(got)}).")
        for index, single in enumerate(got):
            low, high = float(single.min()), float(single.max())
            if abs(low) > UPSAMPLE_TOLERANCE or abs(high - 1.0) > UPSAMPLE_TOLERANCE:
                hint = ""
                whole_batch = min(float(got.min()), 0.0) > -UPSAMPLE_TOLERANCE \
                    and abs(float(got.max()) - 1) <= UPSAMPLE_TOLERANCE
                if n > 1 and whole_batch:
                    hint = " Each map must be scaled on its own (its own min and max), not the whole batch at once."
                raise CheckFailure(f"`{call}`: map {index} has values in [{fmt_value(low)}, {fmt_value(high)}]; "
                                   f"each map should be min-max scaled to exactly [0, 1].{hint}")
        expected = resample(cam, size, mode="bilinear", align_corners=False)
        worst, pixel = largest_error(got, expected)
        if worst > UPSAMPLE_TOLERANCE:
            like = [name for name, how in RESAMPLINGS.items()
                    if largest_error(got, resample(cam, size, **how))[0] <= UPSAMPLE_TOLERANCE]
            hint = (f" It matches {like[0]} instead." if like else
                    " Upsample first (F.interpolate, mode=\"bilinear\", align_corners=False), then normalise.")
            raise CheckFailure(f"`{call}` is not bilinear interpolation with align_corners=False followed by "
                               f"min-max scaling: at {list(pixel)} the value should be "
                               f"{fmt_value(expected[pixel])}, yours is {fmt_value(got[pixel])}.{hint}")
    for value in (0.0, 2.5):
        cam = np.full((1, 7, 7), value, dtype=np.float32)
        call = f"upsample_normalize(cam, size=(16, 16)) for a constant map of {value:g}"
        got = returned_tensor(judge.call("upsample_normalize", cam, (16, 16)), call).array
        if tuple(got.shape) != (1, 16, 16):
            raise CheckFailure(f"`{call}` returned shape {fmt_shape(got.shape)}, expected (1, 16, 16).")
        if not np.isfinite(got).all():
            raise CheckFailure(f"`{call}` returned NaN or infinite values: a constant map has a range of 0, so "
                               "dividing by it fails. A constant map must become all zeros.")
        if value == 0.0 and np.abs(got).max() > UPSAMPLE_TOLERANCE:
            raise CheckFailure(f"`{call}` returned values in [{fmt_value(got.min())}, {fmt_value(got.max())}]; "
                               "a constant map must become all zeros.")
        if got.min() < -UPSAMPLE_TOLERANCE or got.max() > 1 + UPSAMPLE_TOLERANCE:
            raise CheckFailure(f"`{call}` returned values in [{fmt_value(got.min())}, {fmt_value(got.max())}], "
                               "outside [0, 1]; a constant map must become all zeros.")
    return ""


