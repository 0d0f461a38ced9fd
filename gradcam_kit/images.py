"""``gradcam-kit images``: place the course images in ``TP2_images/`` and check them.

The images are not ours to redistribute, so the repository keeps only their manifest
(``TP2_images/manifest.json``: names, sizes, sha256, and the course archive they come from).
This module copies them from a folder or a zip archive, or downloads the course archive, and
accepts a file only when its checksum matches the manifest.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterator

from gradcam_kit.course import Course
from gradcam_kit.errors import KitError
from gradcam_kit.progress import ProgressBar

MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class Manifest:
    """The expected images: ``files`` maps each file name to its sha256."""

    files: dict[str, str]
    archive_url: str
    archive_sha256: str

    @classmethod
    def read(cls, path: Path) -> "Manifest":
        try:
            data = json.loads(path.read_text())
            files = {name: entry["sha256"] for name, entry in data["files"].items()}
            return cls(files, data["archive"]["url"], data["archive"]["sha256"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise KitError(f"{path}: not a valid image manifest ({error})") from error


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_folder(folder: Path, manifest: Manifest) -> list[str]:
    """Problems with the images in ``folder`` (an empty list when all are in place)."""
    files = folder.iterdir() if folder.is_dir() else iter(())
    present = {p.name for p in files if p.is_file() and p.name != MANIFEST_NAME}
    problems = [f"{folder / name}: missing" for name in sorted(manifest.files.keys() - present)]
    problems += [f"{folder / name}: not in the manifest" for name in sorted(present - manifest.files.keys())]
    problems += [
        f"{folder / name}: checksum differs from the manifest"
        for name in sorted(present & manifest.files.keys())
        if sha256_of_file(folder / name) != manifest.files[name]
    ]
    return problems


# --------------------------------------------------------------------------------------------
# Sources: a folder, a zip archive, or the course archive downloaded
# --------------------------------------------------------------------------------------------
def _members_of_folder(folder: Path) -> Iterator[tuple[str, bytes]]:
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.name != MANIFEST_NAME:
            yield path.name, path.read_bytes()


def _members_of_zip(archive: Path) -> Iterator[tuple[str, bytes]]:
    try:
        with zipfile.ZipFile(archive) as bundle:
            broken = bundle.testzip()
            if broken is not None:
                raise KitError(f"{archive}: corrupted archive (bad CRC for {broken}); refusing it")
            for info in bundle.infolist():
                if not info.is_dir():
                    yield PurePosixPath(info.filename).name, bundle.read(info)
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise KitError(f"{archive}: corrupted or unreadable archive ({error}); refusing it") from error


def read_source(source: Path, manifest: Manifest) -> dict[str, bytes]:
    """Read and verify every image of ``source`` (a folder or a zip) against the manifest.

    Raises
    ------
    KitError
        Naming the file, for a missing, extra or mismatched image, or a corrupted archive.
    """
    if source.is_dir():
        members = dict(_members_of_folder(source))
    elif source.is_file():
        members = dict(_members_of_zip(source))
    else:
        raise KitError(f"{source}: no such folder or archive")
    problems = [f"{source}: {name} is missing" for name in sorted(manifest.files.keys() - members.keys())]
    problems += [f"{source}: {name} is not in the manifest" for name in sorted(members.keys() - manifest.files.keys())]
    problems += [
        f"{source}: {name} has the wrong checksum (corrupted or a different file)"
        for name in sorted(members.keys() & manifest.files.keys())
        if sha256_of(members[name]) != manifest.files[name]
    ]
    if problems:
        raise KitError("the images do not match TP2_images/manifest.json:\n  " + "\n  ".join(problems))
    return members


def download(url: str, destination: Path, expected_sha256: str) -> None:
    """Download ``url`` to ``destination``, with a progress bar, and refuse it unless its sha256 is
    the expected one."""
    try:
        with urllib.request.urlopen(url, timeout=60) as response, destination.open("wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            bar = ProgressBar(total, "downloading TP2_images.zip (bytes)") if total else None
            while block := response.read(1 << 18):
                out.write(block)
                if bar is not None:
                    bar.advance(steps=len(block))
            if bar is not None:
                bar.close()
    except OSError as error:
        raise KitError(
            f"could not download {url} ({error}). Copy TP2_images.zip here by other means and run "
            "`gradcam-kit images --from path/to/TP2_images.zip`."
        ) from error
    if sha256_of_file(destination) != expected_sha256:
        raise KitError(f"the archive downloaded from {url} has an unexpected checksum; refusing it")


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------
def place_images(course: Course, source: Path | None = None) -> list[str]:
    """Make ``course.images_dir`` hold exactly the images of the manifest.

    Does nothing when they are already in place. Otherwise reads every image from ``source`` (a
    folder or a zip; default: the downloaded course archive), verifies all of them, then writes
    the missing or damaged ones. Files that are not in the manifest are never deleted: they are
    reported as an error instead.

    Returns
    -------
    list of str
        The names of the files written.
    """
    manifest = Manifest.read(course.image_manifest)
    folder = course.images_dir
    problems = check_folder(folder, manifest)
    if not problems:
        return []
    extra = [p for p in problems if p.endswith("not in the manifest")]
    if extra:
        raise KitError("unexpected files in the images folder (move them away):\n  " + "\n  ".join(extra))

    with tempfile.TemporaryDirectory(prefix="tp2-images-") as scratch:
        if source is None:
            archive = Path(scratch) / "TP2_images.zip"
            print(f"Downloading {manifest.archive_url}", file=sys.stderr)
            download(manifest.archive_url, archive, manifest.archive_sha256)
            source = archive
        members = read_source(Path(source), manifest)

    written = []
    for name, expected in sorted(manifest.files.items()):
        target = folder / name
        if target.is_file() and sha256_of_file(target) == expected:
            continue
        partial = target.with_name(f".{name}.partial")
        partial.write_bytes(members[name])
        partial.replace(target)
        written.append(name)
    return written


def run_images(course: Course, source: str | None = None, check_only: bool = False) -> int:
    """The ``gradcam-kit images`` subcommand; returns the exit status."""
    manifest = Manifest.read(course.image_manifest)
    if check_only:
        problems = check_folder(course.images_dir, manifest)
        for problem in problems:
            print(problem, file=sys.stderr)
        if not problems:
            print(f"All {len(manifest.files)} images are in place in {course.images_dir}.")
        return 1 if problems else 0
    written = place_images(course, Path(source) if source else None)
    if written:
        print(f"Placed {len(written)} image(s) in {course.images_dir}; all {len(manifest.files)} match the manifest.")
    else:
        print(f"All {len(manifest.files)} images are already in place in {course.images_dir}.")
    return 0
