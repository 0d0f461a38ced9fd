"""Isolation, seen from inside the worker: the course's secrets, the gradebook, other students, the
network and the grader's environment are out of reach.

The operating-system checks run at the strongest level this machine offers (``bwrap`` in CI) with
the audit hook turned off, so that they test the walls and not the tripwire; the tripwire is tested
on its own at the ``process`` level, the level that relies on it.
"""

from __future__ import annotations

import os
import shutil
import socket

import numpy as np
import pytest
from hostile import notebooks

from gradcam_kit.grading.notebook import read_submission
from gradcam_kit.host.isolation import available_isolation
from gradcam_kit.host.session import WorkerSession

SPY = '''
def spy(paths, writes, host_port):
    import os, socket
    report = {}
    for path in paths:
        try:
            if os.path.isdir(path):
                report[path] = ("listed", sorted(os.listdir(path)))
            else:
                with open(path, "rb") as file:
                    report[path] = ("read", file.read(64).decode("latin-1"))
        except Exception as error:
            report[path] = ("refused", type(error).__name__)
    for path in writes:
        try:
            with open(path, "a") as file:
                file.write("pwned")
            report[path] = ("wrote", "")
        except Exception as error:
            report[path] = ("refused", type(error).__name__)
    for host, port in (("127.0.0.1", host_port), ("1.1.1.1", 80)):
        try:
            socket.create_connection((host, port), timeout=2).close()
            report[host] = ("connected", "")
        except Exception as error:
            report[host] = ("refused", type(error).__name__)
    report["env"] = sorted(os.environ)
    report["uid"] = os.getuid()
    report["cwd"] = sorted(os.listdir("."))
    for name in ("gradebook.db", "grades.csv", "results.json"):   # "grade files" in the working folder
        with open(name, "w") as file:
            file.write("100/100")
    return report


def kill_everyone_i_can():
    import ctypes, os
    if os.getuid() == 0:
        return "refused to run as root"
    return ctypes.CDLL(None).kill(-1, 9)
'''

ALLOWED_ENVIRONMENT = {"PATH", "HOME", "USER", "LOGNAME", "TMPDIR", "LANG", "LC_ALL", "MPLBACKEND", "MPLCONFIGDIR",
                       "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                       "VECLIB_MAXIMUM_THREADS", "CUDA_VISIBLE_DEVICES", "GRADCAM_WEIGHTS", "TP2_IMAGES_DIR",
                       "TORCH_HOME", "PWD", "TORCHINDUCTOR_CACHE_DIR"}


@pytest.fixture(scope="module")
def fake_course(tmp_path_factory, course):
    """A course with secrets in the usual places and two students' submissions."""
    root = tmp_path_factory.mktemp("course")
    (root / "nbgrader_config.py").write_text("c = get_config()\n")
    (root / "gradebook.db").write_bytes(b"SQLite format 3\x00 grades")
    (root / "solutions").mkdir()
    (root / "solutions" / "answer_key.py").write_text("SECRET = 'the answers'\n")
    (root / "autograder_tests").mkdir()
    (root / "autograder_tests" / "test_hidden.py").write_text("HIDDEN = True\n")
    source_dir = root / "source" / "TP2_GradCAM"
    source_dir.mkdir(parents=True)
    shutil.copyfile(course.helper_module, source_dir / "tp2_utils.py")
    notebooks.write(notebooks.source_notebook(), source_dir / "TP2_GradCAM.ipynb")
    top = notebooks.SOLUTIONS["top_and_least"] + SPY
    for student in ("alice", "bob"):
        notebooks.write(notebooks.submission(replace={"top_and_least": top}),
                        root / "submitted" / student / "TP2_GradCAM" / "TP2_GradCAM.ipynb")
    return root


def _session(fake_course, course, student="alice", **options) -> WorkerSession:
    source_dir = fake_course / "source" / "TP2_GradCAM"
    program = read_submission(fake_course / "submitted" / student / "TP2_GradCAM" / "TP2_GradCAM.ipynb",
                              source_dir / "TP2_GradCAM.ipynb")
    return WorkerSession(program, course.images_dir, source_dir / "tp2_utils.py", **options)


