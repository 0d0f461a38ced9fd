"""The reference Grad-CAM against its definition, on cases whose answer is known in closed form.

Grad-CAM (Selvaraju et al., ICCV 2017): ``alpha_k^c = (1/hw) sum_ij dy^c/dA^k_ij`` and
``L^c = ReLU(sum_k alpha_k^c A^k)``, with ``y^c`` the raw class score.

* DenseNet-121 at ``features`` ends in ``y = W GAP(ReLU(P)) + b`` with ``P`` the ``norm5`` output,
  so every convention has a closed form in ``W``, ``P`` and ``R = ReLU(P)``.
* A synthetic model whose scores read only one quadrant, with activations that vanish elsewhere.
* The three conventions coincide where nothing is modified in place, and differ where it is.
* Many targets at once equal one call per target.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def images(tp2_utils, image_paths):
    return tp2_utils.load_batch(image_paths[:2])


@pytest.fixture(scope="module")
def targets():
    # Different classes per image and per rank, including the same class twice for one image.
    return torch.tensor([[3, 281, 999], [0, 500, 500]])


@pytest.fixture(scope="module")
def norm5(densenet, images):
    """``P``: the output of ``features`` (``norm5``) before DenseNet's in-place ReLU, computed directly."""
    with torch.no_grad():
        return densenet.features(images)


def _classifier_rows(densenet, targets):
    """``W[targets]``: shape (N, T, K)."""
    return densenet.classifier.weight.detach()[targets]


# ----------------------------------------------------------------------------------------------
# DenseNet-121 at `features`: closed forms for the three conventions
# ----------------------------------------------------------------------------------------------
def test_post_relu_at_features_is_the_classifier_row(ref, densenet, images, targets, norm5):
    # y^c = sum_k W_ck (1/hw) sum_ij R_kij + b_c, so dy^c/dR_kij = W_ck / hw everywhere (also where
    # R is 0) and alpha_k^c = W_ck / hw; the map is ReLU(CAM_c) / hw with CAM_c = sum_k W_ck R_k.
    rectified = F.relu(norm5)
    hw = rectified.shape[-2] * rectified.shape[-1]
    rows = _classifier_rows(densenet, targets)

    parts = ref.grad_cam_parts(densenet, images, targets, "features", convention="post_relu")
    assert_close(parts.activations, rectified, atol=1e-6, rtol=0)
    assert_close(parts.weights, rows / hw, atol=1e-8, rtol=1e-5)

    maps = ref.grad_cam(densenet, images, targets, "features", convention="post_relu")
    class_activation_maps = torch.einsum("ntk,nkhw->nthw", rows, rectified)
    assert_close(maps, F.relu(class_activation_maps) / hw, atol=1e-7, rtol=1e-5)
    assert (maps > 0).any()


def test_pre_relu_at_features_backpropagates_through_the_relu(ref, densenet, images, targets, norm5):
    # dy^c/dP_kij = W_ck / hw * [P_kij > 0], so alpha_k^c = W_ck * (fraction of P_k > 0) / hw,
    # and A = P (the value norm5 returned).
    hw = norm5.shape[-2] * norm5.shape[-1]
    positive_fraction = (norm5 > 0).float().mean(dim=(-2, -1))  # (N, K)
    alpha = _classifier_rows(densenet, targets) * positive_fraction[:, None, :] / hw

    parts = ref.grad_cam_parts(densenet, images, targets, "features", convention="pre_relu")
    assert_close(parts.activations, norm5, atol=1e-6, rtol=0)
    assert_close(parts.weights, alpha, atol=1e-8, rtol=1e-5)

    maps = ref.grad_cam(densenet, images, targets, "features", convention="pre_relu")
    assert_close(maps, F.relu(torch.einsum("ntk,nkhw->nthw", alpha, norm5)), atol=1e-7, rtol=1e-5)


def test_mixed_at_features_pairs_rectified_map_with_pre_relu_gradient(ref, densenet, images, targets, norm5):
    hw = norm5.shape[-2] * norm5.shape[-1]
    positive_fraction = (norm5 > 0).float().mean(dim=(-2, -1))
    alpha = _classifier_rows(densenet, targets) * positive_fraction[:, None, :] / hw

    parts = ref.grad_cam_parts(densenet, images, targets, "features", convention="mixed")
    assert_close(parts.activations, F.relu(norm5), atol=1e-6, rtol=0)
    assert_close(parts.weights, alpha, atol=1e-8, rtol=1e-5)

    maps = ref.grad_cam(densenet, images, targets, "features", convention="mixed")
    assert_close(maps, F.relu(torch.einsum("ntk,nkhw->nthw", alpha, F.relu(norm5))), atol=1e-7, rtol=1e-5)


