"""The sandbox's parts without a worker: command lines, uids, environment, scratch folders."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from gradcam_kit.host.isolation import ISOLATION_LEVELS, available_isolation
from gradcam_kit.host.sandbox import SANDBOX_HOME, SandboxPaths, build_command, prepare_host_home, worker_environment
from gradcam_kit.host.uids import UID_RANGE, UidLease
from gradcam_kit.host.worker_code import CODE_IN_SANDBOX, staged_worker_code, worker_modules
from gradcam_kit.wire.limits import Limits, describe_bytes


@pytest.fixture
def paths(course, tmp_path) -> SandboxPaths:
    submission = tmp_path / "TP2_GradCAM.ipynb"
    submission.write_text("{}")
    return SandboxPaths(tmp_path / "home", course.images_dir, course.helper_module, submission)


def _binds(command: list[str]) -> dict[str, str]:
    """Bind target -> source, for every --bind/--ro-bind of a bwrap command."""
    binds = {}
    for index, word in enumerate(command):
        if word in ("--bind", "--ro-bind"):
            binds[command[index + 2]] = command[index + 1]
    return binds


def test_the_levels_available_here():
    levels = available_isolation()
    assert levels[-1] == "process" and set(levels) <= set(ISOLATION_LEVELS)
    assert list(levels) == sorted(levels, key=ISOLATION_LEVELS.index)
    if shutil.which("bwrap") and os.environ.get("CI"):
        assert levels[0] == "bwrap", "CI installs bubblewrap: the strongest level must work there"


def test_the_bwrap_command_shows_only_what_the_worker_needs(paths, course):
    command = build_command("bwrap", paths, Limits(), ["--request-fd", "3"], drop_to=64001)
    for flag in ("--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--die-with-parent",
                 "--new-session"):
        assert flag in command
    binds = _binds(command)
    assert all(target == source for target, source in binds.items()
               if not target.startswith(SANDBOX_HOME) and target != CODE_IN_SANDBOX)
    visible = set(binds)
    root = str(course.root)
    for secret in ("solutions", "autograder_tests", "source", "gradebook.db", "submitted", ".git"):
        assert not any(target == f"{root}/{secret}" or target.startswith(f"{root}/{secret}/") for target in visible)
    assert root not in visible, "the course root itself must never be bound"
    assert not any(target.startswith(f"{root}/gradcam_kit") for target in visible), \
        "the kit's code is seen through its staged copy only"
    assert binds[CODE_IN_SANDBOX] == str(staged_worker_code())
    assert binds[f"{SANDBOX_HOME}/TP2_GradCAM/tp2_utils.py"] == str(course.helper_module)
    assert binds[f"{SANDBOX_HOME}/TP2_GradCAM/TP2_images"] == str(course.images_dir)
    assert command[command.index("--tmpfs", command.index("--size")) - 1] == str(Limits().scratch_bytes)
    assert command[command.index("--uid") + 1] == "64001"
    if os.geteuid() == 0:
        assert command.index("--cap-drop") < command.index("--cap-add")


def test_other_levels_run_the_interpreter_directly(paths):
    command = build_command("process", paths, Limits(), ["--request-fd", "3"], drop_to=None)
    worker = command.index("-B") - 2  # after the launcher that joins a new session keyring
    assert command[worker:worker + 4] == [command[0], "-I", "-B", "-c"]
    assert str(staged_worker_code()) in command[worker + 4] and command[worker + 5:] == ["--request-fd", "3"]
    assert "--uid" not in command


def test_the_worker_code_is_derived_from_the_imports(tmp_path):
    """The staged code is the closure of the worker's imports (lazy ones too), nothing else of the kit."""
    modules = worker_modules()
    assert {"gradcam_kit.worker.entry", "gradcam_kit.worker.models", "gradcam_kit.wire.frames",
            "gradcam_kit.worker.zygote_server", "gradcam_kit.worker.mounts", "gradcam_kit.worker.syscalls",
            "gradcam_kit.efficientnet", "gradcam_kit", "gradcam_kit.worker"} <= set(modules)
    for host_only in ("grading.batch", "grading.gradebook", "grading.reports", "host.session", "host.zygote",
                      "host.isolation"):
        assert f"gradcam_kit.{host_only}" not in modules
    assert not any(name.startswith(("gradcam_kit.host", "gradcam_kit.grading")) for name in modules)
    staged = staged_worker_code()
    files = {str(path.relative_to(staged)) for path in staged.rglob("*.py")}
    import gradcam_kit

    package = Path(gradcam_kit.__file__).parent
    assert files == {str(Path("gradcam_kit") / path.relative_to(package)) for path in modules.values()}


