"""Workers forked by the zygote: started without importing torch again, and each in a sandbox as
clean as a freshly started one (no file, no process, no IPC object of the student before).

The tripwire (audit hook) is off here: these are checks of the OS-level clean-up, which must hold
against code that gets past the hook (``ctypes``).
"""

from __future__ import annotations

import numpy as np
import pytest
from hostile import notebooks

from gradcam_kit.contract import ZYGOTE_ENV
from gradcam_kit.grading.notebook import read_submission
from gradcam_kit.host.isolation import available_isolation
from gradcam_kit.host.session import WorkerSession
from gradcam_kit.host.zygote import ZygoteChild

pytestmark = pytest.mark.skipif("bwrap" not in available_isolation(),
                                reason="the zygote serves the bwrap level, which this machine lacks")

GRADIENTS = np.ones((1, 4, 7, 7), dtype=np.float32)

PLANTS = '''
def channel_weights(gradients):
    import os, pathlib, subprocess, time
    home = pathlib.Path(os.environ["HOME"])
    (home / "planted.txt").write_text("left by the previous student")
    (home / ".config" / "matplotlib" / "matplotlibrc").write_text("backend: nothing")
    pathlib.Path("/tmp/planted.txt").write_text("left by the previous student")
    pathlib.Path("json_hijack.py").write_text("raise SystemExit('hijacked')")  # in the working folder
    locked = home / "locked"
    (locked / "inside").mkdir(parents=True)
    (locked / "inside" / "file").write_text("x")
    os.chmod(locked / "inside", 0)
    os.chmod(locked, 0o500)
    lingering = subprocess.Popen(["sleep", "600"], start_new_session=True)
    import ctypes
    libc = ctypes.CDLL(None)
    segment = libc.shmget(0, 4096, 0o1600)   # IPC_PRIVATE, IPC_CREAT | 0600
    queue = libc.msgget(0, 0o1600)
    assert segment >= 0 and queue >= 0
    return [lingering.pid, os.getppid()]
'''

LOOKS = '''
def channel_weights(gradients):
    import os, pathlib
    home = pathlib.Path(os.environ["HOME"])
    # only what the previous student could have left (a checkout or venv under /tmp is bound there too)
    import sys
    files = sorted(str(path) for root in (home, pathlib.Path("/tmp")) for path in root.rglob("*")
                   if not str(path).startswith((sys.prefix + "/", sys.base_prefix + "/"))
                   and (any(word in path.name for word in ("planted", "hijack", "locked", "matplotlibrc"))
                        or str(path).startswith(os.environ.get("TORCH_HOME", "/nowhere"))))
    processes = sorted(int(entry) for entry in os.listdir("/proc") if entry.isdigit())
    ipc = [line for kind in ("shm", "sem", "msg")
           for line in pathlib.Path("/proc/sysvipc", kind).read_text().splitlines()[1:]]
    return [files, processes, os.getpid(), os.getppid(), ipc]
'''

KILLS_ZYGOTE = '''
def channel_weights(gradients):
    import os, signal
    os.kill(os.getppid(), signal.SIGKILL)
    return gradients.mean(dim=(2, 3))
'''


@pytest.fixture
def submit(course, tmp_path):
    """``submit(name, channel_weights_source) -> WorkerSession`` (the caller closes it)."""
    source = notebooks.write(notebooks.source_notebook(), tmp_path / "source" / "TP2_GradCAM.ipynb")

    def make(name: str, code: str | None = None) -> WorkerSession:
        replace = {"channel_weights": code} if code else {}
        student = notebooks.write(notebooks.submission(replace=replace), tmp_path / name / "TP2_GradCAM.ipynb")
        return WorkerSession(read_submission(student, source), course.images_dir, course.helper_module,
                             tripwire=False)

    return make


def zygote_of(session: WorkerSession):
    process = session._process
    assert isinstance(process, ZygoteChild), f"the worker was not forked by a zygote: {process!r}"
    return process.zygote


def test_the_second_worker_is_forked_from_the_same_zygote(submit):
    with submit("first") as first:
        assert first.load().ok
        zygote = zygote_of(first)
        assert first.call("channel_weights", GRADIENTS).ok
    with submit("second") as second:
        load = second.load()
        assert load.ok, load.errors
        assert zygote_of(second) is zygote
        outcome = second.call("channel_weights", GRADIENTS)
        assert outcome.ok and np.allclose(outcome.value["array"], 1.0)
        assert load.seconds < 2.0, f"a forked worker took {load.seconds:.1f} s to load"


