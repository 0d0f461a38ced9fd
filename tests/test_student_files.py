"""How students get tp2_utils.py and the images outside the course folder.

* the notebook's fetch cell: its checksums are those of the course's files; offline, against a
  local web server, it fetches what is missing, refuses a file whose SHA-256 differs (writing
  nothing), and downloads nothing when the files are in place;
* ``gradcam-kit release --bundle``: one deterministic zip with the release and the images, which
  runs as it is once unzipped, and is refused while the fetch cell or the images are out of date.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import os
import shutil
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import nbformat
import pytest

from gradcam_kit import bundle
from gradcam_kit.cli import main as cli_main
from gradcam_kit.course import ASSIGNMENT, HELPER_MODULE, NOTEBOOK, Course
from gradcam_kit.errors import KitError
from gradcam_kit.images import Manifest

DEFAULT_URL = "https://www.lri.fr/~gcharpia/deeppractice/2025/TP2/"


@pytest.fixture(scope="module")
def fetch_source(course) -> str:
    """The source of the release notebook's fetch cell."""
    notebook = nbformat.read(course.release_dir / NOTEBOOK, as_version=4)
    (cell,) = [c for c in notebook.cells if c.cell_type == "code" and "COURSE_FILES" in c.source]
    assert "nbgrader" not in cell.metadata or not cell.metadata.nbgrader.get("grade_id", "").startswith("setup_"), \
        "the grader runs setup cells offline: the fetch cell must not be one"
    return cell.source


@contextlib.contextmanager
def web_server(folder: Path):
    """An HTTP server on 127.0.0.1 serving ``folder``; yields its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/course/"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []

    def log_message(self, *args) -> None:
        _QuietHandler.requests.append(self.path)


def run_cell(source: str, folder: Path) -> subprocess.CompletedProcess:
    """Run a cell's code as a fresh kernel would, in ``folder`` (no course around it)."""
    env = {key: value for key, value in os.environ.items() if key not in ("TP2_IMAGES_DIR", "PYTHONPATH")}
    env.update(no_proxy="127.0.0.1", NO_PROXY="127.0.0.1")
    return subprocess.run([sys.executable, "-c", source], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=300)


def images_archive(course: Course, where: Path) -> Path:
    """A TP2_images.zip like the course's: the folder TP2_images/ with the 21 images."""
    path = where / "TP2_images.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for image in sorted(course.images_dir.iterdir()):
            if image.name != "manifest.json" and not image.name.startswith("."):
                archive.write(image, f"TP2_images/{image.name}")
    return path


def published(course: Course, where: Path, source: str, archive: Path) -> tuple[Path, str]:
    """A course web folder (tp2_utils.py, TP2_images.zip) and the fetch cell pointed at it.

    The archive built here is not byte for byte the course's, so its checksum replaces the
    manifest's in the cell (the real archive is checked separately when it is at hand).
    """
    site = where / "site" / "course"
    site.mkdir(parents=True)
    shutil.copy(course.helper_module, site / HELPER_MODULE)
    shutil.copy(archive, site / "TP2_images.zip")
    manifest = Manifest.read(course.image_manifest)
    own = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert source.count(manifest.archive_sha256) == 1 and source.count(DEFAULT_URL) == 1
    return site, source.replace(manifest.archive_sha256, own)


# ----------------------------------------------------------------------------------------------
# the fetch cell
# ----------------------------------------------------------------------------------------------
def test_the_fetch_cell_checks_the_course_files(course, fetch_source):
    cell = bundle.fetch_cell(nbformat.read(course.source_notebook, as_version=4))
    manifest = Manifest.read(course.image_manifest)
    assert cell.files == {HELPER_MODULE: hashlib.sha256(course.helper_module.read_bytes()).hexdigest(),
                          "TP2_images.zip": manifest.archive_sha256}
    assert cell.url + "TP2_images.zip" == manifest.archive_url
    assert bundle.fetch_cell_problems(course) == []
    assert bundle.fetch_cell(nbformat.read(course.release_dir / NOTEBOOK, as_version=4)) == cell


