"""The grading engine: the student's code runs in a sandboxed worker (:mod:`gradcam_kit.worker`,
started and watched by :mod:`gradcam_kit.host`), the judge never runs it.

Modules
-------
notebook
    ``read_submission``: which cells of a submission are run, and every problem found in it.
judge_status
    The judge's status channel: one record per graded notebook, on a pipe of its own.
safe_text
    Text from a submission made safe (encodable, bounded, no control characters) for any output.
reference_cache
    Where the judges keep their reference values, and how a judge waits while they are prepared.
"""
