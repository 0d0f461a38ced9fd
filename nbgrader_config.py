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
# first hidden-test cell runs the whole judge (gradcam_kit.nbgrader_bridge: the autograder_tests suite in
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

# --------------------------------------------------------------------------------------------
# Plain `nbgrader autograde`, formgrader and feedback (gradcam_kit/autograde_plugins.py)
# --------------------------------------------------------------------------------------------
# These need the kit in the environment that runs nbgrader (`./kit shell nbgrader ...`), as the
# hidden tests do.
from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor  # noqa: E402
from nbgrader.preprocessors import (  # noqa: E402
    CheckCellMetadata,
    ClearOutput,
    DeduplicateIds,
    GetGrades,
    OverwriteKernelspec,
)

try:
    from gradcam_kit.autograde_plugins import ClearHiddenTestsFromFeedback, OverwriteLockedCells
except ImportError as error:  # say what to do, not only what is missing
    raise ImportError(
        f"{__file__} needs the TP2 kit (gradcam_kit) in the environment that runs nbgrader: run "
        "nbgrader through the course's environment, e.g. `./kit shell nbgrader ...`"
    ) from error

# Locked cells come back from students without their hidden tests, as released: restore them
# without reporting each test cell of each honest submission as changed ("Attribute 'checksum'
# ... has changed!"). A locked cell that was really edited is still reported and restored.
c.Autograde.sanitize_preprocessors = [ClearOutput, DeduplicateIds, OverwriteKernelspec, OverwriteLockedCells,
                                      CheckCellMetadata]
# formgrader's per-student "Autograde" button runs plain nbgrader: outside the sandbox, replacing
# the autograded notebook and the grades. For a student graded by `gradcam-kit grade` it refuses
# and says what to do (formgrader shows the message); GRADCAM_ALLOW_PLAIN_AUTOGRADE=1 in the
# environment lets nbgrader replace the kit's grades anyway.
c.Autograde.exporter_class = "gradcam_kit.autograde_plugins.KitGradesGuard"
# Feedback for students shows the test cells as released: no hidden tests.
c.GenerateFeedback.preprocessors = [GetGrades, CSSHTMLHeaderPreprocessor, ClearHiddenTestsFromFeedback]

# --------------------------------------------------------------------------------------------
# Submissions downloaded from an LMS: `nbgrader zip_collect TP2_GradCAM` (gradcam_kit/lms.py)
# --------------------------------------------------------------------------------------------
# Put the downloaded archive(s) in downloaded/TP2_GradCAM/archive/. The regexp reads the LMS's
# id of each student from the file names (group student_id) and the notebook's name (group
# file_id); lms_roster.csv (columns lms_id,student_id; git ignores it) maps those ids to the
# course's student ids. A file whose id is not in the roster is skipped with a warning.
c.ZipCollectApp.collector_plugin = "gradcam_kit.lms.RosterCollector"
c.RosterCollector.roster = "lms_roster.csv"
# Moodle, "Download all submissions", with or without "Download submissions in folders":
#   .../Jane Doe_1234567_assignsubmission_file_/TP2_GradCAM.ipynb
#   .../Jane Doe_1234567_assignsubmission_file_TP2_GradCAM.ipynb
# student_id is the participant number (the "Identifier" of Moodle's grading worksheet).
c.FileNameCollectorPlugin.named_regexp = (
    r".*/(?P<lms_name>[^/]+?)_(?P<student_id>\d+)_assignsubmission_file_/?(?P<file_id>[^/]+\.ipynb)$"
)
# Other LMSs: replace the line above with one of these.
# Canvas ("Download submissions": janedoe_12345_67890_TP2_GradCAM.ipynb, late ones janedoe_LATE_...;
# student_id is Canvas's user id):
#   c.FileNameCollectorPlugin.named_regexp = (
#       r".*/(?P<lms_name>[a-z]+)(?:_LATE)?_(?P<student_id>\d+)_\d+_(?P<file_id>[^/]+\.ipynb)$")
# Blackboard ("Download assignment": TP2_GradCAM_jdoe_attempt_2026-01-15-10-00-00_TP2_GradCAM.ipynb;
# student_id is the user name):
#   c.FileNameCollectorPlugin.named_regexp = (
#       r".*/[^/]*?_(?P<student_id>[^_/]+)_attempt_[0-9-]+_(?P<file_id>[^/]+\.ipynb)$")
# One folder per student, named by the course's student id (jdoe/TP2_GradCAM.ipynb; no roster
# needed: remove lms_roster.csv or set c.RosterCollector.roster = ""):
#   c.FileNameCollectorPlugin.named_regexp = r".*/(?P<student_id>[^/]+)/(?P<file_id>[^/]+\.ipynb)$"
