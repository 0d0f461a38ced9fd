"""What an image drawn in a figure shows, as plain data the judge compares (:func:`drawn_image`).

The judge scores a figure on what its images draw, not on how they were made; each image crosses as
a small grid of block means (:func:`downsample_image`), with its extent, colour map and norm.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["FIGURE_GRID", "MAX_AXES_IMAGES", "MAX_FIGURE_AXES", "MAX_IMAGE_SIDE", "downsample_image", "drawn_image"]

FIGURE_GRID = 32
"""Each image drawn in a figure crosses as a ``FIGURE_GRID x FIGURE_GRID`` block mean of its data."""
MAX_FIGURE_AXES = 32
MAX_AXES_IMAGES = 8
MAX_IMAGE_SIDE = 2048
"""Larger images are subsampled (every n-th pixel) to this size before the block mean."""


def downsample_image(values: np.ndarray, grid: int = FIGURE_GRID) -> np.ndarray:
    """Block means of an image: (H, W) or (H, W, C) -> (grid, grid) or (grid, grid, C), float32.

    Cell ``(i, j)`` is the mean of the pixels whose rows are in ``[i H / grid, (i + 1) H / grid)``
    and whose columns are in ``[j W / grid, (j + 1) W / grid)``; a side shorter than ``grid`` is
    repeated (nearest pixel). NaN (masked pixels) propagates into its cell.
    """
    array = np.asarray(values, dtype=np.float64)
    for axis in (0, 1):
        size = array.shape[axis]
        if size >= grid:
            bounds = (np.arange(grid + 1) * size) // grid
            counts = np.diff(bounds).reshape([-1 if a == axis else 1 for a in range(array.ndim)])
            array = np.add.reduceat(array, bounds[:-1], axis=axis) / counts
        else:
            array = np.take(array, ((np.arange(grid) + 0.5) * size / grid).astype(int), axis=axis)
    return array.astype(np.float32)


def _plain_float(value: Any) -> float | None:
    try:
        number = float(np.asarray(value, dtype=np.float64).reshape(()))
    except Exception:
        return None
    return number if np.isfinite(number) else None


def drawn_image(image: Any) -> dict[str, Any]:
    """Plain data for one ``matplotlib.image.AxesImage``: what it draws, for the judge to compare.

    Returns
    -------
    dict
        ``grid``: the data (scalar (H, W), or RGB(A) (H, W, 3|4)) as block means
        (:func:`downsample_image`), masked pixels NaN, or ``None`` with a ``note``; ``shape`` and
        ``dtype`` of the data; ``extent`` (left, right, bottom, top) and ``origin``; ``alpha`` (a
        number, ``None``, or the mean of an alpha array, then given in full as ``alpha_grid``);
        ``vmin``/``vmax`` of its norm and ``cmap`` (they map scalar data to colours); ``visible``
        and ``zorder``.
    """
    data = image.get_array()
    info: dict[str, Any] = {"kind": "image", "grid": None, "alpha_grid": None}
    if data is None:
        info["note"] = "no data"
        return info
    mask = np.ma.getmaskarray(data)
    array = np.asarray(np.ma.getdata(data))
    info["shape"] = [int(size) for size in array.shape]
    info["dtype"] = str(array.dtype)
    colours = array.ndim == 3 and array.shape[2] not in (3, 4)
    if array.dtype.kind not in "biuf" or array.ndim not in (2, 3) or colours or 0 in array.shape:
        info["note"] = "not an image"
        return info
    step = max(1, -(-max(array.shape[:2]) // MAX_IMAGE_SIDE))
    values = np.array(array[::step, ::step], dtype=np.float64)
    values[np.broadcast_to(mask, array.shape)[::step, ::step]] = np.nan
    info["grid"] = downsample_image(values)
    info["extent"] = [float(v) for v in image.get_extent()]
    info["origin"] = str(image.origin)
    alpha = image.get_alpha()
    if alpha is not None and np.ndim(alpha) == 2:
        alpha_array = np.asarray(alpha, dtype=np.float64)
        info["alpha"] = float(np.nanmean(alpha_array)) if alpha_array.size else None
        info["alpha_grid"] = downsample_image(alpha_array[::step, ::step])
    else:
        info["alpha"] = None if alpha is None else _plain_float(alpha)
    norm = getattr(image, "norm", None)
    info["vmin"] = _plain_float(getattr(norm, "vmin", None))
    info["vmax"] = _plain_float(getattr(norm, "vmax", None))
    info["cmap"] = str(getattr(image.get_cmap(), "name", ""))
    info["visible"] = bool(image.get_visible())
    info["zorder"] = _plain_float(image.get_zorder()) or 0.0
    return info

