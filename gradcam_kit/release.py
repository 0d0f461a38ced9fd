"""``gradcam-kit release``: the student version of the assignment, made by nbgrader, published atomically.

``nbgrader generate_assignment TP2_GradCAM`` makes the release: the notebook without solutions,
hidden tests or outputs, a copy of every other file of ``source/TP2_GradCAM/`` (that is,
``tp2_utils.py``), and the record of the assignment, its notebook and its graded cells in the
course's ``gradebook.db`` (``nbgrader autograde`` and ``gradcam-kit grade`` need it).

The committed ``release/TP2_GradCAM/`` is only ever replaced by a release that is complete and
checked. :func:`generate_release` works in a scratch folder of the course, ``.release-*/``:

1. nbgrader, without the database, builds a first copy, which is checked (:func:`check_release`:
   exactly the notebook and the helper module, the helper unchanged; and
   :func:`gradcam_kit.leaks.release_leaks`: no solution, hidden-test, answer-key or judge line);
2. nbgrader, with the database, builds the release again and records it in the gradebook. This is
   where nbgrader refuses to change an assignment that has submissions in ways it cannot follow
   (adding or removing graded cells); the error says so and what the instructor can do;
3. only then does the new release replace ``release/TP2_GradCAM/`` (two renames in the same file
   system); the scratch folder is removed whatever happens.

On any failure ``release/`` is left exactly as it was. nbgrader's output is deterministic for a
given source, so the committed release can be compared byte for byte with a regenerated one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from gradcam_kit.course import ASSIGNMENT, HELPER_MODULE, NOTEBOOK, Course
from gradcam_kit.errors import KitError

#: The files of a release, and nothing else.
RELEASE_FILES = (NOTEBOOK, HELPER_MODULE)
STAGING_PREFIX = ".release-"
REFUSED_WITH_SUBMISSIONS = ("because there are submissions associated with it",)
"""What nbgrader logs when it refuses to change an assignment that has submissions."""
MAX_LEAKS_SHOWN = 10


def nbgrader_command(course: Course, release_directory: str | None = None, database: bool = True) -> list[str]:
    """The nbgrader command line that generates the release of ``course``.

    ``release_directory`` (relative to the course root) replaces ``release``; without ``database``
    nbgrader records nothing in the gradebook.
    """
    command = [sys.executable, "-m", "nbgrader", "generate_assignment", ASSIGNMENT, "--force",
               f"--CourseDirectory.root={course.root}"]
    if release_directory is not None:
        command.append(f"--CourseDirectory.release_directory={release_directory}")
    if not database:
        command.append("--no-db")
    return command


def generate_release(course: Course) -> None:
    """Regenerate ``release/TP2_GradCAM/`` and the gradebook's record of the assignment (see the
    module docstring); ``release/`` changes only if everything succeeds.

    Raises
    ------
    KitError
        When the source notebook is missing, nbgrader fails or refuses (the message says what and
        what to do), or the release does not pass the checks.
    """
    from gradcam_kit.grading.nbgrader_settings import load_nbgrader_config
    from gradcam_kit.leaks import release_leaks

    if not course.source_notebook.is_file():
        raise KitError(f"no source notebook at {course.source_notebook}")
    config = load_nbgrader_config(course)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=course.root))
    try:
        checked = _build(course, staging, "checked", database=False)
        check_release(course, checked)
        leaks = release_leaks(course, checked, config)
        if leaks:
            shown = "\n".join(f"  {leak.line!r}  (from {leak.origin})" for leak in leaks[:MAX_LEAKS_SHOWN])
            more = f"\n  ... and {len(leaks) - MAX_LEAKS_SHOWN} more" if len(leaks) > MAX_LEAKS_SHOWN else ""
            raise KitError(
                f"the release would show {len(leaks)} line(s) of a solution, a hidden test, the answer key "
                f"or the judge:\n{shown}{more}\nPut solution code between the BEGIN SOLUTION / END SOLUTION "
                f"lines and hidden tests between BEGIN HIDDEN TESTS / END HIDDEN TESTS in "
                f"{course.source_notebook}, or mark the cell as a solution cell. {_UNCHANGED}"
            )
        released = _build(course, staging, "released", database=True)
        check_release(course, released)
        _replace(course.release_dir, released, staging / "previous")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"released {ASSIGNMENT} into {course.release_dir}")


_UNCHANGED = "release/ was left as it was."


def _build(course: Course, staging: Path, name: str, database: bool) -> Path:
    """Run nbgrader into ``staging/name`` and return the folder of the assignment it made."""
    relative = (staging / name).relative_to(course.root)
    result = subprocess.run(
        nbgrader_command(course, str(relative), database), cwd=course.root, env=_environment(),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False,
    )
    if result.returncode != 0:
        raise KitError(_explain_failure(course, result.returncode, result.stdout))
    return staging / name / ASSIGNMENT


def _explain_failure(course: Course, status: int, output: str) -> str:
    """What nbgrader refused, in words, and what the instructor can do."""
    tail = "\n".join(output.strip().splitlines()[-15:])
    if not any(marker in output for marker in REFUSED_WITH_SUBMISSIONS):
        return f"nbgrader generate_assignment failed (exit status {status}); {_UNCHANGED} Its output ends with:\n{tail}"
    said = next((line.strip() for line in output.splitlines()
                 if any(marker in line for marker in REFUSED_WITH_SUBMISSIONS)), tail)
    added, removed = _graded_cells_changed(course)
    change = "; ".join(part for part in (
        f"new: {', '.join(added)}" if added else "", f"gone: {', '.join(removed)}" if removed else "") if part)
    return (
        f"nbgrader refused to record the new version of {ASSIGNMENT} in the gradebook: the gradebook already "
        f"holds submissions of it, and nbgrader cannot add or remove cells with a grade_id once there are "
        f"submissions ({change or 'the set of cells with a grade_id changed'}). {_UNCHANGED}\n"
        f"What you can do:\n"
        f"  * keep every cell that has a grade_id (you may change their text, their tests and their points, "
        f"and add or remove cells without a grade_id), then run `gradcam-kit release` again;\n"
        f"  * or publish the change as a new assignment (a copy of source/{ASSIGNMENT} under a new name);\n"
        f"  * or, if no grade of {ASSIGNMENT} needs keeping (this deletes every grade of it, manual ones "
        f"included): `nbgrader db assignment remove {ASSIGNMENT} --force`, then `gradcam-kit release` and "
        f"`gradcam-kit grade --force`.\n"
        f"nbgrader said: {said}"
    )


def _graded_cells_changed(course: Course) -> tuple[list[str], list[str]]:
    """(grade ids of the source notebook missing from the gradebook, those of the gradebook gone
    from the source notebook); empty lists when the gradebook cannot be read."""
    import nbformat

    try:
        from nbgrader.api import Gradebook

        from gradcam_kit.grading.nbgrader_settings import NOTEBOOK_ID, NbgraderSettings

        settings = NbgraderSettings.of(course)
        with Gradebook(settings.db_url, settings.course_id) as gradebook:
            recorded = {cell.name for cell in gradebook.find_notebook(NOTEBOOK_ID, ASSIGNMENT).source_cells}
        notebook = nbformat.read(str(course.source_notebook), as_version=4)
    except Exception:
        return [], []
    present = [cell.metadata.get("nbgrader", {}).get("grade_id") for cell in notebook.cells]
    present = [name for name in present if name]
    return ([name for name in present if name not in recorded],
            sorted(name for name in recorded if name not in present))


def _replace(target: Path, built: Path, previous: Path) -> None:
    """Put ``built`` at ``target``; the old ``target`` goes to ``previous`` (same file system)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    had_one = target.exists()
    if had_one:
        os.rename(target, previous)
    try:
        os.rename(built, target)
    except BaseException:
        if had_one:
            os.rename(previous, target)
        raise


