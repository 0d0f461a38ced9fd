"""nbgrader's configuration for the TP2 Grad-CAM course.

The folder holding this file is the course root (nbgrader's convention, and how ``gradcam-kit``
finds the course). nbgrader reads this file when a command runs in that folder, e.g.
``nbgrader generate_assignment TP2_GradCAM`` or ``nbgrader autograde TP2_GradCAM``.
"""

import os

c = get_config()  # noqa: F821 -- injected by traitlets when nbgrader loads this file

# --------------------------------------------------------------------------------------------
# The course
# --------------------------------------------------------------------------------------------
c.CourseDirectory.course_id = "gradcam_tp2"
# Follow this file, so that a copy of the course (a scratch or demo course) uses its own folders.
c.CourseDirectory.root = os.path.dirname(os.path.abspath(__file__))

# nbgrader copies every file of source/TP2_GradCAM/ except notebooks into the release and into
# the autograded folders. Keep caches and local debris out of them (tests that import
# tp2_utils.py create a __pycache__ next to it).
c.CourseDirectory.ignore = [
    ".ipynb_checkpoints",
    "__pycache__",
    "*.pyc",
    ".pytest_cache",
    ".DS_Store",
    "feedback",
    "gradebook.db",
    "nbgrader.log",
]

# --------------------------------------------------------------------------------------------
# The student version (nbgrader generate_assignment, which `gradcam-kit release` runs)
# --------------------------------------------------------------------------------------------
# A solution region inside a function (the seven graded functions) becomes nbgrader's stub, which
# raises NotImplementedError when the function is called. A region at the top level of a cell (the
# ungraded exploration cells of Parts 2-4 and the bonus) becomes "# YOUR CODE HERE" alone, so that
# "Restart and Run All" works on a notebook that skips an optional part (gradcam_kit/stubs.py).
from gradcam_kit.stubs import assignment_preprocessors  # noqa: E402

c.GenerateAssignment.preprocessors = assignment_preprocessors()

# --------------------------------------------------------------------------------------------
# Execution (nbgrader validate, nbgrader autograde)
# --------------------------------------------------------------------------------------------
c.Execute.kernel_name = "python3"
# Per cell, in seconds. The cells of the solution take seconds each on a laptop CPU, but the
# first hidden-test cell runs the whole judge (gradcam_kit.hidden: the autograder_tests suite in
# a subprocess, for all seven functions at once), which has its own limit, GRADCAM_JUDGE_TIMEOUT
# (900 s by default). The cell's limit is above it, so that the judge's limit, which reports
# clearly, is the one that fires.
c.Execute.timeout = 960
c.Execute.startup_timeout = 120

# nbgrader gives a test cell no points if anything reaches stderr in it. These stderr outputs
# are noise, not failures (a failing test raises an exception, which is recorded apart), so
# `nbgrader autograde` drops them before grading:
#   * a Python warning (torch, torchvision, matplotlib... or the student's own code), printed as
#     "path:line: SomeWarning: message";
#   * the notice of tp2_utils about the seeded random weights (GRADCAM_WEIGHTS=random);
#   * a chunk holding nothing but white space (print() can send its newline separately).
# IgnorePattern drops a whole stderr output when the pattern is found anywhere in its text.
# It is disabled by default in nbgrader 0.9.6: enable it.
c.IgnorePattern.enabled = True
c.IgnorePattern.pattern = "|".join(
    [
        r"(?m:^.*:\d+: \w*Warning: )",
        r"NOTE: GRADCAM_WEIGHTS=random, so \w+ has seeded random weights",
        r"\A\s*\Z",
    ]
)
