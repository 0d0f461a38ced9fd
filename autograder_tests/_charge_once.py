"""A bug is charged once: the grader's own helpers in place of the student's broken ones.

The checks (``_check_*``) only say right or wrong. This module holds the rule that decides what a
wrong answer costs when the function that gave it calls graded helpers that are themselves broken
(:meth:`Judge.substitutes`, along :data:`gradcam_kit.contract.CALLS`):

* ``grad_cam`` that is wrong on a case, or leaves hooks behind after an error, is called again
  with the grader's versions of its broken helpers; it passes that case if it is right then;
* ``show_grad_cam`` whose figure is wrong is drawn again with the grader's ``grad_cam`` and
  ``top_and_least`` (and whichever of their helpers are broken); it passes if the figure is right.

What such a call returns or raises never reaches the feedback (the student's code could read the
grader's during that call): :func:`charge_once` uses only whether it was right, and the feedback
says so in fixed sentences (:func:`with_grader_helpers`, :func:`not_even_with_grader_helpers`).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Sequence

from gradcam_kit.grading.feedback import CheckFailure
from gradcam_kit.host.outcomes import Outcome

from ._judge import Judge

__all__ = ["charge_once", "not_even_with_grader_helpers", "with_grader_helpers"]


def charge_once(judge: Judge, function: str, arguments: Sequence[Any], problem: str,
                right: Callable[[Outcome], bool]) -> Mapping[str, str]:
    """Decide a wrong answer of ``function``: the student's own error, or that of broken helpers.

    Parameters
    ----------
    judge : Judge
    function : str
        The graded function whose call on ``arguments`` was wrong.
    arguments : sequence
        The arguments of that call, to make it again.
    problem : str
        What was wrong with it, in the student's terms.
    right : callable
        Whether an outcome of the call is right (it sees only the outcome of the call made with
        the grader's helpers, and tells nothing of it).

    Returns
    -------
    mapping of str to str
        The substitutes (``{helper: source}``) with which the call was right: the case passes.

    Raises
    ------
    CheckFailure
        With ``problem`` when no helper of ``function`` is broken, and with ``problem`` and
        :func:`not_even_with_grader_helpers` when it is still wrong with the grader's helpers.
    """
    substitutes = judge.substitutes(function)
    if not substitutes:
        raise CheckFailure(problem)
    if not right(judge.call(function, *arguments, substitutes=substitutes)):
        raise CheckFailure(problem + not_even_with_grader_helpers(function, substitutes))
    return substitutes


def with_grader_helpers(judge: Judge, function: str, substitutes: Mapping[str, str], purposes: Sequence[str]) -> str:
    """The remark of a pass established with the grader's helpers (a fixed sentence)."""
    failing = [name for name in substitutes if not judge.verdict(name).passed]
    return (f"With the grader's own {_helpers_words(substitutes)} in place of yours, your `{function}` is right on "
            f"{'; '.join(purposes)}. What your {_helpers_words(failing)} got wrong is counted in "
            f"{'its own test' if len(failing) == 1 else 'their own tests'}, not here.")


def not_even_with_grader_helpers(function: str, substitutes: Mapping[str, str]) -> str:
    """The sentence added to a failure that the grader's helpers do not fix either (fixed)."""
    return (f" Your `{function}` is not right with the grader's own {_helpers_words(substitutes)} in place of "
            "yours either, so this error is its own.")


def _helpers_words(helpers: Iterable[str]) -> str:
    return ", ".join(f"`{h}`" for h in helpers)
