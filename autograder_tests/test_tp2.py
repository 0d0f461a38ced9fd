"""The seven hidden tests, one per graded function (``test_<function>``), in notebook order.

Each test is all or nothing, like nbgrader's test cells: it passes when the function's check
(``_checks.CHECKS``) passes on every case, and fails with the check's feedback at the first case
that does not. The points are those of the source notebook's test cell of the same name. The
tests are made from :data:`gradcam_kit.contract.GRADED_FUNCTIONS`.
"""

from __future__ import annotations

from typing import Any, Callable

from gradcam_kit.contract import GRADED_FUNCTIONS, test_name
from gradcam_kit.grading.feedback import CheckFailure

from ._judge import Judge
from ._results import FEEDBACK_PROPERTY


def _grade(judge: Judge, function: str, record_property: Callable[[str, Any], None]) -> None:
    __tracebackhide__ = True
    verdict = judge.verdict(function)
    if not verdict.passed:
        raise CheckFailure(verdict.message)
    record_property(FEEDBACK_PROPERTY, verdict.message)


def _test_of(function: str) -> Callable[[Judge, Callable[[str, Any], None]], None]:
    def test(judge: Judge, record_property: Callable[[str, Any], None]) -> None:
        _grade(judge, function, record_property)

    test.__name__ = test.__qualname__ = test_name(function)
    test.__doc__ = f"The check of `{function}`."
    return test


for _function in GRADED_FUNCTIONS:
    globals()[test_name(_function)] = _test_of(_function)