def _forward_hook_grad_cam(model, images, class_indices, layer):
    """The naive student version: keep the hooked output (no clone) and ``output.register_hook``.

    ``class_indices``: LongTensor (N,). Returns (N, h, w). Uses ``autograd.grad`` w.r.t. an input
    copy instead of ``.backward()``, so that the shared model's ``.grad`` stay untouched.
    """
    store = {}

    def keep(module, inputs, output):
        store["activations"] = output
        output.register_hook(lambda gradient: store.__setitem__("gradients", gradient))

    handle = layer.register_forward_hook(keep)
    try:
        leaf = images.clone().requires_grad_(True)
        scores = model(leaf)
        torch.autograd.grad(scores.gather(1, class_indices.view(-1, 1)).sum(), leaf)
    finally:
        handle.remove()
    alpha = store["gradients"].mean(dim=(-2, -1), keepdim=True)
    return F.relu((alpha * store["activations"].detach()).sum(dim=1))


def test_mixed_is_what_a_plain_forward_hook_computes(ref, densenet, images, targets):
    naive = _forward_hook_grad_cam(densenet, images, targets[:, 1], densenet.features)
    mixed = ref.grad_cam(densenet, images, targets[:, 1:2], "features", convention="mixed")[:, 0]
    assert_close(mixed, naive, atol=1e-6, rtol=1e-4)


def test_the_three_conventions_really_differ_at_features(ref, densenet, images, targets):
    maps = {
        convention: ref.normalize_maps(ref.grad_cam(densenet, images, targets, "features", convention=convention))
        for convention in ref.CONVENTIONS
    }
    for first, second in [("post_relu", "pre_relu"), ("post_relu", "mixed"), ("pre_relu", "mixed")]:
        gap = (maps[first] - maps[second]).abs().amax().item()
        assert gap > 0.05, f"{first} and {second} should differ at `features`, max gap {gap:.3g}"


@pytest.mark.parametrize("layer", ["features.denseblock3", "features.transition2"])
def test_the_conventions_coincide_where_nothing_is_modified_in_place(ref, densenet, images, targets, layer):
    maps = {
        convention: ref.grad_cam(densenet, images, targets[:, :2], layer, convention=convention)
        for convention in ref.CONVENTIONS
    }
    assert maps["post_relu"].abs().amax() > 0
    assert_close(maps["pre_relu"], maps["post_relu"], atol=1e-7, rtol=1e-5)
    assert_close(maps["mixed"], maps["post_relu"], atol=1e-7, rtol=1e-5)
    naive = _forward_hook_grad_cam(densenet, images, targets[:, 0], densenet.get_submodule(layer))
    assert_close(maps["post_relu"][:, 0], naive, atol=1e-6, rtol=1e-4)


# ----------------------------------------------------------------------------------------------
# Many targets from one pass
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layer", ["features", "features.denseblock3"])
def test_many_targets_equal_one_call_per_target(ref, densenet, images, targets, layer):
    together = ref.grad_cam(densenet, images, targets, layer)
    assert together.shape[:2] == targets.shape
    for rank in range(targets.shape[1]):
        alone = ref.grad_cam(densenet, images, targets[:, rank : rank + 1], layer)
        assert_close(together[:, rank : rank + 1], alone, atol=1e-7, rtol=1e-5)
    # The same class twice for image 1 gives the same map twice.
    assert_close(together[1, 1], together[1, 2], atol=1e-8, rtol=1e-6)


def test_an_int_target_means_that_class_for_every_image(ref, densenet, images):
    shared = ref.grad_cam(densenet, images, 281, "features")
    table = ref.grad_cam(densenet, images, torch.tensor([[281], [281]]), "features")
    assert shared.shape == (2, 1, 7, 7)
    assert_close(shared, table, atol=0, rtol=0)


