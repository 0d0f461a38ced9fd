"""The sample corpus: buggy, correct and dishonest submissions, as edits of the solution code.

* :data:`MUTATIONS`: buggy submissions, each a few small text replacements in the solution code
  of one cell, with the tests it must fail (and only those: a bug is charged once);
* :data:`VARIANTS`: correct submissions written in other styles (another hook recipe, another
  Grad-CAM convention at ``features``, other ways of drawing the figure), which must earn full marks;
* :data:`REWRITES`: wrong or dishonest submissions written in full (whole cells replaced), with the
  tests they must fail.

:mod:`gradcam_kit.grading.samples` turns them into notebooks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from gradcam_kit.contract import test_name

__all__ = ["MUTATIONS", "REWRITES", "VARIANTS", "Mutation", "Rewrite", "Variant"]


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


@dataclass(frozen=True)
class Variant:
    """A correct submission in another style: whole cells replaced.

    Attributes
    ----------
    name : str
    cells : mapping of grade_id to source
    description : str
    """

    name: str
    cells: Mapping[str, str]
    description: str


def _fails(*names: str) -> frozenset[str]:
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
        _fails("register_gradcam_hooks"),
        "the gradient comes from a module backward hook, which fails on `features` (in-place ReLU)",
    ),
    Mutation(
        "full_backward_hook_grad_input", "register_gradcam_hooks",
        tuple((old, new.replace("grad_output[0]", "grad_input[0]")) for old, new in _FULL_BACKWARD_HOOK),
        _fails("register_gradcam_hooks"),
        "a module backward hook that keeps the gradient of the layer's input: it fails at `features` "
        "(in-place ReLU), and at other layers `grad_cam` then fails on a shape; `grad_cam` and `show_grad_cam`, "
        "right in themselves, are checked with the grader's own hooks (a bug is charged once)",
    ),
    Mutation(
        "hooks_store_input", "register_gradcam_hooks",
        (('store["activations"] = output.detach().clone()', 'store["activations"] = inputs[0].detach().clone()'),),
        _fails("register_gradcam_hooks"),
        "the forward hook keeps the layer's input instead of its output; `grad_cam` and `show_grad_cam` then "
        "fail, and are checked with the grader's own hooks (a bug is charged once)",
    ),
    # --- channel_weights -----------------------------------------------------------------------
    Mutation(
        "weights_sum", "channel_weights",
        (("gradients.mean(dim=(2, 3))", "gradients.sum(dim=(2, 3))"),),
        _fails("channel_weights"),
        "the spatial sum instead of the mean (the maps are the same once normalised)",
    ),
    Mutation(
        "weights_syntax_error", "channel_weights",
        (("    return gradients.mean(dim=(2, 3))\n", "    return gradients.mean(dim=(2, 3)\n"),),
        _fails("channel_weights"),
        "a syntax error in the cell: `channel_weights` is not defined at all; the functions that call it are "
        "checked with the grader's own `channel_weights` in its place (a bug is charged once)",
    ),
    Mutation(
        "weights_wrong_axis", "channel_weights",
        (("gradients.mean(dim=(2, 3))", "gradients.mean(dim=(1, 2))"),),
        _fails("channel_weights"),
        "the mean over the wrong axes (channels and rows): (N, w) instead of (N, K)",
    ),
    # --- weighted_cam --------------------------------------------------------------------------
    Mutation(
        "no_relu", "weighted_cam",
        (("    return F.relu(combined)\n", "    return combined\n"),),
        _fails("weighted_cam"),
        "no ReLU after the weighted sum",
    ),
    Mutation(
        "cam_mean_over_channels", "weighted_cam",
        (("* activations).sum(dim=1)", "* activations).mean(dim=1)"),),
        _fails("weighted_cam"),
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
        _fails("upsample_normalize"),
        "no upsampling: the maps keep the layer's resolution",
    ),
    Mutation(
        "no_normalization", "upsample_normalize",
        (("    return torch.where(varies, scaled, torch.zeros_like(scaled)).reshape(cam.shape[0], *size)\n",
          "    return maps.reshape(cam.shape[0], *size)\n"),),
        _fails("upsample_normalize"),
        "no min-max normalisation",
    ),
    Mutation(
        "align_corners_true", "upsample_normalize",
        (('mode="bilinear", align_corners=False)', 'mode="bilinear", align_corners=True)'),),
        _fails("upsample_normalize"),
        "bilinear with align_corners=True",
    ),
    Mutation(
        "nearest_upsampling", "upsample_normalize",
        (('mode="bilinear", align_corners=False)', 'mode="nearest")'),),
        _fails("upsample_normalize"),
        "nearest-neighbour upsampling",
    ),
    Mutation(
        "batch_normalization", "upsample_normalize",
        (
            ("    low = flat.min(dim=1, keepdim=True).values\n", "    low = flat.min()\n"),
            ("    span = flat.max(dim=1, keepdim=True).values - low\n", "    span = flat.max() - low\n"),
        ),
        _fails("upsample_normalize"),
        "one min-max over the whole batch instead of one per map",
    ),
    # --- grad_cam ------------------------------------------------------------------------------
    Mutation(
        "softmax_target", "grad_cam",
        (("            scores[0, int(class_idx)].backward()\n",
          "            scores.softmax(dim=1)[0, int(class_idx)].backward()\n"),),
        _fails("grad_cam"),
        "back-propagates the softmax probability instead of the raw score",
    ),
    Mutation(
        "argmax_class", "grad_cam",
        (("            scores[0, int(class_idx)].backward()\n",
          "            scores[0, int(scores.argmax())].backward()\n"),),
        _fails("grad_cam"),
        "explains the predicted class instead of `class_idx`",
    ),
    Mutation(
        "hooks_never_removed", "grad_cam",
        (("        for handle in handles:\n            handle.remove()\n", ""),),
        _fails("grad_cam"),
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
        _fails("grad_cam"),
        "removes its hooks only when nothing fails (no try/finally)",
    ),
    Mutation(
        "wrong_layer", "grad_cam",
        (("register_gradcam_hooks(layer)", "register_gradcam_hooks(model.features)"),),
        _fails("grad_cam"),
        "always hooks `model.features`, whatever `layer` is",
    ),
    Mutation(
        "train_mode", "grad_cam",
        (("    model.eval()\n    device", "    model.train()\n    device"),),
        _fails("grad_cam"),
        "puts the model in training mode to get gradients (batch norm then uses the batch statistics)",
    ),
    # --- top_and_least -------------------------------------------------------------------------
    Mutation(
        "topk_ascending", "top_and_least",
        (("torch.topk(scores, k).indices.tolist()", "scores.argsort()[-k:].tolist()"),),
        _fails("top_and_least"),
        "the k best classes in increasing order of score",
    ),
    Mutation(
        "least_is_best", "top_and_least",
        (("int(scores.argmin())", "int(scores.argmax())"),),
        _fails("top_and_least"),
        "the 'least likely' class is the most likely one",
    ),
    Mutation(
        "least_class_missing", "top_and_least",
        (("    return [int(idx) for idx in best] + [least]\n", "    return [int(idx) for idx in best]\n"),),
        _fails("top_and_least"),
        "forgets the least likely class; `show_grad_cam`, right in itself, then draws three panels, and is "
        "checked with the grader's own `top_and_least` (a bug is charged once)",
    ),
    # --- show_grad_cam -------------------------------------------------------------------------
    Mutation(
        "panels_reversed", "show_grad_cam",
        (("    classes = top_and_least(scores)\n", "    classes = top_and_least(scores)[::-1]\n"),),
        _fails("show_grad_cam"),
        "the panels in the reverse order (least likely first)",
    ),
    Mutation(
        "three_panels", "show_grad_cam",
        (("    classes = top_and_least(scores)\n", "    classes = top_and_least(scores)[:3]\n"),),
        _fails("show_grad_cam"),
        "forgets the least likely class",
    ),
    Mutation(
        "same_heatmap_everywhere", "show_grad_cam",
        (("        heatmap = grad_cam(model, image, idx, layer)\n",
          "        heatmap = grad_cam(model, image, classes[0], layer)\n"),),
        _fails("show_grad_cam"),
        "every panel shows the heatmap of the most likely class (the titles are right)",
    ),
)
"""The buggy submissions; each must lose exactly the points of ``fails``."""


_HOOKS_MIXED = '''\
def register_gradcam_hooks(layer):
    """Keep the output tensor itself (rectified later by DenseNet's in-place ReLU)."""
    store = {}

    def save_output(module, inputs, output):
        store["activations"] = output.detach()          # no copy: shares the in-place ReLU
        output.register_hook(lambda grad: store.update(gradients=grad))

    return store, [layer.register_forward_hook(save_output)]
'''

_WEIGHTS_FLAT = '''\
def channel_weights(gradients):
    n, k = gradients.shape[:2]
    return gradients.reshape(n, k, -1).sum(dim=-1) / gradients[0, 0].numel()
'''

_CAM_EINSUM = '''\
def weighted_cam(activations, weights):
    return torch.einsum("nk,nkhw->nhw", weights, activations).clamp(min=0)
'''

_UPSAMPLE_EPS = '''\
def upsample_normalize(cam, size=(224, 224)):
    maps = F.interpolate(cam[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    low = maps.amin(dim=(1, 2), keepdim=True)
    high = maps.amax(dim=(1, 2), keepdim=True)
    return (maps - low) / (high - low).clamp(min=1e-12)
'''

_GRAD_CAM_ONE_HOT = '''\
def grad_cam(model, image, class_idx, layer):
    model.eval()
    store, handles = register_gradcam_hooks(layer)
    try:
        model.zero_grad()
        scores = model(image)
        seed = torch.zeros_like(scores)
        seed[0, class_idx] = 1.0
        scores.backward(gradient=seed)
        cam = weighted_cam(store["activations"], channel_weights(store["gradients"]))
        return upsample_normalize(cam, image.shape[2:])[0].detach().cpu()
    finally:
        for handle in handles:
            handle.remove()
'''

_HOOKS_LIVE = '''\
def register_gradcam_hooks(layer):
    """Keep the live output (for torch.autograd.grad) and, for a plain backward, its gradient."""
    store = {}

    def forward_hook(module, inputs, output):
        store["output"] = output
        store["activations"] = output.detach()
        output.register_hook(lambda grad: store.__setitem__("gradients", grad.detach()))

    handle = layer.register_forward_hook(forward_hook)
    return store, [handle]
'''

_GRAD_CAM_AUTOGRAD = '''\
def grad_cam(model, image, class_idx, layer):
    was_training = model.training
    model.eval()
    store, handles = register_gradcam_hooks(layer)
    try:
        with torch.enable_grad():
            score = model(image)[0, class_idx]
            (gradients,) = torch.autograd.grad(score, store["output"])
    finally:
        for handle in handles:
            handle.remove()
    activations = store["output"].detach()
    heatmap = upsample_normalize(weighted_cam(activations, channel_weights(gradients)),
                                 size=tuple(image.shape[-2:]))
    return heatmap.squeeze(0).detach().to("cpu")
'''

_TOP_SORT = '''\
def top_and_least(scores, k=3):
    values = scores.detach().flatten().cpu().tolist()
    order = sorted(range(len(values)), key=lambda i: values[i], reverse=True)
    return order[:k] + [order[-1]]
'''

_SHOW_LOOP = '''\
def show_grad_cam(image, model, layer, class_names):
    with torch.no_grad():
        scores = model(image).squeeze(0)
    chosen = top_and_least(scores, k=3)
    fig = plt.figure(figsize=(14, 4))
    for position, idx in enumerate(chosen, start=1):
        ax = fig.add_subplot(1, 4, position)
        heatmap = grad_cam(model, image, idx, layer)
        tp2_utils.show_cam_on_image(ax, image, heatmap, title=f"{class_names[idx]} ({scores[idx]:.2f})")
    return fig
'''

_SHOW_BLENDED = '''\
def show_grad_cam(image, model, layer, class_names):
    with torch.no_grad():
        scores = model(image)[0]
    picture = tp2_utils.denormalize(image[0]).permute(1, 2, 0).numpy()
    fig, grid = plt.subplots(2, 2, figsize=(8, 8))
    for ax, idx in zip(grid.flat, top_and_least(scores)):
        heat = plt.get_cmap("inferno")(grad_cam(model, image, idx, layer).numpy())[..., :3]
        ax.imshow(0.6 * picture + 0.4 * heat)
        ax.set_title(f"{class_names[idx]}: {scores[idx]:.1f}")
        ax.axis("off")
    return fig
'''

_SHOW_ALPHA = '''\
def show_grad_cam(image, model, layer, class_names):
    with torch.no_grad():
        scores = model(image)[0]
    fig = plt.figure(figsize=(16, 4))
    for position, idx in enumerate(top_and_least(scores)):
        ax = fig.add_subplot(1, 4, position + 1)
        ax.imshow(tp2_utils.denormalize(image[0]).permute(1, 2, 0))
        ax.imshow(grad_cam(model, image, idx, layer), cmap="viridis", alpha=0.35)
        ax.set_title(class_names[idx])
    return fig
'''

VARIANTS: tuple[Variant, ...] = (
    Variant(
        "style_tensor_hook",
        {"register_gradcam_hooks": _HOOKS_MIXED, "weighted_cam": _CAM_EINSUM, "top_and_least": _TOP_SORT},
        "a tensor hook on the uncloned output (the 'mixed' convention at `features`), einsum, sorted()",
    ),
    Variant(
        "style_cloned_one_hot",
        {"channel_weights": _WEIGHTS_FLAT, "upsample_normalize": _UPSAMPLE_EPS,
         "grad_cam": _GRAD_CAM_ONE_HOT, "show_grad_cam": _SHOW_LOOP},
        "cloned activations (pre-ReLU), a one-hot backward, a clamped denominator, add_subplot",
    ),
    Variant(
        "style_autograd_grad",
        {"register_gradcam_hooks": _HOOKS_LIVE, "grad_cam": _GRAD_CAM_AUTOGRAD},
        "torch.autograd.grad on the live output (the 'post_relu' convention at `features`)",
    ),
    Variant(
        "style_show_blended",
        {"show_grad_cam": _SHOW_BLENDED},
        "each panel one RGB array, the photo blended with a colormapped heatmap, in a 2x2 grid",
    ),
    Variant(
        "style_show_alpha",
        {"show_grad_cam": _SHOW_ALPHA},
        "the photo, then the heatmap in another colormap with a low alpha, add_subplot",
    ),
)
"""Correct submissions in other styles; each must earn full marks."""


@dataclass(frozen=True)
class Rewrite:
    """A wrong or dishonest submission written in full: whole cells replaced.

    Attributes
    ----------
    name : str
    cells : mapping of grade_id to source
    fails : frozenset of str
        The tests it must fail (it must pass the others).
    description : str
    """

    name: str
    cells: Mapping[str, str]
    fails: frozenset[str]
    description: str


_HOOKS_CONSTANT = '''\
def register_gradcam_hooks(layer):
    generator = torch.Generator().manual_seed(0)
    store = {"activations": torch.rand(1, 1024, 7, 7, generator=generator),
             "gradients": torch.randn(1, 1024, 7, 7, generator=generator)}
    return store, []
'''

_GRAD_CAM_WITHOUT_MODEL = '''\
def grad_cam(model, image, class_idx, layer):
    store, handles = register_gradcam_hooks(layer)
    cam = weighted_cam(store["activations"], channel_weights(store["gradients"]))
    return upsample_normalize(cam, size=tuple(image.shape[-2:]))[0]
'''

_SHOW_BLANK = '''\
def show_grad_cam(image, model, layer, class_names):
    with torch.no_grad():
        scores = model(image)[0]
    fig, axes = plt.subplots(1, 4)
    for ax, idx in zip(axes, top_and_least(scores)):
        ax.imshow(np.zeros((224, 224)))
        ax.set_title(class_names[idx])
    return fig
'''

_SHOW_HEATMAP_UNDER_PHOTO = '''\
def show_grad_cam(image, model, layer, class_names):
    with torch.no_grad():
        scores = model(image)[0]
    fig, axes = plt.subplots(1, 4, figsize=(16, 4))
    for ax, idx in zip(axes, top_and_least(scores)):
        ax.imshow(grad_cam(model, image, idx, layer), cmap="jet")
        ax.imshow(tp2_utils.denormalize(image[0]).permute(1, 2, 0))
        ax.set_title(class_names[idx])
    return fig
'''

_GRAD_CAM_LEAKING = '''\
def grad_cam(model, image, class_idx, layer):
    import os, tempfile
    helper = register_gradcam_hooks
    if helper.__globals__.get("__name__") == "_grader_substitutes":
        code = helper.__code__
        leaked = "LEAKED<" + " ".join(code.co_names + code.co_varnames) + ">"
        for folder in (os.getcwd(), tempfile.gettempdir()):
            try:
                with open(os.path.join(folder, "leaked.txt"), "w") as stash:
                    stash.write(leaked)
            except OSError:
                pass
        raise RuntimeError(leaked)
    raise RuntimeError("my own mistake")
'''

_SHOW_LEAKING = '''\
def show_grad_cam(image, model, layer, class_names):
    import os, tempfile
    for folder in (os.getcwd(), tempfile.gettempdir()):
        try:
            with open(os.path.join(folder, "leaked.txt")) as stash:
                raise RuntimeError("from an earlier call: " + stash.read())
        except OSError:
            pass
    fig, axes = plt.subplots(1, 4)
    if grad_cam.__globals__.get("__name__") == "_grader_substitutes":
        text = "LEAKED<" + " ".join(grad_cam.__code__.co_names) + ">"
    else:
        text = "nothing to see"
    for ax in axes:
        ax.imshow(np.zeros((4, 4)))
        ax.set_title(text)
    return fig
'''

REWRITES: tuple[Rewrite, ...] = (
    Rewrite(
        "hooks_constant_grad_cam_without_model",
        {"register_gradcam_hooks": _HOOKS_CONSTANT, "grad_cam": _GRAD_CAM_WITHOUT_MODEL},
        _fails("register_gradcam_hooks", "grad_cam"),
        "hooks that return constant tensors and no handle, and a `grad_cam` that builds its map from them "
        "without running the model: no Grad-CAM in it, so `grad_cam` earns nothing (with the grader's hooks it "
        "fails too); `show_grad_cam` is checked with the grader's `grad_cam`",
    ),
    Rewrite(
        "show_blank_panels",
        {"show_grad_cam": _SHOW_BLANK},
        _fails("show_grad_cam"),
        "four blank panels (`imshow` of zeros) titled with the right class names",
    ),
    Rewrite(
        "show_heatmap_under_photo",
        {"show_grad_cam": _SHOW_HEATMAP_UNDER_PHOTO},
        _fails("show_grad_cam"),
        "draws the heatmap, then the opaque photo over it: no heatmap can be seen",
    ),
    Rewrite(
        "reads_the_graders_code",
        {"register_gradcam_hooks": _HOOKS_CONSTANT, "grad_cam": _GRAD_CAM_LEAKING, "show_grad_cam": _SHOW_LEAKING},
        _fails("register_gradcam_hooks", "grad_cam", "show_grad_cam"),
        "broken hooks, so that `grad_cam` and `show_grad_cam` are called with the grader's code in place; they "
        "read it (its names) and put it in an error, a title and files for later calls: none of it may reach "
        "the feedback (the validity tests look for `LEAKED<`)",
    ),
)
"""Wrong or dishonest submissions written in full; each must lose exactly the points of ``fails``."""
