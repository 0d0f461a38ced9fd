"""How students write the seven functions: correct styles the judge accepts.

The notebook's visible tests must pass every correct style (they are never stricter than the
judge), and the judge must accept every one (``tests/test_visible_tests.py`` checks both). Their
counterpart, the typical bugs that both must report, is :mod:`gradcam_kit.grading.typical_bugs`.

Each style is a :class:`~gradcam_kit.grading.sample_corpus.Variant`, as the corpus's correct
submissions are: it replaces whole function cells of the solution (by ``grade_id``), and a style that
needs a matching helper (``grad_cam`` reading what its own ``register_gradcam_hooks`` keeps, say)
replaces both cells. The corpus's :data:`~gradcam_kit.grading.sample_corpus.VARIANTS` are correct
styles too; the visible-test check takes them from there.
"""

from __future__ import annotations

from gradcam_kit.grading.sample_corpus import Variant

__all__ = ["CORRECT"]


# ----------------------------------------------------------------------------------------------
# correct styles
# ----------------------------------------------------------------------------------------------
def _style(name: str, description: str, **cells: str) -> Variant:
    return Variant(name, cells, description)


CORRECT: tuple[Variant, ...] = (
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
