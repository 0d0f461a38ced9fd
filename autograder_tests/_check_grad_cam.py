"""The check of ``grad_cam``: the map on five models and layers, and what the call leaves behind.

The student's ``grad_cam`` runs in the worker on each case of ``_cases.grad_cam_cases``; its map
is compared with the reference maps of the three conventions (``References.maps``), within the
tolerance ``References.map_tolerance`` (see ``_tolerances``). A wrong case is decided by the
charge-once rule (``_charge_once``) when helpers of ``grad_cam`` are broken. The judge keeps the
student's map of the first case, beside the reference it is closest to, for the feedback page.
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

from gradcam_kit.contract import CONVENTIONS
from gradcam_kit.grading.feedback import CheckFailure, array_summary, fmt_shape, fmt_value, largest_error
from gradcam_kit.host.outcomes import Outcome
from gradcam_kit.wire.frames import LayerRef

from ._cases import call_text, features_case, grad_cam_cases
from ._charge_once import charge_once, with_grader_helpers
from ._inputs import Case
from ._judge import Judge, TensorValue, returned_tensor
from ._reference import References
from ._tolerances import min_distance

__all__ = ["SCALE_SLACK", "check_grad_cam", "grad_cam_verdict", "likely_mistakes", "map_error"]


SCALE_SLACK = 1e-3
"""A map normalised as ``(m - min) / (max - min + eps)`` is the reference scaled by
``range / (range + eps)``; scale factors in ``[1 - SCALE_SLACK, 1]`` are accepted."""


def map_error(got: np.ndarray, target: np.ndarray) -> float:
    """Largest absolute difference, after undoing a scale factor in ``[1 - SCALE_SLACK, 1]``."""
    if got.shape != target.shape:
        return float("inf")
    got = got.astype(np.float64)
    top, target_top = float(np.nanmax(got)), float(np.abs(target).max())
    if target_top > 0 and 1 - SCALE_SLACK <= top / target_top < 1:
        got = got * (target_top / top)
    error = np.abs(got - target)
    return float(np.inf if np.isnan(error).any() else error.max())


def check_grad_cam(judge: Judge) -> str:
    """Grad-CAM on five models/layers against the reference (any of the three conventions at
    ``features``), a class that is not the argmax, a model where explaining the softmax fails; the
    result is a detached CPU tensor (H, W) in [0, 1]; no hook is left, even after an error; the
    model stays in eval mode.

    A case that is wrong counts as right when some helper of ``grad_cam`` is broken and the call
    made again with the grader's versions of the broken helpers is right in every respect above
    (:func:`~autograder_tests._charge_once.charge_once`): every case is checked, directly or so,
    or ``grad_cam`` fails.

    Tolerance on the maps (in [0, 1]): ``References.map_tolerance`` -- the reordering bound of the
    weighted sum and of the means, times the case's ``kappa``; plus a scale factor within
    :data:`SCALE_SLACK` for an ``eps`` in the denominator of the normalisation.
    """
    judge.require("grad_cam")
    refs = judge.refs
    remarks: list[str] = []
    substituted: list[str] = []
    for purpose, case in grad_cam_cases(refs):
        call = call_text("grad_cam", case)
        where = f"On {case.describe()} ({purpose}): "
        arguments = (case.spec, refs.image(case.image), case.class_idx, LayerRef(case.layer))
        outcome = judge.call("grad_cam", *arguments)
        if case == features_case(refs):
            _save_heatmap(judge, case, _returned_map(outcome))
        try:
            convention = grad_cam_verdict(judge, case, outcome, where, call)
        except CheckFailure as failure:
            charge_once(judge, "grad_cam", arguments, failure.message, _right_on(judge, case))
            substituted.append(purpose)
            continue
        if case == features_case(refs) and refs.capture(case).modified_in_place:
            remarks.append(f"At `{case.layer}` your map matched convention '{convention}' "
                           f"({CONVENTIONS[convention].words}); all three are accepted.")
    _check_error_path(judge)
    if substituted:
        remarks.append(with_grader_helpers(judge, "grad_cam", judge.substitutes("grad_cam"), substituted))
    return " ".join(remarks)


def _save_heatmap(judge: Judge, case: Case, got: np.ndarray | None) -> None:
    """The student's map (from their own call only) beside the reference that it is closest to."""
    maps = judge.refs.maps(case)
    matched = min(maps, key=lambda c: map_error(got, maps[c])) if got is not None else "pre_relu"
    student = got if got is not None and got.ndim == 2 else None
    judge.save_heatmap(judge.refs.image(case.image)[0], maps[matched], student, case)


def _returned_map(outcome: Outcome) -> np.ndarray | None:
    """The map the call returned, if it returned a tensor."""
    try:
        return returned_tensor(outcome, "grad_cam").array.astype(np.float32)
    except CheckFailure:
        return None


def grad_cam_verdict(judge: Judge, case: Case, outcome: Outcome, where: str, call: str) -> str:
    """The convention that ``grad_cam``'s result on ``case`` matched, or a :class:`CheckFailure`
    saying what is wrong with it: hooks left, training mode, an error, the map, its kind."""
    _check_model_left_clean(outcome, where, call)
    result = returned_tensor(outcome, call, where)
    got = result.array.astype(np.float32)
    maps = judge.refs.maps(case)
    tolerance = judge.refs.map_tolerance(case)
    errors = {convention: map_error(got, maps[convention]) for convention in CONVENTIONS}
    best = min(errors, key=errors.__getitem__)
    if errors[best] > tolerance:
        raise CheckFailure(where + _map_mismatch(judge, case, call, got, maps, errors, tolerance))
    _check_tensor_kind(result, where, call)
    return best


