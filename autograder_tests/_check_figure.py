"""The checks of the classes and the figure: ``top_and_least`` and ``show_grad_cam``.

``top_and_least`` is compared exactly with the answer key on scores without ties.
``show_grad_cam`` is judged on what its figure draws (the worker describes the figure; ``_figures``
scores each panel against the reference heatmaps of every class); a wrong figure is decided by
the charge-once rule (``_charge_once``) when helpers of ``show_grad_cam`` are broken.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np
import torch

from gradcam_kit.grading.feedback import CheckFailure, describe_value, fmt_shape
from gradcam_kit.host.outcomes import Outcome
from gradcam_kit.wire.frames import LayerRef

from . import _figures
from ._charge_once import charge_once, with_grader_helpers
from ._inputs import CATS, DENSENET
from ._judge import Judge
from ._reference import References

__all__ = [
    "FIGURE_LAYER",
    "check_show_grad_cam",
    "check_top_and_least",
    "figure_classes",
    "figure_problem",
    "top_and_least_inputs",
]


def top_and_least_inputs() -> list[tuple[np.ndarray, dict[str, Any]]]:
    """Scores without ties: 1000 classes (shape (C,) and (1, C)), several k."""
    rng = np.random.default_rng(20240604)
    first = (rng.permutation(1000).astype(np.float32) * 0.37 - 150.0)
    second = (rng.permutation(1000).astype(np.float32) * 0.01 + rng.uniform(-1, 1)).astype(np.float32)[None]
    third = np.array([[2.0, -1.0, 7.0, 0.5, -3.0, 4.0, 6.5, 1.0]], dtype=np.float32)
    return [(first, {}), (second, {"k": 5}), (third[0], {"k": 1}), (third, {"k": 3})]


def _int_list(value: Any) -> list[int] | None:
    if isinstance(value, (list, tuple)) and all(type(item) is int for item in value):
        return list(value)
    return None


def check_top_and_least(judge: Judge) -> str:
    """Scores of shapes (C,) and (1, C) with no ties, k = 3 (default), 5 and 1: the k best classes,
    best first, then the worst, as plain ints (exact comparison)."""
    judge.require("top_and_least")
    key = judge.refs.key
    for scores, kwargs in top_and_least_inputs():
        k = kwargs.get("k", 3)
        call = f"top_and_least(scores{', k=' + str(k) if kwargs else ''})"
        outcome = judge.call("top_and_least", scores, **kwargs)
        if not outcome.ok:
            raise CheckFailure(f"`{call}` with scores of shape {fmt_shape(scores.shape)} failed: {outcome.error}")
        got = _int_list(outcome.value)
        if got is None:
            hint = ""
            if isinstance(outcome.value, (list, tuple)) and outcome.value and isinstance(outcome.value[0], dict):
                hint = " Convert each index with int(...) (or use .tolist())."
            raise CheckFailure(f"`{call}` should return a list of {k + 1} plain Python ints; it returned "
                               f"{describe_value(outcome.value)}.{hint}")
        expected = key.top_and_least(torch.from_numpy(scores), k)
        if got != expected:
            flat = scores.reshape(-1)
            shown = ", ".join(f"{i} (score {flat[i]:.4g})" for i in expected)
            hint = ""
            if len(got) == k + 1 and got[:k] == expected[:k][::-1]:
                hint = " The best classes come first: sort by decreasing score."
            elif len(got) == k + 1 and got[:k] == expected[:k]:
                hint = " The last index should be the class with the lowest score."
            elif len(got) != k + 1:
                hint = f" Return k + 1 = {k + 1} indices."
            raise CheckFailure(f"`{call}` on scores of shape {fmt_shape(scores.shape)} should return "
                               f"[{', '.join(map(str, expected))}]: {shown}; yours returned {got}.{hint}")
    return ""


FIGURE_LAYER = "features"
"""``show_grad_cam`` is judged on DenseNet-121 at ``features``, on the two cats."""


def _names_in_order(titles: Sequence[str], names: Sequence[str]) -> bool:
    """Whether each title names its class (as a whole word or phrase)."""
    return len(titles) == len(names) and all(
        re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", title) for title, name in zip(titles, names, strict=True))


def figure_classes(refs: References) -> list[int]:
    """The classes of the four panels: the three most likely, best first, then the least likely."""
    return refs.key.top_and_least(torch.from_numpy(refs.scores(DENSENET, CATS)))


def check_show_grad_cam(judge: Judge) -> str:
    """DenseNet-121, two cats, at ``features``: a Figure with four image panels, titled with the
    names of the three most likely classes (best first) and of the least likely one, each showing
    the Grad-CAM map of its class (:func:`figure_problem`).

    When the figure is wrong and a helper of ``show_grad_cam`` is broken, it is drawn again with
    the grader's versions of the broken helpers; it passes if that figure is right
    (:func:`~autograder_tests._charge_once.charge_once`).
    """
    judge.require("show_grad_cam")
    refs = judge.refs
    arguments = (refs.image(CATS), DENSENET, LayerRef(FIGURE_LAYER), refs.class_names())
    problem = figure_problem(judge, judge.call("show_grad_cam", *arguments))
    if problem is None:
        return ""
    substitutes = charge_once(judge, "show_grad_cam", arguments, problem,
                              lambda retried: figure_problem(judge, retried) is None)
    return with_grader_helpers(judge, "show_grad_cam", substitutes, ["the two cats at `features`"])


def figure_problem(judge: Judge, outcome: Outcome) -> str | None:
    """What is wrong with the figure that ``show_grad_cam`` gave, in the student's terms, or ``None``.

    Four panels (axes with an image), titled in order with the names of :func:`figure_classes`;
    each shows the Grad-CAM map of its class over the image, in any colormap, with any alpha, as
    separate images or blended into one (``_figures``): one of its visible images has a heat score
    of at least ``HEAT_MIN`` for that map (any convention), and no other panel class's map scores
    better. A panel whose class has a constant map (the least likely class often has none left
    after the ReLU) must not show another class's map.
    """
    refs = judge.refs
    names = refs.class_names()
    classes = figure_classes(refs)
    call = f"show_grad_cam(image, model, model.{FIGURE_LAYER}, class_names)"
    if not outcome.ok:
        return f"`{call}` failed: {outcome.error}"
    figure = outcome.value
    if not (isinstance(figure, dict) and figure.get("kind") == "figure"):
        return (f"`{call}` should return the matplotlib Figure; it returned {describe_value(figure)}. "
                "Return the figure (do not only show it).")
    panels = [ax for ax in figure.get("axes", []) if isinstance(ax, dict) and int(ax.get("n_images", 0) or 0) > 0]
    if len(panels) != 4:
        return (f"The figure of `{call}` has {len(panels)} panels with an image; expected 4: the three most likely "
                "classes and the least likely one, one panel each.")
    titles = [str(ax.get("title", "")) for ax in panels]
    if not _names_in_order(titles, [names[i] for i in classes]):
        wanted = ", ".join(repr(names[i]) for i in classes)
        return (f"The panel titles of `{call}` are {titles}; they should name, in this order, {wanted} (the three "
                "most likely classes, best first, then the least likely one).")
    maps = refs.class_maps(DENSENET, CATS, FIGURE_LAYER, classes)
    grids = {c: [_figures.map_grid(m) for m in maps[c].values()] for c in classes}
    photo = _figures.photo_grid(refs.image(CATS))
    for position, (axis, class_idx) in enumerate(zip(panels, classes, strict=False), start=1):
        layers = _figures.panel_layers(axis)
        scores = {c: _figures.panel_score(layers, photo, grids[c]) for c in classes
                  if any(_figures.informative(g) for g in grids[c])}
        best = max(scores, key=scores.__getitem__, default=None)
        label = f"Panel {position} ({titles[position - 1]!r})"
        own = f"class {class_idx} ({names[class_idx]})"
        if class_idx not in scores:
            if best is not None and scores[best] >= _figures.HEAT_MIN:
                return (f"{label} shows the Grad-CAM map of class {best} ({names[best]}); the map of {own} is "
                        "blank here (nothing is left after the ReLU), so the panel should show no heat.")
            continue
        assert best is not None  # its own class is scored
        if scores[class_idx] >= _figures.HEAT_MIN and scores[class_idx] >= scores[best] - _figures.HEAT_MARGIN:
            continue
        if scores[best] >= _figures.HEAT_MIN and best != class_idx:
            return (f"{label} shows the Grad-CAM map of class {best} ({names[best]}), not that of {own}, which its "
                    f"title names: compute each panel's map with its own class index.")
        return (f"{label} does not show the Grad-CAM map of {own}: the grader sees no heatmap of that class in "
                "what the panel draws (blank, constant, hidden under an opaque image, or nearly transparent). "
                "Draw the image, then the heatmap over it, e.g. `ax.imshow(heatmap, cmap=\"jet\", alpha=0.5)`, "
                "or use `tp2_utils.show_cam_on_image`.")
    return None
