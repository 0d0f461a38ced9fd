"""The hidden-test regions of a locked cell, and the cell as students receive it.

nbgrader's ``ClearHiddenTests`` releases a test cell without the lines from one containing
:data:`BEGIN_HIDDEN_TESTS` to the next containing :data:`END_HIDDEN_TESTS` (both included). The
kit needs the same rule where it compares a student's copy of a locked cell with the source
(reading a submission, nbgrader's sanitize step, the feedback pages), so it is written here once.
"""

from __future__ import annotations

__all__ = ["BEGIN_HIDDEN_TESTS", "END_HIDDEN_TESTS", "remove_hidden_regions"]

BEGIN_HIDDEN_TESTS = "BEGIN HIDDEN TESTS"
END_HIDDEN_TESTS = "END HIDDEN TESTS"
"""nbgrader's default delimiters (``ClearHiddenTests.begin_test_delimeter`` and ``end_test_delimeter``)."""


def remove_hidden_regions(source: str, begin: str = BEGIN_HIDDEN_TESTS, end: str = END_HIDDEN_TESTS) -> str:
    """``source`` as ``nbgrader generate_assignment`` releases it: every hidden-test region removed.

    A line containing ``begin`` opens a region, the next line containing ``end`` closes it; both
    lines and everything between are dropped. An unclosed region runs to the end of the cell.
    """
    kept, inside = [], False
    for line in source.split("\n"):
        if begin in line:
            inside = True
        elif end in line:
            inside = False
        elif not inside:
            kept.append(line)
    return "\n".join(kept)
