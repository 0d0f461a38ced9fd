"""How the judge reads a figure: the worker's description of drawn images, and the heat score.

``show_grad_cam`` is judged on what it draws (``autograder_tests/_figures.py``): each panel must show
the map of its class, whatever the colormap, the alpha or the way the map is laid over the photo,
and blank, constant, hidden or swapped heatmaps must not count. These tests draw real matplotlib
figures in the styles students use, describe them as the worker does
(``gradcam_kit.worker.describe.Describer``), and score them against maps whose answer is known:
smooth blobs at known places over a synthetic photo, and, for the margins, the real maps of the
judge's case.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from autograder_tests import _figures
from gradcam_kit.worker.describe import Describer
from gradcam_kit.worker.images import FIGURE_GRID, downsample_image

SIZE = 224


def blob(row: float, column: float, width: float = 30.0) -> np.ndarray:
    """A Gaussian blob at (row, column), min-max scaled to [0, 1]: a map whose place is known."""
    rows, columns = np.mgrid[0:SIZE, 0:SIZE]
    heat = np.exp(-((rows - row) ** 2 + (columns - column) ** 2) / (2 * width**2))
    return (heat - heat.min()) / (heat.max() - heat.min())


MAPS = [blob(60, 60), blob(60, 170), blob(170, 110), np.zeros((SIZE, SIZE))]
"""Three maps in different places, and a blank one (as the least likely class's often is)."""


@pytest.fixture(scope="module")
def normalised_image() -> np.ndarray:
    """A synthetic photo with structure (stripes and a gradient), normalised as the course does: (1, 3, H, W)."""
    rows, columns = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    pixels = np.stack([0.5 + 0.4 * np.sin(12 * columns), rows, 0.3 + 0.5 * (np.cos(9 * rows * columns) > 0)])
    mean = np.array([0.485, 0.456, 0.406]).reshape(3, 1, 1)
    std = np.array([0.229, 0.224, 0.225]).reshape(3, 1, 1)
    return ((pixels - mean) / std)[None].astype(np.float32)


def photo_of(image: np.ndarray) -> np.ndarray:
    mean = np.array([0.485, 0.456, 0.406]).reshape(3, 1, 1)
    std = np.array([0.229, 0.224, 0.225]).reshape(3, 1, 1)
    return np.clip(image[0] * std + mean, 0, 1).transpose(1, 2, 0)


def draw(style: str, ax, photo: np.ndarray, heat: np.ndarray) -> None:
    """One panel in a given style (honest ones first)."""
    jet = plt.get_cmap("jet")
    if style == "course overlay":  # tp2_utils.show_cam_on_image
        ax.imshow(photo)
        ax.imshow(heat, cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0)
    elif style == "autoscaled jet":
        ax.imshow(photo)
        ax.imshow(heat, alpha=0.5, cmap="jet")
    elif style == "viridis, alpha 0.3":
        ax.imshow(photo)
        ax.imshow(heat, alpha=0.3, cmap="viridis")
    elif style == "blended RGB":
        ax.imshow(0.5 * photo + 0.5 * jet(heat)[..., :3])
    elif style == "blended uint8, BGR heat":  # the OpenCV recipe
        ax.imshow((0.6 * photo * 255 + 0.4 * jet(heat)[..., 2::-1] * 255).astype(np.uint8))
    elif style == "RGBA heat, alpha = heat":
        ax.imshow(photo)
        rgba = jet(heat)
        rgba[..., 3] = heat
        ax.imshow(rgba)
    elif style == "alpha array":
        ax.imshow(photo)
        ax.imshow(heat, cmap="jet", alpha=heat)
    elif style == "grey photo":
        ax.imshow(photo.mean(axis=-1), cmap="gray")
        ax.imshow(heat, cmap="hot", alpha=0.4)
    elif style == "heat only":
        ax.imshow(heat, cmap="jet")
    elif style == "origin lower":
        ax.imshow(photo, origin="lower")
        ax.imshow(heat, origin="lower", cmap="jet", alpha=0.5)
    elif style == "blank":
        ax.imshow(np.zeros((SIZE, SIZE)))
    elif style == "photo only":
        ax.imshow(photo)
    elif style == "constant heat":
        ax.imshow(photo)
        ax.imshow(np.full((SIZE, SIZE), 0.7), cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0)
    elif style == "noise":
        ax.imshow(photo)
        ax.imshow(np.random.default_rng(0).random((SIZE, SIZE)), cmap="jet", alpha=0.5)
    elif style == "heat under the photo":
        ax.imshow(heat, cmap="jet")
        ax.imshow(photo)
    elif style == "heat squeezed by vmax":
        ax.imshow(photo)
        ax.imshow(heat, cmap="jet", alpha=0.5, vmin=0.0, vmax=1000.0)
    elif style == "heat nearly transparent":
        ax.imshow(photo)
        ax.imshow(heat, cmap="jet", alpha=0.05)
    elif style == "heat invisible":
        ax.imshow(photo)
        ax.imshow(heat, cmap="jet", alpha=0.5).set_visible(False)
    else:
        raise ValueError(style)


HONEST = ["course overlay", "autoscaled jet", "viridis, alpha 0.3", "blended RGB", "blended uint8, BGR heat",
          "RGBA heat, alpha = heat", "alpha array", "grey photo", "heat only", "origin lower"]
NO_HEAT = ["blank", "photo only", "constant heat", "noise", "heat under the photo", "heat squeezed by vmax",
           "heat nearly transparent", "heat invisible"]


def scores_of(style: str, image: np.ndarray, maps=MAPS, order=None) -> np.ndarray:
    """``scores[i, j]``: the score of panel i (drawn with map ``order[i]``) for map j."""
    order = list(range(len(maps))) if order is None else order
    figure, axes = plt.subplots(1, len(order))
    for ax, index in zip(axes, order):
        draw(style, ax, photo_of(image), maps[index])
    described = Describer(2**26).describe(figure)
    plt.close(figure)
    photo = _figures.photo_grid(image)
    grids = [_figures.map_grid(m) for m in maps]
    return np.array([[_figures.panel_score(_figures.panel_layers(axis), photo, [grid]) for grid in grids]
                     for axis in described["axes"]])


@pytest.mark.parametrize("style", HONEST)
def test_an_honest_panel_shows_its_own_map_best(style, normalised_image):
    scores = scores_of(style, normalised_image)
    for panel in range(3):
        assert scores[panel, panel] >= _figures.HEAT_MIN, (style, scores.round(3))
        others = [scores[panel, j] for j in range(3) if j != panel]
        assert scores[panel, panel] > max(others) + 0.2, (style, scores.round(3))
    # the blank map is recognised nowhere, and a panel drawing it shows no other map
    assert scores[:, 3].max() == 0.0
    assert scores[3, :3].max() < _figures.HEAT_MIN, (style, scores.round(3))


@pytest.mark.parametrize("style", NO_HEAT)
def test_a_panel_without_visible_heat_shows_no_map(style, normalised_image):
    scores = scores_of(style, normalised_image)
    assert scores.max() < 0.1, (style, scores.round(3))


def test_swapped_panels_show_the_other_map(normalised_image):
    scores = scores_of("course overlay", normalised_image, order=[1, 0, 2, 3])
    assert scores[0].argmax() == 1 and scores[1].argmax() == 0
    assert scores[0, 0] < _figures.HEAT_MIN and scores[1, 1] < _figures.HEAT_MIN


def test_the_real_maps_of_the_judges_case_are_told_apart(course, tmp_path_factory, one_thread):
    """On DenseNet's maps at `features` (random weights: the top two classes' maps are alike, their
    correlation near 0.9), the course overlay of one map still scores its own map far above the
    other classes' maps."""
    from autograder_tests._inputs import CATS, DENSENET
    from autograder_tests._reference import References

    cache = tmp_path_factory.getbasetemp() / "gradcam-reference-cache"  # shared with the judge's tests
    cache.mkdir(exist_ok=True)
    refs = References(course, cache)
    scores = refs.scores(DENSENET, CATS)
    classes = refs.key.top_and_least(torch.from_numpy(scores))
    maps = [refs.class_maps(DENSENET, CATS, "features", classes)[c]["pre_relu"] for c in classes]
    image = refs.image(CATS)
    table = scores_of("course overlay", image, maps=maps)
    for panel, class_maps in enumerate(maps):
        if not _figures.informative(_figures.map_grid(class_maps)):
            assert table[panel].max() < _figures.HEAT_MIN
            continue
        others = [table[panel, j] for j in range(len(maps)) if j != panel]
        assert table[panel, panel] >= 0.95 and table[panel, panel] > max(others) + 0.1, table.round(3)


# ------------------------------------------------------------------------------------------------
# the worker's description of drawn images
# ------------------------------------------------------------------------------------------------
def test_downsample_is_a_block_mean():
    values = np.arange(8 * 6, dtype=np.float64).reshape(8, 6)
    grid = downsample_image(values, 2)
    assert grid.shape == (2, 2)
    assert grid[0, 0] == values[:4, :3].mean() and grid[1, 1] == values[4:, 3:].mean()
    small = downsample_image(np.array([[1.0, 2.0], [3.0, 4.0]]), 4)  # repeated, nearest pixel
    np.testing.assert_array_equal(small, np.repeat(np.repeat([[1.0, 2.0], [3.0, 4.0]], 2, axis=0), 2, axis=1))
    rgb = downsample_image(np.ones((10, 10, 3)), 5)
    assert rgb.shape == (5, 5, 3) and rgb.dtype == np.float32


def test_a_figure_describes_what_each_image_draws():
    figure, axes = plt.subplots(1, 2)
    heat = blob(100, 40)
    axes[0].imshow(np.zeros((SIZE, SIZE, 3)))
    axes[0].imshow(heat, cmap="magma", alpha=0.4, vmin=0.0, vmax=2.0, extent=(0, 10, 10, 0))
    axes[0].set_title("tabby")
    masked = np.ma.masked_less(heat, 0.5)
    axes[1].imshow(masked, origin="lower")
    described = Describer(2**26).describe(figure)
    plt.close(figure)
    first, second = described["axes"]
    assert first["title"] == "tabby" and first["n_images"] == 2
    photo, overlay = first["images"]
    assert photo["grid"].shape == (FIGURE_GRID, FIGURE_GRID, 3) and photo["shape"] == [SIZE, SIZE, 3]
    assert overlay["cmap"] == "magma" and overlay["alpha"] == 0.4
    assert (overlay["vmin"], overlay["vmax"]) == (0.0, 2.0) and overlay["extent"] == [0.0, 10.0, 10.0, 0.0]
    np.testing.assert_allclose(overlay["grid"], downsample_image(heat), atol=1e-6)
    (image,) = second["images"]
    assert image["origin"] == "lower" and np.isnan(image["grid"]).any() and np.isfinite(image["grid"]).any()


def test_a_hostile_or_huge_image_is_described_safely():
    from matplotlib.image import AxesImage

    class Hostile(AxesImage):
        def get_array(self):
            raise RuntimeError("no")

    figure, ax = plt.subplots()
    ax.add_image(Hostile(ax))
    ax.imshow(np.ones((5000, 3000)))  # subsampled before averaging
    odd = AxesImage(ax)
    odd._A = np.zeros((2, 2, 7))  # seven channels: set_data would refuse it, a subclass need not
    ax.add_image(odd)
    described = Describer(2**26).describe(figure)
    plt.close(figure)
    hostile, huge, odd = described["axes"][0]["images"]
    assert hostile["grid"] is None and "unreadable" in hostile["note"]
    assert huge["grid"].shape == (FIGURE_GRID, FIGURE_GRID) and float(huge["grid"].max()) == 1.0
    assert odd["grid"] is None and odd["note"] == "not an image"


def test_layers_follow_extent_and_drawing_order():
    heat = np.zeros((8, 8))
    heat[:4] = 1.0  # the top half
    axis = {"images": [
        {"grid": downsample_image(np.zeros((SIZE, SIZE, 3))), "dtype": "float64", "shape": [SIZE, SIZE, 3],
         "extent": [-0.5, SIZE - 0.5, SIZE - 0.5, -0.5], "origin": "upper", "alpha": None, "zorder": 0.0},
        # the same heat, drawn over the left half of the panel only
        {"grid": downsample_image(heat), "dtype": "float64", "shape": [8, 8], "vmin": 0.0, "vmax": 1.0,
         "extent": [-0.5, SIZE / 2 - 0.5, SIZE - 0.5, -0.5], "origin": "upper", "alpha": 0.5, "zorder": 1.0},
    ]}
    layers = _figures.panel_layers(axis)
    assert len(layers) == 2
    placed = layers[1].values[:, :, 0]
    half = FIGURE_GRID // 2
    assert np.isnan(placed[:, half:]).all() and np.isfinite(placed[:, :half]).all()
    assert (placed[: half - 1, :half] == 1.0).all() and (placed[half + 1:, :half] == 0.0).all()
    # an opaque image drawn last hides everything before it
    axis["images"].append(dict(axis["images"][0], zorder=2.0))
    assert len(_figures.panel_layers(axis)) == 1
