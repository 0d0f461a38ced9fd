"""The answer key: reference versions of the seven graded functions of TP2.

The judge (``autograder_tests/``) computes every expected value with these functions, on its own
copy of the model; they never travel to the worker that runs a student's code. The maps
themselves come from :mod:`gradcam_reference` (``solutions/gradcam_reference.py``), the one
reference Grad-CAM; this module adds what a notebook function needs around it (a batch of one
image, the upsampling and the normalisation, the class indices, the figure) and, for the test of
the hooks, :func:`capture`, which records a layer's activations and gradients under each of the
three conventions of :mod:`gradcam_reference`.

Signatures and shapes are those of the notebook (``docs/design.md``):

1. ``register_gradcam_hooks(layer) -> (store, handles)``
2. ``channel_weights(gradients)``: (N, K, h, w) -> (N, K)
3. ``weighted_cam(activations, weights)``: (N, K, h, w), (N, K) -> (N, h, w)
4. ``upsample_normalize(cam, size=(224, 224))``: (N, h, w) -> (N, H, W) in [0, 1]
5. ``grad_cam(model, image, class_idx, layer)``: (1, 3, H, W) -> (H, W) in [0, 1]
6. ``top_and_least(scores, k=3)`` -> k + 1 ints
7. ``show_grad_cam(image, model, layer, class_names)`` -> Figure with 4 panels
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradcam_kit.contract import CONVENTIONS as _CONVENTIONS
from gradcam_kit.course import load_module_from

reference = load_module_from(Path(__file__).resolve().with_name("gradcam_reference.py"), "gradcam_reference")

CONVENTIONS: tuple[str, ...] = tuple(reference.CONVENTIONS)
"""``("pre_relu", "post_relu", "mixed")``: see :data:`gradcam_kit.contract.CONVENTIONS`."""

PAIRS: dict[str, tuple[str, str]] = {name: (c.activations, f"grad_{c.gradient}") for name, c in _CONVENTIONS.items()}
"""For each convention, the :class:`Capture` fields it takes as ``(activations, gradients)``
(``gradcam_kit.contract.CONVENTIONS`` says which value each takes)."""

__all__ = [
    "CONVENTIONS",
    "PAIRS",
    "Capture",
    "capture",
    "channel_weights",
    "grad_cam",
    "grad_cam_maps",
    "register_gradcam_hooks",
    "show_grad_cam",
    "top_and_least",
    "upsample_normalize",
    "weighted_cam",
]


# ----------------------------------------------------------------------------------------------
# 1. hooks
# ----------------------------------------------------------------------------------------------
def register_gradcam_hooks(layer: nn.Module) -> tuple[dict[str, Tensor], list]:
    """Record ``layer``'s output (as returned, i.e. pre-ReLU in DenseNet) and its gradient.

    Returns
    -------
    store : dict
        After a forward and a backward pass: ``"activations"`` and ``"gradients"``, both
        (N, K, h, w), detached.
    handles : list of RemovableHandle
        The forward hook's handle (the tensor hook dies with the graph).
    """
    store: dict[str, Tensor] = {}

    def on_forward(module: nn.Module, inputs: tuple, output: Tensor) -> None:
        store["activations"] = output.detach().clone()
        if output.requires_grad:
            output.register_hook(lambda grad: store.__setitem__("gradients", grad.detach().clone()))

    return store, [layer.register_forward_hook(on_forward)]


class Capture(NamedTuple):
    """What a layer produced and received, for one image and one class.

    Attributes
    ----------
    returned : Tensor, shape (1, K, h, w)
        The output as the layer returned it.
    consumed : Tensor, shape (1, K, h, w)
        The same tensor once the forward pass is over (rectified in place after DenseNet's
        ``features``; equal to ``returned`` elsewhere).
    grad_returned : Tensor, shape (1, K, h, w)
        ``d score / d returned``: the gradient through any in-place change.
    grad_consumed : Tensor, shape (1, K, h, w)
        ``d score / d consumed``: the gradient with respect to the final value.
    scores : Tensor, shape (1, C)
        The raw class scores.
    """

    returned: Tensor
    consumed: Tensor
    grad_returned: Tensor
    grad_consumed: Tensor
    scores: Tensor

    def pair(self, convention: str) -> tuple[Tensor, Tensor]:
        """``(activations, gradients)`` under ``convention`` (see :data:`PAIRS`)."""
        if convention not in PAIRS:
            raise ValueError(f"unknown convention {convention!r}")
        activations, gradients = PAIRS[convention]
        return getattr(self, activations), getattr(self, gradients)


def capture(model: nn.Module, image: Tensor, class_idx: int, layer: nn.Module | str) -> Capture:
    """Activations and gradients of ``layer`` for the raw score of ``class_idx``.

    The same split as :mod:`gradcam_reference`: a forward hook replaces the layer's output ``O``
    by ``Q = P.clone()``, where ``P = O.detach()`` is a leaf; the model goes on with ``Q`` (and
    may modify it in place). One backward pass gives the gradients with respect to ``P`` (the
    returned value) and ``Q`` (the consumed value). The model is left in eval mode, without hook.

    Parameters
    ----------
    model : nn.Module
    image : Tensor, shape (1, 3, H, W)
    class_idx : int
    layer : nn.Module or str
        A submodule of ``model`` that runs once per forward pass, or its dotted name.
    """
    module = reference.resolve_layer(model, layer)
    taps: list[tuple[Tensor, Tensor]] = []

    def tap(mod: nn.Module, inputs: tuple, output: Tensor) -> Tensor:
        returned = output.detach().clone().requires_grad_(True)
        consumed = returned.clone()
        taps.append((returned, consumed))
        return consumed

    model.eval()
    handle = module.register_forward_hook(tap)
    try:
        with torch.enable_grad():
            scores = model(image)
            if len(taps) != 1:
                raise ValueError(f"the layer ran {len(taps)} times in one forward pass")
            returned, consumed = taps[0]
            grad_returned, grad_consumed = torch.autograd.grad(scores[0, int(class_idx)], [returned, consumed])
    finally:
        handle.remove()
    return Capture(returned.detach(), consumed.detach(), grad_returned, grad_consumed, scores.detach())


# ----------------------------------------------------------------------------------------------
# 2.-4. the building blocks
# ----------------------------------------------------------------------------------------------
def channel_weights(gradients: Tensor) -> Tensor:
    """(N, K, h, w) -> (N, K): the spatial mean."""
    return gradients.mean(dim=(2, 3))


def weighted_cam(activations: Tensor, weights: Tensor) -> Tensor:
    """(N, K, h, w), (N, K) -> (N, h, w): ``ReLU(sum_k weights[n, k] * activations[n, k])``."""
    return F.relu(torch.einsum("nk,nkhw->nhw", weights, activations))


def upsample_normalize(cam: Tensor, size: Sequence[int] | int = (224, 224)) -> Tensor:
    """(N, h, w) -> (N, H, W): bilinear (``align_corners=False``), then per-map min-max to [0, 1].

    A constant input map becomes zeros: interpolation may add rounding noise to a constant map,
    so constancy is decided on the input.
    """
    size = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
    cam = cam.float() if not cam.is_floating_point() else cam
    maps = F.interpolate(cam[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    constant = (cam.amax(dim=(1, 2)) == cam.amin(dim=(1, 2)))[:, None, None]
    return torch.where(constant, torch.zeros_like(maps), reference.normalize_maps(maps))


# ----------------------------------------------------------------------------------------------
# 5. grad_cam
# ----------------------------------------------------------------------------------------------
def grad_cam_maps(
    model: nn.Module,
    image: Tensor,
    class_idx: int,
    layer: nn.Module | str,
    *,
    conventions: Sequence[str] = CONVENTIONS,
) -> dict[str, Tensor]:
    """The normalised Grad-CAM map of one image under each convention.

    Returns
    -------
    dict
        ``{convention: Tensor of shape (H, W)}``, each map upsampled to the image size and min-max
        normalised to [0, 1], detached, on the CPU.
    """
    size = tuple(image.shape[-2:])
    maps = {}
    for convention in conventions:
        raw = reference.grad_cam(model, image, int(class_idx), layer, convention=convention, size=size)
        maps[convention] = reference.normalize_maps(raw[0, 0]).detach().cpu()
    return maps


def grad_cam(model: nn.Module, image: Tensor, class_idx: int, layer: nn.Module | str) -> Tensor:
    """(1, 3, H, W) -> (H, W) in [0, 1]: the pre-ReLU convention, as the notebook's recipe."""
    return grad_cam_maps(model, image, class_idx, layer, conventions=("pre_relu",))["pre_relu"]