def _right_on(judge: Judge, case: Case) -> Callable[[Outcome], bool]:
    """Whether an outcome of ``grad_cam`` on ``case`` is right in every respect
    :func:`grad_cam_verdict` checks (what is wrong is never said)."""
    def right(outcome: Outcome) -> bool:
        try:
            grad_cam_verdict(judge, case, outcome, "", "")
        except CheckFailure:
            return False
        return True
    return right


def _check_model_left_clean(outcome: Outcome, where: str, call: str) -> None:
    """No hook left on the model and the model in eval mode after the call, whatever happened."""
    left = outcome.observations.get("hooks_left") or []
    if left:
        happened = "returned" if outcome.ok else f"failed ({outcome.error})"
        raise CheckFailure(f"{where}after `{call}` {happened}, hooks were still attached to "
                           f"{', '.join(f'`{n}`' for n in left)}. Remove every hook before returning, also when "
                           "something fails (try: ... finally: ...).")
    if outcome.ok and outcome.observations.get("training"):
        raise CheckFailure(f"{where}after `{call}` the model was in training mode. Grad-CAM needs the model in "
                           "eval mode (batch normalisation must use its running statistics), and must leave it so.")


def _check_tensor_kind(result: TensorValue, where: str, call: str) -> None:
    if result.requires_grad:
        raise CheckFailure(f"{where}`{call}` returned a tensor that requires grad: return it detached "
                           "(.detach()).")
    if not result.device.startswith("cpu"):
        raise CheckFailure(f"{where}`{call}` returned a tensor on {result.device}: return it on the CPU (.cpu()).")
    if result.array.size and (result.array.min() < -1e-6 or result.array.max() > 1 + 1e-6):
        raise CheckFailure(f"{where}`{call}` returned values outside [0, 1] ({array_summary(result.array)}).")


def _check_error_path(judge: Judge) -> None:
    """``grad_cam`` with a class index out of range must fail without leaving hooks (with the
    grader's versions of its broken helpers, if it leaves some with the student's: :func:`charge_once`)."""
    case = features_case(judge.refs)
    bad = Case(case.spec, case.image, 1000, case.layer)
    call = call_text("grad_cam", bad)
    arguments = (bad.spec, judge.refs.image(bad.image), bad.class_idx, LayerRef(bad.layer))
    outcome = judge.call("grad_cam", *arguments)
    left = outcome.observations.get("hooks_left") or []
    if not left:
        return
    happened = "returned" if outcome.ok else f"failed ({outcome.error})"
    message = (f"`{call}` asks for class 1000, which does not exist (the classes are 0 to 999). Your function "
               f"{happened}, and left hooks attached to {', '.join(f'`{n}`' for n in left)}: remove them in a "
               "`finally:` block so that they go also when something fails.")
    charge_once(judge, "grad_cam", arguments, message, lambda retried: not retried.observations.get("hooks_left"))


def _map_mismatch(judge: Judge, case: Case, call: str, got: np.ndarray, maps: dict[str, np.ndarray],
                  errors: dict[str, float], tolerance: float) -> str:
    expected_shape = next(iter(maps.values())).shape
    if got.shape != expected_shape:
        hint = ""
        if got.ndim == 3 and got.shape[1:] == expected_shape:
            hint = " Return the map of the one image, without the batch dimension."
        return (f"`{call}` returned a tensor of shape {fmt_shape(got.shape)}; expected {fmt_shape(expected_shape)}, "
                f"the size of the image.{hint}")
    best = min(errors, key=errors.__getitem__)
    worst, index = largest_error(got, maps[best])
    text = (f"your heatmap differs from the reference: the largest difference is {fmt_value(worst)} at pixel "
            f"{tuple(index)} (accepted: {fmt_value(tolerance)}). Yours: {array_summary(got)}; the reference: "
            f"{array_summary(maps[best])}.")
    if abs(float(got.max()) - 1.0) > 1e-3 or abs(float(got.min())) > 1e-3:
        return text + " The map should be scaled to [0, 1]."
    for label, alternative in likely_mistakes(judge.refs, case):
        if min_distance({"got": got}, alternative) <= 0.05:
            return text + f" It looks like {label}."
    return text


def likely_mistakes(refs: References, case: Case) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
    top = refs.ranked_classes(case.spec, case.image)[0]
    if top != case.class_idx:
        yield (f"the map of the predicted class {top} (the argmax), not of class_idx={case.class_idx}",
               refs.class_maps(case.spec, case.image, case.layer, [top])[top])
    yield ("the map of the softmax probability: back-propagate the raw score (the logit) instead",
           {"softmax": refs.softmax_maps(case.spec, case.image, case.layer, [case.class_idx])[case.class_idx]})
    if case.layer != "features" and case.spec.arch == "densenet121":
        yield ("the map at `features`: use the `layer` argument",
               refs.class_maps(case.spec, case.image, "features", [case.class_idx])[case.class_idx])
