"""How students write the seven functions: correct styles the judge accepts, and typical bugs.

The notebook's visible tests must pass every correct style (they are never stricter than the
judge) and report most typical bugs before the student submits (``tests/test_visible_tests.py``
measures the rate; the target is 80%). The judge must accept every style and reject every bug
(the same test file grades them).

Each :class:`Style` replaces whole function cells of the solution (by ``grade_id``): a style that
needs a matching helper (``grad_cam`` reading what its own ``register_gradcam_hooks`` keeps, say)
replaces both cells. The correct submissions of :data:`gradcam_kit.grading.sample_corpus.VARIANTS` are
correct styles too; the visible-test check takes them from there.

Each :class:`Bug` is one wrong function, in one of the families of mistakes that the issue lists
(:data:`FAMILIES`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

__all__ = ["BUGS", "CORRECT", "FAMILIES", "Bug", "Style"]


@dataclass(frozen=True)
class Style:
    """A correct way to write one or more of the functions.

    Attributes
    ----------
    name : str
    cells : mapping of grade_id to source
        The function cells it replaces in the solution.
    description : str
    """

    name: str
    cells: Mapping[str, str]
    description: str


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


# ----------------------------------------------------------------------------------------------
# correct styles
# ----------------------------------------------------------------------------------------------
def _style(name: str, description: str, **cells: str) -> Style:
    return Style(name, cells, description)


CORRECT: tuple[Style, ...] = (
    # --- register_gradcam_hooks ----------------------------------------------------------------
    _style("hooks_return_a_clone", "the forward hook returns a clone, which the model uses instead (pre_relu)",
           register_gradcam_hooks='''\
def register_gradcam_hooks(layer):
    store = {}

    def forward_hook(module, inputs, output):
        store["activations"] = output.detach()
        output.register_hook(lambda grad: store.update(gradients=grad))
        return output.clone()          # the in-place ReLU now changes the clone, not `output`

    return store, [layer.register_forward_hook(forward_hook)]
'''),
    _style("hooks_deprecated_backward_hook", "a forward hook and the deprecated register_backward_hook",
           register_gradcam_hooks='''\
def register_gradcam_hooks(layer):
    store = {}

    def forward_hook(module, inputs, output):
        store["activations"] = output.detach().clone()

    def backward_hook(module, grad_input, grad_output):
        store["gradients"] = grad_output[0].detach()

    return store, [layer.register_forward_hook(forward_hook), layer.register_backward_hook(backward_hook)]
'''),
    _style("hooks_tuple_of_handles", "hooks written as a class, handles returned as a tuple, nothing detached",
           register_gradcam_hooks='''\
class _Recorder:
    def __init__(self):
        self.store = {}

    def __call__(self, module, inputs, output):
        self.store["activations"] = output.clone()
        output.register_hook(self.keep_gradient)

    def keep_gradient(self, grad):
        self.store["gradients"] = grad


def register_gradcam_hooks(layer):
    recorder = _Recorder()
    handle = layer.register_forward_hook(recorder)
    return recorder.store, (handle,)
'''),
    # --- channel_weights -----------------------------------------------------------------------
    _style("weights_adaptive_pool", "adaptive average pooling, then flatten",
           channel_weights="def channel_weights(gradients):\n"
                           "    return F.adaptive_avg_pool2d(gradients, 1).flatten(start_dim=1)\n"),
    _style("weights_two_means_float64", "two successive means, in float64",
           channel_weights="def channel_weights(gradients):\n"
                           "    return gradients.double().mean(dim=-1).mean(dim=-1)\n"),
    # --- weighted_cam --------------------------------------------------------------------------
    _style("cam_matmul", "a batched matrix product, then relu()",
           weighted_cam='''\
def weighted_cam(activations, weights):
    n, k, h, w = activations.shape
    return torch.bmm(weights.unsqueeze(1), activations.reshape(n, k, h * w)).reshape(n, h, w).relu()
'''),
    _style("cam_loop", "a loop over the channels, then clamp",
           weighted_cam='''\
def weighted_cam(activations, weights):
    total = torch.zeros_like(activations[:, 0])
    for k in range(activations.shape[1]):
        total = total + weights[:, k, None, None] * activations[:, k]
    return torch.clamp(total, min=0)
'''),
    # --- upsample_normalize --------------------------------------------------------------------
    _style("upsample_eps_in_denominator", "(m - min) / (max - min + eps)",
           upsample_normalize='''\
def upsample_normalize(cam, size=(224, 224)):
    maps = F.interpolate(cam.unsqueeze(1), size=size, mode="bilinear", align_corners=False).squeeze(1)
    low = maps.flatten(1).min(dim=1).values.view(-1, 1, 1)
    high = maps.flatten(1).max(dim=1).values.view(-1, 1, 1)
    return (maps - low) / (high - low + 1e-8)
'''),
    _style("upsample_range_checked_after", "each map's range checked after upsampling, in a loop",
           upsample_normalize='''\
def upsample_normalize(cam, size=(224, 224)):
    maps = F.interpolate(cam[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    result = torch.zeros_like(maps)
    for i, single in enumerate(maps):
        span = single.max() - single.min()
        if span > 0:
            result[i] = (single - single.min()) / span
    return result
'''),
    _style("upsample_nan_to_num", "0/0 for a constant map replaced by zeros with nan_to_num, F.upsample",
           upsample_normalize='''\
def upsample_normalize(cam, size=(224, 224)):
    maps = F.upsample(cam.unsqueeze(1), size=size, mode="bilinear", align_corners=False).squeeze(1)
    low = maps.amin(dim=(1, 2), keepdim=True)
    high = maps.amax(dim=(1, 2), keepdim=True)
    return torch.nan_to_num((maps - low) / (high - low), nan=0.0)
'''),
    # --- grad_cam ------------------------------------------------------------------------------
    _style("grad_cam_summed_batch_score", "a summed batch score, hooks removed in finally, the size of the "
           "image read from its last two dimensions", grad_cam='''\
def grad_cam(model, image, class_idx, layer):
    model.eval()
    store, handles = register_gradcam_hooks(layer)
    try:
        model.zero_grad()
        scores = model(image.to(next(model.parameters()).device))
        scores[:, class_idx].sum().backward()
    finally:
        for handle in handles:
            handle.remove()
    cam = weighted_cam(store["activations"], channel_weights(store["gradients"]))
    height, width = image.shape[-2:]
    return upsample_normalize(cam, size=(height, width))[0].detach().cpu()
'''),
    _style("grad_cam_requires_grad_input", "the image made to require grad, the score taken with gather",
           grad_cam='''\
def grad_cam(model, image, class_idx, layer):
    model.eval()
    store, handles = register_gradcam_hooks(layer)
    try:
        image = image.detach().clone().requires_grad_(True)
        scores = model(image)
        score = scores.gather(1, torch.tensor([[class_idx]], device=scores.device)).squeeze()
        score.backward()
        cam = weighted_cam(store["activations"], channel_weights(store["gradients"]))
        heatmap = upsample_normalize(cam, size=image.shape[2:])
    finally:
        for handle in handles:
            handle.remove()
    return heatmap.squeeze(0).cpu().detach()
'''),
    # --- top_and_least -------------------------------------------------------------------------
    _style("top_argsort_tuple", "argsort, returned as a tuple of ints",
           top_and_least='''\
def top_and_least(scores, k=3):
    order = scores.flatten().argsort(descending=True).tolist()
    return tuple(order[:k] + [order[-1]])
'''),
    _style("top_topk_item", "topk and argmin, with .item()",
           top_and_least='''\
def top_and_least(scores, k=3):
    flat = scores.reshape(-1)
    return [i.item() for i in torch.topk(flat, k).indices] + [torch.argmin(flat).item()]
'''),
    # --- show_grad_cam -------------------------------------------------------------------------
    _style("show_grid_left_open", "a 2x2 grid, titles 'name: score', the figure left open",
           show_grad_cam='''\
def show_grad_cam(image, model, layer, class_names):
    model.eval()
    with torch.no_grad():
        scores = model(image)[0]
    fig, axes = plt.subplots(2, 2, figsize=(9, 9))
    for ax, idx in zip(axes.flat, top_and_least(scores)):
        cam = grad_cam(model, image, idx, layer)
        tp2_utils.show_cam_on_image(ax, image, cam, title=f"{class_names[idx]}: {scores[idx]:.2f}")
    return fig
'''),
)
"""Correct styles, beyond the solution and ``sample_corpus.VARIANTS``."""


# ----------------------------------------------------------------------------------------------
# typical bugs
# ----------------------------------------------------------------------------------------------
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