def test_nothing_of_a_worker_survives_into_the_next(submit):
    with submit("planter", PLANTS) as planter:
        planted = planter.call("channel_weights", GRADIENTS)
        assert planted.ok, planted.error
        lingering, zygote_pid = planted.value
    with submit("looker", LOOKS) as looker:
        looked = looker.call("channel_weights", GRADIENTS)
        assert looked.ok, looked.error
        files, processes, own, parent, ipc = looked.value
    assert parent == zygote_pid, "both workers should come from the same zygote"
    assert not [name for name in files if "planted" in name or "hijack" in name or "locked" in name
                or name.endswith("matplotlibrc")], files
    assert lingering not in processes
    assert set(processes) <= {1, zygote_pid, own}, processes
    assert ipc == [], ipc


def test_a_worker_that_kills_its_zygote_fails_alone(submit):
    with submit("killer", KILLS_ZYGOTE) as killer:
        assert killer.load().ok
        old = zygote_of(killer)
        outcome = killer.call("channel_weights", GRADIENTS)  # may return before the sandbox goes
        assert outcome.ok or outcome.failure in ("killed", "lost", "crash", "exit"), outcome
    with submit("next") as following:
        load = following.load()
        assert load.ok, load.errors
        assert zygote_of(following) is not old
        assert following.call("channel_weights", GRADIENTS).ok


def test_the_zygote_can_be_turned_off(submit, monkeypatch):
    monkeypatch.setenv(ZYGOTE_ENV, "0")
    with submit("plain") as plain:
        assert plain.load().ok
        assert not isinstance(plain._process, ZygoteChild)
        assert plain.call("channel_weights", GRADIENTS).ok


def test_a_timed_out_worker_is_killed_and_the_zygote_goes_on(submit, course, tmp_path):
    from gradcam_kit.wire.limits import Limits

    source = notebooks.write(notebooks.source_notebook(), tmp_path / "src" / "TP2_GradCAM.ipynb")
    code = "def channel_weights(gradients):\n    while True:\n        pass\n"
    student = notebooks.write(notebooks.submission(replace={"channel_weights": code}),
                              tmp_path / "loops" / "TP2_GradCAM.ipynb")
    with WorkerSession(read_submission(student, source), course.images_dir, course.helper_module,
                       Limits(call_seconds=3), tripwire=False) as looping:
        assert looping.load().ok
        zygote = zygote_of(looping)
        outcome = looping.call("channel_weights", GRADIENTS)
        assert outcome.failure == "timeout", outcome
    with submit("after") as after:
        assert after.call("channel_weights", GRADIENTS).ok
        assert zygote_of(after) is zygote


def test_forked_workers_keep_their_limits(submit, course, tmp_path):
    """The address-space limit is set in the forked worker as in a fresh one."""
    code = ("def channel_weights(gradients):\n    import resource\n"
            "    return list(resource.getrlimit(resource.RLIMIT_AS))\n")
    with submit("limits", code) as limited:
        outcome = limited.call("channel_weights", GRADIENTS)
        assert outcome.ok, outcome.error
        assert outcome.value == [limited.limits.memory_bytes] * 2
        assert isinstance(limited._process, ZygoteChild)


def test_signal_numbers_are_reported_exactly(submit):
    """A forked worker's status comes from the zygote's waitpid: a crash is named as such."""
    code = "def channel_weights(gradients):\n    import os, signal\n    os.kill(os.getpid(), signal.SIGSEGV)\n"
    with submit("segfault", code) as crashing:
        outcome = crashing.call("channel_weights", GRADIENTS)
        assert outcome.failure == "crash" and "SIGSEGV" in (outcome.error or ""), outcome


def test_a_sandbox_with_binds_under_tmp_is_cleaned_and_kept(submit, monkeypatch, tmp_path):
    """A kit checkout or a virtual environment under /tmp is bound under the sandbox's own /tmp: the
    clean-up between workers leaves those binds (and the folders holding them) alone, and the next
    worker still comes from the same zygote. (Here the bind under /tmp is torch's checkpoints folder.)"""
    torch_home = tmp_path / "torch home"
    (torch_home / "hub" / "checkpoints").mkdir(parents=True)
    assert str(torch_home).startswith("/tmp/")
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    with submit("planter", PLANTS) as planter:
        assert planter.load().ok
        zygote = zygote_of(planter)
        assert planter.call("channel_weights", GRADIENTS).ok
    with submit("looker", LOOKS) as looker:
        looked = looker.call("channel_weights", GRADIENTS)
        assert looked.ok, looked.error
        assert zygote_of(looker) is zygote, "the zygote could not clean its sandbox"
        files = looked.value[0]
    assert not [name for name in files if "planted" in name or "hijack" in name], files
    assert any(name.startswith(str(torch_home)) for name in files), "the bind under /tmp is still there"
