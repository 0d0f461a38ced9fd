"""The stand-ins for IPython in the worker's namespace: ``get_ipython()`` and ``display``.

A notebook's ``%matplotlib inline`` (compiled as ``get_ipython().run_line_magic(...)``) or
``!pip install ...`` must not fail in the worker, nor do anything.
"""

from __future__ import annotations

from typing import Any

__all__ = ["NoIPython", "display"]


class NoIPython:
    """What ``get_ipython()`` returns in the worker: magics and shell commands do nothing."""

    def run_line_magic(self, name: str, line: str = "", *args: Any, **kwargs: Any) -> None:
        return None

    def run_cell_magic(self, name: str, line: str = "", cell: str = "", *args: Any, **kwargs: Any) -> None:
        return None

    def magic(self, *args: Any, **kwargs: Any) -> None:
        return None

    def system(self, command: str, *args: Any, **kwargs: Any) -> None:
        print(f"[grader] shell command skipped: {command}")

    def getoutput(self, command: str, *args: Any, **kwargs: Any) -> list[str]:
        print(f"[grader] shell command skipped: {command}")
        return []


def display(*objects: Any, **kwargs: Any) -> None:
    """``display(obj)``: nothing is shown while grading."""
    return None

