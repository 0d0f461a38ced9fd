"""The buggy samples of the corpus: a few small text replacements in the solution code of one cell.

Each :class:`Mutation` says which tests it must fail, and only those: a bug is charged once. The
rest of the corpus (correct variants, whole-cell rewrites) is :mod:`gradcam_kit.grading.sample_corpus`;
:mod:`gradcam_kit.grading.samples` turns them all into notebooks.
"""

from __future__ import annotations

from dataclasses import dataclass

from gradcam_kit.contract import test_name

__all__ = ["MUTATIONS", "Mutation", "failing"]


@dataclass(frozen=True)
class Mutation:
    """A bug put into the solution: text replacements in the solution code of one cell.

    Attributes
    ----------
    name : str
        A short identifier (also the sample's file name).
    function : str
        The ``grade_id`` of the cell edited.
    edits : tuple of (old, new)
        Each ``old`` must occur exactly once in the cell's solution code.
    fails : frozenset of str
        The tests this submission must fail; it must pass all the others.
    description : str
        The bug, in one line.
    """

    name: str
    function: str
    edits: tuple[tuple[str, str], ...]
    fails: frozenset[str]
    description: str


def failing(*names: str) -> frozenset[str]:
    """The test cells of these graded functions (what a sample must fail)."""
    return frozenset(map(test_name, names))


_FULL_BACKWARD_HOOK = (
    ("    def keep_gradient(grad):\n        store[\"gradients\"] = grad.detach().clone()\n",
     "    def keep_gradient(module, grad_input, grad_output):\n"
     "        store[\"gradients\"] = grad_output[0].detach().clone()\n"),
    ("        if output.requires_grad:\n", ""),
    ("            # Registered before the in-place ReLU, this hook receives the gradient with\n"
     "            # respect to the value that the layer produced.\n"
     "            output.register_hook(keep_gradient)\n", ""),
    ("    handles = [layer.register_forward_hook(on_forward)]\n",
     "    handles = [layer.register_forward_hook(on_forward),\n"
     "               layer.register_full_backward_hook(keep_gradient)]\n"),
)
"""A module backward hook instead of a tensor hook (shared by two mutations)."""