@pytest.fixture(scope="module")
def listener():
    """A TCP service of the grader's machine, which the worker must not reach."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    yield server.getsockname()[1]
    server.close()


def _targets(fake_course, course):
    secrets = [fake_course / "solutions" / "answer_key.py", fake_course / "solutions",
               fake_course / "autograder_tests" / "test_hidden.py", fake_course / "gradebook.db",
               fake_course / "source" / "TP2_GradCAM" / "TP2_GradCAM.ipynb",
               fake_course / "submitted" / "bob" / "TP2_GradCAM" / "TP2_GradCAM.ipynb",
               course.root / "solutions", course.root / "autograder_tests", course.root / ".git",
               course.source_notebook]
    writes = [fake_course / "gradebook.db", fake_course / "grades.csv",
              fake_course / "submitted" / "alice" / "TP2_GradCAM" / "TP2_GradCAM.ipynb"]
    return [str(path) for path in secrets], [str(path) for path in writes]


def _snapshot(folder):
    return {path: path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.mark.parametrize("tripwire", [False, True], ids=["walls", "walls+tripwire"])
def test_from_inside_the_strongest_sandbox(fake_course, course, listener, monkeypatch, tripwire):
    level = available_isolation()[0]
    if level == "process" and os.geteuid() == 0 and not tripwire:
        pytest.skip("the process level has no walls, only the tripwire (tested below)")
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    monkeypatch.setenv("NBGRADER_VALIDATING", "1")
    monkeypatch.setenv("GRADER_SECRET_TOKEN", "x")
    before = _snapshot(fake_course)
    secrets, writes = _targets(fake_course, course)
    with _session(fake_course, course, tripwire=tripwire) as worker:
        assert worker.isolation_level == level
        outcome = worker.call("spy", secrets, writes, listener)
        assert outcome.ok, outcome.error
        report = outcome.value
    for path in secrets + writes:
        assert report[path][0] == "refused", (path, report[path])
    assert set(report["env"]) <= ALLOWED_ENVIRONMENT, set(report["env"]) - ALLOWED_ENVIRONMENT
    assert report["cwd"] == ["TP2_GradCAM.ipynb", "TP2_images", "tp2_utils.py"]
    if os.geteuid() == 0 and level != "process":
        assert report["uid"] != 0
    if level == "bwrap" or tripwire:
        assert report["127.0.0.1"][0] == "refused" and report["1.1.1.1"][0] == "refused"
    # nothing the student wrote reached the course; the submission is untouched
    assert _snapshot(fake_course) == before
    assert not list(fake_course.rglob("results.json")) and not list(fake_course.rglob("grades.csv"))


def test_the_tripwire_alone_at_the_process_level(fake_course, course, listener):
    secrets, writes = _targets(fake_course, course)
    before = _snapshot(fake_course)
    with _session(fake_course, course, isolation="process") as worker:
        report = worker.call("spy", secrets, writes, listener).value
        forked = worker.call("kill_everyone_i_can") if os.geteuid() != 0 else None
    for path in secrets + writes:
        assert report[path] == ("refused", "PermissionError"), (path, report[path])
    assert report["127.0.0.1"] == ("refused", "PermissionError")
    assert _snapshot(fake_course) == before
    assert forked is None or forked.ok


@pytest.mark.skipif(available_isolation()[0] == "process", reason="needs the bwrap or uid level")
def test_two_students_at_once_cannot_touch_each_other(fake_course, course):
    with _session(fake_course, course, "bob") as bob, _session(fake_course, course, "alice") as alice:
        assert bob.load().ok and alice.load().ok
        if os.geteuid() == 0:
            assert None not in (bob.uid, alice.uid) and bob.uid != alice.uid
        bobs_files = [str(bob._dir), str(bob._dir / "home"), str(bob._log_path)]
        report = alice.call("spy", bobs_files, [str(bob._log_path)], 9).value
        for path in bobs_files:
            assert report[path][0] == "refused", (path, report[path])
        assert alice.call("kill_everyone_i_can").ok  # kill(-1, SIGKILL) from alice's worker
        outcome = bob.call("top_and_least", np.array([[0.5, 2.0, 1.0]]))
        assert outcome.ok and outcome.value == [1, 2, 0, 0], outcome.error