def _environment() -> dict[str, str]:
    """Our environment, with this interpreter's scripts first on PATH.

    nbgrader runs the ``alembic`` command to open its database; without this, a kit run as
    ``.venv/bin/gradcam-kit`` from an environment that is not activated would not find it.
    """
    env = dict(os.environ)
    scripts = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([scripts, env["PATH"]]) if env.get("PATH") else scripts
    return env


def check_release(course: Course, release: Path | None = None) -> None:
    """Fail unless the release (default: the course's) holds exactly :data:`RELEASE_FILES`, the
    helper module unchanged."""
    release = release if release is not None else course.release_dir
    present = sorted(str(p.relative_to(release)) for p in release.rglob("*") if p.is_file())
    if present != sorted(RELEASE_FILES):
        raise KitError(
            f"the release should hold exactly {', '.join(sorted(RELEASE_FILES))}, but nbgrader made "
            f"{', '.join(present) or 'nothing'}. Move other files out of {course.source_dir} "
            f"or add them to CourseDirectory.ignore in nbgrader_config.py. {_UNCHANGED}"
        )
    if (release / HELPER_MODULE).read_bytes() != course.helper_module.read_bytes():
        raise KitError(f"the released {HELPER_MODULE} differs from {course.helper_module}. {_UNCHANGED}")
