"""Nothing a worker leaves in the kernel reaches the next worker, a restarted worker or the grader.

One student plants every kind of state a process can create: a file in every folder it can write
(found by walking the writable mounts, not from a list), a POSIX shared-memory file, System V
shared memory, semaphores and message queues, a POSIX message queue, and a key in each of the
kernel's keyrings (thread, process, session, user, user-session). Then a worker restarted in the
same session, the next student's worker, and the grader's own process look for all of it.

The tripwire (audit hook) is off: these are the OS-level walls, which must hold against code that
gets past the hook. At the ``process`` level there are no such walls for files (only the tripwire),
but the system-call filter denies the keyrings and the IPC objects, which would land in the
grader's namespaces: the last test says exactly that.
"""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

import numpy as np
import pytest
from hostile import notebooks

from gradcam_kit.contract import ZYGOTE_ENV
from gradcam_kit.grading.notebook import read_submission
from gradcam_kit.host.isolation import available_isolation
from gradcam_kit.host.session import WorkerSession

pyseccomp = pytest.importorskip("pyseccomp")

GRADIENTS = np.ones((1, 4, 7, 7), dtype=np.float32)
TAG = "planted-by-a-student"
SYSV_KEY = 0x5EED
KEYRINGS = {"thread": -1, "process": -2, "session": -3, "user": -4, "user-session": -5}


def _number(name: str) -> int:
    return int(pyseccomp.resolve_syscall(pyseccomp.system_arch(), name))


# The student's code: independent of the kit's own clean-up code (it reads the mount table itself).
COMMON = f'''
import ctypes, errno, os
TAG = {TAG!r}
libc = ctypes.CDLL(None, use_errno=True)

def writable_folders():
    """Folders on read-write mounts (but /proc and /sys), from the mount table."""
    mounts = []
    for line in open("/proc/self/mountinfo"):
        fields = line.split(" - ")[0].split()
        point = fields[4].replace("\\\\040", " ")
        mounts.append((point, "ro" in fields[5].split(",")))
    def read_only(path):
        best = max((m for m in mounts if path == m[0] or path.startswith(m[0].rstrip("/") + "/")),
                   key=lambda m: len(m[0]))
        return best[1]
    found = []
    for root, folders, _ in os.walk("/"):
        folders[:] = [f for f in folders if os.path.join(root, f) not in ("/proc", "/sys")
                      and not os.path.islink(os.path.join(root, f))
                      and not read_only(os.path.join(root, f))]
        found.append(root)
    return found
'''

PLANT = COMMON + f'''
def channel_weights(gradients):
    planted = {{"files": [], "keys": {{}}}}
    # inside a sandbox (its host name is "grader"), every folder it can write; elsewhere (the
    # process level runs on the grader's own file system) nothing but the kernel objects
    for folder in writable_folders() if os.uname().nodename == "grader" else []:
        try:
            with open(os.path.join(folder, "." + TAG), "w") as stream:
                stream.write(TAG)
            planted["files"].append(folder)
        except OSError:
            pass
    try:
        if os.uname().nodename == "grader":
            with open("/dev/shm/" + TAG, "w") as stream:
                stream.write(TAG)
            planted["files"].append("/dev/shm")
    except OSError:
        pass
    planted["shm"] = libc.shmget({SYSV_KEY}, 4096, 0o1600)
    planted["sem"] = libc.semget({SYSV_KEY}, 1, 0o1600)
    planted["msg"] = libc.msgget({SYSV_KEY}, 0o1600)
    planted["mq"] = libc.mq_open(("/" + TAG).encode(), os.O_CREAT | os.O_RDWR, 0o600, None)
    for name, ring in {KEYRINGS!r}.items():
        key = libc.syscall({_number("add_key")}, b"user", TAG.encode(), TAG.encode(), len(TAG), ring)
        planted["keys"][name] = key if key >= 0 else errno.errorcode[ctypes.get_errno()]
    return planted
'''

CRASH = '''
def weighted_cam(activations, weights):
    import os
    os._exit(3)
'''

