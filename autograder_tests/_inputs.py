"""What the judge runs Grad-CAM on: the models, the course images, and :class:`Case`.

A :class:`Case` names one situation (a model, an image, a class, a layer); the reference values
of a case (``_reference.References``) depend on nothing else besides the course and the weights
policy. Images are named by :class:`ImageRef`, a value (never a string to parse back): a course
image, possibly resized.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, replace

from gradcam_kit.wire.frames import ModelSpec

__all__ = ["CATS", "CONTRAST", "DENSENET", "EFFICIENTNET", "EFFICIENTNET_LAYER", "RESNET", "SECOND_DOG",
           "WOMAN_DOG", "Case", "ImageRef"]

DENSENET = ModelSpec("densenet121")
RESNET = ModelSpec("resnet18")
CONTRAST = ModelSpec("densenet121", head="contrast")
EFFICIENTNET = ModelSpec("efficientnet_lite0")
EFFICIENTNET_LAYER = "head_activation"
"""``gradcam_kit.efficientnet.GRADCAM_LAYER``: (N, 1280, 7, 7), nothing in place after it."""


@dataclass(frozen=True)
class ImageRef:
    """A course image as the judge feeds it to a model (``References.image``).

    Attributes
    ----------
    name : str
        The file's name in the course's images folder.
    size : tuple of int, optional
        ``(H, W)``: the preprocessed image (1, 3, 224, 224) resized (bilinear, antialiased) to
        (1, 3, H, W); ``None``: the preprocessed image itself.

    Being a frozen dataclass of a string and ints, its ``repr`` is deterministic and differs
    between sizes: it keys the reference cache, in memory and on disk.
    """

    name: str
    size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.size is not None:
            height, width = (operator.index(side) for side in self.size)  # an int, never a rounded float
            if height < 1 or width < 1:
                raise ValueError(f"an image size must be positive, not {self.size}")
            object.__setattr__(self, "size", (height, width))  # plain ints: a stable repr

    def resized(self, height: int, width: int) -> ImageRef:
        """The same course image, resized to ``height x width``."""
        return replace(self, size=(height, width))

    @property
    def original(self) -> ImageRef:
        """The course image as preprocessed, without the resizing."""
        return replace(self, size=None)

    def describe(self) -> str:
        """In the student's words, e.g. ``image 3633949157_f577605ea9.jpg resized to 160x192 pixels``."""
        if self.size is None:
            return f"image {self.name}"
        height, width = self.size
        return f"image {self.name} resized to {height}x{width} pixels"


CATS = ImageRef("2637374064_fab14ec0b8.jpg")
"""Two cats: pretrained models predict Egyptian cat, tabby, tiger cat."""
WOMAN_DOG = ImageRef("2068921624_ef0986de13.jpg")
SECOND_DOG = ImageRef("3633949157_f577605ea9.jpg")


@dataclass(frozen=True)
class Case:
    """One Grad-CAM situation: a model, an image, a class, a layer."""

    spec: ModelSpec
    image: ImageRef
    class_idx: int
    layer: str

    def describe(self) -> str:
        """In the student's words, e.g. ``densenet121, class 162, layer `features`, image 26...jpg``."""
        model = self.spec.arch + (" with a special classifier head" if self.spec.head else "")
        return f"{model}, class {self.class_idx}, layer `{self.layer}`, {self.image.describe()}"
