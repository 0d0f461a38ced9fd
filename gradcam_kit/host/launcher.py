"""Starting one submission's workers: the sandbox's paths, the ``start`` message, and the process.

A :class:`Launcher` belongs to one session. Each :meth:`Launcher.start` gives a fresh worker
(:class:`RunningWorker`), in a fresh scratch folder: at the ``bwrap`` level forked by the judge
process's zygote when there is one (:mod:`gradcam_kit.host.zygote`), else a process of its own,
started by the command line of :mod:`gradcam_kit.host.sandbox` as a uid of its own when the grader
is root (:mod:`gradcam_kit.host.uids`). The audit hook's rules mirror what the ``bwrap`` sandbox
shows (:meth:`Launcher.tripwire_rules`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from gradcam_kit.host.channel import Channel
from gradcam_kit.host.postmortem import WorkerLost
from gradcam_kit.host.sandbox import (
    SandboxPaths,
    build_command,
    code_folder,
    hub_dir,
    prepare_host_home,
    python_roots,
    worker_environment,
)
from gradcam_kit.host.uids import UidLease
from gradcam_kit.host.zygote import Zygote, ZygoteChild, ZygoteError, shared_zygote, zygote_enabled
from gradcam_kit.program import SubmissionProgram
from gradcam_kit.wire.failures import Failure
from gradcam_kit.wire.limits import Limits
from gradcam_kit.wire.messages import StartMessage, TripwireRules
from gradcam_kit.worker.syscalls import filter_fd

__all__ = ["SYSTEM_FOLDERS", "Launcher", "RunningWorker", "course_root_of", "font_cache", "resolved_policy"]

SYSTEM_FOLDERS = ("/usr", "/etc", "/lib", "/lib32", "/lib64", "/bin", "/sbin", "/proc", "/sys", "/dev")
"""Folders the worker may read at every level (they are bound read-only in the sandbox)."""
MAX_FRAME_MARGIN = 2**20
"""Bytes an answer may hold beyond ``Limits.result_bytes`` (its record around the value)."""


@dataclass
class RunningWorker:
    """A worker just started: its process, its channel, its log, and the ``start`` message to send it.

    Attributes
    ----------
    process : Popen or ZygoteChild
        The worker (a ``ZygoteChild`` when forked by the zygote).
    channel : Channel
        The grader's ends of its pipes.
    log_path : Path
        Its standard output and error.
    uid : int or None
        The uid it runs as (its own, or its zygote's), or ``None``: the grader's.
    start : StartMessage
        The message that starts it.
    """

    process: subprocess.Popen[bytes] | ZygoteChild
    channel: Channel
    log_path: Path
    uid: int | None
    start: StartMessage

    @property
    def forked(self) -> bool:
        return isinstance(self.process, ZygoteChild)


def resolved_policy(policy: str) -> str:
    """A weights policy as the worker gets it: ``imagenet``, ``random`` or an absolute path."""
    return policy if policy in ("imagenet", "random") else str(Path(policy).expanduser().resolve())


def course_root_of(path: Path) -> Path | None:
    """The course that holds ``path`` (its files are refused to the worker), or ``None``."""
    from gradcam_kit.course import CourseNotFound, find_course_root

    try:
        return find_course_root(path)
    except CourseNotFound:
        return None


@lru_cache(maxsize=1)
def font_cache() -> tuple[Path, str] | None:
    """This process's matplotlib font list (built once if needed), copied into each worker."""
    try:
        import matplotlib
        from matplotlib import font_manager

        name = f"fontlist-v{font_manager.FontManager.__version__}.json"
        path = Path(matplotlib.get_cachedir()) / name
        return (path, name) if path.is_file() else None
    except Exception:  # no matplotlib, an unwritable cache: the worker builds its own
        return None


def _readable_copy(font: tuple[Path, str], folder: Path) -> Path:
    """A copy of the font list that a worker's uid can read (the original may sit in /root)."""
    copy = folder / "fontlist.json"
    if not copy.exists():
        shutil.copyfile(font[0], copy)
        copy.chmod(0o644)
    return copy


class Launcher:
    """Starts the workers of one submission (see the module docstring).

    Parameters
    ----------
    program : SubmissionProgram
        The submission.
    images_dir, helper_module : Path
        The course images and helper module (resolved).
    limits : Limits
        The workers' limits.
    level : str
        The isolation level.
    weights : str
        The weights policy (``imagenet``, ``random`` or a resolved path).
    tripwire : bool
        Install the audit hook in the workers.
    course_root : Path or None
        The course whose files the tripwire refuses.
    """

    def __init__(self, program: SubmissionProgram, images_dir: Path, helper_module: Path, limits: Limits,
                 level: str, weights: str, tripwire: bool, course_root: Path | None) -> None:
        self.program, self.images_dir, self.helper_module = program, images_dir, helper_module
        self.limits, self.level, self.weights = limits, level, weights
        self.tripwire, self.course_root = tripwire, course_root
        self.folder = Path(tempfile.mkdtemp(prefix="gradcam-worker-"))
        self.lease: UidLease | None = None
        self.use_zygote = level == "bwrap" and zygote_enabled()
        """Fork the workers from the process's zygote (see :mod:`gradcam_kit.host.zygote`)."""
        self.starts = 0

    # -- a worker ----------------------------------------------------------------------------------
    def start(self, skip: Mapping[str, str]) -> RunningWorker:
        """A fresh worker, told to skip the cells in ``skip``: forked by the zygote when there is one,
        else a process of its own.

        Raises
        ------
        WorkerLost
            (a grader fault) when it cannot be started.
        """
        paths = self.paths()
        zygote = self._zygote(paths) if self.use_zygote else None
        if zygote is not None:
            try:
                return self._connect(paths, lambda request, reply, log: zygote.fork(request, reply, log.fileno()),
                                     uid=zygote.lease.uid if zygote.lease is not None else None, skip=skip,
                                     notebook=self._notebook_copy())
            except ZygoteError as error:
                print(f"[worker] the zygote failed ({error}); starting the worker afresh", file=sys.stderr)
        level = self.level
        if self.lease is None and os.geteuid() == 0 and level in ("bwrap", "uid"):
            self.lease = UidLease()
            os.chmod(self.folder, 0o711)
        uid = self.lease.uid if self.lease is not None else None
        if self.lease is not None:
            self.lease.kill_all()
        prepare_host_home(level, paths, uid if level == "uid" else None)
        popen: dict[str, Any] = {}
        if level == "uid" and uid is not None:
            popen = {"user": uid, "group": uid, "extra_groups": []}
        env = worker_environment(level, paths, self.weights, hub_dir().parent if hub_dir().is_dir() else None)

        def spawn(request: int, reply: int, log: Any) -> subprocess.Popen[bytes]:
            try:
                seccomp = filter_fd(private_ipc=True) if level == "bwrap" else None
            except Exception as error:  # libseccomp missing or broken
                raise WorkerLost(f"could not be started (no system-call filter: {error})", Failure.GRADER) from None
            command = build_command(level, paths, self.limits, ["--request-fd", str(request), "--reply-fd", str(reply)],
                                    drop_to=uid if level == "bwrap" else None, seccomp_fd=seccomp)
            fds = (request, reply) if seccomp is None else (request, reply, seccomp)
            try:
                return subprocess.Popen(
                    command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, pass_fds=fds, env=env,
                    cwd=paths.workdir(level) if level != "bwrap" else "/", start_new_session=True, **popen)
            except OSError as error:
                raise WorkerLost(f"could not be started ({error})", Failure.GRADER) from None
            finally:
                if seccomp is not None:
                    os.close(seccomp)

        return self._connect(paths, spawn, uid=uid, skip=skip)

    def _connect(self, paths: SandboxPaths, spawn: Callable[[int, int, Any], Any], uid: int | None,
                 skip: Mapping[str, str], notebook: dict[str, Any] | None = None) -> RunningWorker:
        """Start a worker with ``spawn(request_fd, reply_fd, log)`` (which returns its process,
        reading requests from the first pipe, answering on the second and printing to the log), and
        keep this side's ends of the pipes."""
        request_read, request_write = os.pipe()
        reply_read, reply_write = os.pipe()
        log_path = self.folder / f"worker-{self.starts + 1}.log"
        try:
            with open(log_path, "ab") as log:
                process = spawn(request_read, reply_write, log)
        except BaseException:
            os.close(request_write)
            os.close(reply_read)
            raise
        finally:
            os.close(request_read)
            os.close(reply_write)
        self.starts += 1
        channel = Channel(request_write, reply_read, self.limits.result_bytes + MAX_FRAME_MARGIN)
        start = self.start_message(paths, own_uid=uid is not None, skip=skip, notebook=notebook)
        return RunningWorker(process, channel, log_path, uid, start)

    def after_worker(self) -> None:
        """Clean up after a worker ended: its uid's processes, its scratch folder on the host."""
        if self.lease is not None:
            self.lease.kill_all()
        if self.level != "bwrap":
            shutil.rmtree(self.folder / "home", ignore_errors=True)

    def close(self) -> None:
        """Give the uid back and delete the scratch folders (the workers are stopped)."""
        if self.lease is not None:
            self.lease.release()
        shutil.rmtree(self.folder, ignore_errors=True)

    # -- what a worker sees ------------------------------------------------------------------------
    def paths(self) -> SandboxPaths:
        read_only: list[Path] = []
        checkpoints = hub_dir() / "checkpoints"
        if checkpoints.is_dir():
            read_only.append(checkpoints)
        if self.weights not in ("imagenet", "random"):
            read_only.append(Path(self.weights))
        font = font_cache()
        font_copy = _readable_copy(font, self.folder) if font is not None else None
        submission = self.program.submission_path.resolve()  # bwrap binds it from cwd "/"
        return SandboxPaths(self.folder / "home", self.images_dir, self.helper_module,
                            submission if submission.is_file() else None, tuple(read_only), font_copy)

    def tripwire_rules(self, paths: SandboxPaths) -> TripwireRules | None:
        """The audit hook's rules: what the ``bwrap`` sandbox would show, and no more."""
        if not self.tripwire:
            return None
        level = self.level
        home = paths.home(level)
        allow = [*SYSTEM_FOLDERS, *(str(root) for root in python_roots()),
                 str(self.images_dir), home, code_folder(level),
                 *(str(path) for path in paths.read_only)]
        deny = [str(self.program.source_path.resolve().parent), str(Path.home()),
                str(self.program.submission_path.resolve().parent)]
        if self.course_root is not None:
            deny.append(str(self.course_root))
        writable = [home]
        if level == "bwrap":
            allow.append("/tmp")
            writable.append("/tmp")
        else:
            deny.append(tempfile.gettempdir())
        return TripwireRules(tuple(allow), tuple(deny), tuple(writable))

    def start_message(self, paths: SandboxPaths, own_uid: bool, skip: Mapping[str, str],
                      notebook: dict[str, Any] | None = None) -> StartMessage:
        font = font_cache()
        level = self.level
        return StartMessage(
            limits=self.limits, program=self.program.to_plain(), home=paths.home(level),
            workdir=paths.workdir(level), helper_name=self.helper_module.name, own_uid=own_uid,
            font_cache=paths.font_cache_inside(level), font_cache_name=font[1] if font else None,
            tripwire=self.tripwire_rules(paths),
            syscall_filter=level != "bwrap",  # bwrap applies it to the whole sandbox
            skip=dict(skip), notebook=notebook)

    def _notebook_copy(self) -> dict[str, Any] | None:
        """The submission's bytes, for a worker whose sandbox does not bind it (a forked one)."""
        path = self.program.submission_path
        if not path.is_file():
            return None
        return {"name": path.name, "data": np.frombuffer(path.read_bytes(), dtype=np.uint8)}

    # -- the zygote ------------------------------------------------------------------------------
    def _zygote(self, paths: SandboxPaths) -> Zygote | None:
        """This process's zygote for this session's sandbox (started at first use), or ``None``
        when it cannot be had (then the session starts its workers itself, for good) or is busy."""
        font = font_cache()
        key = ("bwrap", str(paths.images_dir), str(paths.helper_module), paths.read_only, self.weights,
               self.limits.scratch_bytes, font)

        def start() -> Zygote:
            scratch = Path(tempfile.mkdtemp(prefix="gradcam-zygote-"))
            font_copy = _readable_copy(font, scratch) if font is not None else None
            layout = SandboxPaths(scratch, paths.images_dir, paths.helper_module, None, paths.read_only, font_copy)
            lease = UidLease() if os.geteuid() == 0 else None
            config = {"home": layout.home("bwrap"), "font_cache": layout.font_cache_inside("bwrap"),
                      "font_cache_name": font[1] if font else None}
            env = worker_environment("bwrap", layout, self.weights, hub_dir().parent if hub_dir().is_dir() else None)
            try:
                return Zygote(lambda args, seccomp: build_command("bwrap", layout, self.limits, args,
                                                                  drop_to=lease.uid if lease else None,
                                                                  seccomp_fd=seccomp),
                              env, config, self.limits.startup_seconds, lease, scratch)
            except BaseException:
                if lease is not None:
                    lease.release()
                shutil.rmtree(scratch, ignore_errors=True)
                raise

        try:
            zygote = shared_zygote(key, start)
        except (ZygoteError, OSError, RuntimeError) as error:
            print(f"[worker] no zygote ({error}); starting each worker afresh", file=sys.stderr)
            self.use_zygote = False
            return None
        return None if zygote.busy else zygote  # busy: another session of this process has it