LOOK = COMMON + '''
def upsample_normalize(cam, size=(224, 224)):
    seen = []
    for folder in (writable_folders() if os.uname().nodename == "grader" else []) + ["/dev/shm"]:
        if os.path.exists(os.path.join(folder, "." + TAG)) or os.path.exists(os.path.join(folder, TAG)):
            seen.append(folder)
    ipc = [line.split()[0] for kind in ("shm", "sem", "msg")
           for line in open("/proc/sysvipc/" + kind).read().splitlines()[1:]]
    queue = libc.mq_open(("/" + TAG).encode(), os.O_RDONLY, 0, None)
    keys = [line for line in open("/proc/keys").read().splitlines() if TAG in line]
    return {"files": seen, "sysv_keys": [int(key) for key in ipc], "mq": queue, "keys": keys}
'''


@pytest.fixture
def student(course, tmp_path):
    """``student(name) -> WorkerSession`` whose notebook plants, crashes and looks (the caller closes it)."""
    source = notebooks.write(notebooks.source_notebook(), tmp_path / "source" / "TP2_GradCAM.ipynb")

    def make(name: str, isolation: str) -> WorkerSession:
        replace = {"channel_weights": PLANT, "weighted_cam": CRASH, "upsample_normalize": LOOK}
        path = notebooks.write(notebooks.submission(replace=replace), tmp_path / name / "TP2_GradCAM.ipynb")
        return WorkerSession(read_submission(path, source), course.images_dir, course.helper_module,
                             isolation=isolation, tripwire=False)

    return make


def look(session: WorkerSession) -> dict:
    """What the session's worker finds (in the sandbox's writable folders, IPC, keys)."""
    seen = session.call("upsample_normalize", np.ones((1, 7, 7), dtype=np.float32))
    assert seen.ok, seen.error
    return seen.value


def assert_clean(seen: dict, who: str) -> None:
    assert seen["files"] == [], f"{who} sees files left by the previous student in {seen['files']}"
    assert SYSV_KEY not in seen["sysv_keys"], f"{who} sees the previous student's System V objects"
    assert seen["mq"] < 0, f"{who} opened the previous student's POSIX message queue"
    assert seen["keys"] == [], f"{who} sees the previous student's keys: {seen['keys']}"


def planted_keys() -> set[str]:
    """The ids of the keys named like the student's that the grader's process can see."""
    return {line.split()[0] for line in Path("/proc/keys").read_text().splitlines() if TAG in line}


@pytest.fixture(autouse=True)
def keys_before():
    """The keys of that name before the test (none, unless an older grader let one in)."""
    return planted_keys()


def host_sees_nothing(keys_before: set[str]) -> None:
    """The grader's own process: keys, IPC objects, message queue, shared-memory file."""
    assert planted_keys() <= keys_before, "a key of the student's is in the grader's keyrings"
    for kind in ("shm", "sem", "msg"):
        keys = [int(line.split()[0]) for line in Path(f"/proc/sysvipc/{kind}").read_text().splitlines()[1:]]
        assert SYSV_KEY not in keys, f"a System V {kind} object of the student's is in the grader's namespace"
    libc = ctypes.CDLL(None, use_errno=True)
    queue = libc.mq_open(f"/{TAG}".encode(), os.O_RDONLY, 0, None)
    if queue >= 0:
        libc.mq_close(queue)
        libc.mq_unlink(f"/{TAG}".encode())
    assert queue < 0, "the student's POSIX message queue is in the grader's IPC namespace"
    assert not Path(f"/dev/shm/{TAG}").exists()
    assert not list(Path("/tmp").glob(f".{TAG}"))