def test_a_stale_checksum_is_named(course, tmp_path):
    copy = tmp_path / "course"
    shutil.copytree(course.root / "source", copy / "source")
    (copy / "TP2_images").mkdir()
    shutil.copy(course.image_manifest, copy / "TP2_images")
    shutil.copy(course.root / "nbgrader_config.py", copy)
    scratch = Course.locate(copy)
    with scratch.helper_module.open("a") as stream:
        stream.write("\n# an edit of the helper module\n")
    (problem,) = bundle.fetch_cell_problems(scratch)
    assert "COURSE_FILES['tp2_utils.py']" in problem and hashlib.sha256(
        scratch.helper_module.read_bytes()).hexdigest() in problem


def test_the_fetch_cell_fetches_what_is_missing(course, fetch_source, tmp_path):
    archive = images_archive(course, tmp_path)
    site, source = published(course, tmp_path, fetch_source, archive)
    student = tmp_path / "colab"
    student.mkdir()
    with web_server(site.parent) as url:
        result = run_cell(source.replace(DEFAULT_URL, url), student)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (student / HELPER_MODULE).read_bytes() == course.helper_module.read_bytes()
    images = sorted(p.name for p in (student / "TP2_images").iterdir())
    assert images == sorted(Manifest.read(course.image_manifest).files)
    assert "21 images" in result.stdout


def test_the_fetch_cell_refuses_a_file_whose_checksum_differs(course, fetch_source, tmp_path):
    archive = images_archive(course, tmp_path)
    site, source = published(course, tmp_path, fetch_source, archive)
    with (site / HELPER_MODULE).open("a") as stream:
        stream.write("\nprint('not the course file')\n")   # a proxy's page, a stale copy, tampering...
    student = tmp_path / "hub"
    student.mkdir()
    with web_server(site.parent) as url:
        result = run_cell(source.replace(DEFAULT_URL, url), student)
    assert result.returncode != 0
    assert "is not the course's tp2_utils.py (its SHA-256 differs)" in result.stderr
    assert list(student.iterdir()) == [], "nothing is written"


def test_the_fetch_cell_downloads_nothing_when_the_files_are_in_place(course, fetch_source, tmp_path):
    student = tmp_path / "course-folder"
    student.mkdir()
    shutil.copy(course.helper_module, student)
    shutil.copytree(course.images_dir, student / "TP2_images")
    # A URL where nothing answers: any download would fail.
    result = run_cell(fetch_source.replace(DEFAULT_URL, "http://127.0.0.1:9/course/"), student)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_fetch_cell_says_when_it_cannot_download(course, fetch_source, tmp_path):
    student = tmp_path / "offline"
    student.mkdir()
    result = run_cell(fetch_source.replace(DEFAULT_URL, "http://127.0.0.1:9/course/"), student)
    assert result.returncode != 0
    assert "could not download http://127.0.0.1:9/course/tp2_utils.py" in result.stderr
    assert "put tp2_utils.py next to this notebook yourself" in result.stderr and list(student.iterdir()) == []


def test_the_fetch_cell_accepts_the_real_course_archive(course, fetch_source, tmp_path):
    """With the course's own TP2_images.zip (when it is at hand), the cell runs unmodified but for the URL."""
    real = next((p for p in (course.root.parent / "shared" / "TP2_images.zip", course.root / "TP2_images.zip")
                 if p.is_file()), None)
    if real is None:
        pytest.skip("the course's TP2_images.zip is not at hand")
    site = tmp_path / "site" / "course"
    site.mkdir(parents=True)
    shutil.copy(course.helper_module, site)
    shutil.copy(real, site / "TP2_images.zip")
    student = tmp_path / "colab"
    student.mkdir()
    with web_server(site.parent) as url:
        result = run_cell(fetch_source.replace(DEFAULT_URL, url), student)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(list((student / "TP2_images").iterdir())) == 21


