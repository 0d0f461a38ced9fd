"""The reference on a model with real ImageNet weights, offline: EfficientNet-Lite0.

Random weights hide mistakes; these tests check that the reference puts class evidence where a
person sees it, on the two-cats image, and that the EfficientNet-Lite0 loader is right.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from gradcam_kit import efficientnet

EGYPTIAN_CAT, TABBY, TIGER_CAT, QUILT = 285, 281, 282, 750

# Regions of the 224 x 224 center crop of TP2_images/2637374064_fab14ec0b8.jpg (as produced by
# tp2_utils.preprocess), read off the image itself, as (rows, columns):
# * both cats: the grey cat lies at the left (x 0-65, y 55-145), the tabby fills the centre and
#   the right (head x 55-135, y 5-85; body to x 224, y 150). The box also holds a little dark
#   background at the top left and a bit of red cushion at the top right.
# * the quilt: the patterned red blanket the cats lie on; below y = 165 it is the only thing there
#   (the tabby's tail ends near y = 160).
CATS_BOX = (slice(10, 150), slice(0, 224))
QUILT_BOX = (slice(165, 224), slice(0, 224))


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def lite0():
    return efficientnet.load_efficientnet_lite0()


@pytest.fixture(scope="module")
def two_cats(tp2_utils, two_cats_path):
    return tp2_utils.load_batch([two_cats_path])


@pytest.fixture(scope="module")
def cat_maps(ref, lite0, two_cats):
    """Normalised 224 x 224 maps of Egyptian cat and quilt: (2, 224, 224)."""
    maps = ref.grad_cam(lite0, two_cats, torch.tensor([[EGYPTIAN_CAT, QUILT]]), efficientnet.GRADCAM_LAYER, size=(224, 224))
    return ref.normalize_maps(maps)[0]


# ----------------------------------------------------------------------------------------------
# The loader
# ----------------------------------------------------------------------------------------------
def test_the_model_is_pretrained_in_eval_mode_and_offline(lite0):
    assert not lite0.training and all(not m.training for m in lite0.modules())
    assert efficientnet.weights_file().is_file()
    assert lite0.weights_source == str(efficientnet.weights_file())


def test_the_adapter_turns_imagenet_input_into_lite_input(tp2_utils, lite0, two_cats):
    # tp2_utils.preprocess gives x = (p - mean) / std; EfficientNet-Lite wants (255 p - 127) / 128.
    assert efficientnet.IMAGENET_MEAN == tp2_utils.IMAGENET_MEAN
    assert efficientnet.IMAGENET_STD == tp2_utils.IMAGENET_STD
    mean = torch.tensor(tp2_utils.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(tp2_utils.IMAGENET_STD).view(1, 3, 1, 1)
    pixels = two_cats * std + mean
    assert_close(lite0.input_adapter(two_cats), (255 * pixels - 127) / 128, atol=1e-5, rtol=0)


def test_the_wrapper_computes_what_the_original_network_computes(lite0, two_cats):
    with torch.no_grad():
        ours = lite0(two_cats)
        original = lite0.network(lite0.input_adapter(two_cats))
    assert ours.shape == (1, efficientnet.CLASSES)
    assert_close(ours, original, atol=1e-5, rtol=0)


def test_it_recognises_the_two_cats(lite0, two_cats):
    with torch.no_grad():
        top = lite0(two_cats).topk(4).indices[0].tolist()
    assert top[:2] == [EGYPTIAN_CAT, TABBY]
    assert TIGER_CAT in top  # the third is quilt (750): the cats lie on one


# ----------------------------------------------------------------------------------------------
# The reference on real weights
# ----------------------------------------------------------------------------------------------
def test_the_gradcam_layer_is_what_pooling_consumes(ref, lite0, two_cats):
    # After head_activation: average pooling, dropout (off in eval), linear. So, as for DenseNet's
    # `features`, alpha^c = W_c / hw exactly, and the map is ReLU(sum_k W_ck A_k) / hw.
    targets = torch.tensor([[EGYPTIAN_CAT, QUILT]])
    parts = ref.grad_cam_parts(lite0, two_cats, targets, efficientnet.GRADCAM_LAYER)
    assert parts.activations.shape == (1, 1280, 7, 7)
    rows = lite0.network._fc.weight.detach()[targets]
    assert_close(parts.weights, rows / 49, atol=1e-8, rtol=1e-5)
    # The three conventions agree: nothing modifies the head's output in place.
    post = ref.grad_cam(lite0, two_cats, targets, efficientnet.GRADCAM_LAYER)
    pre = ref.grad_cam(lite0, two_cats, targets, efficientnet.GRADCAM_LAYER, convention="pre_relu")
    assert_close(pre, post, atol=1e-7, rtol=1e-5)
    assert_close(post, F.relu(torch.einsum("ntk,nkhw->nthw", rows, parts.activations)) / 49, atol=1e-7, rtol=1e-5)


def test_pre_relu_equals_captum_on_real_weights(ref, lite0, two_cats):
    captum_attr = pytest.importorskip("captum.attr")
    theirs = captum_attr.LayerGradCam(lite0, lite0.head_activation).attribute(
        two_cats, target=EGYPTIAN_CAT, relu_attributions=True
    )
    ours = ref.grad_cam(lite0, two_cats, EGYPTIAN_CAT, efficientnet.GRADCAM_LAYER, convention="pre_relu")
    assert_close(ours, theirs.detach(), atol=1e-5, rtol=0)


def test_the_egyptian_cat_map_lies_on_the_cats(cat_maps):
    cat = cat_maps[0]
    cats_share = (cat[CATS_BOX].sum() / cat.sum()).item()
    area_share = (140 * 224) / (224 * 224)
    assert cats_share > 0.75, f"only {cats_share:.0%} of the map on the cats (area {area_share:.0%})"
    assert cat[CATS_BOX].mean() > 3 * cat[QUILT_BOX].mean()


def test_the_quilt_map_lies_on_the_quilt(cat_maps):
    quilt = cat_maps[1]
    assert quilt[QUILT_BOX].mean() > 1.5 * quilt[CATS_BOX].mean()


def test_real_weights_expose_the_softmax_mistake(ref, lite0, two_cats):
    # A classic student mistake: Grad-CAM of the softmax output instead of the raw score. On random
    # weights the two normalised maps differ by ~0.05 at most; on real weights they must differ
    # clearly, or this model could not tell the mistake apart in the grader.
    targets = torch.tensor([[TABBY, TIGER_CAT]])
    raw = ref.normalize_maps(ref.grad_cam(lite0, two_cats, targets, efficientnet.GRADCAM_LAYER, size=(224, 224)))
    with_softmax = torch.nn.Sequential(lite0, torch.nn.Softmax(dim=1))
    soft = ref.normalize_maps(
        ref.grad_cam(with_softmax, two_cats, targets, "0." + efficientnet.GRADCAM_LAYER, size=(224, 224))
    )
    assert (raw - soft).abs().flatten(2).amax(-1).min() > 0.3
