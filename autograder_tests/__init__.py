"""The hidden autograder of TP2 (the judge).

``python -m pytest autograder_tests --submission S.ipynb [--results-json R.json] [--artifacts DIR]``
grades one notebook: one test per graded function (``test_<function>``), worth the points of the
source notebook's test cell of the same name. The student's code runs only in the sandboxed worker
(:mod:`gradcam_kit.host.session`); the judge sends it plain data and compares what comes back
with the answer key (``solutions/answer_key.py``, built on ``solutions/gradcam_reference.py``),
computed here on the judge's own copy of each model.

``python -m autograder_tests --out DIR S1.ipynb S2.ipynb ...`` grades several notebooks in one
process (one pytest session each), sharing the reference computations between them.

This folder is a package so that its modules keep one import name: the references computed for
one submission are reused for the next when several are graded in one process.

Modules
-------
conftest
    Command-line options, the session fixtures, the results plugin's registration.
_results
    The plugin that records each test's outcome, points and feedback, and writes the JSON.
_reference
    The judge's side: images, models, reference maps and captures (cached), tolerances.
_judge
    The student's side, through the worker: calls, outcomes, verdicts of the seven checks; which
    graded function calls which, and the grader's helpers put in place of broken ones.
_substitutes
    The grader's own versions of the helpers, as source text for those calls.
_checks
    The seven checks, one per graded function.
_figures
    What a figure draws, read back from the worker's description and scored against heatmaps.
test_tp2
    The seven tests, in notebook order.
__main__
    ``python -m autograder_tests``: several notebooks in one process.
"""
