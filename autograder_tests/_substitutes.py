"""The grader's own versions of the graded helpers, as source text for ``Judge.call(...,
substitutes=...)``.

A bug is charged once: when a function is wrong and helpers it calls are broken, the judge calls
it once more with exactly those helpers replaced by these, which follow the specification (see
``_judge``'s module docstring). The text is sent to the worker over the protocol channel for that
one call (never written where the student's code could read it), compiled there in a private
namespace where ``torch`` and ``F`` (``torch.nn.functional``) are available, and the worker is
restarted afterwards. What the call returns or raises never reaches the feedback.

Each one is self-contained: the grader's ``grad_cam`` calls none of the student's helpers. The
kit's tests check that each agrees with the answer key (``tests/test_autograder_substitutes.py``).
"""

from __future__ import annotations

from collections.abc import Mapping

REGISTER_GRADCAM_HOOKS = '''
def register_gradcam_hooks(layer):
    """The layer's output as it returned it (a clone) and the gradient with respect to it."""
    store = {}

    def on_forward(module, inputs, output):
        store["activations"] = output.detach().clone()
        if output.requires_grad:
            output.register_hook(lambda grad: store.__setitem__("gradients", grad.detach().clone()))

    return store, [layer.register_forward_hook(on_forward)]
'''

CHANNEL_WEIGHTS = '''
def channel_weights(gradients):
    """(N, K, h, w) -> (N, K): the spatial mean of the gradients."""
    return gradients.mean(dim=(2, 3))
'''

WEIGHTED_CAM = '''
def weighted_cam(activations, weights):
    """(N, K, h, w), (N, K) -> (N, h, w): ReLU of the weighted sum of the channels."""
    return F.relu((weights[:, :, None, None] * activations).sum(dim=1))
'''

UPSAMPLE_NORMALIZE = '''
def upsample_normalize(cam, size=(224, 224)):
    """(N, h, w) -> (N, H, W): bilinear (align_corners=False), then per-map min-max to [0, 1];
    a constant map (decided on the input) becomes zeros."""
    size = (int(size), int(size)) if isinstance(size, (int, float)) else tuple(int(s) for s in size)
    cam = cam if cam.is_floating_point() else cam.float()
    maps = F.interpolate(cam[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    low = maps.amin(dim=(1, 2), keepdim=True)
    span = maps.amax(dim=(1, 2), keepdim=True) - low
    scaled = (maps - low) / torch.where(span > 0, span, torch.ones_like(span))
    constant = (cam.amax(dim=(1, 2)) == cam.amin(dim=(1, 2)))[:, None, None]
    return torch.where(constant, torch.zeros_like(scaled), scaled)
'''

TOP_AND_LEAST = '''
def top_and_least(scores, k=3):
    """Scores (C,) or (1, C) -> the k best classes, best first, then the worst one (plain ints)."""
    flat = torch.as_tensor(scores).detach().reshape(-1).cpu()
    order = torch.argsort(-flat, stable=True)
    return [int(i) for i in order[:k]] + [int(torch.argsort(flat, stable=True)[0])]
'''

GRAD_CAM = '''
def grad_cam(model, image, class_idx, layer):
    """(1, 3, H, W) -> (H, W) in [0, 1]: Grad-CAM of the raw score of class_idx at layer (the
    layer's output as it returned it), detached, on the CPU; no hook left, model in eval mode."""
    model.eval()
    image = image.to(next(model.parameters(), image).device)
    store = {}

    def on_forward(module, inputs, output):
        store["activations"] = output.detach().clone()
        output.register_hook(lambda grad: store.__setitem__("gradients", grad.detach().clone()))

    handle = layer.register_forward_hook(on_forward)
    try:
        with torch.enable_grad():
            model(image)[0, int(class_idx)].backward()
    finally:
        handle.remove()
        model.zero_grad(set_to_none=True)
    weights = store["gradients"].mean(dim=(2, 3))
    cam = F.relu((weights[:, :, None, None] * store["activations"]).sum(dim=1))
    maps = F.interpolate(cam[:, None], size=tuple(image.shape[-2:]), mode="bilinear", align_corners=False)[:, 0]
    low = maps.amin(dim=(1, 2), keepdim=True)
    span = maps.amax(dim=(1, 2), keepdim=True) - low
    scaled = (maps - low) / torch.where(span > 0, span, torch.ones_like(span))
    constant = (cam.amax(dim=(1, 2)) == cam.amin(dim=(1, 2)))[:, None, None]
    return torch.where(constant, torch.zeros_like(scaled), scaled)[0].detach().cpu()
'''

SOURCES: Mapping[str, str] = {
    "register_gradcam_hooks": REGISTER_GRADCAM_HOOKS,
    "channel_weights": CHANNEL_WEIGHTS,
    "weighted_cam": WEIGHTED_CAM,
    "upsample_normalize": UPSAMPLE_NORMALIZE,
    "grad_cam": GRAD_CAM,
    "top_and_least": TOP_AND_LEAST,
}
"""The grader's version of every graded function that another one calls."""
