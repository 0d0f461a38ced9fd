"""``gradcam-kit release``: the student version of the assignment, made by nbgrader.

It runs ``nbgrader generate_assignment TP2_GradCAM --force`` in the course folder, which

* records the assignment, its notebook and its graded cells in the course's ``gradebook.db``
  (``nbgrader autograde`` needs them later);
* writes ``release/TP2_GradCAM/``: the notebook without solutions, hidden tests or outputs,
  and a copy of every other file of ``source/TP2_GradCAM/`` (that is, ``tp2_utils.py``).

The release is committed, and CI regenerates it and compares bytes, so the result must be the
same at every run. nbgrader's own output is deterministic for a given source; what could still
differ is the set of files copied next to the notebook, so the release is checked against the
source folder afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from gradcam_kit.course import ASSIGNMENT, HELPER_MODULE, NOTEBOOK, Course
from gradcam_kit.errors import KitError

#: The files of a release, and nothing else.
RELEASE_FILES = (NOTEBOOK, HELPER_MODULE)


def nbgrader_command(course: Course) -> list[str]:
    """The nbgrader command line that generates the release of ``course``."""
    return [
        sys.executable, "-m", "nbgrader", "generate_assignment", ASSIGNMENT,
        "--force",
        f"--CourseDirectory.root={course.root}",
    ]


def generate_release(course: Course) -> None:
    """Regenerate ``release/TP2_GradCAM/`` (and the gradebook's record of the assignment).

    Raises
    ------
    KitError
        When the source notebook is missing, nbgrader fails, or the release does not hold
        exactly the expected files.
    """
    if not course.source_notebook.is_file():
        raise KitError(f"no source notebook at {course.source_notebook}")
    result = subprocess.run(
        nbgrader_command(course), cwd=course.root, env=_environment(),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False,
    )
    if result.returncode != 0:
        raise KitError(
            f"nbgrader generate_assignment failed (exit status {result.returncode}):\n{result.stdout.strip()}"
        )
    check_release(course)
    print(f"released {ASSIGNMENT} into {course.release_dir}")


def _environment() -> dict[str, str]:
    """Our environment, with this interpreter's scripts first on PATH.

    nbgrader runs the ``alembic`` command to open its database; without this, a kit run as
    ``.venv/bin/gradcam-kit`` from an environment that is not activated would not find it.
    """
    env = dict(os.environ)
    scripts = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([scripts, env["PATH"]]) if env.get("PATH") else scripts
    return env


def check_release(course: Course) -> None:
    """Fail unless the release holds exactly :data:`RELEASE_FILES`, the helper module unchanged."""
    release = course.release_dir
    present = sorted(str(p.relative_to(release)) for p in release.rglob("*") if p.is_file())
    if present != sorted(RELEASE_FILES):
        raise KitError(
            f"{release} should hold exactly {', '.join(sorted(RELEASE_FILES))}, but holds "
            f"{', '.join(present) or 'nothing'}. Move other files out of {course.source_dir} "
            f"or add them to CourseDirectory.ignore in nbgrader_config.py."
        )
    if (release / HELPER_MODULE).read_bytes() != course.helper_module.read_bytes():
        raise KitError(f"{release / HELPER_MODULE} differs from {course.helper_module}")
