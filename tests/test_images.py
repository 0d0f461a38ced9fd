"""``gradcam-kit images``: placing the course images and checking them against the manifest."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest

from gradcam_kit.cli import main
from gradcam_kit.course import Course
from gradcam_kit.errors import KitError
from gradcam_kit.images import Manifest, check_folder, place_images, sha256_of_file

SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture
def empty_course(tmp_path, course) -> Course:
    """A course folder with the manifest but no images yet."""
    (tmp_path / "nbgrader_config.py").write_text("")
    (tmp_path / "TP2_images").mkdir()
    shutil.copy(course.image_manifest, tmp_path / "TP2_images" / "manifest.json")
    return Course(tmp_path)


@pytest.fixture
def image_folder(course, tmp_path) -> Path:
    """A verified copy of the 21 images, made from the repository's placed images."""
    folder = tmp_path / "source" / "TP2_images"
    folder.mkdir(parents=True)
    for name in Manifest.read(course.image_manifest).files:
        shutil.copy(course.images_dir / name, folder / name)
    return folder


@pytest.fixture
def image_zip(image_folder, tmp_path) -> Path:
    """The images zipped like the course archive (one TP2_images/ folder inside)."""
    archive = tmp_path / "TP2_images.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("TP2_images/", "")
        for path in sorted(image_folder.iterdir()):
            bundle.write(path, f"TP2_images/{path.name}")
    return archive


def test_manifest_lists_the_21_course_images(course):
    manifest = Manifest.read(course.image_manifest)
    assert len(manifest.files) == 21
    assert "9928031928.png" in manifest.files
    assert sum(name.endswith(".jpg") for name in manifest.files) == 20
    assert all(len(digest) == 64 for digest in manifest.files.values())


def test_the_placed_images_match_the_manifest(course):
    assert check_folder(course.images_dir, Manifest.read(course.image_manifest)) == []


@pytest.mark.skipif(not (SHARED / "TP2_images.zip").is_file(), reason="no ../shared/TP2_images.zip")
def test_the_course_archive_matches_the_manifest(course):
    manifest = Manifest.read(course.image_manifest)
    assert sha256_of_file(SHARED / "TP2_images.zip") == manifest.archive_sha256


def test_places_from_a_zip_then_a_rerun_does_nothing(empty_course, image_zip):
    written = place_images(empty_course, image_zip)
    assert len(written) == 21
    assert check_folder(empty_course.images_dir, Manifest.read(empty_course.image_manifest)) == []
    mtimes = {p: p.stat().st_mtime_ns for p in empty_course.images_dir.iterdir()}
    assert place_images(empty_course, image_zip) == []
    assert {p: p.stat().st_mtime_ns for p in empty_course.images_dir.iterdir()} == mtimes


def test_places_from_a_folder_and_repairs_a_damaged_file(empty_course, image_folder):
    place_images(empty_course, image_folder)
    damaged = empty_course.images_dir / "9928031928.png"
    damaged.write_bytes(b"not the picture")
    assert place_images(empty_course, image_folder) == ["9928031928.png"]
    assert check_folder(empty_course.images_dir, Manifest.read(empty_course.image_manifest)) == []


def test_a_mismatched_source_file_is_refused_by_name(empty_course, image_folder):
    (image_folder / "481635090_85a1c668ed.jpg").write_bytes(b"\xff\xd8 something else")
    with pytest.raises(KitError, match="481635090_85a1c668ed.jpg has the wrong checksum"):
        place_images(empty_course, image_folder)
    assert not any(empty_course.images_dir.glob("*.jpg")), "nothing is written when a file is refused"


def test_a_missing_source_file_is_named(empty_course, image_folder):
    (image_folder / "2637374064_fab14ec0b8.jpg").unlink()
    with pytest.raises(KitError, match="2637374064_fab14ec0b8.jpg is missing"):
        place_images(empty_course, image_folder)


def test_an_extra_source_file_is_named(empty_course, image_folder):
    (image_folder / "intruder.jpg").write_bytes(b"x")
    with pytest.raises(KitError, match="intruder.jpg is not in the manifest"):
        place_images(empty_course, image_folder)


def test_an_extra_file_in_the_images_folder_is_reported_not_deleted(empty_course, image_folder):
    intruder = empty_course.images_dir / "holiday.jpg"
    intruder.write_bytes(b"mine")
    with pytest.raises(KitError, match="holiday.jpg"):
        place_images(empty_course, image_folder)
    assert intruder.read_bytes() == b"mine"


def test_a_corrupted_archive_is_refused(empty_course, image_zip):
    data = bytearray(image_zip.read_bytes())
    # Flip bytes in the middle of the compressed data of one member: its CRC no longer matches.
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
    image_zip.write_bytes(bytes(data))
    with pytest.raises(KitError, match="corrupted"):
        place_images(empty_course, image_zip)


def test_a_truncated_archive_is_refused(empty_course, image_zip):
    image_zip.write_bytes(image_zip.read_bytes()[:5000])
    with pytest.raises(KitError, match=r"TP2_images\.zip: corrupted"):
        place_images(empty_course, image_zip)


def test_downloads_the_archive_named_in_the_manifest(empty_course, image_zip, capsys):
    manifest_path = empty_course.image_manifest
    data = json.loads(manifest_path.read_text())
    data["archive"]["url"] = image_zip.as_uri()
    data["archive"]["sha256"] = sha256_of_file(image_zip)
    manifest_path.write_text(json.dumps(data))
    assert len(place_images(empty_course)) == 21
    assert "Downloading" in capsys.readouterr().err


def test_a_download_with_the_wrong_checksum_is_refused(empty_course, image_zip):
    manifest_path = empty_course.image_manifest
    data = json.loads(manifest_path.read_text())
    data["archive"]["url"] = image_zip.as_uri()
    manifest_path.write_text(json.dumps(data))  # the manifest keeps the real archive's checksum
    with pytest.raises(KitError, match="unexpected checksum"):
        place_images(empty_course)


def test_the_command_line_checks_and_places(empty_course, image_zip, capsys):
    assert main(["images", "--course", str(empty_course.root), "--check"]) == 1
    assert "missing" in capsys.readouterr().err
    assert main(["images", "--course", str(empty_course.root), "--from", str(image_zip)]) == 0
    assert main(["images", "--course", str(empty_course.root), "--check"]) == 0
    assert main(["images", "--course", str(empty_course.root), "--from", str(image_zip)]) == 0
    assert "already in place" in capsys.readouterr().out


def test_the_command_line_reports_bad_input_without_a_traceback(empty_course, tmp_path, capsys):
    bogus = tmp_path / "bogus.zip"
    bogus.write_bytes(b"this is no zip")
    assert main(["images", "--course", str(empty_course.root), "--from", str(bogus)]) == 1
    err = capsys.readouterr().err
    assert "bogus.zip" in err and "Traceback" not in err
