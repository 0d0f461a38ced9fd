"""Which mutants of the answer key are equivalent, and what the judge made of each mutant.

See :mod:`gradcam_kit.grading.mutator`.
"""

from __future__ import annotations

from typing import Iterable

from gradcam_kit.contract import test_name
from gradcam_kit.grading.mutator import Mutant

__all__ = ["EQUIVALENT", "VERDICTS", "judged"]

_NO_GRAPH = "the hooks store detached tensors, so the map never has a graph to detach from"
_FRESH_GRADIENT = ("the map reads only the gradient of the layer's output, which each backward pass gives "
                   "afresh to the tensor hook; the parameters' gradients never enter it")
_EVAL_GIVEN = ("the grader, as the notebook, hands the function a model in eval mode (`grad_cam` is checked to "
               "leave it so); a model handed over in training mode would tell them apart")
_NOT_GRADED = "not graded: "

EQUIVALENT: dict[str, str] = {
    # register_gradcam_hooks
    "register_gradcam_hooks: if output.requires_grad:; output.register_hook(keep_gradient) -> "
    "output.register_hook(keep_gradient)":
        "the hooks are used with gradients on; `register_hook` fails on an output without grad only in a "
        "forward pass under `torch.no_grad()` with the hooks attached, which the specification does not ask for",
    "register_gradcam_hooks: grad.detach().clone() -> grad.detach() in `store['gradients'] = grad.detach().clone()`":
        "nothing modifies the gradient handed to a tensor hook afterwards, so the copy changes nothing",
    "register_gradcam_hooks: grad.detach() -> grad in `store['gradients'] = grad.detach().clone()`":
        "a plain backward pass gives gradients without a graph (create_graph=False): detaching them changes nothing",
    "register_gradcam_hooks: output.detach() -> output in `store['activations'] = output.detach().clone()`":
        "the same values, still attached to the graph: the notebook asks for the layer's output, not for a "
        "detached copy, and `grad_cam` detaches the map it returns",
    "register_gradcam_hooks: output.detach().clone() -> output.detach() in "
    "`store['activations'] = output.detach().clone()`":
        "without the copy, DenseNet's in-place ReLU rectifies the stored output at `features`: the 'mixed' "
        "convention, which the judge accepts by design; elsewhere nothing changes the output",
    # channel_weights
    "channel_weights: dim=(2, 3) -> dim=(3, 2) in `return gradients.mean(dim=(2, 3))`":
        "the same two axes in another order",
    "channel_weights: dim=(2, 3) -> dim=(-2, -1) in `return gradients.mean(dim=(2, 3))`":
        "the same two axes, counted from the end",
    # weighted_cam
    "weighted_cam: F.relu(combined) -> combined.clamp(min=0) in `return F.relu(combined)`":
        "`clamp(min=0)` is the ReLU",
    # upsample_normalize
    "upsample_normalize: F.interpolate(cam.unsqueeze(1), size=size, mode='bilinear', align_corners=False) -> "
    "F.interpolate(cam.unsqueeze(1), size=size, mode='bilinear') in "
    "`maps = F.interpolate(cam.unsqueeze(1), size=size, mode='bilinear', align_corners=False)`":
        "`align_corners` defaults to False for bilinear interpolation",
    "upsample_normalize: if not cam.is_floating_point():; cam = cam.float() -> cam = cam.float()":
        "the maps are float32 (the worker gives every array as a float32 tensor, as `grad_cam` makes them): "
        "`.float()` changes nothing",
    "upsample_normalize: torch.where(varies, span, torch.ones_like(span)) -> span in "
    "`scaled = (flat - low) / torch.where(varies, span, torch.ones_like(span))`":
        "the quotient of a constant map (0 / 0) is discarded by the final `torch.where(varies, scaled, zeros)`",
    "upsample_normalize: torch.where(varies, scaled, torch.zeros_like(scaled)) -> scaled in "
    "`return torch.where(varies, scaled, torch.zeros_like(scaled)).reshape(cam.shape[0], *size)`":
        "a constant map is then divided by 1: what is left is the interpolation's rounding (below 1e-6), zero to "
        "float32 precision (the judge allows 1e-4)",
    # grad_cam
    "grad_cam: heatmap[0].detach().cpu() -> heatmap[0].detach() in `return heatmap[0].detach().cpu()`":
        "grading runs on the CPU, where the map already is (on a GPU the judge's device check would tell them apart)",
    "grad_cam: heatmap[0].detach() -> heatmap[0] in `return heatmap[0].detach().cpu()`": _NO_GRAPH,
    "grad_cam: set_to_none=True -> set_to_none=False in `model.zero_grad(set_to_none=True)`": _FRESH_GRADIENT,
    "grad_cam: model.zero_grad(set_to_none=True) -> model.zero_grad() in `model.zero_grad(set_to_none=True)`":
        _FRESH_GRADIENT,
    "grad_cam: model.zero_grad(set_to_none=True) -> (deleted)": _FRESH_GRADIENT,
    "grad_cam: model.eval() -> (deleted)": _EVAL_GIVEN,
    # top_and_least
    "top_and_least: torch.as_tensor(scores).detach() -> torch.as_tensor(scores) in "
    "`scores = torch.as_tensor(scores).detach().reshape(-1)`":
        "`topk`, `argmin` and `.tolist()` give the same plain indices for scores with or without a graph",
    # show_grad_cam
    "show_grad_cam: plt.subplots(1, len(classes), figsize=(4 * len(classes), 4.6), layout='constrained') -> "
    "plt.subplots(1, len(classes), layout='constrained') in "
    "`fig, axes = plt.subplots(1, len(classes), figsize=(4 * len(classes), 4.6), layout='constrained')`":
        _NOT_GRADED + "the figure's size",
    "show_grad_cam: plt.subplots(1, len(classes), figsize=(4 * len(classes), 4.6), layout='constrained') -> "
    "plt.subplots(1, len(classes), figsize=(4 * len(classes), 4.6)) in "
    "`fig, axes = plt.subplots(1, len(classes), figsize=(4 * len(classes), 4.6), layout='constrained')`":
        _NOT_GRADED + "the figure's layout",
    "show_grad_cam: idx -> idx + 1 in `title = f'{label}: {class_names[idx]}\\nscore {scores[idx].item():.2f}'` "
    "(occurrence 2)":
        _NOT_GRADED + "the score printed in a title (students may print the raw score or its probability, in any "
        "format); the class name is graded",
    "show_grad_cam: idx -> idx - 1 in `title = f'{label}: {class_names[idx]}\\nscore {scores[idx].item():.2f}'` "
    "(occurrence 2)":
        _NOT_GRADED + "the score printed in a title (students may print the raw score or its probability, in any "
        "format); the class name is graded",
    "show_grad_cam: [f'top {rank}' for rank in range(1, len(classes))] -> "
    "[f'top {rank}' for rank in range(1, len(classes))][::-1] in "
    "`labels = [f'top {rank}' for rank in range(1, len(classes))] + ['least probable']`":
        _NOT_GRADED + "the words before the class name in a title (the class names and their order are graded)",
    "show_grad_cam: model.eval() -> (deleted)": _EVAL_GIVEN,
}
"""Mutants that behave as the answer key does on every input the specification allows (or differ
only in what is not graded, said so), by :attr:`~gradcam_kit.grading.mutator.Mutant.key`, with the
reason. They must keep every point."""


VERDICTS = {
    "killed": "loses exactly the points of the function it edits",
    "equivalent": "listed as equivalent, and keeps every point",
    "survived": "keeps every point, and is not listed as equivalent",
    "overcharged": "loses the points of its function and of another one (a bug charged twice)",
    "misplaced": "loses points, but not those of the function it edits",
    "not equivalent": "listed as equivalent, but loses points",
}
"""What the judge made of a mutant; only the first two are as they should be."""


def judged(mutant: Mutant, failed: Iterable[str]) -> str:
    """The verdict (a key of :data:`VERDICTS`) for ``mutant``, whose grading failed the tests ``failed``."""
    failed = set(failed)
    own = test_name(mutant.function)
    if mutant.key in EQUIVALENT:
        return "equivalent" if not failed else "not equivalent"
    if not failed:
        return "survived"
    if failed == {own}:
        return "killed"
    return "overcharged" if own in failed else "misplaced"
