"""Lines from the judge's status pipe, each waited for no longer than a deadline.

A series judge writes one :class:`~gradcam_kit.grading.judge_status.JudgeStatus` line on its
status pipe per notebook graded. The grader reads them with :class:`StatusLineReader`, which never
blocks past the deadline it is given: a judge that hangs on a notebook is noticed when its time is
up, not when it ends.
"""

from __future__ import annotations

import os
import selectors
import time
from typing import IO, Any

__all__ = ["StatusLineReader"]

_POLL = 1.0
"""The longest single wait, in seconds (the deadline is checked at least this often)."""


class StatusLineReader:
    """Lines from a pipe, with a deadline.

    Parameters
    ----------
    stream : binary file
        The read end of the pipe (unbuffered); closed by :meth:`close`.
    """

    def __init__(self, stream: IO[Any]) -> None:
        self.stream = stream
        self.fd = stream.fileno()
        self.buffer = bytearray()
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.fd, selectors.EVENT_READ)
        self.eof = False

    def readline(self, deadline: float) -> bytes | None:
        """The next line, with its newline.

        Parameters
        ----------
        deadline : float
            A :func:`time.monotonic` time.

        Returns
        -------
        bytes or None
            The line; at the end of the pipe, what is left (``b""`` once nothing is); ``None``
            when the deadline passes first.
        """
        while True:
            newline = self.buffer.find(b"\n")
            if newline >= 0:
                line = bytes(self.buffer[:newline + 1])
                del self.buffer[:newline + 1]
                return line
            if self.eof:
                line, self.buffer = bytes(self.buffer), bytearray()
                return line
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            if self.selector.select(timeout=min(remaining, _POLL)):
                data = os.read(self.fd, 65536)
                if data:
                    self.buffer += data
                else:
                    self.eof = True

    def close(self) -> None:
        self.selector.close()
        self.stream.close()
