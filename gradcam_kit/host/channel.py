"""The grader's ends of a worker's two pipes, read and written against deadlines.

The grader never blocks on a worker: every write and read polls with the time left, and a worker
that is too slow, closes its pipe or sends bytes that are not frames breaks the channel
(:class:`ChannelBroken`, which the session turns into the reason the worker was lost:
:mod:`gradcam_kit.host.postmortem`).
"""

from __future__ import annotations

import os
import select
import time
from typing import Any

from gradcam_kit.wire.frames import FrameReader, ProtocolError, pack_frame
from gradcam_kit.wire.messages import LoadAnswer

__all__ = ["Channel", "ChannelBroken"]


class ChannelBroken(Exception):
    """The worker did not answer in time (``timed_out``; ``timeout``: the limit that applied, if not
    the call's), closed its pipe, or sent something unreadable (``garbled`` says what)."""

    def __init__(self, timed_out: bool, timeout: float | None = None, garbled: str | None = None) -> None:
        super().__init__(garbled or ("timed out" if timed_out else "closed"))
        self.timed_out, self.timeout, self.garbled = timed_out, timeout, garbled


class Channel:
    """The request pipe (written, non-blocking) and the reply pipe (read) of one worker.

    Parameters
    ----------
    request_fd, reply_fd : int
        The grader's ends of the pipes (the channel closes them).
    max_frame : int
        The largest frame accepted from the worker.
    """

    def __init__(self, request_fd: int, reply_fd: int, max_frame: int) -> None:
        self.request_fd, self.reply_fd = request_fd, reply_fd
        os.set_blocking(self.request_fd, False)
        self._reader = FrameReader(max_frame)
        self._inbox: list[Any] = []
        self.failure: str | None = None
        """What the worker said when it could not start (its ``failed`` event)."""

    def send(self, message: dict[str, Any], timeout: float) -> None:
        """Write one frame within ``timeout`` seconds."""
        data = memoryview(pack_frame(message))
        deadline = time.monotonic() + timeout
        while data:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ChannelBroken(timed_out=True, timeout=timeout)
            ready = select.poll()
            ready.register(self.request_fd, select.POLLOUT)
            if not ready.poll(remaining * 1000):
                continue
            try:
                written = os.write(self.request_fd, data)
            except BlockingIOError:
                continue
            except (BrokenPipeError, OSError):
                raise ChannelBroken(timed_out=False) from None
            data = data[written:]

    def next_message(self, deadline: float, timeout: float | None = None) -> dict[str, Any]:
        """The next message (a record), read before ``deadline`` (``time.monotonic()``); ``timeout``
        is the limit named if it is missed."""
        while not self._inbox:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ChannelBroken(timed_out=True, timeout=timeout)
            ready = select.poll()
            ready.register(self.reply_fd, select.POLLIN)
            if not ready.poll(min(remaining, 1.0) * 1000):
                continue
            try:
                chunk = os.read(self.reply_fd, 1 << 20)
            except OSError:
                chunk = b""
            if not chunk:
                raise ChannelBroken(timed_out=False)
            try:
                self._inbox += self._reader.feed(chunk)
            except ProtocolError as error:
                raise ChannelBroken(timed_out=False, garbled=f"an unreadable answer: {error}") from None
        message = self._inbox.pop(0)
        if not isinstance(message, dict):
            raise ChannelBroken(timed_out=False, garbled="a message that is not a record")
        return message

    def receive_answer(self, request_id: int, prepare_seconds: float, call_seconds: float) -> dict[str, Any]:
        """The answer to request ``request_id``: the worker has ``prepare_seconds`` to start the
        student's code (building models, decoding arguments), then ``call_seconds`` from its
        ``running`` event."""
        deadline = time.monotonic() + prepare_seconds
        running = False
        while True:
            message = self.next_message(deadline, timeout=call_seconds)
            if message.get("event") == "running" and not running:  # the student's code starts: its clock
                running = True
                deadline = time.monotonic() + call_seconds
            elif message.get("event") is None and message.get("id") == request_id:
                return message

    def receive_load(self, expected: list[str], progress: list[str], startup_seconds: float,
                     call_seconds: float) -> LoadAnswer | None:
        """The worker's answer once the notebook loaded, or ``None`` when it could not start
        (``failure`` says why).

        The worker has ``startup_seconds`` until its first cell, then ``call_seconds`` per cell; it
        announces each cell of ``expected`` once, in order (appended to ``progress`` as it starts):
        anything else was forged by the student's code (to stretch the deadline, say).
        """
        expected = list(expected)
        deadline = time.monotonic() + startup_seconds
        while True:
            message = self.next_message(deadline)
            event = message.get("event")
            if event == "cell":
                if not expected or message.get("grade_id") != expected.pop(0):
                    raise ChannelBroken(timed_out=False, garbled="an unexpected message while loading")
                progress.append(message["grade_id"])
                deadline = time.monotonic() + call_seconds
            elif event == "failed":
                self.failure = str(message.get("error"))
                return None
            elif event == "loaded":
                try:
                    return LoadAnswer.from_plain(message)
                except ProtocolError as error:
                    raise ChannelBroken(timed_out=False, garbled=str(error)) from None

    def close(self) -> None:
        for fd in (self.request_fd, self.reply_fd):
            try:
                os.close(fd)
            except OSError:
                pass
