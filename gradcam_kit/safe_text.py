"""Text from a submission, made safe before it reaches any output of the grader.

A notebook is JSON, and JSON may hold what no file can: a lone UTF-16 surrogate (``"\\ud800"``) is
valid JSON and a valid Python ``str``, but cannot be encoded as UTF-8, so writing it anywhere raises
``UnicodeEncodeError``. A student's text also reaches the terminal (the summary table), logs and
HTML pages, where control characters could rewrite what the instructor sees, and an unbounded
string could fill them.

* :func:`encodable` replaces lone surrogates, and nothing else, in a whole JSON-like tree (a
  notebook, the judge's results): the autograded copy of a notebook keeps every other byte;
* :func:`shown` is for text meant to be read: bounded, with lone surrogates replaced and control
  characters other than newline and tab written as escapes.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["REPLACEMENT", "encodable", "shown", "shown_line", "without_controls"]

REPLACEMENT = "\ufffd"
_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
"""C0 and C1 control characters (escape sequences start with ESC or CSI), line separators and the
bidirectional overrides (text shown in another order than it reads)."""


def encodable(value: Any) -> Any:
    """``value`` with every lone surrogate in its strings (keys too) replaced by U+FFFD.

    Lists, tuples and dicts are rebuilt (a dict's subclass, e.g. nbformat's ``NotebookNode``, is
    kept); other values are returned as they are.
    """
    if isinstance(value, str):
        return _SURROGATE.sub(REPLACEMENT, value)
    if isinstance(value, dict):
        cleaned = {encodable(key): encodable(item) for key, item in value.items()}
        if type(value) is dict:
            return cleaned
        copy = type(value)()
        copy.update(cleaned)
        return copy
    if isinstance(value, (list, tuple)):
        return type(value)(encodable(item) for item in value)
    return value


def without_controls(text: str) -> str:
    """``text`` with lone surrogates replaced by U+FFFD and the control characters of :func:`shown`
    (all but newlines and tabs) removed rather than escaped: for a program's output, kept as text."""
    return _CONTROL.sub("", _SURROGATE.sub(REPLACEMENT, text))


def shown(text: Any, limit: int = 2000) -> str:
    """``text`` (anything: it is turned into a string) for a person to read, at most ``limit``
    characters: lone surrogates replaced, control characters but newlines and tabs escaped."""
    try:
        text = text if isinstance(text, str) else str(text)
    except Exception:  # a hostile __str__
        text = "(unreadable)"
    text = _CONTROL.sub(lambda match: match.group().encode("unicode_escape").decode("ascii"),
                        _SURROGATE.sub(REPLACEMENT, text))
    return text if len(text) <= limit else text[:max(0, limit - 6)] + " [...]"


def shown_line(text: Any, limit: int = 200) -> str:
    """As :func:`shown`, on one line (newlines and tabs escaped too): for tables and one-line logs."""
    line = shown(text, 4 * limit).replace("\n", "\\n").replace("\t", "\\t")
    return line if len(line) <= limit else line[:max(0, limit - 6)] + " [...]"