# ----------------------------------------------------------------------------------------------
# the bundle
# ----------------------------------------------------------------------------------------------
@pytest.fixture()
def bundled_course(course, tmp_path) -> Course:
    """A copy of the course with its release and its images (what `release --bundle` needs)."""
    copy = tmp_path / "course"
    copy.mkdir()
    for name in ("nbgrader_config.py",):
        shutil.copy(course.root / name, copy)
    for name in ("source", "release", "TP2_images"):
        shutil.copytree(course.root / name, copy / name,
                        ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints", ".planted*"))
    return Course.locate(copy)


def test_the_bundle_holds_the_release_and_the_images(bundled_course):
    path = bundle.write_bundle(bundled_course)
    assert path == bundled_course.root / "dist" / f"{ASSIGNMENT}.zip"
    manifest = Manifest.read(bundled_course.image_manifest)
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        assert names == sorted(names)
        expected = [f"{ASSIGNMENT}/{NOTEBOOK}", f"{ASSIGNMENT}/{HELPER_MODULE}",
                    *(f"{ASSIGNMENT}/TP2_images/{name}" for name in manifest.files)]
        assert sorted(names) == sorted(expected)
        for name in (NOTEBOOK, HELPER_MODULE):
            assert archive.read(f"{ASSIGNMENT}/{name}") == (bundled_course.release_dir / name).read_bytes()
        for name, digest in manifest.files.items():
            assert hashlib.sha256(archive.read(f"{ASSIGNMENT}/TP2_images/{name}")).hexdigest() == digest
    first = path.read_bytes()
    assert bundle.write_bundle(bundled_course).read_bytes() == first, "the bundle is deterministic"


def test_the_unzipped_bundle_runs_its_setup_offline(bundled_course, tmp_path):
    path = bundle.write_bundle(bundled_course, tmp_path / "for-students.zip")
    student = tmp_path / "laptop"
    with zipfile.ZipFile(path) as archive:
        archive.extractall(student)
    folder = student / ASSIGNMENT
    notebook = nbformat.read(folder / NOTEBOOK, as_version=4)
    setup = [c.source for c in notebook.cells if c.cell_type == "code"
             and ("COURSE_FILES" in c.source or c.metadata.get("nbgrader", {}).get("grade_id") in
                  ("setup_imports", "setup_images"))]
    code = "\n".join(setup).replace(DEFAULT_URL, "http://127.0.0.1:9/nothing-here/")
    result = run_cell(code, folder)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"21 images in {folder / 'TP2_images'}" in result.stdout


def test_the_bundle_is_refused_while_something_is_wrong(bundled_course):
    (bundled_course.images_dir / "2637374064_fab14ec0b8.jpg").unlink()
    with pytest.raises(KitError, match="2637374064_fab14ec0b8.jpg: missing"):
        bundle.write_bundle(bundled_course)
    shutil.rmtree(bundled_course.release_dir)
    with pytest.raises(KitError, match="run `gradcam-kit release` first"):
        bundle.write_bundle(bundled_course)


def test_release_bundle_on_the_command_line(bundled_course, tmp_path, capsys):
    target = tmp_path / "lms" / "tp2.zip"
    assert cli_main(["release", "--course", str(bundled_course.root), "--bundle", str(target)]) == 0
    assert zipfile.is_zipfile(target) and "wrote the students' bundle" in capsys.readouterr().out
    assert sorted(p.name for p in bundled_course.release_dir.iterdir()) == sorted([NOTEBOOK, HELPER_MODULE])


def test_dist_is_ignored_by_git(course):
    ignored = subprocess.run(["git", "check-ignore", "-q", str(course.root / "dist" / f"{ASSIGNMENT}.zip")],
                             cwd=course.root, capture_output=True)
    if ignored.returncode == 128:
        pytest.skip("not a git checkout")
    assert ignored.returncode == 0, "the bundle holds the course images: it must never be committed"
