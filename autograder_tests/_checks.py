"""The seven checks, one per graded function, and the reference values they need.

A check (``check_<function>(judge) -> str``) calls the student's function through the worker on
several cases, compares with the answer key, and stops at the first failure with a
:class:`~gradcam_kit.grading.feedback.CheckFailure` whose message says, in the student's terms,
what was expected and what came back; it returns a remark for a pass (which Grad-CAM convention
matched...), possibly empty. The checks live by group:

``_check_hooks``
    ``register_gradcam_hooks``;
``_check_steps``
    the pure steps ``channel_weights``, ``weighted_cam``, ``upsample_normalize``;
``_check_grad_cam``
    ``grad_cam``;
``_check_figure``
    the classes and the figure: ``top_and_least``, ``show_grad_cam``;

and the rule that charges a bug once (the grader's helpers in place of broken ones) is
``_charge_once``. :data:`CHECKS` follows :data:`gradcam_kit.contract.GRADED_FUNCTIONS`.

Every tolerance is derived from float32 arithmetic (see ``_tolerances``' module docstring for the
notation: ``u = 2**-24``); each is stated next to its use.
"""

from __future__ import annotations

from types import ModuleType
from typing import Callable, Mapping

from gradcam_kit.contract import GRADED_FUNCTIONS

from . import _check_figure, _check_grad_cam, _check_hooks, _check_steps
from ._cases import features_case, grad_cam_cases
from ._check_figure import FIGURE_LAYER, figure_classes
from ._check_grad_cam import likely_mistakes
from ._inputs import CATS, DENSENET
from ._judge import Judge
from ._reference import References

__all__ = ["CHECKS", "prepare_references"]

Check = Callable[[Judge], str]

_GROUPS: tuple[ModuleType, ...] = (_check_hooks, _check_steps, _check_grad_cam, _check_figure)


def _check_of(function: str) -> Check:
    """``check_<function>``, from the one group module that defines it."""
    found = [getattr(group, f"check_{function}") for group in _GROUPS if hasattr(group, f"check_{function}")]
    if len(found) != 1:
        raise ImportError(f"{len(found)} checks of {function} in {[group.__name__ for group in _GROUPS]}")
    return found[0]


CHECKS: Mapping[str, Check] = {function: _check_of(function) for function in GRADED_FUNCTIONS}
"""The check of each graded function, in notebook order."""


def prepare_references(refs: References) -> None:
    """Compute every reference value that a check may need a model for, and keep it (on disk too).

    The grader runs this once, in a process of its own, before the judges start
    (``python -m autograder_tests --prepare``): the judges then find every value in the cache, never
    build a model, and never import torchvision, which keeps each grading slot (judge and worker)
    small. A value missed here is still computed by the judge that needs it; the tests check that
    grading the corpus of sample submissions misses none.
    """
    refs.class_names()
    refs.picture(features_case(refs).image)  # the heatmap the judge draws
    refs.class_maps(DENSENET, CATS, FIGURE_LAYER, figure_classes(refs))  # the scores and maps of show_grad_cam
    for _, case in grad_cam_cases(refs):
        refs.map_tolerance(case)  # the capture, with the image
        refs.maps(case)
        for _ in likely_mistakes(refs, case):
            pass