MUTATIONS: tuple[Mutation, ...] = (
    # --- register_gradcam_hooks -----------------------------------------------------------------
    Mutation(
        "full_backward_hook", "register_gradcam_hooks", _FULL_BACKWARD_HOOK,
        failing("register_gradcam_hooks"),
        "the gradient comes from a module backward hook, which fails on `features` (in-place ReLU)",
    ),
    Mutation(
        "full_backward_hook_grad_input", "register_gradcam_hooks",
        tuple((old, new.replace("grad_output[0]", "grad_input[0]")) for old, new in _FULL_BACKWARD_HOOK),
        failing("register_gradcam_hooks"),
        "a module backward hook that keeps the gradient of the layer's input: it fails at `features` "
        "(in-place ReLU), and at other layers `grad_cam` then fails on a shape; `grad_cam` and `show_grad_cam`, "
        "right in themselves, are checked with the grader's own hooks (a bug is charged once)",
    ),
    Mutation(
        "hooks_store_input", "register_gradcam_hooks",
        (('store["activations"] = output.detach().clone()', 'store["activations"] = inputs[0].detach().clone()'),),
        failing("register_gradcam_hooks"),
        "the forward hook keeps the layer's input instead of its output; `grad_cam` and `show_grad_cam` then "
        "fail, and are checked with the grader's own hooks (a bug is charged once)",
    ),
    # --- channel_weights -----------------------------------------------------------------------
    Mutation(
        "weights_sum", "channel_weights",
        (("gradients.mean(dim=(2, 3))", "gradients.sum(dim=(2, 3))"),),
        failing("channel_weights"),
        "the spatial sum instead of the mean (the maps are the same once normalised)",
    ),
    Mutation(
        "weights_syntax_error", "channel_weights",
        (("    return gradients.mean(dim=(2, 3))\n", "    return gradients.mean(dim=(2, 3)\n"),),
        failing("channel_weights"),
        "a syntax error in the cell: `channel_weights` is not defined at all; the functions that call it are "
        "checked with the grader's own `channel_weights` in its place (a bug is charged once)",
    ),
    Mutation(
        "weights_wrong_axis", "channel_weights",
        (("gradients.mean(dim=(2, 3))", "gradients.mean(dim=(1, 2))"),),
        failing("channel_weights"),
        "the mean over the wrong axes (channels and rows): (N, w) instead of (N, K)",
    ),
    # --- weighted_cam --------------------------------------------------------------------------
    Mutation(
        "no_relu", "weighted_cam",
        (("    return F.relu(combined)\n", "    return combined\n"),),
        failing("weighted_cam"),
        "no ReLU after the weighted sum",
    ),
    Mutation(
        "cam_mean_over_channels", "weighted_cam",
        (("* activations).sum(dim=1)", "* activations).mean(dim=1)"),),
        failing("weighted_cam"),
        "the mean over the channels instead of the sum",
    ),
    # --- upsample_normalize --------------------------------------------------------------------
    Mutation(
        "no_upsampling", "upsample_normalize",
        (
            ('    maps = F.interpolate(cam.unsqueeze(1), size=size, mode="bilinear", align_corners=False)\n',
             "    maps = cam.unsqueeze(1)\n"),
            (".reshape(cam.shape[0], *size)", ".reshape(cam.shape)"),
        ),
        failing("upsample_normalize"),
        "no upsampling: the maps keep the layer's resolution",
    ),
    Mutation(
        "no_normalization", "upsample_normalize",
        (("    return torch.where(varies, scaled, torch.zeros_like(scaled)).reshape(cam.shape[0], *size)\n",
          "    return maps.reshape(cam.shape[0], *size)\n"),),
        failing("upsample_normalize"),
        "no min-max normalisation",
    ),
    Mutation(
        "align_corners_true", "upsample_normalize",
        (('mode="bilinear", align_corners=False)', 'mode="bilinear", align_corners=True)'),),
        failing("upsample_normalize"),
        "bilinear with align_corners=True",
    ),
    Mutation(
        "nearest_upsampling", "upsample_normalize",
        (('mode="bilinear", align_corners=False)', 'mode="nearest")'),),
        failing("upsample_normalize"),
        "nearest-neighbour upsampling",
    ),
    Mutation(
        "batch_normalization", "upsample_normalize",
        (
            ("    low = flat.min(dim=1, keepdim=True).values\n", "    low = flat.min()\n"),
            ("    span = flat.max(dim=1, keepdim=True).values - low\n", "    span = flat.max() - low\n"),
        ),
        failing("upsample_normalize"),
        "one min-max over the whole batch instead of one per map",
    ),
    # --- grad_cam ------------------------------------------------------------------------------
    Mutation(
        "softmax_target", "grad_cam",
        (("            scores[0, int(class_idx)].backward()\n",
          "            scores.softmax(dim=1)[0, int(class_idx)].backward()\n"),),
        failing("grad_cam"),
        "back-propagates the softmax probability instead of the raw score",
    ),
    Mutation(
        "argmax_class", "grad_cam",
        (("            scores[0, int(class_idx)].backward()\n",
          "            scores[0, int(scores.argmax())].backward()\n"),),
        failing("grad_cam"),
        "explains the predicted class instead of `class_idx`",
    ),
    Mutation(
        "hooks_never_removed", "grad_cam",
        (("        for handle in handles:\n            handle.remove()\n", ""),),
        failing("grad_cam"),
        "never removes its hooks",
    ),
    Mutation(
        "hooks_kept_on_error", "grad_cam",
        (
            ("    finally:\n        for handle in handles:\n            handle.remove()\n"
             "        model.zero_grad(set_to_none=True)\n",
             "    except Exception:\n        raise\n    for handle in handles:\n        handle.remove()\n"
             "    model.zero_grad(set_to_none=True)\n"),
        ),
        failing("grad_cam"),
        "removes its hooks only when nothing fails (no try/finally)",
    ),
    Mutation(
        "wrong_layer", "grad_cam",
        (("register_gradcam_hooks(layer)", "register_gradcam_hooks(model.features)"),),
        failing("grad_cam"),
        "always hooks `model.features`, whatever `layer` is",
    ),
    Mutation(
        "train_mode", "grad_cam",
        (("    model.eval()\n    device", "    model.train()\n    device"),),
        failing("grad_cam"),
        "puts the model in training mode to get gradients (batch norm then uses the batch statistics)",
    ),
    # --- top_and_least -------------------------------------------------------------------------
    Mutation(
        "topk_ascending", "top_and_least",
        (("torch.topk(scores, k).indices.tolist()", "scores.argsort()[-k:].tolist()"),),
        failing("top_and_least"),
        "the k best classes in increasing order of score",
    ),
    Mutation(
        "least_is_best", "top_and_least",
        (("int(scores.argmin())", "int(scores.argmax())"),),
        failing("top_and_least"),
        "the 'least likely' class is the most likely one",
    ),
    Mutation(
        "least_class_missing", "top_and_least",
        (("    return [int(idx) for idx in best] + [least]\n", "    return [int(idx) for idx in best]\n"),),
        failing("top_and_least"),
        "forgets the least likely class; `show_grad_cam`, right in itself, then draws three panels, and is "
        "checked with the grader's own `top_and_least` (a bug is charged once)",
    ),
    # --- show_grad_cam -------------------------------------------------------------------------
    Mutation(
        "panels_reversed", "show_grad_cam",
        (("    classes = top_and_least(scores)\n", "    classes = top_and_least(scores)[::-1]\n"),),
        failing("show_grad_cam"),
        "the panels in the reverse order (least likely first)",
    ),
    Mutation(
        "three_panels", "show_grad_cam",
        (("    classes = top_and_least(scores)\n", "    classes = top_and_least(scores)[:3]\n"),),
        failing("show_grad_cam"),
        "forgets the least likely class",
    ),
    Mutation(
        "same_heatmap_everywhere", "show_grad_cam",
        (("        heatmap = grad_cam(model, image, idx, layer)\n",
          "        heatmap = grad_cam(model, image, classes[0], layer)\n"),),
        failing("show_grad_cam"),
        "every panel shows the heatmap of the most likely class (the titles are right)",
    ),
)
"""The buggy submissions; each must lose exactly the points of ``fails``."""