def test_size_upsamples_bilinearly_after_the_relu(ref, densenet, images, targets):
    small = ref.grad_cam(densenet, images, targets, "features")
    large = ref.grad_cam(densenet, images, targets, "features", size=(224, 224))
    assert large.shape == (2, 3, 224, 224)
    expected = F.interpolate(small, size=(224, 224), mode="bilinear", align_corners=False)
    assert_close(large, expected, atol=1e-7, rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# A synthetic model that reads one quadrant
# ----------------------------------------------------------------------------------------------
class QuadrantFeatures(nn.Module):
    """A strided convolution whose output is kept in the top-left quadrant only: (N,3,16,16) -> (N,K,8,8)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, channels, kernel_size=3, stride=2, padding=1)
        mask = torch.zeros(1, 1, 8, 8)
        mask[..., :4, :4] = 1.0
        self.register_buffer("mask", mask)

    def forward(self, images):
        return self.conv(images) * self.mask


class SquaredEnergyClassifier(nn.Module):
    """``y_c = sum_k V_ck * mean_ij A_kij ** 2``: a non-linear head whose gradient is ``2 V_ck A_kij / hw``."""

    def __init__(self, channels: int, classes: int) -> None:
        super().__init__()
        self.features = QuadrantFeatures(channels)
        self.readout = nn.Linear(channels, classes, bias=False)

    def forward(self, images):
        return self.readout(self.features(images).pow(2).mean(dim=(-2, -1)))


def test_a_score_reading_one_quadrant_gives_a_map_confined_to_it(ref):
    torch.manual_seed(0)
    model = SquaredEnergyClassifier(channels=6, classes=5).eval()
    images = torch.randn(3, 3, 16, 16)
    targets = torch.tensor([[0, 1, 4], [2, 3, 0], [4, 4, 1]])

    with torch.no_grad():
        activations = model.features(images)  # (N, K, 8, 8), zero outside [:4, :4]
    readout = model.readout.weight.detach()  # (C, K)
    # alpha_k^c = (1/hw) sum_ij 2 V_ck A_kij / hw = 2 V_ck mean(A_k) / hw
    alpha = 2 * readout[targets] * activations.mean(dim=(-2, -1))[:, None, :] / 64
    expected = F.relu(torch.einsum("ntk,nkhw->nthw", alpha, activations))

    parts = ref.grad_cam_parts(model, images, targets, "features")
    assert_close(parts.weights, alpha, atol=1e-8, rtol=1e-5)
    maps = ref.grad_cam(model, images, targets, model.features)
    assert_close(maps, expected, atol=1e-7, rtol=1e-5)
    assert (maps[..., :4, :4] > 0).any()
    assert torch.all(maps[..., 4:, :] == 0) and torch.all(maps[..., :, 4:] == 0)

    # Upsampled to 16 x 16, only the one-pixel bilinear seam leaks out of the quadrant.
    upsampled = ref.grad_cam(model, images, targets, model.features, size=(16, 16))
    assert torch.all(upsampled[..., 9:, :] == 0) and torch.all(upsampled[..., :, 9:] == 0)
    assert_close(upsampled, F.interpolate(expected, size=(16, 16), mode="bilinear", align_corners=False))


# ----------------------------------------------------------------------------------------------
# normalize_maps
# ----------------------------------------------------------------------------------------------
def test_normalize_maps_is_per_map_min_max(ref):
    torch.manual_seed(1)
    maps = torch.rand(2, 3, 5, 7) * 10 - 2
    normalised = ref.normalize_maps(maps)
    assert normalised.shape == maps.shape
    flat = maps.flatten(-2)
    low, high = flat.min(-1).values[..., None, None], flat.max(-1).values[..., None, None]
    assert_close(normalised, (maps - low) / (high - low))
    assert_close(normalised.flatten(-2).amin(-1), torch.zeros(2, 3))
    assert_close(normalised.flatten(-2).amax(-1), torch.ones(2, 3))
    # Invariant to a positive affine change of each map.
    assert_close(ref.normalize_maps(3.5 * maps + 4.0), normalised, atol=1e-6, rtol=0)


def test_normalize_maps_sends_constant_maps_to_zeros(ref):
    maps = torch.stack([torch.zeros(4, 4), torch.full((4, 4), 2.5), torch.arange(16.0).view(4, 4)])
    normalised = ref.normalize_maps(maps)
    assert not torch.isnan(normalised).any()
    assert torch.all(normalised[0] == 0) and torch.all(normalised[1] == 0)
    assert normalised[2].max() == 1 and normalised[2].min() == 0
