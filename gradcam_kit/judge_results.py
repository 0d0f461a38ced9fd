"""The judge's results for one notebook: the one type that crosses from the judge to its readers.

The judge (``autograder_tests``, its results plugin) writes a :class:`JudgeResults` as JSON; the
batch (``gradcam-kit grade``), the nbgrader bridge (:mod:`gradcam_kit.nbgrader_bridge`), the
reports and feedback pages, the gradebook's annotations and the kit's own judge runs read it back
with :meth:`JudgeResults.from_json` (or :meth:`JudgeResults.from_plain`), which checks it and says
which file is wrong and how.

The JSON (``docs/design.md``)::

    {"submission": "...", "isolation": "bwrap", "zygote": true, "notes": ["..."],
     "tests": {"test_grad_cam": {"outcome": "passed", "points": 3.0, "max_points": 3.0,
                                 "feedback": "..."},
               "test_channel_weights": {"outcome": "error", "points": 0.0, "max_points": 1.0,
                                        "feedback": "internal grading error ...",
                                        "grader_error": "why"}},
     "artifacts": {"heatmap": "heatmap.npz", "heatmap_png": "heatmap.png"},
     "reference_values_computed": 0}

Only ``tests`` is required; each test needs ``outcome``, ``points`` and ``max_points``. Keys this
type does not know (``gradcam-kit grade`` adds ``grading`` and ``isolation_policy`` to the results
it keeps) are carried along untouched in :attr:`JudgeResults.extra`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, cast

from gradcam_kit.errors import KitError
from gradcam_kit.fsutil import write_atomically
from gradcam_kit.safe_text import encodable

__all__ = ["OUTCOMES", "JudgeResults", "JudgeResultsError", "TestResult"]

TestOutcome = Literal["passed", "failed", "error"]
OUTCOMES: tuple[str, ...] = ("passed", "failed", "error")
"""``passed`` and ``failed``: the student's verdict; ``error``: the grader failed on that test
(the student is then not graded, never charged for it)."""

_KNOWN = ("submission", "isolation", "zygote", "notes", "tests", "artifacts", "reference_values_computed")


class JudgeResultsError(KitError):
    """Results that cannot be trusted: not JSON, no tests, a malformed test, points out of range,
    or points that disagree with the gradebook. The message names the file when there is one."""


@dataclass(frozen=True)
class TestResult:
    """The verdict of one hidden test.

    Attributes
    ----------
    outcome : {"passed", "failed", "error"}
    points, max_points : float
        ``0 <= points <= max_points``.
    feedback : str
        For the student: why it failed, or a remark about a pass.
    grader_error : str or None
        For the instructor, with ``outcome == "error"``: why the grader failed.
    """

    __test__ = False  # pytest: not a test class

    outcome: TestOutcome
    points: float
    max_points: float
    feedback: str = ""
    grader_error: str | None = None

    @property
    def passed(self) -> bool:
        return self.outcome == "passed"

    def to_plain(self) -> dict[str, Any]:
        plain: dict[str, Any] = {"outcome": self.outcome, "points": self.points, "max_points": self.max_points,
                                 "feedback": self.feedback}
        if self.grader_error is not None:
            plain["grader_error"] = self.grader_error
        return plain

    @classmethod
    def from_plain(cls, name: str, value: Any, where: str = "") -> "TestResult":
        """Check one test's record (see :meth:`JudgeResults.from_plain`)."""
        try:
            points, possible = float(value["points"]), float(value["max_points"])
            outcome = value["outcome"]
        except (KeyError, TypeError, ValueError):
            raise JudgeResultsError(f"{where}the judge's result for {name} is malformed: {value!r}") from None
        if outcome not in OUTCOMES:
            raise JudgeResultsError(f"{where}the judge's result for {name} is malformed: {value!r}")
        if not 0.0 <= points <= possible:
            raise JudgeResultsError(f"{where}the judge gave {points:g} of {possible:g} points for {name}")
        feedback = value.get("feedback")
        grader_error = value.get("grader_error")
        return cls(cast(TestOutcome, outcome), points, possible, "" if feedback is None else str(feedback),
                   None if grader_error is None else str(grader_error))


