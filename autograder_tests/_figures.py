"""What a figure draws, read back from the worker's description and compared with heatmaps.

The worker describes each image drawn in a panel (``gradcam_kit.worker.images.drawn_image``): its
data as ``G x G`` block means, with its extent, origin, alpha, norm and colormap. This module turns
a panel's images into *layers* on one grid, drops those that cannot be seen (invisible, almost
transparent, or covered by a later opaque image), and measures how much of what each layer draws
is explained by a given heatmap.

The measure does not depend on the colormap, the transparency or the way the heatmap is laid over
the photo. For one layer with channels ``Y`` (1 for scalar data, 3 or 4 for RGB(A)) over the grid's
cells, two least-squares fits are made, channel by channel:

* ``Y ~ photo``: an affine function of the photo's three channels (the photo drawn under a
  transparent heatmap, or blended into an RGB array, is explained by it);
* ``Y ~ photo + bins(m)``: the same, plus one free value per band of the heatmap ``m`` (its cells
  split into :data:`BANDS` bands of equal count by value): any function of the heatmap, however it
  was coloured.

The *heat score* is ``1 - RSS_2 / RSS_1``: the share of what the layer draws beyond the photo that
the heatmap explains. A layer that draws heatmap ``m`` through any colormap scores close to 1 for
``m`` (0.97 or more for scalar data, 0.95 or more for an RGB blend); a photo, a blank or a constant
layer scores 0; another class's heatmap scores what that map shares with ``m``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from gradcam_kit.worker.images import FIGURE_GRID, downsample_image

BANDS = 16
"""Bands of the heatmap in the heat score: a step function with 16 steps follows any colormap to
about 1/16 of its range; 16 free values over ``32 x 32 = 1024`` cells add about 0.015 to the score
of an unrelated layer."""
MIN_OPACITY = 0.1
"""A layer drawn with less opacity than this (alpha, times the mean of an alpha channel) is not seen."""
OPAQUE = 0.99
COVERED = 0.9
"""A layer of opacity :data:`OPAQUE` or more that covers this share of the panel hides the layers
drawn before it."""
PHOTO_ONLY = 1e-4
"""A layer whose variance the photo explains to within this share draws nothing but the photo."""
HEAT_MIN = 0.6
"""A panel shows a heatmap when one of its layers has a heat score of at least this for it.
Measured on the judge's case (DenseNet-121 at `features`, random weights): the right map drawn as
a scalar image in any colormap, or with the course's overlay, scores 0.975 to 0.992; blended into
an RGB array (jet, hot, the OpenCV recipe, an RGBA heat) 0.954 to 0.985; a 7x7 map stretched over
the photo 0.89 to 0.90; a blend over a photo drawn without de-normalisation 0.73 to 0.81. Another
class's map scores 0.81 at most (it is checked against the right one with :data:`HEAT_MARGIN`);
no heat at all, 0 (``tests/test_autograder_figures.py``)."""
MIN_CONTRAST = 0.05
"""A heatmap is seen only when the colours it explains span at least this much (in [0, 1] display
units, times the layer's opacity): a map squeezed into a sliver of its colormap (``vmax`` far
above its values) or drawn almost transparent is not seen."""
HEAT_MARGIN = 0.02
"""The panel's own map must score within this of the best-scoring other map (rounding of the bands)."""


@dataclass(frozen=True)
class Layer:
    """One image of a panel, on the panel's grid.

    Attributes
    ----------
    values : ndarray, shape (G, G, C)
        What the image draws, in display units ([0, 1] after its norm, or its RGB(A) values);
        NaN where it does not cover the panel's grid.
    opacity : float
        Its alpha (1 when none), times the mean of its alpha channel or alpha array.
    """

    values: np.ndarray
    opacity: float

    @property
    def coverage(self) -> float:
        return float(np.isfinite(self.values).all(axis=-1).mean())


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if np.isfinite(value) else None


def _extent(image: Mapping[str, Any], shape: Sequence[int]) -> tuple[float, float, float, float]:
    extent = image.get("extent")
    if isinstance(extent, list) and len(extent) == 4 and all(_number(v) is not None for v in extent):
        return tuple(float(v) for v in extent)  # type: ignore[return-value]
    height, width = shape[:2]
    return (-0.5, width - 0.5, height - 0.5, -0.5)


