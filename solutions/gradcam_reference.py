"""Reference Grad-CAM: the implementation every submission is judged against.

Grad-CAM (Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
Localization", ICCV 2017). Let ``A`` be the activations of a chosen layer, ``K`` channels of
``h x w``, and ``y^c`` the raw score of class ``c`` (before the softmax). Then

.. math::

    \\alpha_k^c = \\frac{1}{hw} \\sum_{i,j} \\frac{\\partial y^c}{\\partial A^k_{ij}},
    \\qquad
    L^c = \\mathrm{ReLU}\\Big(\\sum_k \\alpha_k^c A^k\\Big).

:func:`grad_cam` returns ``L^c`` (optionally upsampled bilinearly to the input size);
:func:`normalize_maps` scales each map to [0, 1].

Which ``A``? The DenseNet trap
------------------------------
torchvision's ``DenseNet.forward`` applies ``F.relu(features, inplace=True)`` to the output of
``features`` (``norm5``). The tensor the layer returned is overwritten by its rectified value, so
at that layer three maps are defensible (``convention``):

``"post_relu"`` (default)
    ``A`` is the tensor as the rest of the network finally consumed it (rectified), and the
    gradient is taken with respect to that value. This is what global pooling sees, and what
    torchcam computes for the layer ``"features"``.
``"pre_relu"``
    ``A`` is the layer's output as the layer returned it (``norm5``, before the ReLU), and the
    gradient flows back through the ReLU. This is captum's ``LayerGradCam``.
``"mixed"``
    ``A`` is rectified, but the gradient is the one with respect to the pre-ReLU value. A plain
    forward hook that keeps ``output`` without cloning and calls ``output.register_hook`` gets this.

In general: "the value the layer returned" versus "the value that tensor holds once the forward
pass is over". For a layer whose output the model never modifies in place (``denseblock3``,
ResNet's ``layer4``, ...) the three conventions give the same map. The table of the three is
``gradcam_kit.contract.CONVENTIONS`` (the one place for it: the judge and the feedback read it too).

How it is computed
------------------
One forward pass serves all ``T`` target classes of every image:

1. The model runs with autograd off, so the part before the layer builds no graph.
2. A forward hook on the layer takes its output ``O`` and makes a leaf ``P``, a copy of ``O`` that
   requires grad; it switches autograd on and hands the model a copy ``Q = P.clone()`` in place
   of ``O``. ``Q`` is not a leaf, so the model may still modify it in place (DenseNet's ReLU).
3. After the forward pass, ``P`` holds the value the layer returned and ``Q`` the value the rest
   of the network consumed. ``torch.autograd.grad`` with respect to ``P`` gives the gradient
   through any in-place change of ``Q``; with respect to ``Q`` it gives the gradient with respect
   to ``Q``'s final value. The backward pass stops there: it never enters the layer.
4. The graph from the layer to the scores is kept and walked back once per target rank ``t``:
   in eval mode the images of a batch are independent, so the gradient of
   ``sum_n y[n, targets[n, t]]`` with respect to ``A[n]`` is ``dy[n, targets[n, t]] / dA[n]``.

The model is left as it was found: the hook is removed (also on error), every module's training
flag is restored (the computation itself runs in eval mode, so that batch-norm statistics are
neither used from the batch nor updated), parameters' ``.grad`` are not touched (no
``.backward()``), and neither is ``requires_grad``. Only ``torch`` (and the kit's table of
conventions) is needed, on any device.
"""

from __future__ import annotations

from typing import Literal, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradcam_kit.contract import CONVENTIONS as _CONVENTIONS

__all__ = [
    "CONVENTIONS",
    "ConventionName",
    "GradCAMParts",
    "grad_cam",
    "grad_cam_parts",
    "normalize_maps",
    "resolve_layer",
]

ConventionName = Literal["pre_relu", "post_relu", "mixed"]
CONVENTIONS: tuple[str, ...] = tuple(_CONVENTIONS)
"""The conventions' names (``gradcam_kit.contract.CONVENTIONS``)."""


class GradCAMParts(NamedTuple):
    """The ingredients of Grad-CAM for a batch, from one forward pass.

    Attributes
    ----------
    activations : Tensor, shape (N, K, h, w)
        ``A``, as chosen by the convention; detached.
    weights : Tensor, shape (N, T, K)
        ``alpha[n, t, k]``: the spatial mean of ``d y[n, targets[n, t]] / d A[n, k]``; detached.
    scores : Tensor, shape (N, C)
        The raw class scores of the forward pass (eval mode); detached.
    """

    activations: Tensor
    weights: Tensor
    scores: Tensor


