"""``build_model``: deterministic, fresh, identical in judge and worker; the contrast head."""

from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.nn.functional as F

from gradcam_kit.wire.frames import ModelSpec
from gradcam_kit.worker.models import (
    CONTRAST_DOMINANT_CLASS,
    build_model,
    contrast_head,
)


def _same_weights(first: torch.nn.Module, second: torch.nn.Module) -> bool:
    one, two = first.state_dict(), second.state_dict()
    return one.keys() == two.keys() and all(torch.equal(one[key], two[key]) for key in one)


@pytest.mark.parametrize("arch", ["densenet121", "resnet18"])
def test_builds_are_identical_and_independent(arch, tp2_utils):
    first = build_model(ModelSpec(arch, "random"), tp2_utils)
    second = build_model(ModelSpec(arch, "random"), tp2_utils)
    assert not first.training and not second.training
    assert _same_weights(first, second)
    shared = {p.data_ptr() for p in first.parameters()} & {p.data_ptr() for p in second.parameters()}
    assert not shared


def test_building_does_not_touch_the_global_random_state(tp2_utils):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_model(ModelSpec("densenet121", "random", "contrast"), tp2_utils)
    assert torch.equal(torch.rand(3), expected)


def test_unknown_architectures_and_heads_are_refused(tp2_utils):
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model(ModelSpec("vgg16", "random"), tp2_utils)
    with pytest.raises(ValueError, match="unknown head"):
        build_model(ModelSpec("densenet121", "random", "softmax"), tp2_utils)
    with pytest.raises(ValueError, match="densenet121 only"):
        build_model(ModelSpec("resnet18", "random", "contrast"), tp2_utils)


def test_the_contrast_head_is_fixed_and_reads_disjoint_channels():
    head, again = contrast_head(), contrast_head()
    assert torch.equal(head.weight, again.weight) and torch.equal(head.bias, again.bias)
    weight = head.weight.detach()
    others = torch.cat([weight[:CONTRAST_DOMINANT_CLASS], weight[CONTRAST_DOMINANT_CLASS + 1:]])
    assert (others[:, 1::2] == 0).all() and (others[:, ::2] > 0).all()
    dominant = weight[CONTRAST_DOMINANT_CLASS]
    assert (dominant[::2] == 0).all() and (dominant[1::2] > 0).all()


def _cams(model, image, class_idx, scorers):
    """Grad-CAMs on ``features.denseblock4`` of ``scorer(scores)[0, class_idx]``, one per scorer."""
    store = {}
    handle = model.features.denseblock4.register_forward_hook(lambda m, i, output: store.__setitem__("a", output))
    try:
        scores = model(image)
    finally:
        handle.remove()
    cams = []
    for scorer in scorers:
        (gradients,) = torch.autograd.grad(scorer(scores)[0, class_idx], store["a"], retain_graph=True)
        weights = gradients.mean(dim=(2, 3))
        cams.append(F.relu((weights[:, :, None, None] * store["a"]).sum(dim=1)).detach()[0])
    return cams


def test_explaining_the_softmax_fails_clearly_under_the_contrast_head(tp2_utils, image_paths):
    model = build_model(ModelSpec("densenet121", "random", "contrast"), tp2_utils)
    image = F.interpolate(tp2_utils.load_batch(image_paths[:1]), size=(128, 128), mode="bilinear")
    with torch.no_grad():
        probabilities = F.softmax(model(image), dim=1)[0]
    assert probabilities[CONTRAST_DOMINANT_CLASS] > 0.99
    assert probabilities[5] > 1e-20  # small, but far from float32's underflow
    raw, soft, log_soft = _cams(model, image, 5, [lambda s: s, lambda s: F.softmax(s, dim=1),
                                                  lambda s: F.log_softmax(s, dim=1)])
    assert raw.max() > 0 and (raw > 0).float().mean() > 0.5
    for wrong in (soft, log_soft):
        # cut by the ReLU almost everywhere: nothing like the reference map
        assert (wrong > 0).float().mean() < 0.1


@pytest.mark.skipif(importlib.util.find_spec("gradcam_kit.efficientnet") is None,
                    reason="gradcam_kit.efficientnet is not written yet")
def test_efficientnet_builds_deterministically():
    first = build_model(ModelSpec("efficientnet_lite0"))
    second = build_model(ModelSpec("efficientnet_lite0"))
    assert not first.training and _same_weights(first, second)
    with torch.no_grad():
        assert first(torch.zeros(1, 3, 224, 224)).shape == (1, 1000)
