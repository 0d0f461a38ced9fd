"""The sample corpus: buggy, correct and dishonest submissions, as edits of the solution code.

* :data:`~gradcam_kit.grading.sample_mutations.MUTATIONS` (in their own module): buggy submissions,
  each a few small text replacements in the solution code of one cell, with the tests it must fail
  (and only those: a bug is charged once);
* :data:`VARIANTS`: correct submissions written in other styles (another hook recipe, another
  Grad-CAM convention at ``features``, other ways of drawing the figure), which must earn full marks;
* :data:`REWRITES`: wrong or dishonest submissions written in full (whole cells replaced), with the
  tests they must fail.

:mod:`gradcam_kit.grading.samples` turns them into notebooks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from gradcam_kit.grading.sample_mutations import failing

__all__ = ["REWRITES", "VARIANTS", "Rewrite", "Variant"]


@dataclass(frozen=True)
class Variant:
    """A correct submission in another style (also each of :data:`gradcam_kit.grading.styles.CORRECT`).

    Attributes
    ----------
    name : str
    cells : mapping of grade_id to source
        The function cells it replaces, whole, in the solution.
    description : str
    """

    name: str
    cells: Mapping[str, str]
    description: str


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
        failing("register_gradcam_hooks", "grad_cam"),
        "hooks that return constant tensors and no handle, and a `grad_cam` that builds its map from them "
        "without running the model: no Grad-CAM in it, so `grad_cam` earns nothing (with the grader's hooks it "
        "fails too); `show_grad_cam` is checked with the grader's `grad_cam`",
    ),
    Rewrite(
        "show_blank_panels",
        {"show_grad_cam": _SHOW_BLANK},
        failing("show_grad_cam"),
        "four blank panels (`imshow` of zeros) titled with the right class names",
    ),
    Rewrite(
        "show_heatmap_under_photo",
        {"show_grad_cam": _SHOW_HEATMAP_UNDER_PHOTO},
        failing("show_grad_cam"),
        "draws the heatmap, then the opaque photo over it: no heatmap can be seen",
    ),
    Rewrite(
        "reads_the_graders_code",
        {"register_gradcam_hooks": _HOOKS_CONSTANT, "grad_cam": _GRAD_CAM_LEAKING, "show_grad_cam": _SHOW_LEAKING},
        failing("register_gradcam_hooks", "grad_cam", "show_grad_cam"),
        "broken hooks, so that `grad_cam` and `show_grad_cam` are called with the grader's code in place; they "
        "read it (its names) and put it in an error, a title and files for later calls: none of it may reach "
        "the feedback (the validity tests look for `LEAKED<`)",
    ),
)
"""Wrong or dishonest submissions written in full; each must lose exactly the points of ``fails``."""
