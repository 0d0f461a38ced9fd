"""The grader's own versions of the graded helpers, as source text for ``WorkerSession.call(...,
substitutes=...)``.

A bug is charged once: when ``grad_cam`` (or ``show_grad_cam``) cannot be verified because one of
its helpers fails its own test, the judge calls it once more with the failing helpers replaced by
these, which follow the specification exactly. The text is sent to the worker over the protocol
channel for that one call (never written where the student's code could read it), compiled there
in a private namespace where ``torch`` and ``F`` (``torch.nn.functional``) are available, and the
worker is restarted afterwards.

``register_gradcam_hooks`` is never substituted: it is the heart of the assignment, and a
``grad_cam`` that runs with the grader's hooks proves little about the student's own work.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

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

SOURCES: Mapping[str, str] = {
    "channel_weights": CHANNEL_WEIGHTS,
    "weighted_cam": WEIGHTED_CAM,
    "upsample_normalize": UPSAMPLE_NORMALIZE,
    "top_and_least": TOP_AND_LEAST,
}
"""The helpers the judge may substitute (never ``register_gradcam_hooks``)."""


def substitutes_for(names: Iterable[str]) -> dict[str, str]:
    """The sources of the substitutable helpers among ``names`` (the others are left out)."""
    return {name: SOURCES[name] for name in names if name in SOURCES}
