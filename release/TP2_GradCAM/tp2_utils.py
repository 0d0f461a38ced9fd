"""Helpers for TP2 (Grad-CAM on DenseNet-121): models, class names, images and plots.

Everything here is given: you do not need to change this file. It holds

* the weights policy (``GRADCAM_WEIGHTS``) used to build the models,
* the ImageNet preprocessing and its inverse for display,
* the list of the course images and a robust image loader,
* a helper that draws a heatmap over an image.

The weights policy
------------------
The environment variable ``GRADCAM_WEIGHTS`` chooses the weights of every model built by
:func:`load_model`:

``imagenet`` (the default)
    torchvision's ImageNet weights, downloaded once into torchvision's cache.
``random``
    a seeded, deterministic random initialisation, for offline tests. The predictions of such a
    model mean nothing, and the module says so once per process.
a path to a file
    a state dict saved with ``torch.save(model.state_dict(), path)`` (DenseNet-121 only).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Sequence

import torch
import torchvision
from PIL import Image, UnidentifiedImageError
from torch import nn
from torchvision import transforms

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "WEIGHTS_ENV",
    "ImageLoadError",
    "WeightsError",
    "class_names",
    "default_device",
    "denormalize",
    "find_images_dir",
    "list_images",
    "load_batch",
    "load_image",
    "load_model",
    "preprocess",
    "show_cam_on_image",
    "weights_policy",
]

# --------------------------------------------------------------------------------------------
# Preprocessing (the one definition; its inverse sits right below it)
# --------------------------------------------------------------------------------------------
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_SIZE = 256
CROP_SIZE = 224

preprocess = transforms.Compose(
    [
        transforms.Resize(RESIZE_SIZE),
        transforms.CenterCrop(CROP_SIZE),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ]
)
"""PIL RGB image -> normalised tensor of shape (3, 224, 224)."""


def denormalize(images: torch.Tensor) -> torch.Tensor:
    """Undo the normalisation of :data:`preprocess`, for display.

    Parameters
    ----------
    images : Tensor, shape (3, H, W) or (N, 3, H, W)
        Normalised images.

    Returns
    -------
    Tensor, same shape
        Pixel values in [0, 1] (clamped), on the same device.
    """
    mean = torch.tensor(IMAGENET_MEAN, device=images.device, dtype=images.dtype).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device, dtype=images.dtype).view(3, 1, 1)
    return (images * std + mean).clamp(0.0, 1.0)


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------
IMAGES_DIR_ENV = "TP2_IMAGES_DIR"
IMAGES_DIR_NAME = "TP2_images"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class ImageLoadError(ValueError):
    """An image file is missing, truncated or not an image at all."""


def find_images_dir(start: str | os.PathLike | None = None) -> Path:
    """Locate the folder of course images.

    ``$TP2_IMAGES_DIR`` wins when set. Otherwise the first ``TP2_images/`` folder found in
    ``start`` (default: the current directory) or one of its parents.

    Raises
    ------
    FileNotFoundError
        With instructions, when no such folder exists.
    """
    if os.environ.get(IMAGES_DIR_ENV):
        folder = Path(os.environ[IMAGES_DIR_ENV]).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"${IMAGES_DIR_ENV} points to {folder}, which is not a folder.")
        return folder
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / IMAGES_DIR_NAME
        if candidate.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in candidate.iterdir()):
            return candidate
    raise FileNotFoundError(
        f"No {IMAGES_DIR_NAME}/ folder with images was found in {here} or its parents. Unzip the "
        f"course's TP2_images.zip next to this notebook, or set ${IMAGES_DIR_ENV} to its folder."
    )


def list_images(images_dir: str | os.PathLike | None = None) -> list[Path]:
    """Return the course images, sorted by file name."""
    folder = Path(images_dir) if images_dir is not None else find_images_dir()
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open an image file as RGB (grayscale and RGBA files are converted).

    Raises
    ------
    ImageLoadError
        Naming the file, when it is missing, truncated or not an image.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode == "RGBA":
                # Composite over white so that transparent pixels do not turn black.
                background = Image.new("RGBA", image.size, (255, 255, 255, 255))
                return Image.alpha_composite(background, image).convert("RGB")
            return image.convert("RGB")
    except FileNotFoundError as error:
        raise ImageLoadError(f"{path}: no such image file") from error
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ImageLoadError(f"{path}: not a readable image ({error})") from error


def load_batch(paths: Sequence[str | os.PathLike], device: torch.device | str | None = None) -> torch.Tensor:
    """Load and preprocess images into one batch.

    Returns
    -------
    Tensor, shape (N, 3, 224, 224)
        Normalised images, on ``device`` (default: CPU).
    """
    batch = torch.stack([preprocess(load_image(p)) for p in paths])
    return batch.to(device) if device is not None else batch


# --------------------------------------------------------------------------------------------
# Models and the weights policy
# --------------------------------------------------------------------------------------------
WEIGHTS_ENV = "GRADCAM_WEIGHTS"
DEFAULT_POLICY = "imagenet"
RANDOM_SEED = 0

_ARCHITECTURES = {
    "densenet121": (torchvision.models.densenet121, torchvision.models.DenseNet121_Weights.IMAGENET1K_V1),
    "resnet18": (torchvision.models.resnet18, torchvision.models.ResNet18_Weights.IMAGENET1K_V1),
}

# Checkpoints saved by old torchvision releases name DenseNet's layers "norm.1" instead of "norm1".
_LEGACY_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)

_random_notice_given: set[str] = set()


class WeightsError(RuntimeError):
    """The weights asked for by ``GRADCAM_WEIGHTS`` cannot be had."""


def weights_policy() -> str:
    """The value of ``$GRADCAM_WEIGHTS``: ``"imagenet"``, ``"random"`` or a file path."""
    return os.environ.get(WEIGHTS_ENV, "").strip() or DEFAULT_POLICY


def default_device() -> torch.device:
    """CUDA when available, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def imagenet_weights_file(arch: str = "densenet121") -> Path:
    """Where torchvision caches the ImageNet weights of ``arch`` (the file may not exist)."""
    weights = _ARCHITECTURES[arch][1]
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name


