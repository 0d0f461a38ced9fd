"""Ctrl-C during ``gradcam-kit grade`` is never lost (``gradcam_kit/grading/interrupts.py``).

On main, a SIGINT that arrived while the garbage collector ran a finalizer was printed as
"Exception ignored in: ... KeyboardInterrupt" and the run graded every student and exited 0.
"""

from __future__ import annotations

import signal
import sys

import pytest

from gradcam_kit.grading.interrupts import InterruptLatch


class SwallowsCtrlC:
    """An object whose finalizer is running when Ctrl-C arrives (Python prints and ignores it)."""

    def __del__(self) -> None:
        signal.raise_signal(signal.SIGINT)
        for _ in range(10_000):  # the handler runs here, inside the finalizer
            pass


@pytest.fixture
def ignored(monkeypatch) -> list:
    """The exceptions Python ignores (reports to ``sys.unraisablehook``) while a test runs."""
    seen: list = []
    monkeypatch.setattr(sys, "unraisablehook", lambda report: seen.append(report.exc_type))
    return seen


def test_a_ctrl_c_swallowed_by_a_finalizer_is_raised_at_the_next_check(ignored):
    with InterruptLatch() as latch:
        latch.check()  # nothing pressed yet
        SwallowsCtrlC()  # collected at once: the KeyboardInterrupt is raised in __del__, and ignored
        assert ignored == [KeyboardInterrupt]
        assert latch.pressed
        with pytest.raises(KeyboardInterrupt):
            latch.check()


def test_without_the_latch_the_same_ctrl_c_is_lost(ignored):
    """The case the latch exists for: the default handler's exception dies in the finalizer."""
    SwallowsCtrlC()
    assert ignored == [KeyboardInterrupt]  # and nothing was raised here


def test_the_previous_handler_is_restored():
    before = signal.getsignal(signal.SIGINT)
    with InterruptLatch():
        assert signal.getsignal(signal.SIGINT) != before
    assert signal.getsignal(signal.SIGINT) == before
