"""The judge's results plugin: per-test outcome, points and feedback, written as JSON.

The feedback of a failed test is the :class:`CheckFailure` message of the check, and nothing
else: never a traceback, never the hidden test's code. A test that fails for any other reason (the
grader's own fault, :class:`~autograder_tests._judge.GraderFault`: a worker that could not start,
the kit's own files refused; a bug of the judge; a reference that cannot be computed) is an
``error``: its feedback is :data:`INTERNAL_ERROR`, its ``grader_error`` says why (for the
instructor: ``gradcam-kit grade`` then marks the student not graded, and writes no score), and its
traceback goes to the judge's standard output (the instructor's log).

The JSON is a :class:`gradcam_kit.judge_results.JudgeResults` (``docs/design.md``).

Every test of the seven that was selected appears, also when collection or a fixture failed
(then with ``"outcome": "error"`` and the generic message).
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Mapping

import pytest

from gradcam_kit.grading.feedback import INTERNAL_ERROR, CheckFailure
from gradcam_kit.judge_results import JudgeResults, TestResult
from gradcam_kit.safe_text import shown

from ._judge import GraderFault

FEEDBACK_PROPERTY = "gradcam_feedback"
"""``record_property`` name under which a passing test leaves its remark."""


class ResultsPlugin:
    """The pytest plugin that collects the outcome of the seven tests and writes the
    :class:`JudgeResults` at the end.

    Parameters
    ----------
    submission : Path
    points : mapping
        ``test name -> max points`` (from the source notebook).
    results_path : Path, optional
        Where to write the JSON; nothing is written without it.
    """

    def __init__(self, submission: Path, points: Mapping[str, float], results_path: Path | None) -> None:
        self.submission = submission
        self.points = dict(points)
        self.results_path = results_path
        self.tests: dict[str, TestResult] = {}
        self.selected: list[str] | None = None
        self.notes: list[str] = []
        self.isolation = ""
        self.zygote = False
        """The submission's worker was forked by the zygote."""
        self.artifacts: dict[str, str] = {}
        self.computed: list[tuple] = []
        """The reference values the judge computed (not found in the cache): ``References.computed``."""

    # -- recording ------------------------------------------------------------------------------
    def record(self, name: str, passed: bool, feedback: str, outcome: str | None = None,
               grader_error: str | None = None) -> None:
        max_points = float(self.points.get(name, 0.0))
        self.tests[name] = TestResult(
            outcome or ("passed" if passed else "failed"),  # type: ignore[arg-type]
            max_points if passed else 0.0, max_points, feedback,
            None if grader_error is None else shown(grader_error, 1000))

    @pytest.hookimpl(trylast=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.selected = [item.name for item in session.items if item.name in self.points]

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo):
        result = yield
        report = result.get_result()
        name = item.name
        if name not in self.points:
            return
        if report.when == "call" and report.passed:
            feedback = dict(item.user_properties).get(FEEDBACK_PROPERTY, "")
            self.record(name, True, str(feedback))
        elif report.failed and (report.when == "call" or name not in self.tests):
            excinfo = call.excinfo
            if excinfo is not None and excinfo.errisinstance(CheckFailure):
                self.record(name, False, str(excinfo.value))
            else:
                self.record(name, False, INTERNAL_ERROR, outcome="error", grader_error=_reason(excinfo, report.when))
                if excinfo is not None:
                    print(f"\n[judge] internal error in {name} ({report.when}):", file=sys.stderr)
                    traceback.print_exception(excinfo.type, excinfo.value, excinfo.tb, file=sys.stderr)
        elif report.skipped and name not in self.tests:
            self.record(name, False, INTERNAL_ERROR, outcome="error", grader_error="the test was skipped")

    # -- writing --------------------------------------------------------------------------------
    def results(self) -> JudgeResults:
        expected = self.selected if self.selected else list(self.points)
        tests = {}
        for name in expected:
            tests[name] = self.tests.get(name) or TestResult(
                "error", 0.0, float(self.points.get(name, 0.0)), INTERNAL_ERROR, "the test did not run")
        return JudgeResults(tests, submission=str(self.submission), isolation=self.isolation, zygote=self.zygote,
                            notes=list(self.notes), artifacts=dict(self.artifacts),
                            reference_values_computed=len(self.computed))

    def write(self) -> None:
        if self.results_path is not None:
            self.results().write(self.results_path)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        self.write()

    def pytest_terminal_summary(self, terminalreporter) -> None:
        results = self.results()
        earned, possible = results.total()
        terminalreporter.write_sep("-", f"autograded points: {earned:g} / {possible:g}")
        for name, test in results.tests.items():
            line = f"{name}: {test.outcome} {test.points:g}/{test.max_points:g}"
            if test.feedback:
                line += f" -- {test.feedback}"
            terminalreporter.write_line(line)


def _reason(excinfo: pytest.ExceptionInfo | None, when: str) -> str:
    """Why a test ended in an error, for the instructor (never shown to the student)."""
    if excinfo is None:
        return f"the test failed in its {when} without an exception"
    if excinfo.errisinstance(GraderFault):
        return str(excinfo.value)
    return f"internal error of the judge ({when}: {excinfo.typename}; the traceback is in the log)"