def test_the_worker_imports_the_staged_code(paths):
    """Whatever copy of the kit the venv would find, the worker imports the staged one."""
    import subprocess

    command = build_command("process", paths, Limits(), ["--probe"], drop_to=None)
    found = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd="/")
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == str(staged_worker_code() / "gradcam_kit")


def test_the_environment_is_built_from_nothing(paths, monkeypatch):
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    for level in ISOLATION_LEVELS:
        env = worker_environment(level, paths, "random", None)
        assert not any(key.startswith("NBGRADER") for key in env) and "AWS_SECRET_ACCESS_KEY" not in env
        assert env["HOME"] == paths.home(level) and env["TMPDIR"].startswith(env["HOME"])
        assert env["MPLBACKEND"] == "Agg" and env["OMP_NUM_THREADS"] == "1" and env["CUDA_VISIBLE_DEVICES"] == ""
        assert env["GRADCAM_WEIGHTS"] == "random"


def test_uid_leases_are_never_shared_nor_reused(tmp_path):
    """Two graders (here two lock folders would be two machines: one folder is one machine) never
    get the same uid, and a released uid is not leased again: its user keyring cannot carry over."""
    uids = range(UID_RANGE.stop - 13, UID_RANGE.stop - 10)  # far from the uids real leases get
    first, second = UidLease(uids, tmp_path), UidLease(uids, tmp_path)
    assert first.uid != second.uid and first.gid == first.uid
    first.release()
    third = UidLease(uids, tmp_path)
    assert third.uid not in (first.uid, second.uid)
    with pytest.raises(RuntimeError, match="no free uid"):
        UidLease(uids, tmp_path)


def test_uid_leases_skip_uids_the_kernel_holds_keys_for(tmp_path, monkeypatch):
    from gradcam_kit.host import uids as sandbox

    uids = range(UID_RANGE.stop - 23, UID_RANGE.stop - 20)
    monkeypatch.setattr(sandbox, "_uids_with_keys", lambda: {uids.start})
    assert UidLease(uids, tmp_path).uid == uids.start + 1


@pytest.mark.parametrize("level", ["process", "uid"])
def test_host_scratch_folders(paths, level):
    if level == "uid" and os.geteuid() != 0:
        pytest.skip("only root can give the folder to another uid")
    owner = 64899 if level == "uid" else None
    (paths.host_home / "left-over").mkdir(parents=True)
    prepare_host_home(level, paths, owner)
    workdir = Path(paths.workdir(level))
    assert sorted(os.listdir(paths.host_home)) == ["TP2_GradCAM"]
    assert sorted(os.listdir(workdir)) == ["TP2_GradCAM.ipynb", "TP2_images", "tp2_utils.py"]
    assert (workdir / "TP2_images").resolve() == paths.images_dir.resolve()
    if owner is not None:
        info = paths.host_home.stat()
        assert info.st_uid == owner and stat.S_IMODE(info.st_mode) == 0o700
        assert (workdir / "tp2_utils.py").stat().st_uid == owner


def test_prepare_leaves_bwrap_alone(paths):
    prepare_host_home("bwrap", paths, None)
    assert not paths.host_home.exists()


@pytest.mark.parametrize("count, text", [(6 * 2**30, "6.0 GB"), (4.5 * 2**30, "4.5 GB"), (10 * 2**20, "10 MB"),
                                         (2048, "2 kB"), (12, "12 bytes")])
def test_describe_bytes(count, text):
    assert describe_bytes(count) == text


def test_the_mount_table_is_read_as_the_kernel_writes_it():
    from gradcam_kit.worker.mounts import MountTable

    table = MountTable(
        "65 42 0:40 /newroot / rw,nosuid - tmpfs tmpfs rw\n"
        "66 65 254:0 /usr /usr ro,nosuid - ext4 /dev/vda rw\n"
        "70 65 0:42 / /dev rw,nosuid - tmpfs tmpfs rw,mode=755\n"
        "78 70 0:39 / /dev/mqueue rw,relatime - mqueue mqueue rw\n"
        "79 65 0:44 / /tmp rw,nosuid - tmpfs tmpfs rw\n"
        "80 79 254:0 /x /tmp/a\\040b/.venv ro,nosuid - ext4 /dev/vda rw\n"
        "81 65 0:45 / /home/student rw - tmpfs tmpfs rw\n")
    assert "/tmp/a b/.venv" in table.points, "mountinfo escapes spaces as \\040"
    assert {"/tmp/a b", "/tmp", "/"} <= table.holders
    assert table.writable == ["/", "/dev", "/tmp", "/dev/mqueue", "/home/student"]