# ----------------------------------------------------------------------------------------------
# Public functions
# ----------------------------------------------------------------------------------------------
def grad_cam(
    model: nn.Module,
    images: Tensor,
    targets: int | Tensor | Sequence[Sequence[int]],
    layer: nn.Module | str,
    *,
    convention: ConventionName = "post_relu",
    size: tuple[int, int] | None = None,
) -> Tensor:
    """Grad-CAM maps of several classes per image, from a single forward pass.

    Parameters
    ----------
    model : nn.Module
        A classifier mapping images (N, 3, H, W) to raw class scores (N, C).
    images : Tensor, shape (N, 3, H, W)
        Preprocessed images, on the model's device.
    targets : int or LongTensor of shape (N, T)
        The class indices: one int for every image (T = 1), or ``T`` classes per image.
    layer : nn.Module or str
        The layer whose output is ``A`` (N, K, h, w): a submodule of ``model`` or its dotted name
        in ``model.named_modules()``. It must run exactly once per forward pass.
    convention : {"post_relu", "pre_relu", "mixed"}
        Which ``A`` and which gradient when the model modifies the layer's output in place (see
        the module docstring). Irrelevant for other layers.
    size : (int, int), optional
        Upsample the maps bilinearly (``align_corners=False``) to this (height, width).

    Returns
    -------
    Tensor, shape (N, T, h, w), or (N, T, *size) when ``size`` is given
        ``L[n, t] = ReLU(sum_k alpha[n, t, k] * A[n, k])``, after the final ReLU and before any
        normalisation; detached, on the images' device, in their dtype.
    """
    parts = grad_cam_parts(model, images, targets, layer, convention=convention)
    maps = F.relu(torch.einsum("ntk,nkhw->nthw", parts.weights, parts.activations))
    if size is not None:
        maps = F.interpolate(maps, size=tuple(size), mode="bilinear", align_corners=False)
    return maps


def normalize_maps(maps: Tensor) -> Tensor:
    """Min-max normalise each map over its last two dimensions.

    Parameters
    ----------
    maps : Tensor, shape (..., h, w)

    Returns
    -------
    Tensor, same shape
        ``(m - min m) / (max m - min m)`` per map, in [0, 1]. A constant map becomes zeros
        (never NaN).
    """
    low = maps.amin(dim=(-2, -1), keepdim=True)
    span = maps.amax(dim=(-2, -1), keepdim=True) - low
    return (maps - low) / torch.where(span > 0, span, torch.ones_like(span))