@pytest.mark.skipif("bwrap" not in available_isolation(), reason="needs the bwrap level")
@pytest.mark.parametrize("zygote", ["1", "0"], ids=["forked-by-the-zygote", "fresh-sandboxes"])
def test_nothing_crosses_from_one_worker_to_the_next(student, monkeypatch, zygote, keys_before):
    monkeypatch.setenv(ZYGOTE_ENV, zygote)
    with student("planter", "bwrap") as planter:
        planted = planter.call("channel_weights", GRADIENTS)
        assert planted.ok, planted.error
        value = planted.value
        assert len(value["files"]) >= 3, f"the student could write almost nowhere ({value['files']}): " \
            "the test would prove nothing (or this is not a sandbox)"
        assert value["shm"] >= 0 and value["sem"] >= 0 and value["msg"] >= 0 and value["mq"] >= 0, \
            "the sandbox has an IPC namespace of its own: its objects may be created, and must be wiped"
        assert set(value["keys"].values()) == {"EPERM"}, f"keys could be added: {value['keys']}"
        crashed = planter.call("weighted_cam", np.ones((1, 4, 7, 7), np.float32), np.ones((1, 4), np.float32))
        assert crashed.failure == "exit", crashed
        assert_clean(look(planter), "the same student's restarted worker")
    with student("next", "bwrap") as following:
        assert_clean(look(following), "the next student's worker")
    host_sees_nothing(keys_before)


def test_the_process_level_denies_kernel_objects_it_cannot_isolate(student, keys_before):
    """At the ``process`` level the worker shares the grader's IPC namespace and keyrings: the
    system-call filter denies them. Files are another matter: only the tripwire guards them there."""
    with student("planter", "process") as planter:
        planted = planter.call("channel_weights", GRADIENTS)
        assert planted.ok, planted.error
        value = planted.value
        assert value["shm"] < 0 and value["sem"] < 0 and value["msg"] < 0 and value["mq"] < 0, value
        assert set(value["keys"].values()) == {"EPERM"}, value["keys"]
        assert value["files"] == []
    host_sees_nothing(keys_before)


@pytest.mark.parametrize("level", available_isolation())
def test_the_filter_denies_what_docker_denies(course, tmp_path, level):
    """Every call of the filter's list fails with EPERM inside a worker, at every level."""
    from gradcam_kit.worker.syscalls import DENIED

    names = {}
    for name in DENIED:
        try:
            names[name] = _number(name)
        except Exception:
            continue
    numbers = {name: number for name, number in names.items() if number >= 0}
    code = f'''
def channel_weights(gradients):
    import ctypes, errno
    libc = ctypes.CDLL(None, use_errno=True)
    answers = {{}}
    for name, number in {numbers!r}.items():
        if name in ("reboot", "kexec_load", "kexec_file_load", "swapoff", "acct", "settimeofday",
                    "clock_settime", "adjtimex", "clock_adjtime", "init_module", "delete_module"):
            args = (0, 0, 0, 0)  # harmless arguments in case the call were allowed
        else:
            args = (0, 0, 0, 0)
        ctypes.set_errno(0)
        result = libc.syscall(number, *args)
        answers[name] = errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno())) if result < 0 else "allowed"
    clone = libc.syscall({_number("unshare")}, 0x40000000)
    answers["unshare(CLONE_NEWNET)"] = errno.errorcode.get(ctypes.get_errno()) if clone < 0 else "allowed"
    return answers
'''
    if os.geteuid() != 0 and level != "bwrap":
        pytest.skip("as a user, the process level's calls fail anyway")
    source = notebooks.write(notebooks.source_notebook(), tmp_path / "source" / "TP2_GradCAM.ipynb")
    path = notebooks.write(notebooks.submission(replace={"channel_weights": code}),
                           tmp_path / "s" / "TP2_GradCAM.ipynb")
    with WorkerSession(read_submission(path, source), course.images_dir, course.helper_module,
                       isolation=level, tripwire=False) as worker:
        answers = worker.call("channel_weights", GRADIENTS)
    assert answers.ok, answers.error
    allowed = {name: answer for name, answer in answers.value.items() if answer != "EPERM"}
    assert allowed == {}, f"not denied at the {level} level: {allowed}"
    assert errno.EPERM  # the filter answers EPERM, as Docker's profile does
