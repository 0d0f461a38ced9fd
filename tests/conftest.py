"""Fixtures shared by the kit's own tests.

The tests run offline: unless the caller chose otherwise, models get the seeded random weights of
the ``GRADCAM_WEIGHTS=random`` policy (see ``source/TP2_GradCAM/tp2_utils.py``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("GRADCAM_WEIGHTS", "random")

from gradcam_kit.course import Course

REPO_ROOT = Path(__file__).resolve().parents[1]

pytest_plugins = ["fake_course"]
"""The stand-in course's fixtures (``fake_course``, ``fake_course_template``, ``judge_log``) for the
grading tests: one plugin, so that the course is released once per session."""


@pytest.fixture(scope="session")
def course() -> Course:
    """The course in this repository."""
    return Course.locate(REPO_ROOT)


@pytest.fixture(scope="session")
def tp2_utils(course):
    """The shipped helper module, imported from the course's source folder."""
    return course.tp2_utils


@pytest.fixture(scope="session")
def image_paths(course, tp2_utils) -> list[Path]:
    """The course images, sorted by name (placed by ``gradcam-kit images``)."""
    paths = tp2_utils.list_images(course.images_dir)
    if not paths:
        pytest.fail(f"no images in {course.images_dir}: run `gradcam-kit images` first")
    return paths


@pytest.fixture(scope="session")
def two_cats_path(course) -> Path:
    """The image on which pretrained models predict Egyptian cat, tabby, tiger cat."""
    return course.images_dir / "2637374064_fab14ec0b8.jpg"


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread while a module's tests run, as the judge and the worker compute (on a shared
    2-core machine, two threads were up to ten times slower); the setting is restored afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def ref(course):
    """``solutions/gradcam_reference.py``."""
    return course.reference


@pytest.fixture(scope="module")
def densenet(tp2_utils):
    """DenseNet-121 with the seeded random weights, shared by a module's tests (eval mode)."""
    return tp2_utils.load_model("densenet121", weights="random")