@dataclass
class JudgeResults:
    """Everything the judge says about one notebook.

    Attributes
    ----------
    tests : dict of str to TestResult
        By test name (``test_<function>``), in notebook order.
    submission : str
        The notebook the judge graded (a path, for the log).
    isolation : str
        The isolation level of the worker that ran the student's code.
    zygote : bool
        The worker was forked by the zygote.
    notes : list of str
        Remarks on the notebook as a whole (malformed cells...), for the student.
    artifacts : dict of str to str
        Files the judge left beside the results for the feedback page, by kind: ``heatmap``
        (the ``.npz``) and ``heatmap_png`` (the comparison drawn from it).
    reference_values_computed : int
        Reference values the judge computed itself rather than found in the cache.
    extra : dict
        Keys of the JSON that this type does not know, kept as they are.
    """

    tests: dict[str, TestResult]
    submission: str = ""
    isolation: str = ""
    zygote: bool = False
    notes: list[str] = field(default_factory=list)
    artifacts: dict[str, str] = field(default_factory=dict)
    reference_values_computed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    # -- what it says -----------------------------------------------------------------------------
    def total(self) -> tuple[float, float]:
        """The points earned and the points possible over all tests."""
        return (sum(test.points for test in self.tests.values()),
                sum(test.max_points for test in self.tests.values()))

    def failed(self) -> frozenset[str]:
        """The tests that did not pass."""
        return frozenset(name for name, test in self.tests.items() if not test.passed)

    def grader_fault(self) -> str | None:
        """``"<test>: <why>"`` for the first test the grader failed on (``outcome == "error"``), or ``None``."""
        for name, test in self.tests.items():
            if test.outcome == "error":
                return f"{name}: {test.grader_error or test.feedback or 'no message'}"
        return None

    def check_points(self, expected: Mapping[str, float], where: str = "") -> None:
        """Check that every test of the gradebook (``expected``: test -> points) has a result worth
        as many points.

        Raises
        ------
        JudgeResultsError
        """
        missing = sorted(set(expected) - set(self.tests))
        if missing:
            raise JudgeResultsError(f"{where}the judge gave no result for {', '.join(missing)}")
        for name, possible in expected.items():
            if abs(self.tests[name].max_points - possible) > 1e-9:
                raise JudgeResultsError(
                    f"{where}{name} is worth {possible:g} points in the gradebook but "
                    f"{self.tests[name].max_points:g} for the judge: run `gradcam-kit release` again after "
                    "changing the points")

    # -- JSON -------------------------------------------------------------------------------------
    def to_plain(self) -> dict[str, Any]:
        """The JSON object (keys in the order the judge has always written them)."""
        plain: dict[str, Any] = {
            "submission": self.submission, "isolation": self.isolation, "zygote": self.zygote,
            "notes": list(self.notes), "tests": {name: test.to_plain() for name, test in self.tests.items()},
            "artifacts": dict(self.artifacts), "reference_values_computed": self.reference_values_computed,
        }
        plain.update(self.extra)
        return plain

    def to_json(self) -> str:
        # a student's text may hold lone surrogates (valid JSON, not UTF-8): replaced
        return json.dumps(encodable(self.to_plain()), indent=2, ensure_ascii=False) + "\n"

    def write(self, path: Path) -> None:
        """Write the JSON to ``path``, whole or not at all."""
        write_atomically(path, self.to_json())

    @classmethod
    def from_plain(cls, value: Any, source: Path | str | None = None) -> "JudgeResults":
        """Check and read a JSON object; every string is made encodable (lone surrogates replaced).

        Parameters
        ----------
        value : object
            The parsed JSON.
        source : Path or str, optional
            Where it comes from, named in the errors.

        Raises
        ------
        JudgeResultsError
            When it has no ``tests`` object, or a test is malformed or has points outside
            ``[0, max_points]``.
        """
        where = f"{source}: " if source is not None else ""
        value = encodable(value)
        tests = value.get("tests") if isinstance(value, dict) else None
        if not isinstance(tests, dict):
            raise JudgeResultsError(f"{where}the judge's results hold no tests")
        checked = {str(name): TestResult.from_plain(name, test, where) for name, test in tests.items()}
        notes, artifacts = value.get("notes"), value.get("artifacts")
        try:
            return cls(
                tests=checked,
                submission=str(value.get("submission") or ""),
                isolation=str(value.get("isolation") or ""),
                zygote=bool(value.get("zygote", False)),
                notes=[str(note) for note in notes] if isinstance(notes, list) else [],
                artifacts={str(k): str(v) for k, v in artifacts.items()} if isinstance(artifacts, dict) else {},
                reference_values_computed=int(value.get("reference_values_computed") or 0),
                extra={key: item for key, item in value.items() if key not in _KNOWN},
            )
        except (TypeError, ValueError) as error:
            raise JudgeResultsError(f"{where}the judge's results are malformed ({error})") from None

    @classmethod
    def from_json(cls, path: Path) -> "JudgeResults":
        """Read and check the results the judge wrote to ``path``.

        Raises
        ------
        FileNotFoundError
            When there is no such file (the judge wrote none).
        JudgeResultsError
            When it cannot be read, is not JSON, holds no test, or fails :meth:`from_plain`'s checks.
        """
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise
        except OSError as error:
            raise JudgeResultsError(f"{path}: the judge's results cannot be read ({error})") from None
        try:
            value = json.loads(text)
        except ValueError as error:
            raise JudgeResultsError(f"{path}: the judge's results are not valid JSON ({error})") from None
        results = cls.from_plain(value, path)
        if not results.tests:
            raise JudgeResultsError(f"{path}: the judge's results hold no tests")
        return results

    @classmethod
    def for_gradebook(cls, path: Path, expected: Mapping[str, float]) -> "JudgeResults":
        """The results at ``path``, if a grade can be recorded from them.

        :meth:`from_json`, then no test the grader failed on (:meth:`grader_fault`), then the
        points of the gradebook (:meth:`check_points`): what ``gradcam-kit grade`` needs before it
        records a student.

        Raises
        ------
        FileNotFoundError
            When the judge wrote no results.
        JudgeResultsError
            Otherwise, with the reason (``"<test>: <why>"`` when the grader failed on a test).
        """
        results = cls.from_json(path)
        fault = results.grader_fault()
        if fault is not None:
            raise JudgeResultsError(fault)
        results.check_points(expected)
        return results

    @classmethod
    def of(cls, value: "JudgeResults | Mapping[str, Any]") -> "JudgeResults":
        """``value`` itself, or read from its JSON object (what the batch keeps is a dict)."""
        return value if isinstance(value, JudgeResults) else cls.from_plain(dict(value))
