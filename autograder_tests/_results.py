"""The judge's results plugin: per-test outcome, points and feedback, written as JSON.

The feedback of a failed test is the :class:`StudentFailure` message of the check, and nothing
else: never a traceback, never the hidden test's code. A test that fails for any other reason (the
grader's own fault, :class:`~autograder_tests._judge.GraderFault`: a worker that could not start,
the kit's own files refused; a bug of the judge; a reference that cannot be computed) is an
``error``: its feedback is :data:`INTERNAL_ERROR`, its ``grader_error`` says why (for the
instructor: ``gradcam-kit grade`` then marks the student not graded, and writes no score), and its
traceback goes to the judge's standard output (the instructor's log).

The JSON (``docs/design.md``)::

    {"submission": "...", "isolation": "bwrap", "zygote": true, "notes": ["..."],
     "tests": {"test_grad_cam": {"outcome": "passed", "points": 3.0, "max_points": 3.0,
                                 "feedback": "..."},
               "test_channel_weights": {"outcome": "error", "points": 0.0, "max_points": 1.0,
                                        "feedback": INTERNAL_ERROR, "grader_error": "why"}},
     "artifacts": {"heatmap": "heatmap.npz"}, "reference_values_computed": 0}

Every test of the seven that was selected appears, also when collection or a fixture failed
(then with ``"outcome": "error"`` and the generic message).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, Mapping

import pytest

from gradcam_kit.grading.feedback import INTERNAL_ERROR, StudentFailure
from gradcam_kit.grading.safe_text import encodable, shown

from ._judge import GraderFault

FEEDBACK_PROPERTY = "gradcam_feedback"
"""``record_property`` name under which a passing test leaves its remark."""


class ResultsRecorder:
    """Collects the outcome of the seven tests and writes the results JSON at the end.

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
        self.tests: dict[str, dict[str, Any]] = {}
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
        self.tests[name] = {
            "outcome": outcome or ("passed" if passed else "failed"),
            "points": max_points if passed else 0.0,
            "max_points": max_points,
            "feedback": feedback,
        }
        if grader_error is not None:
            self.tests[name]["grader_error"] = shown(grader_error, 1000)

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
            if excinfo is not None and excinfo.errisinstance(StudentFailure):
                self.record(name, False, str(excinfo.value))
            else:
                self.record(name, False, INTERNAL_ERROR, outcome="error", grader_error=_reason(excinfo, report.when))
                if excinfo is not None:
                    print(f"\n[judge] internal error in {name} ({report.when}):", file=sys.stderr)
                    traceback.print_exception(excinfo.type, excinfo.value, excinfo.tb, file=sys.stderr)
        elif report.skipped and name not in self.tests:
            self.record(name, False, INTERNAL_ERROR, outcome="error", grader_error="the test was skipped")

    # -- writing --------------------------------------------------------------------------------
    def results(self) -> dict[str, Any]:
        expected = self.selected if self.selected else list(self.points)
        tests = {}
        for name in expected:
            tests[name] = self.tests.get(name) or {
                "outcome": "error", "points": 0.0, "max_points": float(self.points.get(name, 0.0)),
                "feedback": INTERNAL_ERROR, "grader_error": "the test did not run",
            }
        return {"submission": str(self.submission), "isolation": self.isolation, "zygote": self.zygote,
                "notes": list(self.notes),
                "tests": tests, "artifacts": dict(self.artifacts),
                "reference_values_computed": len(self.computed)}

    def write(self) -> None:
        if self.results_path is None:
            return
        path = self.results_path
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                # a student's text may hold lone surrogates (valid JSON, not UTF-8): replaced
                json.dump(encodable(self.results()), stream, indent=2, ensure_ascii=False)
                stream.write("\n")
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        self.write()

    def pytest_terminal_summary(self, terminalreporter) -> None:
        earned = sum(t["points"] for t in self.results()["tests"].values())
        possible = sum(t["max_points"] for t in self.results()["tests"].values())
        terminalreporter.write_sep("-", f"autograded points: {earned:g} / {possible:g}")
        for name, test in self.results()["tests"].items():
            line = f"{name}: {test['outcome']} {test['points']:g}/{test['max_points']:g}"
            if test["feedback"]:
                line += f" -- {test['feedback']}"
            terminalreporter.write_line(line)


def _reason(excinfo: pytest.ExceptionInfo | None, when: str) -> str:
    """Why a test ended in an error, for the instructor (never shown to the student)."""
    if excinfo is None:
        return f"the test failed in its {when} without an exception"
    if excinfo.errisinstance(GraderFault):
        return str(excinfo.value)
    return f"internal error of the judge ({when}: {excinfo.typename}; the traceback is in the log)"
