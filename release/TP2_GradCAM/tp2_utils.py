"""Helpers for TP2 (Grad-CAM on DenseNet-121): models, class names, images and plots.

Everything here is given: you do not need to change this file. It holds

* the weights policy used to build the models (:func:`choose_weights`, ``GRADCAM_WEIGHTS``),
* the ImageNet preprocessing and its inverse for display,
* the list of the course images and a robust image loader,
* a helper that draws a heatmap over an image.

The weights policy
------------------
:func:`load_model` builds every model with the weights chosen, for that model, by

1. :func:`choose_weights`, called in the notebook (``choose_weights("random")``, or one file per
   model: ``choose_weights(densenet121="densenet121-a639ec97.pth", resnet18="resnet18-f37072fd.pth")``);
2. else the environment variable ``GRADCAM_WEIGHTS``;
3. else ``imagenet``.

A policy is one of

``imagenet`` (the default)
    torchvision's ImageNet weights, downloaded once into torchvision's cache (about 31 MB for
    DenseNet-121, 45 MB for ResNet-18).
``random``
    a seeded, deterministic random initialisation, for offline tests. The predictions and the
    heatmaps of such a model mean nothing (Parts 2 to 4 and the bonus then mean nothing either),
    and the module says so once per model and process.
a path to a file
    a state dict saved with ``torch.save(model.state_dict(), path)``, e.g. torchvision's
    ``densenet121-a639ec97.pth``; it must fit the model it is given for.
a path to a folder
    the folder that holds each model's file under torchvision's name (``densenet121-a639ec97.pth``,
    ``resnet18-f37072fd.pth``), like torchvision's own cache.

Errors that a student can fix (no weights, no images) are :class:`SetupError`: Jupyter shows
their few lines of explanation instead of a long traceback.
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
    "ImagesNotFound",
    "SetupError",
    "WeightsError",
    "choose_weights",
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
# Errors a student can fix
# --------------------------------------------------------------------------------------------
class SetupError(Exception):
    """A problem of the set-up (weights, images) that the student can fix, explained in a few lines.

    Jupyter (IPython) shows the message alone, without a traceback: the message says what went
    wrong and what to do.
    """

    def _render_traceback_(self) -> list[str]:
        """What IPython shows instead of a traceback: the error's name and its message."""
        first, *rest = str(self).splitlines() or [""]
        return [f"{type(self).__name__}: {first}", *rest]


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------
IMAGES_DIR_ENV = "TP2_IMAGES_DIR"
IMAGES_DIR_NAME = "TP2_images"
IMAGES_ARCHIVE = "TP2_images.zip"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class ImageLoadError(ValueError):
    """An image file is missing, truncated or not an image at all."""


class ImagesNotFound(SetupError, FileNotFoundError):
    """The folder of course images cannot be found."""


