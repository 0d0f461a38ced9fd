"""A small progress bar for batch jobs (no third-party dependency).

On a terminal the bar is redrawn in place::

    grading [##########..........]  5/10  50%  0:42 elapsed  last: alice (8/10)

When the stream is not a terminal (a log file, a CI job, a test), each step is written on a line
of its own instead, so that logs stay readable.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO


def _clock(seconds: float) -> str:
    """``seconds`` as ``H:MM:SS`` or ``M:SS``."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressBar:
    """Count finished steps out of a known total and show it.

    Parameters
    ----------
    total : int
        The number of steps.
    label : str
        What is being done, shown before the bar.
    stream : TextIO, optional
        Where to draw (default: ``sys.stderr``).
    width : int
        The width of the bar itself, in characters.

    Examples
    --------
    >>> import io
    >>> out = io.StringIO()
    >>> with ProgressBar(2, "grading", stream=out) as bar:
    ...     bar.advance("alice")
    ...     bar.advance("bob")
    >>> out.getvalue().splitlines()[-1].startswith("grading [####")
    True
    """

    def __init__(self, total: int, label: str = "", stream: TextIO | None = None, width: int = 24) -> None:
        self.total = max(0, int(total))
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.done = 0
        self.started = time.monotonic()
        self.interactive = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_width = 0

    # ------------------------------------------------------------------------------------------
    def render(self, note: str = "") -> str:
        """The text of the bar for the current count."""
        fraction = self.done / self.total if self.total else 1.0
        filled = int(round(fraction * self.width))
        bar = "#" * filled + "." * (self.width - filled)
        digits = len(str(self.total))
        text = (
            f"{self.label} [{bar}] {self.done:>{digits}}/{self.total} {fraction:4.0%} "
            f"{_clock(time.monotonic() - self.started)} elapsed"
        )
        return f"{text}  {note}" if note else text

    def _draw(self, note: str = "") -> None:
        text = self.render(note)
        if self.interactive:
            columns = shutil.get_terminal_size((100, 20)).columns
            text = text[: columns - 1]
            padding = " " * max(0, self._last_width - len(text))
            self.stream.write("\r" + text + padding)
            self._last_width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    # ------------------------------------------------------------------------------------------
    def start(self) -> "ProgressBar":
        """Draw the empty bar (terminals only: a log gets one line per finished step)."""
        if self.interactive:
            self._draw()
        return self

    def advance(self, note: str = "", steps: int = 1) -> None:
        """Count ``steps`` more finished steps and redraw, with an optional note."""
        self.done = min(self.total, self.done + steps)
        self._draw(note)

    def message(self, text: str) -> None:
        """Print a line of text above the bar without breaking it."""
        if self.interactive:
            self.stream.write("\r" + " " * self._last_width + "\r")
        self.stream.write(text.rstrip("\n") + "\n")
        if self.interactive:
            self._last_width = 0
            self._draw()
        self.stream.flush()

    def close(self) -> None:
        """End the bar's line (terminals only)."""
        if self.interactive:
            self.stream.write("\n")
            self.stream.flush()

    def __enter__(self) -> "ProgressBar":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()
