"""Typical bugs in the seven functions, which the visible tests and the judge must both report.

Each :class:`Bug` is one wrong function cell, in one of the families of mistakes that the issue
lists (:data:`FAMILIES`). ``tests/test_visible_tests.py`` measures the rate at which the notebook's
visible tests report them before the student submits (the target is 80%) and checks that the
judge rejects every one. The correct styles both must accept are :mod:`gradcam_kit.grading.styles`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BUGS", "FAMILIES", "Bug"]


@dataclass(frozen=True)
class Bug:
    """A typical mistake in one function.

    Attributes
    ----------
    name : str
    function : str
        The ``grade_id`` of the cell it replaces.
    source : str
        The whole (wrong) function cell.
    family : str
        One of :data:`FAMILIES`.
    description : str
    """

    name: str
    function: str
    source: str
    family: str
    description: str


FAMILIES = {
    "hooks": "hooks that record the wrong tensor, never record, or fail",
    "mean": "not the mean (sum, max)",
    "axis": "the wrong axis or shape",
    "sign": "the wrong sign",
    "relu": "no ReLU, or the ReLU in the wrong place",
    "normalisation": "no normalisation, the wrong one, or division by zero",
    "interpolation": "the wrong interpolation, or none",
    "target": "the softmax or the wrong class back-propagated",
    "hooks left": "hooks left attached",
    "train mode": "the model left in (or put into) training mode",
    "result": "a result of the wrong shape or kind",
    "classes": "the wrong classes, order or kind of indices",
    "panels": "the wrong panels, titles or maps in the figure",
}
"""The families of typical mistakes (issue "Students", item 3)."""


_HOOKS = '''\
def register_gradcam_hooks(layer):
    store = {{}}

    def forward_hook(module, inputs, output):
{forward}
    return store, {handles}
'''
_TENSOR_HOOK = '''        output.register_hook(lambda grad: store.update(gradients=grad))'''


def _hooks(forward: str, handles: str = "[layer.register_forward_hook(forward_hook)]", extra: str = "") -> str:
    return _HOOKS.format(forward=forward, handles=handles).replace("    return store", extra + "    return store")


def _one_line(function: str, signature: str, body: str) -> str:
    return f"def {function}({signature}):\n" + "".join(f"    {line}\n" for line in body.splitlines())


_GRAD_CAM = '''\
def grad_cam(model, image, class_idx, layer):
    model.eval()
    store, handles = register_gradcam_hooks(layer)
    try:
        scores = model(image)
        {target}.backward()
        cam = weighted_cam(store["activations"], channel_weights(store["gradients"]))
        heatmap = upsample_normalize(cam, size=tuple(image.shape[-2:]))
    finally:
        for handle in handles:
            handle.remove()
    return heatmap[0].detach().cpu()
'''

_UPSAMPLE = '''\
def upsample_normalize(cam, size=(224, 224)):
    maps = F.interpolate(cam[:, None], size=size, {how})[:, 0]
    low = maps.amin(dim=(1, 2), keepdim=True)
    span = maps.amax(dim=(1, 2), keepdim=True) - low
    return (maps - low) / span.clamp(min=1e-12)
'''

_SHOW = '''\
def show_grad_cam(image, model, layer, class_names):
    with torch.no_grad():
        scores = model(image)[0]
    classes = top_and_least(scores)
    fig, axes = plt.subplots(1, {panels}, figsize=(16, 4.6))
    for ax, idx in zip(axes, {order}):
        heatmap = grad_cam(model, image, {mapped}, layer)
        tp2_utils.show_cam_on_image(ax, image[0], heatmap, title=f"{{{title}}}\\nscore {{scores[idx]:.2f}}")
    plt.close(fig)
    return fig
'''


def _show(panels: int = 4, order: str = "classes", mapped: str = "idx", title: str = "class_names[idx]") -> str:
    return _SHOW.format(panels=panels, order=order, mapped=mapped, title=title)


def _bug(name: str, function: str, family: str, description: str, source: str) -> Bug:
    return Bug(name, function, source, family, description)


BUGS: tuple[Bug, ...] = (
    # --- register_gradcam_hooks ----------------------------------------------------------------
    _bug("hooks_keep_the_input", "register_gradcam_hooks", "hooks", "keeps the layer's input, not its output",
         _hooks('        store["activations"] = inputs[0].detach().clone()\n' + _TENSOR_HOOK + "\n")),
    _bug("hooks_no_handles", "register_gradcam_hooks", "hooks left", "returns no handle: the hooks stay forever",
         _hooks('        store["activations"] = output.detach().clone()\n' + _TENSOR_HOOK + "\n",
                handles="[]", extra="    layer.register_forward_hook(forward_hook)\n")),
    _bug("hooks_tensor_hook_on_a_clone", "register_gradcam_hooks", "hooks",
         "the tensor hook is put on a clone, which no gradient reaches",
         _hooks('        kept = output.clone()\n'
                '        store["activations"] = kept.detach()\n'
                '        kept.register_hook(lambda grad: store.update(gradients=grad))\n')),
    _bug("hooks_full_backward_hook", "register_gradcam_hooks", "hooks",
         "a module backward hook, which fails before the in-place ReLU",
         _hooks('        store["activations"] = output.detach().clone()\n',
                handles="[layer.register_forward_hook(forward_hook), layer.register_full_backward_hook(backward_hook)]",
                extra='    def backward_hook(module, grad_input, grad_output):\n'
                      '        store["gradients"] = grad_output[0].detach()\n\n')),
    _bug("hooks_gradient_of_the_input", "register_gradcam_hooks", "hooks",
         "keeps the gradient with respect to the layer's input",
         _hooks('        store["activations"] = output.detach().clone()\n'
                '        inputs[0].register_hook(lambda grad: store.update(gradients=grad))\n')),
    # --- channel_weights -----------------------------------------------------------------------
    _bug("weights_sum", "channel_weights", "mean", "the sum of the gradients, not their mean",
         _one_line("channel_weights", "gradients", "return gradients.sum(dim=(2, 3))")),
    _bug("weights_max", "channel_weights", "mean", "the largest gradient, not the mean",
         _one_line("channel_weights", "gradients", "return gradients.amax(dim=(2, 3))")),
    _bug("weights_over_channels", "channel_weights", "axis", "the mean over the channels",
         _one_line("channel_weights", "gradients", "return gradients.mean(dim=1)")),
    _bug("weights_over_rows_and_channels", "channel_weights", "axis", "the mean over axes 1 and 2",
         _one_line("channel_weights", "gradients", "return gradients.mean(dim=(1, 2))")),
    _bug("weights_keepdim", "channel_weights", "axis", "keeps the spatial dimensions: (N, K, 1, 1)",
         _one_line("channel_weights", "gradients", "return gradients.mean(dim=(2, 3), keepdim=True)")),
    _bug("weights_absolute", "channel_weights", "sign", "the mean of the absolute gradients",
         _one_line("channel_weights", "gradients", "return gradients.abs().mean(dim=(2, 3))")),
    # --- weighted_cam --------------------------------------------------------------------------
    _bug("cam_no_relu", "weighted_cam", "relu", "no ReLU",
         _one_line("weighted_cam", "activations, weights",
                   "return (weights[:, :, None, None] * activations).sum(dim=1)")),
    _bug("cam_relu_per_channel", "weighted_cam", "relu", "the ReLU on each weighted map, before the sum",
         _one_line("weighted_cam", "activations, weights",
                   "return F.relu(weights[:, :, None, None] * activations).sum(dim=1)")),
    _bug("cam_mean_over_channels", "weighted_cam", "mean", "the mean over the channels, not the sum",
         _one_line("weighted_cam", "activations, weights",
                   "return F.relu((weights[:, :, None, None] * activations).mean(dim=1))")),
    _bug("cam_negated", "weighted_cam", "sign", "the ReLU of minus the weighted sum",
         _one_line("weighted_cam", "activations, weights",
                   "return F.relu(-(weights[:, :, None, None] * activations).sum(dim=1))")),
    _bug("cam_first_image_weights", "weighted_cam", "axis", "the weights of the first image for every image",
         _one_line("weighted_cam", "activations, weights",
                   "return F.relu((weights[0, :, None, None] * activations).sum(dim=1))")),
    # --- upsample_normalize --------------------------------------------------------------------
    _bug("upsample_not_normalised", "upsample_normalize", "normalisation", "no min-max scaling",
         _one_line("upsample_normalize", "cam, size=(224, 224)",
                   'return F.interpolate(cam[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]')),
    _bug("upsample_normalised_first", "upsample_normalize", "normalisation", "normalises before upsampling",
         _one_line("upsample_normalize", "cam, size=(224, 224)",
                   "low = cam.amin(dim=(1, 2), keepdim=True)\n"
                   "cam = (cam - low) / (cam.amax(dim=(1, 2), keepdim=True) - low).clamp(min=1e-12)\n"
                   'return F.interpolate(cam[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]')),
    _bug("upsample_whole_batch", "upsample_normalize", "normalisation", "one min-max for the whole batch",
         _one_line("upsample_normalize", "cam, size=(224, 224)",
                   'maps = F.interpolate(cam[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]\n'
                   "return (maps - maps.min()) / (maps.max() - maps.min()).clamp(min=1e-12)")),
    _bug("upsample_divided_by_max", "upsample_normalize", "normalisation", "divides by the maximum only",
         _one_line("upsample_normalize", "cam, size=(224, 224)",
                   'maps = F.interpolate(cam[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]\n'
                   "return maps / maps.amax(dim=(1, 2), keepdim=True).clamp(min=1e-12)")),
    _bug("upsample_nan_for_constant_maps", "upsample_normalize", "normalisation",
         "divides by the range even when it is 0 (NaN)",
         _one_line("upsample_normalize", "cam, size=(224, 224)",
                   'maps = F.interpolate(cam[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]\n'
                   "low = maps.amin(dim=(1, 2), keepdim=True)\n"
                   "return (maps - low) / (maps.amax(dim=(1, 2), keepdim=True) - low)")),
    _bug("upsample_align_corners", "upsample_normalize", "interpolation", "bilinear with align_corners=True",
         _UPSAMPLE.format(how='mode="bilinear", align_corners=True')),
    _bug("upsample_nearest", "upsample_normalize", "interpolation", "nearest-neighbour upsampling",
         _UPSAMPLE.format(how='mode="nearest"')),
    _bug("upsample_bicubic", "upsample_normalize", "interpolation", "bicubic upsampling",
         _UPSAMPLE.format(how='mode="bicubic", align_corners=False')),
    _bug("upsample_ignores_size", "upsample_normalize", "interpolation", "always upsamples to 224x224",
         _UPSAMPLE.format(how='mode="bilinear", align_corners=False').replace("size=size", "size=(224, 224)")),
    _bug("upsample_none", "upsample_normalize", "interpolation", "no upsampling at all",
         _one_line("upsample_normalize", "cam, size=(224, 224)",
                   "low = cam.amin(dim=(1, 2), keepdim=True)\n"
                   "return (cam - low) / (cam.amax(dim=(1, 2), keepdim=True) - low).clamp(min=1e-12)")),
    # --- grad_cam ------------------------------------------------------------------------------
    _bug("grad_cam_softmax", "grad_cam", "target", "back-propagates the softmax probability",
         _GRAD_CAM.format(target="scores.softmax(dim=1)[0, class_idx]")),
    _bug("grad_cam_log_softmax", "grad_cam", "target", "back-propagates the log-probability",
         _GRAD_CAM.format(target="scores.log_softmax(dim=1)[0, class_idx]")),
    _bug("grad_cam_argmax", "grad_cam", "target", "explains the predicted class, not class_idx",
         _GRAD_CAM.format(target="scores[0, scores.argmax()]")),
    _bug("grad_cam_negated_score", "grad_cam", "sign", "back-propagates minus the score",
         _GRAD_CAM.format(target="(-scores[0, class_idx])")),
    _bug("grad_cam_hooks_never_removed", "grad_cam", "hooks left", "never removes its hooks",
         _GRAD_CAM.format(target="scores[0, class_idx]").replace(
             "    finally:\n        for handle in handles:\n            handle.remove()\n",
             "    finally:\n        pass\n")),
    _bug("grad_cam_hooks_kept_on_error", "grad_cam", "hooks left", "removes its hooks only when nothing fails",
         '''\
def grad_cam(model, image, class_idx, layer):
    model.eval()
    store, handles = register_gradcam_hooks(layer)
    scores = model(image)
    scores[0, class_idx].backward()
    for handle in handles:
        handle.remove()
    cam = weighted_cam(store["activations"], channel_weights(store["gradients"]))
    return upsample_normalize(cam, size=tuple(image.shape[-2:]))[0].detach().cpu()
'''),
    _bug("grad_cam_train_mode", "grad_cam", "train mode", "puts the model in training mode",
         _GRAD_CAM.format(target="scores[0, class_idx]").replace("    model.eval()\n", "    model.train()\n")),
    _bug("grad_cam_features_always", "grad_cam", "target", "hooks `model.features` whatever `layer` is",
         _GRAD_CAM.format(target="scores[0, class_idx]").replace("register_gradcam_hooks(layer)",
                                                                 "register_gradcam_hooks(model.features)")),
    _bug("grad_cam_batch_dimension_kept", "grad_cam", "result", "returns (1, H, W)",
         _GRAD_CAM.format(target="scores[0, class_idx]").replace("heatmap[0].detach()", "heatmap.detach()")),
    _bug("grad_cam_not_detached", "grad_cam", "result", "returns a tensor attached to the graph",
         _GRAD_CAM.format(target="scores[0, class_idx]").replace(
             "        cam = weighted_cam(store[\"activations\"], channel_weights(store[\"gradients\"]))\n",
             "        cam = weighted_cam(store[\"activations\"], channel_weights(store[\"gradients\"]))"
             ".requires_grad_()\n").replace("heatmap[0].detach().cpu()", "heatmap[0].cpu()")),
    _bug("grad_cam_not_upsampled", "grad_cam", "result", "returns the map at the layer's resolution",
         _GRAD_CAM.format(target="scores[0, class_idx]").replace("size=tuple(image.shape[-2:])",
                                                                 "size=tuple(cam.shape[-2:])")),
    _bug("grad_cam_default_size", "grad_cam", "result",
         "upsamples to the default 224x224 whatever the size of the image",
         _GRAD_CAM.format(target="scores[0, class_idx]").replace("size=tuple(image.shape[-2:])", "size=(224, 224)")),
    # --- top_and_least -------------------------------------------------------------------------
    _bug("top_ascending", "top_and_least", "classes", "the best classes in increasing order",
         _one_line("top_and_least", "scores, k=3",
                   "order = scores.flatten().argsort().tolist()\nreturn order[-k:] + [order[0]]")),
    _bug("top_least_is_best", "top_and_least", "classes", "the 'least probable' class is the best one",
         _one_line("top_and_least", "scores, k=3",
                   "flat = scores.flatten()\nreturn torch.topk(flat, k).indices.tolist() + [int(flat.argmax())]")),
    _bug("top_tensors", "top_and_least", "classes", "returns tensors, not ints",
         _one_line("top_and_least", "scores, k=3",
                   "flat = scores.flatten()\nreturn list(torch.topk(flat, k).indices) + [flat.argmin()]")),
    _bug("top_no_least", "top_and_least", "classes", "forgets the least probable class",
         _one_line("top_and_least", "scores, k=3", "return torch.topk(scores.flatten(), k).indices.tolist()")),
    _bug("top_k_ignored", "top_and_least", "classes", "always returns 3 classes and the least",
         _one_line("top_and_least", "scores, k=3",
                   "flat = scores.flatten()\nreturn torch.topk(flat, 3).indices.tolist() + [int(flat.argmin())]")),
    _bug("top_batch_shape", "top_and_least", "classes", "fails on scores of shape (1, C)",
         _one_line("top_and_least", "scores, k=3",
                   "return torch.topk(scores, k).indices.tolist() + [int(scores.argmin())]")),
    # --- show_grad_cam -------------------------------------------------------------------------
    _bug("show_reversed", "show_grad_cam", "panels", "the panels in reverse order", _show(order="classes[::-1]")),
    _bug("show_three_panels", "show_grad_cam", "panels", "forgets the least probable class",
         _show(panels=3, order="classes[:3]")),
    _bug("show_indices_as_titles", "show_grad_cam", "panels", "titles with class indices, not names",
         _show(title="idx")),
    _bug("show_same_map_everywhere", "show_grad_cam", "panels", "the map of the best class in every panel",
         _show(mapped="classes[0]")),
    _bug("show_returns_nothing", "show_grad_cam", "result", "shows the figure but returns nothing",
         _show().replace("    plt.close(fig)\n    return fig\n", "    plt.show()\n")),
)
"""Typical mistakes, each of which loses the points of its function at grading."""
