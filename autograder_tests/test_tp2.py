"""The seven hidden tests, one per graded function, in notebook order.

Each test is all or nothing, like nbgrader's test cells: it passes when the function's check
(``_checks``) passes on every case, and fails with the check's feedback at the first case that
does not. The points are those of the source notebook's test cell of the same name.
"""

from __future__ import annotations

from gradcam_kit.grading.feedback import StudentFailure

from ._judge import Judge
from ._results import FEEDBACK_PROPERTY


def _grade(judge: Judge, function: str, record_property) -> None:
    __tracebackhide__ = True
    verdict = judge.verdict(function)
    if not verdict.passed:
        raise StudentFailure(verdict.message)
    record_property(FEEDBACK_PROPERTY, verdict.message)


def test_register_gradcam_hooks(judge: Judge, record_property) -> None:
    _grade(judge, "register_gradcam_hooks", record_property)


def test_channel_weights(judge: Judge, record_property) -> None:
    _grade(judge, "channel_weights", record_property)


def test_weighted_cam(judge: Judge, record_property) -> None:
    _grade(judge, "weighted_cam", record_property)


def test_upsample_normalize(judge: Judge, record_property) -> None:
    _grade(judge, "upsample_normalize", record_property)


def test_grad_cam(judge: Judge, record_property) -> None:
    _grade(judge, "grad_cam", record_property)


def test_top_and_least(judge: Judge, record_property) -> None:
    _grade(judge, "top_and_least", record_property)


def test_show_grad_cam(judge: Judge, record_property) -> None:
    _grade(judge, "show_grad_cam", record_property)
