"""The hidden autograder of TP2 (the judge).

``python -m autograder_tests --out DIR S1.ipynb S2.ipynb ...`` grades notebooks in one process:
for each, one pytest session of the judge (``python -m pytest autograder_tests --submission
S.ipynb --results-json R.json --artifacts DIR`` is that session alone), with one test per graded
function (``test_<function>``), worth the points of the source notebook's test cell of the same
name. The student's code runs only in the sandboxed worker (:mod:`gradcam_kit.host.session`);
the judge sends it plain data and compares what comes back with the answer key
(``solutions/answer_key.py``, built on ``solutions/gradcam_reference.py``), computed here on the
judge's own copy of each model. The results are a :class:`gradcam_kit.judge_results.JudgeResults`.

One submission's path through the package: ``conftest`` (options, the :class:`~._judge.Judge` of
the session) -> ``test_tp2`` (the seven tests) -> ``_checks.CHECKS`` (one check per function,
by group in ``_check_*``, the charge-once rule in ``_charge_once``) -> ``_results`` (the JSON).

This folder is a package so that its modules keep one import name: the references computed for
one submission are reused for the next when several are graded in one process.
"""
