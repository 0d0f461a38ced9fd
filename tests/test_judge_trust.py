"""The judge's two promises about what is not the student's: a grader fault is never a failed test,
and the grader's own helpers (the substitutes) never reach the feedback.

``Judge`` is where the worker's outcomes are turned into verdicts; these tests drive it with a
stand-in session (the grader faults) and with a real sandboxed worker (the substitutes).
"""

from __future__ import annotations

import numpy as np
import pytest

from autograder_tests._judge import SUBSTITUTED_ERROR, GraderFault, Judge
from gradcam_kit.grading.feedback import CheckFailure
from gradcam_kit.grading.notebook import read_submission
from gradcam_kit.host.outcomes import LoadResult, Outcome
from gradcam_kit.host.session import WorkerSession
from hostile import notebooks

FUNCTIONS = ("channel_weights", "weighted_cam")


class StandInSession:
    """Answers every call with ``outcomes`` in turn (the last one repeated)."""

    def __init__(self, outcomes: list[Outcome], load: LoadResult | None = None) -> None:
        self.outcomes = outcomes
        self.calls: list[dict] = []
        self._load = load or LoadResult(True, {name: True for name in FUNCTIONS}, {}, isolation="bwrap")

    def load(self) -> LoadResult:
        return self._load

    def call(self, name, *args, substitutes=None, **kwargs) -> Outcome:
        self.calls.append({"name": name, "substitutes": substitutes})
        return self.outcomes[min(len(self.calls), len(self.outcomes)) - 1]

    def probe_hooks(self, *args, **kwargs) -> Outcome:
        return self.call("register_gradcam_hooks")


def check_calls(judge: Judge) -> str:
    outcome = judge.call("channel_weights", np.ones((1, 2, 3, 3), np.float32))
    if not outcome.ok:
        raise CheckFailure(f"`channel_weights` failed: {outcome.error}")
    return ""


GRADER = Outcome(False, error="the grader failed to run this call: PermissionError: reading "
                               "/kit/gradcam_kit/grading/models.py is not allowed during grading", failure="grader")


def test_a_grader_outcome_after_its_retry_is_a_grader_fault_not_a_failed_test():
    session = StandInSession([GRADER])
    judge = Judge(session, references=None, checks={"channel_weights": check_calls})
    with pytest.raises(GraderFault, match="models.py is not allowed"):
        judge.verdict("channel_weights")
    assert len(session.calls) == 2, "the call is tried once more first"
    assert "channel_weights" not in judge.verdicts, "no verdict, so no points either way"


def test_a_grader_outcome_that_goes_away_on_the_retry_is_graded():
    session = StandInSession([GRADER, Outcome(True, value=[1.0])])
    judge = Judge(session, references=None, checks={"channel_weights": check_calls})
    assert judge.verdict("channel_weights").passed


def test_a_worker_that_could_not_start_is_a_grader_fault():
    load = LoadResult(False, {name: False for name in FUNCTIONS}, {}, fatal="The grader could not run your "
                      "notebook: it could not start (ImportError: no module gradcam_kit)", failure="grader")
    judge = Judge(StandInSession([GRADER], load), references=None, checks={})
    with pytest.raises(GraderFault, match="could not start"):
        judge.require("channel_weights")
    with pytest.raises(GraderFault):
        judge.defined("channel_weights")


def test_a_students_own_failure_stays_theirs():
    session = StandInSession([Outcome(False, error="ValueError: mine", failure="exception")])
    judge = Judge(session, references=None, checks={"channel_weights": check_calls})
    verdict = judge.verdict("channel_weights")
    assert not verdict.passed and "ValueError: mine" in verdict.message and len(session.calls) == 1


