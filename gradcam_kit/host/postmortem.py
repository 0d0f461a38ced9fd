"""Why a worker was lost, in the student's terms: the post-mortem of a dead or silent worker.

A worker that times out or garbles its channel is killed; one that closed its channel is waited
for, and its exit status and the end of its log say what happened (:func:`death_reason`): a limit
(CPU, output, memory), a crash by signal, or an exit.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Any

from gradcam_kit.fsutil import kill_group
from gradcam_kit.host.channel import ChannelBroken
from gradcam_kit.wire.failures import Failure
from gradcam_kit.wire.limits import MEMORY_MARKERS, Limits, describe_bytes

__all__ = ["KILL_WAIT", "WorkerLost", "death_reason", "kill_worker", "log_tail", "why_lost"]

KILL_WAIT = 10.0
"""Seconds to wait for a killed (or closing) worker to be collected."""
_SIGNAL_WORDS: dict[int, str] = {
    signal.SIGSEGV: "crashed (SIGSEGV, a segmentation fault)",
    signal.SIGBUS: "crashed (SIGBUS, a bus error)",
    signal.SIGILL: "crashed (SIGILL, an illegal instruction)",
    signal.SIGFPE: "crashed (SIGFPE, an arithmetic error)",
    signal.SIGABRT: "crashed (SIGABRT, aborted)",
}


class WorkerLost(Exception):
    """The worker is gone (or was killed): ``reason`` for the student, ``kind`` of failure."""

    def __init__(self, reason: str, kind: Failure) -> None:
        super().__init__(reason)
        self.reason, self.kind = reason, Failure(kind)


def kill_worker(process: Any) -> None:
    """Kill a worker and everything it started, and collect it (a worker forked by the zygote is
    killed by the zygote, which cleans up after it)."""
    if not isinstance(process, subprocess.Popen):
        process.kill()
        return
    if process.poll() is None:
        kill_group(process, wait=None)
    try:
        process.wait(timeout=KILL_WAIT)
    except subprocess.TimeoutExpired:
        pass


def log_tail(path: Path | None, max_chars: int = 4000) -> str:
    """The end of a worker's log (what the student's code printed), or an empty string."""
    if path is None or not path.exists():
        return ""
    with open(path, "rb") as log:
        log.seek(max(0, path.stat().st_size - max_chars))
        return log.read().decode("utf-8", "replace")


def why_lost(broken: ChannelBroken, process: Any, limits: Limits, log_path: Path | None,
             shifted_signals: bool) -> WorkerLost:
    """Stop the worker whose channel broke and say, in the student's terms, why it was lost.

    ``shifted_signals``: the process is bubblewrap, which reports its child's signal ``n`` as the
    exit status ``128 + n``.
    """
    if broken.timed_out:
        if process is not None:
            kill_worker(process)
        seconds = broken.timeout if broken.timeout is not None else limits.call_seconds
        return WorkerLost(f"timed out after {seconds:g} s", Failure.TIMEOUT)
    if broken.garbled is not None:
        if process is not None:
            kill_worker(process)
        return WorkerLost(f"broke the grader's channel ({broken.garbled})", Failure.LOST)
    status = None
    if process is not None:
        try:
            status = process.wait(timeout=KILL_WAIT)
        except subprocess.TimeoutExpired:
            kill_worker(process)
            return WorkerLost("closed the grader's channel", Failure.LOST)
    return death_reason(status, limits, log_path, shifted_signals)


def death_reason(status: int | None, limits: Limits, log_path: Path | None, shifted_signals: bool) -> WorkerLost:
    """Why a worker ended with ``status`` (``Popen.returncode``; ``None``: unknown)."""
    log_size = log_path.stat().st_size if log_path and log_path.exists() else 0
    if log_size >= limits.output_bytes - 4096:
        return WorkerLost(f"printed more than {describe_bytes(limits.output_bytes)}", Failure.OUTPUT)
    tail = log_tail(log_path, 20000)
    out_of_memory = any(marker in tail for marker in MEMORY_MARKERS)
    signum = None
    if status is not None and status < 0:
        signum = -status
    elif status is not None and status > 128 and shifted_signals:
        signum = status - 128
    if signum is not None:
        if signum == signal.SIGXCPU:
            return WorkerLost(f"used more than {limits.cpu_seconds} s of CPU time", Failure.CPU)
        if signum == signal.SIGXFSZ:
            return WorkerLost(f"printed or wrote more than {describe_bytes(limits.output_bytes)}", Failure.OUTPUT)
        if out_of_memory:
            return WorkerLost(f"used more than {describe_bytes(limits.memory_bytes)} of memory", Failure.MEMORY)
        if signum == signal.SIGKILL:
            return WorkerLost("was killed (SIGKILL: too much memory or CPU time?)", Failure.KILLED)
        words = _SIGNAL_WORDS.get(signum)
        if words is None:
            try:
                words = f"was stopped by signal {signal.Signals(signum).name}"
            except ValueError:
                words = f"was stopped by signal {signum}"
        return WorkerLost(words, Failure.CRASH)
    if status is None:
        return WorkerLost("closed the grader's channel", Failure.LOST)
    if out_of_memory:
        return WorkerLost(f"used more than {describe_bytes(limits.memory_bytes)} of memory", Failure.MEMORY)
    return WorkerLost(f"ended the process: it exited with status {status} (os._exit or sys.exit)", Failure.EXIT)
