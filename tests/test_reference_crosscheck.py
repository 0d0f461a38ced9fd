"""The reference Grad-CAM against two independent implementations: captum and torchcam.

* captum's ``LayerGradCam`` clones the layer's output in its hook, so at DenseNet's ``features``
  it sees ``norm5`` before the in-place ReLU and backpropagates through that ReLU: ``pre_relu``.
* torchcam's ``GradCAM`` keeps the output tensor itself (rectified in place afterwards) and takes
  the gradient with respect to it once the forward pass is over: ``post_relu``.

Batches carry a different target for each image.
"""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

captum_attr = pytest.importorskip("captum.attr")
torchcam_methods = pytest.importorskip("torchcam.methods")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def resnet(tp2_utils):
    return tp2_utils.load_model("resnet18", weights="random")


@pytest.fixture(scope="module")
def images(tp2_utils, image_paths):
    return tp2_utils.load_batch(image_paths[:3])


# One column per target rank; each row holds the classes of one image.
TARGETS = torch.tensor([[5, 281], [285, 0], [999, 500]])


def _captum(model, layer, images, classes):
    """captum's Grad-CAM with the final ReLU: (N, h, w)."""
    attribution = captum_attr.LayerGradCam(model, layer).attribute(
        images, target=classes.tolist(), relu_attributions=True
    )
    return attribution[:, 0].detach()


@pytest.mark.parametrize(
    ("arch", "layer_name"),
    [("densenet121", "features"), ("resnet18", "layer4")],
)
def test_pre_relu_equals_captum(ref, densenet, resnet, images, arch, layer_name):
    model = densenet if arch == "densenet121" else resnet
    layer = model.get_submodule(layer_name)
    ours = ref.grad_cam(model, images, TARGETS, layer_name, convention="pre_relu")
    assert ours.shape == (3, 2, 7, 7)
    for rank in range(TARGETS.shape[1]):
        theirs = _captum(model, layer, images, TARGETS[:, rank])
        assert theirs.abs().amax() > 0
        assert_close(ours[:, rank], theirs, atol=1e-5, rtol=0)


def test_all_conventions_equal_captum_on_resnet_layer4(ref, resnet, images):
    # ResNet's layer4 output is not modified in place: no convention question arises there.
    theirs = _captum(resnet, resnet.layer4, images, TARGETS[:, 0])
    for convention in ref.CONVENTIONS:
        ours = ref.grad_cam(resnet, images, TARGETS[:, :1], "layer4", convention=convention)[:, 0]
        assert_close(ours, theirs, atol=1e-5, rtol=0)


def _torchcam(model, layer_name, images, classes, normalized):
    """torchcam's Grad-CAM: (N, h, w)."""
    with torchcam_methods.GradCAM(model, target_layer=layer_name) as extractor:
        scores = model(images)
        (cams,) = extractor(class_idx=classes.tolist(), scores=scores, normalized=normalized)
    return cams.detach()


@pytest.mark.parametrize(
    ("arch", "layer_name"),
    [("densenet121", "features"), ("densenet121", "features.denseblock3"), ("resnet18", "layer4")],
)
def test_post_relu_equals_torchcam(ref, densenet, resnet, images, arch, layer_name):
    model = densenet if arch == "densenet121" else resnet
    ours = ref.grad_cam(model, images, TARGETS, layer_name, convention="post_relu")
    for rank in range(TARGETS.shape[1]):
        normalised = _torchcam(model, layer_name, images, TARGETS[:, rank], normalized=True)
        assert_close(ref.normalize_maps(ours[:, rank]), normalised, atol=1e-4, rtol=0)
        raw = _torchcam(model, layer_name, images, TARGETS[:, rank], normalized=False)
        assert raw.abs().amax() > 0
        assert_close(ours[:, rank], raw, atol=1e-6, rtol=1e-4)


def test_pre_relu_differs_from_torchcam_at_features(ref, densenet, images):
    # The cross-checks above would be vacuous if the two libraries agreed at `features`.
    pre = ref.normalize_maps(ref.grad_cam(densenet, images, TARGETS[:, :1], "features", convention="pre_relu"))
    torchcam = _torchcam(densenet, "features", images, TARGETS[:, 0], normalized=True)
    assert (pre[:, 0] - torchcam).abs().amax() > 0.05
