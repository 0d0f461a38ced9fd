"""The judge's status channel: one record per graded notebook, on a pipe of its own.

A judge that grades a series of notebooks (``python -m autograder_tests --status-fd N --out DIR
NB...``) tells ``gradcam-kit grade`` when each notebook is done by writing one :class:`JudgeStatus`
per line, as JSON, on file descriptor ``N``: a pipe that the grader made for this purpose alone.
The judge's standard output and error, which carry text of the students' making (pytest shows
exception messages, the judge logs the worker's errors), go to the log and are never read for
anything but the log. No student code can reach the status pipe: it runs only in the worker, a
separate process that does not inherit the descriptor.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

__all__ = ["STATUS_FD_OPTION", "JudgeStatus", "write_status"]

STATUS_FD_OPTION = "--status-fd"


@dataclass(frozen=True)
class JudgeStatus:
    """One notebook graded by the judge.

    Attributes
    ----------
    notebook : str
        The file name of the notebook, as given to the judge (``<student>.ipynb``).
    exit_status : int
        pytest's exit status for it: 0 or 1 when it was graded (whatever the points); anything
        else means the judge itself failed on it.
    seconds : float
        How long it took.
    """

    notebook: str
    exit_status: int
    seconds: float

    def to_line(self) -> bytes:
        return json.dumps(asdict(self), ensure_ascii=True).encode("ascii") + b"\n"

    @classmethod
    def from_line(cls, line: bytes) -> "JudgeStatus":
        """Parse one line of the channel.

        Raises
        ------
        ValueError
            When the line is not a status record.
        """
        data = json.loads(line)
        if not isinstance(data, dict) or set(data) != {"notebook", "exit_status", "seconds"}:
            raise ValueError(f"not a status record: {line[:200]!r}")
        notebook, status, seconds = data["notebook"], data["exit_status"], data["seconds"]
        if not isinstance(notebook, str) or type(status) is not int or not isinstance(seconds, (int, float)):
            raise ValueError(f"not a status record: {line[:200]!r}")
        return cls(notebook, status, float(seconds))

    @property
    def graded(self) -> bool:
        return self.exit_status in (0, 1)


def write_status(fd: int, status: JudgeStatus) -> None:
    """Write ``status`` on the channel (one ``write``: a line far below the pipe's atomic size)."""
    data = status.to_line()
    while data:
        data = data[os.write(fd, data):]