def class_names() -> list[str]:
    """The 1000 ImageNet class names, indexed like the model's outputs (no network needed)."""
    return list(torchvision.models.DenseNet121_Weights.IMAGENET1K_V1.meta["categories"])


def load_model(
    arch: str = "densenet121",
    weights: str | None = None,
    device: torch.device | str | None = None,
) -> nn.Module:
    """Build a pretrained classifier in eval mode, following the weights policy.

    Parameters
    ----------
    arch : {"densenet121", "resnet18"}
        The torchvision architecture.
    weights : str, optional
        ``"imagenet"``, ``"random"`` or a state-dict path; default: ``$GRADCAM_WEIGHTS``.
    device : torch.device or str, optional
        Where to put the model; default: the CPU.

    Returns
    -------
    nn.Module
        Maps images (N, 3, 224, 224) to raw class scores (N, 1000). Its attribute
        ``weights_source`` records where the weights came from.
    """
    if arch not in _ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {sorted(_ARCHITECTURES)}")
    builder, imagenet_weights = _ARCHITECTURES[arch]
    policy = weights or weights_policy()

    if policy == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_SEED)
            model = builder(weights=None)
        if arch not in _random_notice_given:
            _random_notice_given.add(arch)
            print(
                f"NOTE: {WEIGHTS_ENV}=random, so {arch} has seeded random weights, not ImageNet ones: "
                "its predictions and heatmaps mean nothing.",
                file=sys.stderr,
            )
    elif policy == "imagenet":
        try:
            model = builder(weights=imagenet_weights)
        except Exception as error:  # no network, a broken cache, a proxy...
            raise WeightsError(
                f"Could not get the ImageNet weights of {arch} ({type(error).__name__}: {error}). "
                f"Run once with internet access so that torchvision caches them in "
                f"{imagenet_weights_file(arch)}, or download {imagenet_weights.url} yourself and set "
                f"{WEIGHTS_ENV}=/path/to/that/file, or set {WEIGHTS_ENV}=random for offline tests "
                "(predictions then mean nothing)."
            ) from error
    else:
        model = builder(weights=None)
        model.load_state_dict(_read_state_dict(Path(policy).expanduser(), arch, model))

    model.weights_source = policy
    model.eval()
    return model.to(device) if device is not None else model


def _read_state_dict(path: Path, arch: str, model: nn.Module) -> dict[str, torch.Tensor]:
    """Read a state dict for ``model`` from ``path``, with errors that name the file."""
    if not path.is_file():
        raise WeightsError(
            f"{WEIGHTS_ENV}={path}: no such file. Use 'imagenet', 'random' or the path of a state "
            "dict saved with torch.save(model.state_dict(), path)."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise WeightsError(f"{WEIGHTS_ENV}={path}: not a readable PyTorch state dict ({error}).") from error
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"{WEIGHTS_ENV}={path}: holds a {type(state).__name__}, not a state dict.")
    state = {_LEGACY_DENSENET_KEY.sub(r"\1\2", key): value for key, value in state.items()}
    expected = model.state_dict().keys()
    missing, unexpected = sorted(expected - state.keys()), sorted(state.keys() - expected)
    if missing or unexpected:
        raise WeightsError(
            f"{WEIGHTS_ENV}={path}: not a {arch} state dict "
            f"({len(missing)} missing keys such as {missing[:2]}, "
            f"{len(unexpected)} unexpected keys such as {unexpected[:2]})."
        )
    return state


# --------------------------------------------------------------------------------------------
# Display
# --------------------------------------------------------------------------------------------
def show_cam_on_image(ax, image: torch.Tensor, cam: torch.Tensor, title: str = "", alpha: float = 0.5) -> None:
    """Draw a heatmap over an image on a matplotlib axis.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        Where to draw.
    image : Tensor, shape (3, H, W) or (1, 3, H, W)
        A normalised image, as produced by :data:`preprocess`.
    cam : Tensor, shape (H, W)
        The heatmap, with values in [0, 1].
    title : str
        The axis title.
    alpha : float
        Opacity of the heatmap.
    """
    picture = denormalize(image.detach().float().cpu().reshape(3, *image.shape[-2:]))
    ax.imshow(picture.permute(1, 2, 0).numpy())
    ax.imshow(cam.detach().float().cpu().numpy(), cmap="jet", alpha=alpha, vmin=0.0, vmax=1.0)
    ax.set_title(title)
    ax.axis("off")