def grad_cam_parts(
    model: nn.Module,
    images: Tensor,
    targets: int | Tensor | Sequence[Sequence[int]],
    layer: nn.Module | str,
    *,
    convention: ConventionName = "post_relu",
) -> GradCAMParts:
    """Activations ``A``, channel weights ``alpha`` and class scores, from one forward pass.

    Same parameters as :func:`grad_cam`. The weights are

    ``alpha[n, t, k] = (1 / hw) * sum_ij d y[n, targets[n, t]] / d A[n, k, i, j]``

    where ``y`` are the raw scores (N, C) and ``A`` follows ``convention``.

    Returns
    -------
    GradCAMParts
        ``activations`` (N, K, h, w), ``weights`` (N, T, K), ``scores`` (N, C).
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, not {convention!r}")
    if not isinstance(images, Tensor) or images.ndim != 4:
        raise ValueError(f"images must be a tensor of shape (N, 3, H, W), not {_describe(images)}")
    module = resolve_layer(model, layer)

    tap = _LayerTap()
    handle = module.register_forward_hook(tap)
    training_flags = [(m, m.training) for m in model.modules()]
    grad_was_enabled = torch.is_grad_enabled()
    try:
        model.eval()
        with torch.inference_mode(False):  # autograd must work even if the caller disabled it
            target_table = _target_table(targets, images.shape[0], images.device)
            torch.set_grad_enabled(False)  # the hook switches autograd on at the layer
            scores = model(images)
            _check_run(tap, scores, images.shape[0], module)
            if int(target_table.min()) < 0 or int(target_table.max()) >= scores.shape[1]:
                raise ValueError(
                    f"targets must lie in [0, {scores.shape[1]}), got values in "
                    f"[{int(target_table.min())}, {int(target_table.max())}]"
                )
            chosen = _CONVENTIONS[convention]
            activations, wrt = getattr(tap, chosen.activations), getattr(tap, chosen.gradient)
            gradients = _target_gradients(scores, wrt, target_table)  # (T, N, K, h, w)
    finally:
        handle.remove()
        torch.set_grad_enabled(grad_was_enabled)
        for submodule, flag in training_flags:
            submodule.training = flag

    weights = gradients.mean(dim=(-2, -1)).transpose(0, 1)  # (N, T, K)
    return GradCAMParts(activations.detach(), weights.detach(), scores.detach())


def resolve_layer(model: nn.Module, layer: nn.Module | str) -> nn.Module:
    """The submodule ``layer`` of ``model``, given as a module or a dotted name.

    Raises
    ------
    ValueError
        When the name or the module is not part of ``model``.
    """
    modules = dict(model.named_modules())
    if isinstance(layer, str):
        if layer not in modules:
            close = [name for name in modules if name and (layer in name or name in layer)][:5]
            hint = f"; similar names: {close}" if close else ""
            raise ValueError(f"the model has no submodule named {layer!r}{hint}")
        return modules[layer]
    if isinstance(layer, nn.Module):
        if not any(module is layer for module in modules.values()):
            raise ValueError(f"the layer {type(layer).__name__} is not a submodule of the model")
        return layer
    raise TypeError(f"layer must be an nn.Module or a dotted name, not {type(layer).__name__}")


# ----------------------------------------------------------------------------------------------
# Internals
# ----------------------------------------------------------------------------------------------
class _LayerTap:
    """Forward hook that turns the layer's output into the start of a fresh autograd graph.

    Attributes after a forward pass
    -------------------------------
    returned : Tensor, shape (N, K, h, w)
        A leaf requiring grad that holds the value the layer returned.
    consumed : Tensor, same shape
        ``returned.clone()``, the tensor handed on to the model in place of the output. It holds,
        once the forward pass is over, whatever the model made of it (e.g. rectified in place).
    calls : int
        How many times the layer ran.
    """

    def __init__(self) -> None:
        self.calls = 0
        self.returned: Tensor | None = None
        self.consumed: Tensor | None = None

    def __call__(self, module: nn.Module, inputs: tuple, output: object) -> Tensor | None:
        self.calls += 1
        if self.calls > 1:
            return None  # reported after the forward pass
        if not isinstance(output, Tensor) or output.ndim != 4:
            raise ValueError(
                f"the chosen layer must return activations of shape (N, K, h, w), "
                f"not {_describe(output)}"
            )
        torch.set_grad_enabled(True)
        # A copy of its own: no other alias of the output (an in-place layer's input, say) can
        # change it behind our back, and it is a normal tensor even under inference mode.
        self.returned = output.detach().clone().requires_grad_(True)
        self.consumed = self.returned.clone()
        return self.consumed


def _check_run(tap: _LayerTap, scores: object, batch: int, module: nn.Module) -> None:
    """Complain clearly when the forward pass did not go through the layer exactly once."""
    if tap.calls == 0:
        raise ValueError(f"the layer {type(module).__name__} did not run during the forward pass")
    if tap.calls > 1:
        raise ValueError(
            f"the layer {type(module).__name__} ran {tap.calls} times in one forward pass; "
            "choose a layer that runs once"
        )
    if not isinstance(scores, Tensor) or scores.ndim != 2 or scores.shape[0] != batch:
        raise ValueError(f"the model must return class scores of shape (N, C), not {_describe(scores)}")


def _target_table(targets: int | Tensor | Sequence[Sequence[int]], batch: int, device: torch.device) -> Tensor:
    """Targets as a LongTensor of shape (N, T) on ``device``."""
    if isinstance(targets, bool):
        raise TypeError("targets must be an int or an integer tensor of shape (N, T), not a bool")
    if isinstance(targets, int):
        return torch.full((batch, 1), targets, dtype=torch.long, device=device)
    table = torch.as_tensor(targets, device=device)
    if table.is_floating_point() or table.is_complex() or table.dtype == torch.bool:
        raise TypeError(f"targets must hold integers, not {table.dtype}")
    if table.ndim != 2 or table.shape[0] != batch or table.shape[1] == 0:
        raise ValueError(f"targets must have shape (N, T) = ({batch}, T >= 1), not {tuple(table.shape)}")
    return table.long().clone()  # a normal tensor, even if ``targets`` came from inference mode


def _target_gradients(scores: Tensor, wrt: Tensor, target_table: Tensor) -> Tensor:
    """Gradients of the target scores with respect to ``wrt``, from one forward graph.

    Parameters
    ----------
    scores : Tensor, shape (N, C)
    wrt : Tensor, shape (N, K, h, w)
    target_table : LongTensor, shape (N, T)

    Returns
    -------
    Tensor, shape (T, N, K, h, w)
        ``out[t, n] = d scores[n, target_table[n, t]] / d wrt[n]``.

    Notes
    -----
    In eval mode the images of a batch are independent, so the gradient of
    ``sum_n scores[n, target_table[n, t]]`` with respect to ``wrt[n]`` is the gradient of image
    ``n``'s own score. Each target rank ``t`` is one backward pass over the (short) graph between
    the layer and the scores, which is kept between passes. On the CPU this loop was faster than
    one vectorised pass (``is_grads_batched=True``) when the graph holds convolutions, and as fast
    otherwise (``benchmarks/reference.py`` times the whole).
    """
    n_targets = target_table.shape[1]
    if not scores.requires_grad:  # the scores do not depend on the layer at all
        return wrt.new_zeros((n_targets, *wrt.shape))
    gradients = []
    for rank in range(n_targets):
        chosen = scores.gather(1, target_table[:, rank : rank + 1]).sum()
        (gradient,) = torch.autograd.grad(
            chosen, wrt, retain_graph=rank < n_targets - 1, allow_unused=True
        )
        gradients.append(torch.zeros_like(wrt) if gradient is None else gradient)
    return torch.stack(gradients)


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return f"a {type(value).__name__}"
