"""The judges' shared reference cache: ``--prepare`` fills it, a judge waits while it is filled, and a
judge that finds every value there builds no model and never imports torchvision."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from gradcam_kit.grading.reference_cache import PREPARING, wait_for_preparation
from hostile import notebooks

JUDGE_TIMEOUT_S = 900


def test_no_marker_or_a_dead_process_means_no_wait(tmp_path):
    started = time.monotonic()
    wait_for_preparation(tmp_path, timeout=30)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (tmp_path / PREPARING).write_text(str(gone.pid))
    wait_for_preparation(tmp_path, timeout=30)
    (tmp_path / PREPARING).write_text(str(os.getpid()))  # the preparing process never waits for itself
    wait_for_preparation(tmp_path, timeout=30)
    (tmp_path / PREPARING).write_text("not a pid")
    wait_for_preparation(tmp_path, timeout=30)
    assert time.monotonic() - started < 5


def test_a_judge_waits_until_the_preparing_process_ends(tmp_path):
    preparing = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.5)"])
    (tmp_path / PREPARING).write_text(str(preparing.pid))
    started = time.monotonic()
    wait_for_preparation(tmp_path, timeout=30)
    waited = time.monotonic() - started
    preparing.wait()
    assert 1.0 <= waited < 10, waited


def test_the_wait_has_a_limit(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / PREPARING).write_text(str(sleeper.pid))
        started = time.monotonic()
        wait_for_preparation(tmp_path, timeout=0.5)
        assert time.monotonic() - started < 5
    finally:
        sleeper.kill()
        sleeper.wait()


JUDGE_AND_REPORT = """
import json, sys
import pytest
status = pytest.main(sys.argv[1:])
print("REPORT " + json.dumps({"status": int(status), "torchvision": "torchvision" in sys.modules}))
"""


def test_a_judge_with_prepared_values_builds_no_model(course, tmp_path):
    """After ``python -m autograder_tests --prepare``, grading a correct submission computes nothing:
    the results say ``reference_values_computed: 0``, and torchvision was never imported."""
    env = dict(os.environ, GRADCAM_WEIGHTS=os.environ.get("GRADCAM_WEIGHTS", "random"))
    cache = tmp_path / "cache"
    prepared = subprocess.run([sys.executable, "-m", "autograder_tests", "--prepare", "--reference-cache", str(cache)],
                              cwd=course.root, env=env, capture_output=True, text=True, timeout=JUDGE_TIMEOUT_S)
    assert prepared.returncode == 0, prepared.stdout + prepared.stderr
    assert "computed" in prepared.stdout and not (cache / PREPARING).exists()

    student = notebooks.write(notebooks.submission(), tmp_path / "alice" / "TP2_GradCAM.ipynb")
    results = tmp_path / "results.json"
    judged = subprocess.run([sys.executable, "-c", JUDGE_AND_REPORT, str(course.autograder_dir), "--submission",
                             str(student), "--results-json", str(results), "--reference-cache", str(cache), "-qq"],
                            cwd=course.root, env=env, capture_output=True, text=True, timeout=JUDGE_TIMEOUT_S)
    report = json.loads(judged.stdout.split("REPORT ", 1)[1]) if "REPORT " in judged.stdout else None
    assert report is not None, judged.stdout[-3000:] + judged.stderr[-3000:]
    data = json.loads(results.read_text())
    assert report["status"] == 0, {name: test["feedback"] for name, test in data["tests"].items()}
    assert data["reference_values_computed"] == 0
    assert report["torchvision"] is False

    again = subprocess.run([sys.executable, "-m", "autograder_tests", "--prepare", "--reference-cache", str(cache)],
                           cwd=course.root, env=env, capture_output=True, text=True, timeout=JUDGE_TIMEOUT_S)
    assert again.returncode == 0 and "0 computed" in again.stdout, again.stdout + again.stderr


def test_prepare_needs_a_cache_folder(course):
    env = {k: v for k, v in os.environ.items() if k != "GRADCAM_REFERENCE_CACHE"}
    result = subprocess.run([sys.executable, "-m", "autograder_tests", "--prepare"], cwd=course.root, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "--reference-cache" in result.stderr


@pytest.mark.parametrize("arguments", [[], ["--out", "somewhere"]])
def test_grading_needs_notebooks_and_an_output_folder(course, arguments):
    result = subprocess.run([sys.executable, "-m", "autograder_tests", *arguments], cwd=course.root,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "--out DIR and at least one notebook" in result.stderr
