"""The facts stated once (``gradcam_kit.contract``) and the file and process helpers (``gradcam_kit.fsutil``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import nbformat
import pytest

from gradcam_kit import contract, fsutil
from gradcam_kit.errors import KitError


def test_the_graded_functions_are_the_source_notebooks(course):
    ids = [cell.metadata.get("nbgrader", {}).get("grade_id")
           for cell in nbformat.read(course.source_notebook, as_version=4).cells]
    functions = [grade_id for grade_id in ids if grade_id in contract.GRADED_FUNCTIONS]
    assert functions == list(contract.GRADED_FUNCTIONS), "every graded function has its cell, in this order"
    assert all(contract.test_name(name) in ids for name in contract.GRADED_FUNCTIONS)


def test_helpers_follow_the_calls_transitively():
    assert contract.helpers_of("show_grad_cam") == ("top_and_least", "grad_cam", "register_gradcam_hooks",
                                                    "channel_weights", "weighted_cam", "upsample_normalize")
    assert contract.helpers_of("grad_cam") == contract.CALLS["grad_cam"]
    assert contract.helpers_of("channel_weights") == ()
    called = {helper for helpers in contract.CALLS.values() for helper in helpers}
    assert set(contract.CALLS) | called <= set(contract.GRADED_FUNCTIONS)


def test_the_weights_variable_is_the_one_the_helper_module_reads(tp2_utils):
    assert contract.WEIGHTS_ENV == tp2_utils.WEIGHTS_ENV
    assert contract.weights_policy({}) == "imagenet"
    assert contract.weights_policy({contract.WEIGHTS_ENV: "  random "}) == "random"
    assert contract.weights_policy({contract.WEIGHTS_ENV: " "}) == "imagenet"


def test_the_judge_timeout_is_read_once_and_checked():
    assert contract.judge_timeout({}) == contract.DEFAULT_JUDGE_TIMEOUT
    assert contract.judge_timeout({contract.JUDGE_TIMEOUT_ENV: "12.5"}) == 12.5
    for wrong in ("soon", "0", "-3"):
        with pytest.raises(KitError, match=contract.JUDGE_TIMEOUT_ENV):
            contract.judge_timeout({contract.JUDGE_TIMEOUT_ENV: wrong})


def test_an_atomic_write_is_whole_or_absent(tmp_path):
    path = tmp_path / "deep" / "marker.json"
    fsutil.write_json_atomically(path, {"student": "zoë"})
    assert path.read_text(encoding="utf-8") == '{\n  "student": "zoë"\n}\n'
    assert path.stat().st_mode & 0o777 == fsutil.FILE_MODE

    def broken(stream):
        stream.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        fsutil.write_atomically(path, broken)
    assert path.read_text(encoding="utf-8").startswith("{"), "the old content stays"
    assert [p.name for p in path.parent.iterdir()] == ["marker.json"], "no temporary file is left"
    fsutil.write_atomically(path, lambda stream: stream.write(b"new"), durable=False)
    assert path.read_bytes() == b"new"


def test_kill_group_ends_the_process_and_what_it_started():
    script = ("import subprocess, sys, time; child = subprocess.Popen([sys.executable, '-c', "
              "'import time; time.sleep(60)']); print(child.pid, flush=True); time.sleep(60)")
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, start_new_session=True)
    grandchild = int(process.stdout.readline())
    assert fsutil.process_alive(grandchild)
    fsutil.kill_group(process)
    assert process.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 10
    while fsutil.process_alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not fsutil.process_alive(grandchild), "a process of the group survived"
    assert fsutil.process_alive(os.getpid())


def test_the_helper_module_and_the_kit_name_the_images_variable_alike(tp2_utils):
    """``tp2_utils.py`` is shipped to students and imports nothing of the kit: it spells the name too."""
    assert tp2_utils.IMAGES_DIR_ENV == contract.IMAGES_DIR_ENV
