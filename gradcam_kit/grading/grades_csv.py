"""The CSV of the autograded points, kept up to date as students are recorded, never torn.

The CSV holds one row per student whose results are kept in ``grades/`` (the markers), in the
format of :func:`gradcam_kit.grading.reports.csv_text`. It is written whole at most twice per run
and grows by one appended row per newly graded student in between:

* :meth:`GradesCsv.rewrite` writes it whole (atomically, rows sorted by student) from the kept
  results: at the first student recorded (one read of every marker) and at the end of the run;
* :meth:`GradesCsv.add`, after each student, appends the student's row (one ``write`` of one
  line, then ``fsync``). Only a student who already had a row (a regrade) makes it write the
  file again, whole, from the rows it holds in memory (no marker is read again).

So the file on disk always lists every student recorded so far, each once, with the kept grade:
after a crash too (its rows are then in the order they were graded; the next run sorts them).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Mapping, Sequence

from gradcam_kit.fsutil import write_atomically
from gradcam_kit.grading import reports
from gradcam_kit.grading.reports import Results

__all__ = ["GradesCsv"]


class GradesCsv:
    """The CSV at ``path``, with the test columns ``tests``.

    Parameters
    ----------
    path : Path
        The CSV file (``grades/TP2_GradCAM.csv`` or ``--csv``).
    tests : Sequence[str]
        The test names, in column order.
    kept : callable
        Returns the kept results of every student (``GradesFolder.all_results``); called once, at
        the first :meth:`add` when :meth:`rewrite` was not called before.
    """

    def __init__(self, path: Path, tests: Sequence[str], kept: Callable[[], Mapping[str, Results]]) -> None:
        self.path = path
        self.tests = list(tests)
        self._kept = kept
        self._header = reports.csv_text({}, self.tests)
        self._rows: dict[str, str] | None = None
        """Each student's line (with its newline), once the file was written by this object."""

    def row(self, student: str, results: Results) -> str:
        """The CSV line of ``student`` (one or more physical lines when a field holds a newline)."""
        return reports.csv_text({student: results}, self.tests)[len(self._header):]

    def rewrite(self, kept: Mapping[str, Results]) -> None:
        """Write the file whole, one row per student of ``kept``, sorted by student."""
        self._rows = {student: self.row(student, results) for student, results in kept.items()}
        self._write_all()

    def add(self, student: str, results: Results) -> None:
        """Give ``student`` the row of ``results``: appended, or the file rewritten when it replaces one."""
        if self._rows is None:
            self.rewrite(self._kept())  # the marker of ``student`` is among them
            return
        row = self.row(student, results)
        replaces = student in self._rows
        self._rows[student] = row
        if replaces or not self.path.is_file():
            self._write_all()
            return
        with open(self.path, "a", encoding="utf-8", newline="") as stream:
            stream.write(row)
            stream.flush()
            os.fsync(stream.fileno())

    def _write_all(self) -> None:
        assert self._rows is not None
        write_atomically(self.path, self._header + "".join(self._rows[student] for student in sorted(self._rows)))