def find_images_dir(start: str | os.PathLike | None = None) -> Path:
    """Locate the folder of course images.

    ``$TP2_IMAGES_DIR`` wins when set. Otherwise the first ``TP2_images/`` folder found in
    ``start`` (default: the current directory) or one of its parents.

    Raises
    ------
    ImagesNotFound
        A ``FileNotFoundError`` that says where to get the images and where to put them.
    """
    if os.environ.get(IMAGES_DIR_ENV):
        folder = Path(os.environ[IMAGES_DIR_ENV]).expanduser()
        if not folder.is_dir():
            raise ImagesNotFound(f"${IMAGES_DIR_ENV} points to {folder}, which is not a folder.")
        return folder
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / IMAGES_DIR_NAME
        if candidate.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in candidate.iterdir()):
            return candidate
    raise ImagesNotFound(
        f"No {IMAGES_DIR_NAME}/ folder with images was found in {here} or its parents.\n"
        f"Get {IMAGES_ARCHIVE} from the course page and unzip it next to this notebook, so that "
        f"{here / IMAGES_DIR_NAME}/ holds the .jpg and .png files\n"
        f"(on Colab or a JupyterHub without the course folder, run the cell that fetches the course "
        f"files), or set ${IMAGES_DIR_ENV} to the folder that holds them."
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
_chosen: dict[str | None, str] = {}
"""What :func:`choose_weights` chose: a policy per architecture, or for all (key ``None``)."""


class WeightsError(SetupError, RuntimeError):
    """The weights asked for cannot be had."""


def choose_weights(policy: str | os.PathLike | None = None, **per_model: str | os.PathLike) -> None:
    """Choose the weights of the models built from now on in this notebook (or process).

    Parameters
    ----------
    policy : str or path, optional
        For every model: ``"imagenet"``, ``"random"``, a state-dict file or a folder of weights
        files (see the module's docstring). ``None`` leaves the general choice as it is.
    **per_model : str or path
        For one model, by architecture name: ``densenet121=...``, ``resnet18=...``; wins over
        ``policy``.

    Examples
    --------
    >>> choose_weights("random")                                   # offline: predictions mean nothing
    >>> choose_weights(densenet121="densenet121-a639ec97.pth",     # a file per model
    ...                resnet18="resnet18-f37072fd.pth")

    Raises
    ------
    ValueError
        For an unknown architecture.
    WeightsError
        For a path that does not exist.
    """
    unknown = sorted(set(per_model) - set(_ARCHITECTURES))
    if unknown:
        raise ValueError(f"unknown architecture {unknown[0]!r}; choose among {sorted(_ARCHITECTURES)}")
    choices: dict[str | None, str] = {} if policy is None else {None: _checked_policy(policy)}
    choices.update({arch: _checked_policy(value, arch) for arch, value in per_model.items()})
    _chosen.update(choices)
    for arch in _ARCHITECTURES:
        print(f"{arch}: {describe_weights(weights_policy(arch))}")


def _checked_policy(value: str | os.PathLike, arch: str | None = None) -> str:
    text = str(value).strip()
    if text in ("imagenet", "random"):
        return text
    path = Path(text).expanduser()
    if not path.exists():
        for_model = f" for {arch}" if arch else ""
        raise WeightsError(f"{path}: no such file or folder (the weights asked for{for_model}). Give the path of "
                           "a weights file, or 'imagenet' or 'random'.")
    return str(path.resolve())


def describe_weights(policy: str) -> str:
    """A policy in words, e.g. ``seeded random weights: predictions and heatmaps mean nothing``."""
    if policy == "imagenet":
        return "torchvision's ImageNet weights"
    if policy == "random":
        return ("seeded random weights: its predictions and heatmaps mean nothing, and so would the answers "
                "of Parts 2 to 4 and of the bonus")
    return f"the weights in {policy}"


def weights_policy(arch: str | None = None) -> str:
    """The weights policy of ``arch``: :func:`choose_weights`'s choice, else ``$GRADCAM_WEIGHTS``, else
    ``"imagenet"``. Returns ``"imagenet"``, ``"random"`` or a path."""
    if arch in _chosen:
        return _chosen[arch]
    if None in _chosen:
        return _chosen[None]
    return os.environ.get(WEIGHTS_ENV, "").strip() or DEFAULT_POLICY


def default_device() -> torch.device:
    """CUDA when available, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def imagenet_weights_file(arch: str = "densenet121") -> Path:
    """Where torchvision caches the ImageNet weights of ``arch`` (the file may not exist)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / weights_file_name(arch)


def weights_file_name(arch: str) -> str:
    """torchvision's file name of the ImageNet weights of ``arch``, e.g. ``densenet121-a639ec97.pth``."""
    return Path(_ARCHITECTURES[arch][1].url).name


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
        ``"imagenet"``, ``"random"``, a state-dict file or a folder of weights files; default:
        :func:`weights_policy` of ``arch``.
    device : torch.device or str, optional
        Where to put the model; default: the CPU.

    Returns
    -------
    nn.Module
        Maps images (N, 3, 224, 224) to raw class scores (N, 1000). Its attribute
        ``weights_source`` records where the weights came from.

    Raises
    ------
    WeightsError
        When the weights cannot be had, with what to do about it.
    """
    if arch not in _ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {sorted(_ARCHITECTURES)}")
    builder, imagenet_weights = _ARCHITECTURES[arch]
    policy = weights or weights_policy(arch)

    if policy == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_SEED)
            model = builder(weights=None)
        if arch not in _random_notice_given:
            _random_notice_given.add(arch)
            print(f"NOTE: {WEIGHTS_ENV}=random, so {arch} has seeded random weights, not ImageNet ones: its "
                  "predictions and heatmaps mean nothing (and so would the answers of Parts 2 to 4 and of the bonus).",
                  file=sys.stderr)
    elif policy == "imagenet":
        try:
            model = builder(weights=imagenet_weights)
        except Exception as error:  # no network, a broken cache, a proxy...
            raise WeightsError(_no_imagenet_weights(arch, error)) from None
    else:
        path = Path(policy).expanduser()
        if path.is_dir():
            path = path / weights_file_name(arch)
        model = builder(weights=None)
        model.load_state_dict(_read_state_dict(path, arch, model))

    model.weights_source = policy
    model.eval()
    return model.to(device) if device is not None else model


def _no_imagenet_weights(arch: str, error: Exception) -> str:
    """What to do when the ImageNet weights of ``arch`` cannot be downloaded."""
    cause = " ".join(f"{type(error).__name__}: {error}".split())
    cause = cause if len(cause) <= 160 else cause[:157] + "..."
    url = _ARCHITECTURES[arch][1].url
    return (
        f"the ImageNet weights of {arch} could not be downloaded ({cause}).\n"
        f"Fix it in the cell that chooses the weights (in Setup), then run this cell again:\n"
        f"  * with network access once, leave the choice as it is: torchvision keeps the file in "
        f"{imagenet_weights_file(arch).parent};\n"
        f"  * with the file {weights_file_name(arch)} (from {url}): "
        f"tp2_utils.choose_weights({arch}=\"/path/to/{weights_file_name(arch)}\");\n"
        f"  * with no weights at all: tp2_utils.choose_weights(\"random\"). Everything then runs, but the "
        f"predictions and heatmaps mean nothing.\n"
        f"Outside a notebook, set {WEIGHTS_ENV} to the file, to a folder of weights files or to 'random'."
    )


def _read_state_dict(path: Path, arch: str, model: nn.Module) -> dict[str, torch.Tensor]:
    """Read a state dict for ``model`` from ``path``, with errors that name the file."""
    if not path.is_file():
        raise WeightsError(
            f"{path}: no such file (the weights of {arch}). Give the path of a state dict saved with "
            f"torch.save(model.state_dict(), path), such as torchvision's {weights_file_name(arch)}, "
            "or 'imagenet' or 'random'."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise WeightsError(f"{path}: not a readable PyTorch state dict ({error}).") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: holds a {type(state).__name__}, not a state dict.")
    state = {_LEGACY_DENSENET_KEY.sub(r"\1\2", key): value for key, value in state.items()}
    expected = model.state_dict().keys()
    missing, unexpected = sorted(expected - state.keys()), sorted(state.keys() - expected)
    if missing or unexpected:
        raise WeightsError(
            f"{path}: not a {arch} state dict "
            f"({len(missing)} missing keys such as {missing[:2]}, "
            f"{len(unexpected)} unexpected keys such as {unexpected[:2]}). Each model needs its own file: "
            f"tp2_utils.choose_weights({arch}=\"/path/to/{weights_file_name(arch)}\")."
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