def _rows_start(image: Mapping[str, Any], extent: tuple[float, float, float, float]) -> tuple[float, float]:
    """The y coordinates where the image's first and last rows lie (``origin`` decides which end)."""
    _, _, bottom, top = extent
    return (bottom, top) if image.get("origin") == "lower" else (top, bottom)


def _display_values(image: Mapping[str, Any]) -> np.ndarray | None:
    """The image's grid in display units, shape (G, G, C), or ``None`` when it cannot be read."""
    grid = image.get("grid")
    if not isinstance(grid, np.ndarray) or grid.ndim not in (2, 3) or grid.shape[0] == 0:
        return None
    values = grid.astype(np.float64)
    if values.ndim == 2:
        low, high = _number(image.get("vmin")), _number(image.get("vmax"))
        if low is not None and high is not None:
            values = np.clip((values - low) / (high - low), 0.0, 1.0) if high > low else np.zeros_like(values)
        values = values[:, :, None]
    else:
        dtype = str(image.get("dtype", ""))
        if dtype.startswith(("uint", "int")):
            values = values / 255.0
        values = np.clip(values, 0.0, 1.0)
    alpha_grid = image.get("alpha_grid")
    if isinstance(alpha_grid, np.ndarray) and alpha_grid.shape == values.shape[:2]:
        values = np.concatenate([values, np.clip(alpha_grid.astype(np.float64), 0, 1)[:, :, None]], axis=2)
    return values


def _opacity(image: Mapping[str, Any], values: np.ndarray) -> float:
    alpha = _number(image.get("alpha"))
    opacity = 1.0 if alpha is None else min(max(alpha, 0.0), 1.0)
    grid = image.get("grid")
    if isinstance(grid, np.ndarray) and grid.ndim == 3 and grid.shape[2] == 4:
        channel = values[:, :, 3]
        if np.isfinite(channel).any():
            opacity *= float(np.nanmean(channel))
    return opacity


def panel_layers(axis: Mapping[str, Any]) -> list[Layer]:
    """The layers of one panel that can be seen, in drawing order, on the grid of its first image.

    Images are drawn by increasing ``zorder`` (then in the order they were added); an invisible
    image, one with opacity below :data:`MIN_OPACITY`, and every image drawn before an opaque one
    that covers the panel are left out.
    """
    images = [image for image in axis.get("images") or [] if isinstance(image, Mapping)]
    readable = [(image, values) for image in images if (values := _display_values(image)) is not None]
    if not readable:
        return []
    reference, first = readable[0]
    grid = first.shape[0]
    ref_extent = _extent(reference, reference.get("shape") or first.shape)
    left, right = ref_extent[0], ref_extent[1]
    row_first, row_last = _rows_start(reference, ref_extent)
    xs = left + (np.arange(grid) + 0.5) / grid * (right - left)
    ys = row_first + (np.arange(grid) + 0.5) / grid * (row_last - row_first)
    ordered = sorted(enumerate(readable), key=lambda item: (_number(item[1][0].get("zorder")) or 0.0, item[0]))
    layers: list[Layer] = []
    for _, (image, values) in ordered:
        if image.get("visible") is False:
            continue
        extent = _extent(image, image.get("shape") or values.shape)
        first_row, last_row = _rows_start(image, extent)
        size = values.shape[0]
        with np.errstate(divide="ignore", invalid="ignore"):
            columns = np.floor((xs - extent[0]) / (extent[1] - extent[0]) * size)
            rows = np.floor((ys - first_row) / (last_row - first_row) * size)
        inside_c = np.isfinite(columns) & (columns >= 0) & (columns < size)
        inside_r = np.isfinite(rows) & (rows >= 0) & (rows < size)
        placed = np.full((grid, grid, values.shape[2]), np.nan)
        r = np.where(inside_r, rows, 0).astype(int)
        c = np.where(inside_c, columns, 0).astype(int)
        picked = values[r[:, None], c[None, :]]
        placed[inside_r[:, None] & inside_c[None, :]] = picked[inside_r[:, None] & inside_c[None, :]]
        layer = Layer(placed, _opacity(image, values))
        if layer.opacity >= OPAQUE and layer.coverage >= COVERED:
            layers = []
        if layer.opacity >= MIN_OPACITY:
            layers.append(layer)
    return layers


