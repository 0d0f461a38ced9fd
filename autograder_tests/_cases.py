"""The Grad-CAM cases that several checks share (models, images, classes, layers).

Each case is built from the references (:class:`~autograder_tests._reference.References`), which
choose a class that is not the argmax where that matters; see ``_inputs`` for the models and images.
"""

from __future__ import annotations

from ._inputs import CATS, DENSENET, EFFICIENTNET, EFFICIENTNET_LAYER, RESNET, SECOND_DOG, WOMAN_DOG, Case
from ._reference import References

__all__ = ["OTHER_SIZE", "block3_case", "call_text", "features_case", "grad_cam_cases"]


def features_case(refs: References) -> Case:
    """DenseNet-121 at ``features`` (1024 maps of 7x7), two cats, a class that is not the argmax."""
    return refs.distinct_class(DENSENET, CATS, "features")


def block3_case(refs: References) -> Case:
    """DenseNet-121 at ``features.denseblock3`` (1024 maps of 14x14), another image."""
    return refs.distinct_class(DENSENET, WOMAN_DOG, "features.denseblock3")


OTHER_SIZE = (160, 192)
"""The (H, W) of the image of ``grad_cam``'s ResNet-18 case: the map must have the image's size."""


def grad_cam_cases(refs: References) -> list[tuple[str, Case]]:
    """The situations ``grad_cam`` must handle, with what each one is for."""
    return [
        ("the output of `features` (7x7 maps, upsampled to 224x224)", features_case(refs)),
        ("an intermediate layer", block3_case(refs)),
        ("ResNet-18, on an image of another size than 224x224",
         refs.distinct_class(RESNET, SECOND_DOG.resized(*OTHER_SIZE), "layer4")),
        ("a model whose softmax and raw-score maps differ", refs.contrast_case()),
        ("a pretrained EfficientNet-Lite0", refs.distinct_class(EFFICIENTNET, CATS, EFFICIENTNET_LAYER)),
    ]


def call_text(function: str, case: Case) -> str:
    """How the call reads in the student's notebook."""
    return f"{function}(model, image, {case.class_idx}, model.{case.layer})"

