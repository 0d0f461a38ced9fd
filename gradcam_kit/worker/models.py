"""The models of the grader, built identically by the judge and by the worker.

``build_model(spec)`` is the one place where a :class:`~gradcam_kit.wire.frames.ModelSpec`
becomes a module. It is deterministic: the same spec gives the same weights in any process (the
``random`` weights policy of ``tp2_utils`` is seeded, and so is the contrast head below), so the
judge can compute its reference on its own copy and compare it with what the student's function
computed on the worker's copy.

The contrast head
-----------------
``ModelSpec("densenet121", head="contrast")`` replaces DenseNet's ``classifier`` by a fixed linear
layer built so that explaining the softmax (or log-softmax) of class ``c`` instead of its raw
score gives a clearly different heatmap, whatever the weights of the features:

* class :data:`CONTRAST_DOMINANT_CLASS` (``D``) has a bias of :data:`CONTRAST_MARGIN` and reads only
  the odd channels, with weights about :data:`CONTRAST_DOMINANT_GAIN` times larger than the others';
* every other class reads only the even channels, with positive weights, and has no bias.

The pooled features of DenseNet are non-negative, so ``D`` dominates the softmax (``p_D`` close to
1) for any input whose mean pooled feature stays below about 5 (random and ImageNet weights both
give about 0.5). For a class ``c != D`` the gradient of the raw score reads the even channels only,
while the gradient of ``p_c`` (or of ``log p_c``) is about ``p_c * (w_c - w_D)``: dominated by
*negative* weights on the odd channels, so its Grad-CAM is mostly cut by the ReLU and looks nothing
like the reference. ``p_c`` stays far above float32's smallest numbers, so the wrong map is not
merely zero. Explain any class but ``D``.
"""

from __future__ import annotations

from types import ModuleType

from gradcam_kit.wire.frames import ModelSpec

__all__ = [
    "ARCHITECTURES",
    "CONTRAST_DOMINANT_CLASS",
    "CONTRAST_DOMINANT_GAIN",
    "CONTRAST_MARGIN",
    "CONTRAST_SEED",
    "HEADS",
    "build_model",
    "contrast_head",
]

ARCHITECTURES = ("densenet121", "resnet18", "efficientnet_lite0")
HEADS = (None, "contrast")

CONTRAST_DOMINANT_CLASS = 0
"""The class that dominates the softmax under the contrast head (explain any other)."""
CONTRAST_MARGIN = 12.0
CONTRAST_DOMINANT_GAIN = 4.0
CONTRAST_SEED = 20240607


def contrast_head(in_features: int = 1024, num_classes: int = 1000):
    """The deterministic classifier of the ``contrast`` head (see the module's docstring).

    Returns
    -------
    torch.nn.Linear
        ``in_features -> num_classes``, in eval mode, the same in every process.
    """
    import torch

    generator = torch.Generator().manual_seed(CONTRAST_SEED)
    even = torch.arange(0, in_features, 2)
    odd = torch.arange(1, in_features, 2)
    weight = torch.zeros(num_classes, in_features)
    weight[:, even] = (0.5 + torch.rand(num_classes, len(even), generator=generator)) / len(even)
    dominant = CONTRAST_DOMINANT_CLASS
    weight[dominant] = 0.0
    weight[dominant, odd] = CONTRAST_DOMINANT_GAIN * (0.5 + torch.rand(len(odd), generator=generator)) / len(odd)
    bias = torch.zeros(num_classes)
    bias[dominant] = CONTRAST_MARGIN
    head = torch.nn.utils.skip_init(torch.nn.Linear, in_features, num_classes)  # no draw from the global RNG
    with torch.no_grad():
        head.weight.copy_(weight)
        head.bias.copy_(bias)
    return head.eval()


def _load_efficientnet():
    from gradcam_kit.efficientnet import load_efficientnet_lite0

    return load_efficientnet_lite0()  # its pretrained weights always (they install offline)


def build_model(spec: ModelSpec, helpers: ModuleType | None = None):
    """Build the model described by ``spec``, in eval mode, on the CPU.

    Parameters
    ----------
    spec : ModelSpec
        Architecture, weights and head.
    helpers : module, optional
        The course's ``tp2_utils``, which builds the torchvision models (EfficientNet-Lite0 needs
        none). The worker passes its own private copy, which the student's code never sees; the
        judge passes the course's.

    Returns
    -------
    torch.nn.Module
        A new model; two calls never share parameters.

    Raises
    ------
    ValueError
        For an unknown architecture or head, the contrast head on another model than DenseNet-121,
        or a torchvision model without ``helpers``.
    """
    if spec.arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {spec.arch!r}; choose one of {ARCHITECTURES}")
    if spec.head not in HEADS:
        raise ValueError(f"unknown head {spec.head!r}; choose one of {HEADS}")
    if spec.arch == "efficientnet_lite0":
        model = _load_efficientnet()
    elif helpers is None:
        raise ValueError(f"building {spec.arch} needs the course's helper module (tp2_utils)")
    else:
        model = helpers.load_model(spec.arch, weights=spec.weights)
    if spec.head == "contrast":
        if spec.arch != "densenet121":
            raise ValueError("the contrast head is defined for densenet121 only")
        model.classifier = contrast_head(model.classifier.in_features, model.classifier.out_features)
    return model.eval()