# ----------------------------------------------------------------------------------------------
# 6.-7. classes and the figure
# ----------------------------------------------------------------------------------------------
def top_and_least(scores: Tensor, k: int = 3) -> list[int]:
    """The ``k`` best classes, best first, then the worst one (ties: the lowest index first)."""
    flat = torch.as_tensor(scores).detach().reshape(-1).cpu()
    order = torch.argsort(-flat, stable=True)  # descending, ties in index order
    return [int(i) for i in order[:k]] + [int(torch.argsort(flat, stable=True)[0])]


def panel_classes(model: nn.Module, image: Tensor) -> tuple[list[int], Tensor]:
    """The four classes of :func:`show_grad_cam`, and the raw scores (C,) they come from."""
    model.eval()
    with torch.no_grad():
        scores = model(image)[0].detach().cpu()
    return top_and_least(scores), scores


def show_grad_cam(image: Tensor, model: nn.Module, layer: nn.Module, class_names: Sequence[str]):
    """The figure of the notebook: four panels (top 1-3, least likely), titled with name and score."""
    from matplotlib.figure import Figure

    from gradcam_kit.course import Course

    show_cam_on_image: Callable = Course.locate(Path(__file__).resolve().parents[1]).tp2_utils.show_cam_on_image
    image = image if image.dim() == 4 else image.unsqueeze(0)
    classes, scores = panel_classes(model, image)
    labels = ["top 1", "top 2", "top 3", "least likely"]
    figure = Figure(figsize=(16, 4.6))
    for ax, label, idx in zip(figure.subplots(1, 4), labels, classes, strict=False):
        show_cam_on_image(ax, image[0], grad_cam(model, image, idx, layer),
                          title=f"{label}: {class_names[idx]}\nscore {scores[idx].item():.2f}")
    return figure