def test_a_check_that_failed_after_substitutes_never_shows_what_that_call_raised():
    secret = "def weighted_cam(activations, weights): return SECRET_SOLUTION"

    def check(judge: Judge) -> str:
        outcome = judge.call("channel_weights", substitutes={"weighted_cam": secret})
        raise CheckFailure(f"`channel_weights` failed: {outcome.error}")

    session = StandInSession([Outcome(False, error=f"RuntimeError: {secret}", failure="exception")])
    verdict = Judge(session, references=None, checks={"channel_weights": check}).verdict("channel_weights")
    assert session.calls[0]["substitutes"] == {"weighted_cam": secret}
    assert verdict.message == f"`channel_weights` failed: {SUBSTITUTED_ERROR}"
    assert "SECRET" not in verdict.message


# --- with a real worker: what the student's code did with the substitutes dies with its call -------
SECRET = "SECRET-SOLUTION-4242"
SUBSTITUTE = f'''
def weighted_cam(activations, weights):
    """{SECRET}"""
    return F.relu((weights[:, :, None, None] * activations).sum(dim=1))
'''

STEALS = f'''
def channel_weights(gradients):
    import ctypes, os, pathlib
    stolen = (weighted_cam.__doc__ or "") + repr(weighted_cam.__code__.co_consts)
    libc = ctypes.CDLL(None, use_errno=True)
    for place in (pathlib.Path(os.environ["HOME"]) / "stolen", pathlib.Path("/tmp/stolen"),
                  pathlib.Path("/dev/shm/stolen")):
        try:
            place.write_text(stolen)
        except OSError:
            pass
    queue = libc.mq_open(b"/stolen", os.O_CREAT | os.O_RDWR, 0o600, None)
    if queue >= 0:
        libc.mq_send(queue, stolen.encode()[:8000], len(stolen.encode()[:8000]), 0)
    box = libc.msgget(0x5EC2, 0o1600)
    if box >= 0:
        message = ctypes.create_string_buffer(b"\\x01\\0\\0\\0\\0\\0\\0\\0" + stolen.encode()[:4000])
        libc.msgsnd(box, message, len(stolen.encode()[:4000]), 0)
    raise RuntimeError("carried out: " + stolen)
'''

LATER = '''
def weighted_cam(activations, weights):
    import ctypes, os, pathlib
    found = []
    for place in (pathlib.Path(os.environ["HOME"]) / "stolen", pathlib.Path("/tmp/stolen"),
                  pathlib.Path("/dev/shm/stolen")):
        if place.exists():
            found.append(place.read_text())
    libc = ctypes.CDLL(None, use_errno=True)
    queue = libc.mq_open(b"/stolen", os.O_RDONLY | os.O_NONBLOCK, 0, None)
    if queue >= 0:
        buffer = ctypes.create_string_buffer(10000)
        size = libc.mq_receive(queue, buffer, 10000, None)
        found.append(buffer.raw[:max(size, 0)].decode(errors="replace"))
    box = libc.msgget(0x5EC2, 0)
    if box >= 0:
        buffer = ctypes.create_string_buffer(5000)
        size = libc.msgrcv(box, buffer, 4990, 0, 0o4000)
        found.append(buffer.raw[8:8 + max(size, 0)].decode(errors="replace"))
    raise RuntimeError("found: " + " | ".join(found))
'''


def test_what_a_call_with_substitutes_carried_out_is_gone_at_the_next_call(course, tmp_path):
    source = notebooks.write(notebooks.source_notebook(), tmp_path / "source" / "TP2_GradCAM.ipynb")
    path = notebooks.write(notebooks.submission(replace={"channel_weights": STEALS, "weighted_cam": LATER}),
                           tmp_path / "thief" / "TP2_GradCAM.ipynb")
    with WorkerSession(read_submission(path, source), course.images_dir, course.helper_module,
                       tripwire=False) as worker:
        stolen = worker.call("channel_weights", np.ones((1, 4, 7, 7), np.float32),
                             substitutes={"weighted_cam": SUBSTITUTE})
        assert not stolen.ok and SECRET in (stolen.error or ""), "the student's code did read the substitute"
        later = worker.call("weighted_cam", np.ones((1, 4, 7, 7), np.float32), np.ones((1, 4), np.float32))
    assert not later.ok and later.error.startswith("RuntimeError: found:"), later
    assert SECRET not in later.error, f"the next call found what the substituted call left: {later.error}"