def photo_grid(image: np.ndarray, grid: int = FIGURE_GRID) -> np.ndarray:
    """The photo as the course draws it (``tp2_utils.denormalize``), block-averaged: (G, G, 3).

    Parameters
    ----------
    image : ndarray, shape (1, 3, H, W) or (3, H, W)
        The normalised image given to the student's function.
    """
    mean = np.array([0.485, 0.456, 0.406]).reshape(3, 1, 1)
    std = np.array([0.229, 0.224, 0.225]).reshape(3, 1, 1)
    pixels = np.clip(np.asarray(image, dtype=np.float64).reshape(3, *np.shape(image)[-2:]) * std + mean, 0, 1)
    return downsample_image(pixels.transpose(1, 2, 0), grid).astype(np.float64)


def map_grid(heatmap: np.ndarray, grid: int = FIGURE_GRID) -> np.ndarray:
    """A heatmap (H, W) block-averaged as the worker averages the images it describes: (G, G)."""
    return downsample_image(np.asarray(heatmap, dtype=np.float64), grid).astype(np.float64)


def _bands(heatmap: np.ndarray) -> np.ndarray | None:
    """One-hot bands of equal count by value, shape (n, B), or ``None`` for a constant map."""
    if not np.isfinite(heatmap).all() or float(heatmap.max() - heatmap.min()) <= 1e-6:
        return None
    edges = np.unique(np.quantile(heatmap, np.linspace(0, 1, BANDS + 1)[1:-1]))
    index = np.searchsorted(edges, heatmap, side="right")
    used = np.unique(index)
    return (index[:, None] == used[None, :]).astype(np.float64)


def _residual_energy(targets: np.ndarray, regressors: np.ndarray) -> float:
    coefficients, *_ = np.linalg.lstsq(regressors, targets, rcond=None)
    return float(((targets - regressors @ coefficients) ** 2).sum())


def heat_score(layer: Layer, photo: np.ndarray, heatmap: np.ndarray) -> float:
    """The share of what ``layer`` draws beyond the photo that ``heatmap`` explains (module doc).

    Parameters
    ----------
    layer : Layer
    photo : ndarray, shape (G, G, 3)
    heatmap : ndarray, shape (G, G)

    Returns
    -------
    float in [0, 1]
        0 when the layer is constant, draws only the photo, or the heatmap is constant.
    """
    values = layer.values.reshape(-1, layer.values.shape[-1])
    keep = np.isfinite(values).all(axis=1) & np.isfinite(photo).reshape(-1, 3).all(axis=1) \
        & np.isfinite(heatmap).reshape(-1)
    if keep.sum() < 4 * BANDS:
        return 0.0
    targets = values[keep]
    bands = _bands(heatmap.reshape(-1)[keep])
    total = float(((targets - targets.mean(axis=0)) ** 2).sum())
    if bands is None or total <= 1e-12 * len(targets):
        return 0.0
    pixels = photo.reshape(-1, 3)[keep]
    with_photo = _residual_energy(targets, np.column_stack([pixels, np.ones(len(pixels))]))
    if with_photo <= PHOTO_ONLY * total:
        return 0.0
    regressors = np.column_stack([pixels, bands])
    coefficients, *_ = np.linalg.lstsq(regressors, targets, rcond=None)
    with_heat = float(((targets - regressors @ coefficients) ** 2).sum())
    heat_levels = coefficients[3:]  # (bands, C): the colour of each band, the photo's part aside
    contrast = float((heat_levels.max(axis=0) - heat_levels.min(axis=0)).max()) * layer.opacity
    if contrast < MIN_CONTRAST:
        return 0.0
    return float(min(max(1.0 - with_heat / with_photo, 0.0), 1.0))


def panel_score(layers: Sequence[Layer], photo: np.ndarray, heatmaps: Sequence[np.ndarray]) -> float:
    """The best heat score of any layer of a panel for any of ``heatmaps`` (the conventions of one class)."""
    return max((heat_score(layer, photo, heatmap) for layer in layers for heatmap in heatmaps), default=0.0)


def informative(heatmap: np.ndarray) -> bool:
    """Whether a heatmap can be recognised at all: a constant one cannot."""
    return _bands(np.asarray(heatmap, dtype=np.float64).reshape(-1)) is not None
