"""The judge's results as one type (``gradcam_kit.judge_results``): what the judge writes is what
every reader gets back, and bad results are refused with an error that names the file."""

from __future__ import annotations

import json

import pytest

from gradcam_kit.judge_results import JudgeResults, JudgeResultsError, TestResult

WRITTEN = {
    "submission": "/tmp/x/alice.ipynb", "isolation": "bwrap", "zygote": True, "notes": ["a note"],
    "tests": {
        "test_channel_weights": {"outcome": "passed", "points": 1.0, "max_points": 1.0, "feedback": ""},
        "test_grad_cam": {"outcome": "failed", "points": 0.0, "max_points": 3.0, "feedback": "`grad_cam` is wrong"},
        "test_show_grad_cam": {"outcome": "error", "points": 0.0, "max_points": 2.0,
                               "feedback": "internal grading error", "grader_error": "the worker could not start"},
    },
    "artifacts": {"heatmap": "heatmap.npz", "heatmap_png": "heatmap.png"}, "reference_values_computed": 0,
}


def test_what_the_judge_writes_reads_back_the_same(tmp_path):
    path = tmp_path / "alice.json"
    path.write_text(json.dumps(WRITTEN, indent=2))
    results = JudgeResults.from_json(path)
    assert results.to_plain() == WRITTEN
    assert list(results.to_plain()) == list(WRITTEN), "the keys keep the order the judge writes"
    results.write(tmp_path / "again.json")
    assert json.loads((tmp_path / "again.json").read_text()) == WRITTEN
    assert results.total() == (1.0, 6.0)
    assert results.failed() == {"test_grad_cam", "test_show_grad_cam"}
    assert results.grader_fault() == "test_show_grad_cam: the worker could not start"
    assert results.tests["test_channel_weights"] == TestResult("passed", 1.0, 1.0)


def test_keys_it_does_not_know_are_kept():
    kept = {**WRITTEN, "grading": {"student": "alice"}, "isolation_policy": {"below_strongest": False}}
    results = JudgeResults.from_plain(kept)
    assert results.extra == {"grading": {"student": "alice"}, "isolation_policy": {"below_strongest": False}}
    assert results.to_plain() == kept


def test_a_minimal_record_gets_defaults():
    results = JudgeResults.from_plain({"tests": {"test_a": {"outcome": "failed", "points": 0, "max_points": 2}}})
    assert results.tests["test_a"] == TestResult("failed", 0.0, 2.0, "", None)
    assert (results.isolation, results.zygote, results.notes, results.artifacts) == ("", False, [], {})
    assert results.grader_fault() is None


@pytest.mark.parametrize(("text", "message"), [
    ("{not json", "not valid JSON"),
    (json.dumps([1, 2]), "hold no tests"),
    (json.dumps({"tests": {}}), "hold no tests"),
    (json.dumps({"tests": {"test_a": {"outcome": "passed"}}}), "result for test_a is malformed"),
    (json.dumps({"tests": {"test_a": {"outcome": "won", "points": 1, "max_points": 1}}}), "malformed"),
    (json.dumps({"tests": {"test_a": {"outcome": "passed", "points": "x", "max_points": 1}}}), "malformed"),
    (json.dumps({"tests": {"test_a": {"outcome": "passed", "points": 3, "max_points": 1}}}), "gave 3 of 1 points"),
    (json.dumps({"tests": {"test_a": {"outcome": "passed", "points": -1, "max_points": 1}}}), "gave -1 of 1 points"),
])
def test_bad_results_are_refused_naming_the_file(tmp_path, text, message):
    path = tmp_path / "bob.json"
    path.write_text(text)
    with pytest.raises(JudgeResultsError, match=message) as caught:
        JudgeResults.from_json(path)
    assert str(path) in str(caught.value)


def test_a_missing_file_is_not_a_malformed_one(tmp_path):
    with pytest.raises(FileNotFoundError):
        JudgeResults.from_json(tmp_path / "none.json")


def test_points_must_agree_with_the_gradebook():
    results = JudgeResults.from_plain(WRITTEN)
    results.check_points({"test_channel_weights": 1.0, "test_grad_cam": 3.0})
    with pytest.raises(JudgeResultsError, match="no result for test_top_and_least"):
        results.check_points({"test_top_and_least": 1.0})
    with pytest.raises(JudgeResultsError, match="worth 2 points in the gradebook but 3"):
        results.check_points({"test_grad_cam": 2.0})


def test_text_that_cannot_be_encoded_is_replaced(tmp_path):
    """A student's text may hold a lone surrogate (valid JSON, not UTF-8): it is replaced, not fatal."""
    plain = {"tests": {"test_a": {"outcome": "failed", "points": 0, "max_points": 1, "feedback": "bad \ud800 text"}}}
    results = JudgeResults.from_plain(plain)
    assert results.tests["test_a"].feedback == "bad \ufffd text"
    results.write(tmp_path / "r.json")
    assert "\ufffd" in (tmp_path / "r.json").read_text(encoding="utf-8")


@pytest.mark.parametrize(("tests", "message"), [
    ({"test_a": {"outcome": "passed"}, "test_b": {}}, "malformed"),
    ({"test_a": {"outcome": "error", "points": 0, "max_points": 1, "feedback": "oops"}}, "^test_a: oops$"),
    ({"test_a": {"outcome": "error", "points": 0, "max_points": 1, "feedback": "internal",
                 "grader_error": "the worker could not be started"}}, "^test_a: the worker could not be started$"),
    ({"test_a": {"outcome": "passed", "points": 1, "max_points": 1}}, "no result for test_b"),
    ({"test_a": {"outcome": "passed", "points": 1, "max_points": 1},
      "test_b": {"outcome": "passed", "points": 1, "max_points": 1}}, "worth 2 points in the gradebook but 1"),
])
def test_a_grade_is_recorded_only_from_sound_results(tmp_path, tests, message):
    """What ``gradcam-kit grade`` checks before it records a student (``for_gradebook``)."""
    path = tmp_path / "carol.json"
    path.write_text(json.dumps({"tests": tests}))
    with pytest.raises(JudgeResultsError, match=message):
        JudgeResults.for_gradebook(path, {"test_a": 1.0, "test_b": 2.0})
    good = {"test_a": {"outcome": "passed", "points": 1, "max_points": 1},
            "test_b": {"outcome": "failed", "points": 0, "max_points": 2}}
    path.write_text(json.dumps({"tests": good}))
    assert JudgeResults.for_gradebook(path, {"test_a": 1.0, "test_b": 2.0}).total() == (1.0, 3.0)
