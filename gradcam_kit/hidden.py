"""The former name of :mod:`gradcam_kit.nbgrader_bridge`, kept for courses released before the rename.

nbgrader keeps the source of every test cell in ``gradebook.db`` when an assignment is released,
and ``nbgrader autograde`` restores the hidden tests from there: a course released with an older
kit still runs ``from gradcam_kit.hidden import run_hidden_test``. New releases import from
:mod:`gradcam_kit.nbgrader_bridge`.
"""

from gradcam_kit.nbgrader_bridge import run_hidden_test

__all__ = ["run_hidden_test"]
