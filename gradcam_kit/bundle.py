"""What students receive besides an nbgrader exchange: a one-file bundle, or a cell that fetches.

``gradcam-kit release --bundle [ZIP]`` writes, after the release, one zip file for a learning
management system or an e-mail (default ``dist/TP2_GradCAM.zip``)::

    TP2_GradCAM/TP2_GradCAM.ipynb      the release notebook
    TP2_GradCAM/tp2_utils.py           the helper module
    TP2_GradCAM/TP2_images/*.jpg|png   the 21 course images, each checked against the manifest

Unzipped anywhere, the notebook finds everything next to it. The zip is deterministic (sorted
members, fixed dates and modes), so the same release and images give the same bytes.

Students on Colab, or on a JupyterHub without the course folder, use the notebook's *fetch cell*
instead: it downloads ``tp2_utils.py`` and ``TP2_images.zip`` from ``COURSE_URL`` when they are
missing, and checks each against the SHA-256 written in the cell (``COURSE_FILES``).
:func:`fetch_cell_problems` says whether those checksums are still the ones of the course's
``tp2_utils.py`` and of the archive of ``TP2_images/manifest.json``; the bundle is refused while
they are not.
"""

from __future__ import annotations

import ast
import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import nbformat

from gradcam_kit.course import ASSIGNMENT, HELPER_MODULE, NOTEBOOK, Course
from gradcam_kit.errors import KitError
from gradcam_kit.images import Manifest, check_folder

__all__ = ["DEFAULT_BUNDLE", "FetchCell", "fetch_cell", "fetch_cell_problems", "write_bundle"]

DEFAULT_BUNDLE = Path("dist") / f"{ASSIGNMENT}.zip"
"""Where the bundle goes, relative to the course root (``dist/`` is ignored by git)."""
ARCHIVE_NAME = "TP2_images.zip"
_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip file can hold: no build time in the bytes
_MODE = 0o644 << 16


@dataclass(frozen=True)
class FetchCell:
    """The constants of the notebook's fetch cell.

    Attributes
    ----------
    url : str
        ``COURSE_URL``: where the course publishes ``tp2_utils.py`` and ``TP2_images.zip``.
    files : dict
        ``COURSE_FILES``: file name -> the SHA-256 that the cell accepts.
    """

    url: str
    files: dict[str, str]


def fetch_cell(notebook: nbformat.NotebookNode) -> FetchCell:
    """The fetch cell's ``COURSE_URL`` and ``COURSE_FILES`` (read from the code, never run).

    Raises
    ------
    KitError
        When no code cell assigns both as literals.
    """
    for cell in notebook.cells:
        if cell.cell_type != "code" or "COURSE_FILES" not in cell.source:
            continue
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:
            continue
        values = {}
        for node in tree.body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                if node.targets[0].id in ("COURSE_URL", "COURSE_FILES"):
                    try:
                        values[node.targets[0].id] = ast.literal_eval(node.value)
                    except ValueError:
                        pass
        if isinstance(values.get("COURSE_URL"), str) and isinstance(values.get("COURSE_FILES"), dict):
            return FetchCell(values["COURSE_URL"], dict(values["COURSE_FILES"]))
    raise KitError("the notebook has no fetch cell (a code cell that sets COURSE_URL and COURSE_FILES)")


def fetch_cell_problems(course: Course) -> list[str]:
    """Why the source notebook's fetch cell would refuse the course's own files (empty when fine)."""
    cell = fetch_cell(nbformat.read(course.source_notebook, as_version=4))
    manifest = Manifest.read(course.image_manifest)
    expected = {HELPER_MODULE: hashlib.sha256(course.helper_module.read_bytes()).hexdigest(),
                ARCHIVE_NAME: manifest.archive_sha256}
    where = f"{course.source_notebook.relative_to(course.root)}, fetch cell"
    problems = [f"{where}: COURSE_FILES[{name!r}] is {cell.files.get(name)!r}; the course's file has SHA-256 "
                f"{digest!r}: write that" for name, digest in expected.items() if cell.files.get(name) != digest]
    extra = sorted(set(cell.files) - set(expected))
    problems += [f"{where}: COURSE_FILES names {name!r}, which the course does not publish" for name in extra]
    return problems


def write_bundle(course: Course, path: str | Path | None = None) -> Path:
    """Write the students' bundle of ``course`` (after ``gradcam-kit release``); return its path.

    Raises
    ------
    KitError
        When the release or an image is missing or does not match, or the fetch cell's checksums
        are out of date (each problem is named).
    """
    target = Path(path) if path else course.root / DEFAULT_BUNDLE
    release = [course.release_dir / NOTEBOOK, course.release_dir / HELPER_MODULE]
    missing = [str(p) for p in release if not p.is_file()]
    if missing:
        raise KitError(f"no release to bundle ({', '.join(missing)} missing): run `gradcam-kit release` first")
    manifest = Manifest.read(course.image_manifest)
    problems = check_folder(course.images_dir, manifest) + fetch_cell_problems(course)
    if problems:
        raise KitError("cannot bundle the course:\n  " + "\n  ".join(problems)
                       + "\n(`gradcam-kit images` places the images.)")
    members = {f"{ASSIGNMENT}/{p.name}": p.read_bytes() for p in release}
    members.update({f"{ASSIGNMENT}/{course.images_dir.name}/{name}": (course.images_dir / name).read_bytes()
                    for name in manifest.files})
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(members):
            info = zipfile.ZipInfo(name, date_time=_DATE)
            info.external_attr = _MODE
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, members[name])
    partial.replace(target)
    return target
