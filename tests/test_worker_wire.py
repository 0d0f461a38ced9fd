"""The typed messages between the grader and its worker: they cross whole, and anything else is refused."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

import gradcam_kit
from gradcam_kit.wire.failures import Failure, StudentError
from gradcam_kit.wire.frames import FrameReader, LayerRef, ModelSpec, ProtocolError, pack_frame
from gradcam_kit.wire.limits import Limits
from gradcam_kit.wire.messages import (
    Answer,
    CallRequest,
    LoadAnswer,
    ProbeRequest,
    StartMessage,
    TripwireRules,
    request_from_plain,
    request_to_plain,
)

KIT = Path(gradcam_kit.__file__).parent


def across(message):
    """``message`` (plain data) after a trip through one frame."""
    (received,) = FrameReader().feed(pack_frame(message))
    return received


def test_a_student_error_crosses_as_fields_and_reads_as_before():
    error = StudentError("ValueError: bad shape (3, 4)", "top_and_least", 7, "raise ValueError(...)")
    assert str(error) == "ValueError: bad shape (3, 4) (cell `top_and_least`, line 7: `raise ValueError(...)`)"
    assert StudentError.from_plain(across(error.to_plain())) == error
    stepped = error.at_step("forward")
    assert str(stepped) == f"at step 'forward': {error}"
    assert str(StudentError("timed out after 60 s")) == "timed out after 60 s"
    with pytest.raises(ProtocolError):
        StudentError.from_plain({"message": "x", "line": "7"})
    with pytest.raises(ProtocolError):
        StudentError.from_plain({"message": "x", "secret": 1})


def test_failures_are_strings_and_unknown_kinds_are_refused():
    assert Failure.GRADER == "grader" and Failure("timeout") is Failure.TIMEOUT
    assert f"{Failure.MEMORY}" == "memory" and "cpu" in {Failure.CPU}
    with pytest.raises(ProtocolError):
        Failure.from_plain("forged")


def test_the_start_message_crosses_whole():
    start = StartMessage(Limits(call_seconds=5.0, max_restarts=3), {"cells": [], "functions": ["f"]},
                         "/home/student", "/home/student/TP2", "tp2_utils.py", own_uid=True,
                         tripwire=TripwireRules(("/usr",), ("/course",), ("/home/student",)),
                         skip={"f": "it crashed"},
                         notebook={"name": "n.ipynb", "data": np.frombuffer(b"{}", np.uint8)})
    received = StartMessage.from_plain(across(start.to_plain()))
    assert received.limits == start.limits and received.tripwire == start.tripwire
    assert received.notebook["data"].tobytes() == b"{}" and received.skip == start.skip
    plain = start.to_plain()
    del plain["limits"]["memory_bytes"]
    with pytest.raises(ProtocolError, match="every limit"):
        StartMessage.from_plain(plain)


def test_requests_cross_whole_and_unknown_ones_are_refused():
    call = CallRequest("grad_cam", [ModelSpec("densenet121", "random"), np.ones(3), LayerRef("features")],
                       {"k": 2}, {"helper": "def helper(): pass"}, id=4)
    received = request_from_plain(across(request_to_plain(call)))
    assert isinstance(received, CallRequest) and received.id == 4 and received.substitutes == call.substitutes
    assert received.args[0] == call.args[0] and received.args[2] == call.args[2]
    probe = ProbeRequest("register_gradcam_hooks", ModelSpec(), "features", np.zeros((1, 3, 8, 8)), 5)
    assert isinstance(request_from_plain(across(request_to_plain(probe))), ProbeRequest)
    assert request_from_plain({"op": "bye"}) is None
    for forged in ({"op": "format_disk"}, {"op": "call", "function": 3}, {"op": "call", "function": "f", "x": 1},
                   {"op": "probe", "function": "f", "model": "densenet", "layer": "l", "image": 0, "class_idx": 1}):
        with pytest.raises(ProtocolError):
            request_from_plain(forged)


def test_answers_cross_whole_and_forged_ones_are_refused():
    answer = Answer(False, None, StudentError("used more than 6.0 GB of memory", "grad_cam", 3), Failure.MEMORY,
                    "memory", 1.5, {"hooks_left": []}, id=2)
    assert Answer.from_plain(across(answer.to_plain())) == answer
    for forged in ({"ok": False, "failure": "all good"}, {"ok": True, "observations": []},
                   {"ok": True, "seconds": "1"}):
        with pytest.raises(ProtocolError):
            Answer.from_plain(forged)
    loaded = LoadAnswer(True, {"f": True}, {}, ["a note"])
    assert LoadAnswer.from_plain(across(loaded.to_plain())) == loaded
    with pytest.raises(ProtocolError):
        LoadAnswer.from_plain({"event": "loaded", "ok": True, "defined": [], "errors": {}})


def _kit_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name for name in names if name.startswith("gradcam_kit")}


def test_the_sandbox_side_imports_nothing_of_the_host_side():
    """The worker and the wire import neither the host nor the rest of the grading engine; the wire
    imports nothing of the worker either (both sides share it)."""
    for package in ("worker", "wire"):
        for path in (KIT / package).glob("*.py"):
            imported = _kit_imports(path)
            assert not {name for name in imported if name.startswith(("gradcam_kit.host", "gradcam_kit.grading"))}, \
                path
            if package == "wire":
                assert not {name for name in imported if name.startswith("gradcam_kit.worker")}, path
