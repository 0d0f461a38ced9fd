"""The sandbox's parts without a worker: command lines, uids, environment, scratch folders."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from gradcam_kit.grading.sandbox import (
    ISOLATION_LEVELS,
    SANDBOX_HOME,
    Limits,
    SandboxPaths,
    UidLease,
    available_isolation,
    build_command,
    describe_bytes,
    kit_files,
    prepare_host_home,
    worker_environment,
)


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
    assert all(target == source for target, source in binds.items() if not target.startswith(SANDBOX_HOME))
    visible = set(binds)
    root = str(course.root)
    for secret in ("solutions", "autograder_tests", "source", "gradebook.db", "submitted", ".git"):
        assert not any(target == f"{root}/{secret}" or target.startswith(f"{root}/{secret}/") for target in visible)
    assert root not in visible, "the course root itself must never be bound"
    kit = {str(path) for path in kit_files()}
    assert {target for target in visible if target.startswith(f"{root}/gradcam_kit")} <= kit
    assert binds[f"{SANDBOX_HOME}/TP2_GradCAM/tp2_utils.py"] == str(course.helper_module)
    assert binds[f"{SANDBOX_HOME}/TP2_GradCAM/TP2_images"] == str(course.images_dir)
    assert command[command.index("--tmpfs", command.index("--size")) - 1] == str(Limits().scratch_bytes)
    assert command[command.index("--uid") + 1] == "64001"
    if os.geteuid() == 0:
        assert command.index("--cap-drop") < command.index("--cap-add")


def test_other_levels_run_the_interpreter_directly(paths):
    command = build_command("process", paths, Limits(), ["--request-fd", "3"], drop_to=None)
    assert command[1:6] == ["-I", "-B", "-m", "gradcam_kit.grading.worker", "--request-fd"]
    assert "--uid" not in command


def test_the_environment_is_built_from_nothing(paths, monkeypatch):
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    for level in ISOLATION_LEVELS:
        env = worker_environment(level, paths, "random", None)
        assert not any(key.startswith("NBGRADER") for key in env) and "AWS_SECRET_ACCESS_KEY" not in env
        assert env["HOME"] == paths.home(level) and env["TMPDIR"].startswith(env["HOME"])
        assert env["MPLBACKEND"] == "Agg" and env["OMP_NUM_THREADS"] == "1" and env["CUDA_VISIBLE_DEVICES"] == ""
        assert env["GRADCAM_WEIGHTS"] == "random"


def test_uid_leases_are_exclusive_and_reusable(tmp_path):
    uids = range(64850, 64853)
    first, second = UidLease(uids, tmp_path), UidLease(uids, tmp_path)
    try:
        assert first.uid != second.uid and first.gid == first.uid
        third = UidLease(uids, tmp_path)
        with pytest.raises(RuntimeError, match="no free uid"):
            UidLease(uids, tmp_path)
        third.release()
        again = UidLease(uids, tmp_path)
        assert again.uid == third.uid
        again.release()
    finally:
        first.release()
        second.release()


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
