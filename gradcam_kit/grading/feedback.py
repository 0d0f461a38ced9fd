"""What the judge tells a student, and in which words.

The hidden tests (``autograder_tests/``) stop at the first check that fails by raising
:class:`CheckFailure` with a message written for the student: what was expected, what came back
(shapes, value ranges, the largest error, the convention that matched, hooks left on, the
exception and line of their cell, the limit that was hit). The judge's results plugin records
that message, and only that message: a test that fails for any other reason (a bug in the judge
itself) is reported to the student as :data:`INTERNAL_ERROR`, while the traceback goes to the
instructor's log.

The helpers below format the recurring pieces, so that every test words them the same way.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from gradcam_kit.contract import CONVENTIONS

__all__ = [
    "CONVENTION_GLOSSARY",
    "INTERNAL_ERROR",
    "CheckFailure",
    "array_summary",
    "describe_value",
    "fmt_shape",
    "fmt_value",
    "largest_error",
]

INTERNAL_ERROR = "internal grading error — tell your instructor"

CONVENTION_GLOSSARY = {name: convention.glossary for name, convention in CONVENTIONS.items()}
"""The definition of each Grad-CAM convention at DenseNet's ``features``, by the name the judge's
feedback gives it (:data:`gradcam_kit.contract.CONVENTIONS`)."""


class CheckFailure(Exception):
    """A check of the judge found the student's code wrong; ``str(self)`` is the feedback, in their
    terms. The test fails and the student loses its points (not to be confused with a student who
    cannot be graded at all, ``gradcam_kit.grading.recording.NotGraded``)."""

    def __init__(self, message: str) -> None:
        super().__init__(message.strip())

    @property
    def message(self) -> str:
        return str(self)


def fmt_shape(shape: Iterable[int] | None) -> str:
    """``(1, 1024, 7, 7)``; ``()`` for a scalar; ``?`` when unknown."""
    if shape is None:
        return "?"
    dims = tuple(int(d) for d in shape)
    return "(" + ", ".join(str(d) for d in dims) + ("," if len(dims) == 1 else "") + ")"


def fmt_value(value: float) -> str:
    """A number, short but faithful: ``0.25``, ``1.3e-05``, ``nan``."""
    value = float(value)
    if not np.isfinite(value):
        return str(value)
    return f"{value:.4g}"


def array_summary(array: np.ndarray) -> str:
    """Shape and value range of an array, e.g. ``shape (224, 224), values in [0, 0.97]``."""
    array = np.asarray(array)
    text = f"shape {fmt_shape(array.shape)}"
    if array.size == 0:
        return text + ", empty"
    if not np.issubdtype(array.dtype, np.number) and array.dtype != np.bool_:
        return text + f", dtype {array.dtype}"
    values = array.astype(np.float64)
    finite = np.isfinite(values)
    if not finite.all():
        bad = int((~finite).sum())
        text += f", {bad} value{'s' if bad > 1 else ''} NaN or infinite"
        if not finite.any():
            return text
        values = values[finite]
    return text + f", values in [{fmt_value(values.min())}, {fmt_value(values.max())}]"


def largest_error(got: np.ndarray, expected: np.ndarray) -> tuple[float, tuple[int, ...]]:
    """The largest absolute difference between two arrays of the same shape, and where it is."""
    diff = np.abs(np.asarray(got, dtype=np.float64) - np.asarray(expected, dtype=np.float64))
    diff = np.where(np.isnan(diff), np.inf, diff)
    flat = int(np.argmax(diff))
    return float(diff.reshape(-1)[flat]), tuple(int(i) for i in np.unravel_index(flat, diff.shape))


def describe_value(value: object) -> str:
    """A returned value, described in a student's words (the worker's plain-data form).

    Tensors are described by shape, dtype and range; figures by their panels; anything else by
    its kind (the worker sends a short description of objects it does not transfer).
    """
    if isinstance(value, dict) and value.get("kind") == "tensor":
        array = np.asarray(value.get("array"))
        return f"a tensor of {array_summary(array)} (dtype {value.get('dtype', array.dtype)})"
    if isinstance(value, dict) and value.get("kind") == "figure":
        axes = value.get("axes") or []
        return f"a figure with {len(axes)} axes"
    if isinstance(value, dict) and "kind" in value:
        detail = value.get("repr") or value.get("type") or value.get("description") or ""
        return f"a {value['kind']}" + (f" ({detail})" if detail else "")
    if isinstance(value, np.ndarray):
        return f"a NumPy array of {array_summary(value)}"
    if value is None:
        return "None"
    if isinstance(value, (list, tuple)):
        kind = "list" if isinstance(value, list) else "tuple"
        shown = _short_repr(value)
        return f"the {kind} {shown}"
    return f"{type(value).__name__} {_short_repr(value)}"


def _short_repr(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
