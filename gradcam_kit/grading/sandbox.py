"""Isolation levels, resource limits and the launch of the worker process.

Isolation levels
----------------
The session uses the strongest level that works on the machine (``WorkerSession.isolation_level``
says which one it got); each level keeps every guarantee of the levels below it.

``process``
    The worker is a separate process: a crash, an infinite loop, a memory or output bomb costs the
    affected calls only, and nothing of the student's making reaches the judge but plain data. It
    runs in a fresh scratch folder (holding only a copy of the submission, the helper module and
    the images) with a clean environment (no ``NBGRADER_*`` or other variables of the grader; HOME
    and TMPDIR in the scratch folder; no GPU), under resource limits (address space, CPU time, size
    of written files and output, no core dumps), with a Python audit hook installed just before the
    student's code runs that refuses reading the course's other files (solutions, tests, source
    notebook, gradebook), writing outside the scratch folder, starting processes, sending signals
    to other processes and opening network connections. The audit hook is a tripwire, not a wall:
    code that uses ``ctypes`` can get past it. The process runs as the grader's user, so nothing
    stops it from reading what that user can read.
``uid``
    As ``process``, and the worker runs as a user of its own (a uid leased per session, so that
    parallel workers cannot read or signal one another), set before the interpreter starts. The
    grader's files can no longer be written, files not readable by "others" can no longer be read
    (make the course folder 0700 or 0750, with the interpreter and the virtual environment
    outside it), and the limit on the number of processes holds (it does not for root). Needs root.
``bwrap``
    As ``uid`` when the grader is root, and the worker runs in a bubblewrap sandbox: its own view of
    the file system holding only the system folders, the interpreter, the virtual environment, the
    kit's package folder, the weights files and the scratch folder (a size-limited tmpfs with the
    submission, the helper module and the images bound read-only), everything read-only but the
    scratch folder and /tmp; no network (its own empty network namespace); its own PID, IPC and
    UTS namespaces; killed with the grader; a new session (no terminal injection). The solutions,
    the hidden tests, the source notebook, the gradebook and other students' files do not exist
    inside. Needs the ``bwrap`` program (Debian/Ubuntu: ``apt-get install bubblewrap``).
    At this level a judge process keeps one sandbox whose first process, the zygote, imports torch
    once and forks each worker; between two workers it kills every process left in the sandbox,
    empties the scratch folder and /tmp and removes the System V IPC objects
    (:mod:`gradcam_kit.grading.zygote`).
"""

from __future__ import annotations

import fcntl
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

__all__ = [
    "ISOLATION_LEVELS",
    "Limits",
    "SANDBOX_HOME",
    "SandboxPaths",
    "UidLease",
    "available_isolation",
    "build_command",
    "describe_bytes",
    "hub_dir",
    "kit_files",
    "prepare_host_home",
    "worker_environment",
]

ISOLATION_LEVELS = ("bwrap", "uid", "process")
"""From the strongest to the weakest."""

SANDBOX_HOME = "/home/student"
"""The scratch folder's path inside the bubblewrap sandbox (HOME of the worker)."""
WORKDIR_NAME = "TP2_GradCAM"
FONT_CACHE_IN_SANDBOX = f"{SANDBOX_HOME}/.fontlist.json"

UID_RANGE = range(64000, 64900)
"""The uids leased to workers (no account needs to exist for them)."""
BWRAP = "bwrap"


def describe_bytes(count: float) -> str:
    """``6442450944`` -> ``"6.0 GB"`` (binary units, the way students read them)."""
    for unit, size in (("GB", 2**30), ("MB", 2**20), ("kB", 2**10)):
        if count >= size:
            return f"{count / size:.1f} GB" if unit == "GB" else f"{count / size:.0f} {unit}"
    return f"{count:.0f} bytes"


@dataclass(frozen=True)
class Limits:
    """Resource limits of one submission's worker.

    Attributes
    ----------
    call_seconds : float
        Wall-clock time of one call of a student's function, and of one cell while loading.
    startup_seconds : float
        Wall-clock time to start the worker (interpreter, torch, matplotlib) before the first cell.
    cpu_seconds : int
        CPU time of one call or one cell (all threads together).
    cpu_total_seconds : int
        CPU time of one worker process over its whole life (a hard limit).
    memory_bytes : int
        Address space of the worker (``RLIMIT_AS``). A worker that imported the CUDA build of torch
        and ran DenseNet-121 forward and backward on one image maps about 3.8 GB, most of it
        libraries that are never touched; the default leaves about 2 GB of margin.
    output_bytes : int
        What the student's code may print (stdout and stderr together), and the largest file it
        may write (``RLIMIT_FSIZE``).
    max_processes : int
        Processes and threads of the worker's user (``RLIMIT_NPROC``). Set only when the worker has
        a uid of its own (the grader runs as root, level ``uid`` or ``bwrap``): the limit counts
        every process of a user, and it is not enforced for root.
    scratch_bytes : int
        Size of the scratch folder and of /tmp (``bwrap`` level: they are tmpfs).
    result_bytes : int
        Largest answer of one call.
    max_restarts : int
        Worker restarts allowed per session; then every call fails at once.
    """

    call_seconds: float = 60.0
    startup_seconds: float = 120.0
    cpu_seconds: int = 120
    cpu_total_seconds: int = 1800
    memory_bytes: int = 6 * 2**30
    output_bytes: int = 10 * 2**20
    max_processes: int = 64
    scratch_bytes: int = 256 * 2**20
    result_bytes: int = 64 * 2**20
    max_restarts: int = 10

    def to_plain(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass(frozen=True)
class SandboxPaths:
    """Where the worker's files are, on the host and inside the worker's view.

    Attributes
    ----------
    host_home : Path
        The scratch folder on the host (``uid`` and ``process`` levels); unused by ``bwrap``, whose
        scratch folder is a tmpfs.
    images_dir, helper_module, submission : Path
        The course images, ``tp2_utils.py`` and the submitted notebook, on the host.
    read_only : tuple of Path
        Other host paths the worker needs (weights files, the torch cache), bound at the same path.
    font_cache : Path or None
        A matplotlib font list to copy into the worker's config folder (saves a rebuild per worker).
    """

    host_home: Path
    images_dir: Path
    helper_module: Path
    submission: Path | None
    read_only: tuple[Path, ...] = ()
    font_cache: Path | None = None

    def home(self, level: str) -> str:
        """The scratch folder as the worker sees it."""
        return SANDBOX_HOME if level == "bwrap" else str(self.host_home)

    def workdir(self, level: str) -> str:
        """The worker's current directory (holds the notebook, ``tp2_utils.py``, ``TP2_images/``)."""
        return f"{self.home(level)}/{WORKDIR_NAME}"

    def font_cache_inside(self, level: str) -> str | None:
        if self.font_cache is None:
            return None
        if level == "bwrap":
            return FONT_CACHE_IN_SANDBOX
        return str(self.host_home / ".fontlist.json")


# ------------------------------------------------------------------------------------------------
# uids
# ------------------------------------------------------------------------------------------------
class UidLease:
    """An unprivileged uid held by this session alone (an exclusive lock file per uid).

    Two sessions, in this process or another, never hold the same uid at the same time, so the
    workers of two students cannot signal each other or read each other's scratch folders, and
    the process limit of one uid counts one worker only.
    """

    def __init__(self, uids: range = UID_RANGE, lock_dir: Path | None = None) -> None:
        self._lock_dir = lock_dir or _default_lock_dir()
        self._lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._handle: int | None = None
        self.uid = -1
        busy = _uids_running()
        for uid in uids:
            if uid in busy or _uid_has_account(uid):
                continue
            handle = os.open(self._lock_dir / f"{uid}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(handle)
                continue
            self._handle, self.uid = handle, uid
            return
        raise RuntimeError(f"no free uid in {uids.start}..{uids.stop - 1} for a grading worker")

    @property
    def gid(self) -> int:
        return self.uid

    def release(self) -> None:
        if self._handle is not None:
            os.close(self._handle)
            self._handle = None

    def kill_all(self) -> None:
        """Kill every process running as this uid (used before a restart and at the end)."""
        if self.uid < 0:
            return
        try:
            subprocess.run(["kill", "-KILL", "-1"], user=self.uid, group=self.gid, extra_groups=[],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            pass


def _default_lock_dir() -> Path:
    """One folder for every grader on the machine, whatever their ``TMPDIR``."""
    for folder in (Path("/run/lock"), Path("/tmp")):
        if folder.is_dir() and os.access(folder, os.W_OK):
            return folder / "gradcam-kit-uids"
    return Path(tempfile.gettempdir()) / "gradcam-kit-uids"


def _uids_running() -> set[int]:
    """The uids of the processes running now (a uid in use is never leased, lock or not)."""
    uids = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                uids.add(entry.stat(follow_symlinks=False).st_uid)
            except OSError:
                pass
    return uids


def _uid_has_account(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


# ------------------------------------------------------------------------------------------------
# commands
# ------------------------------------------------------------------------------------------------
WORKER_MODULES = ("__init__.py", "efficientnet.py", "grading/__init__.py", "grading/protocol.py",
                  "grading/worker.py", "grading/models.py", "grading/sandbox.py", "grading/zygote_server.py",
                  "grading/exploration_runtime.py")
"""The files of the kit that the worker imports: the only ones of the kit that it can see."""


def kit_files() -> list[Path]:
    """The kit's files the worker needs, on the host (see :data:`WORKER_MODULES`)."""
    import gradcam_kit

    package = Path(gradcam_kit.__file__).resolve().parent
    return [package / name for name in WORKER_MODULES if (package / name).is_file()]


def _python_roots() -> list[Path]:
    """The interpreter's folders: its installation and the virtual environment."""
    roots = [Path(sys.base_prefix), Path(sys.prefix)]
    executable = Path(sys.executable)
    roots.append(executable.resolve().parent)
    unique: list[Path] = []
    for root in roots:
        root = root.resolve()
        if any(root == kept or kept in root.parents for kept in unique):
            continue
        unique = [kept for kept in unique if root not in kept.parents] + [root]
    return [root for root in unique if not str(root).startswith("/usr/")]


_ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "nsswitch.conf", "passwd", "group",
              "localtime", "fonts", "alternatives", "mime.types")


def _system_binds() -> list[str]:
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "lib", "lib32", "lib64", "libx32", "sbin"):
        path = Path("/") / name
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    for name in _ETC_FILES:
        path = Path("/etc") / name
        if path.exists():
            args += ["--ro-bind", str(path), str(path)]
    cpu = Path("/sys/devices/system/cpu")
    if cpu.is_dir():
        args += ["--ro-bind", str(cpu), str(cpu)]
    return args


def _parent_dirs(target: Path, made: set[Path]) -> list[str]:
    """Arguments creating the missing parents of a bind target, traversable by the worker's uid.

    (bwrap would create them with mode 0700 when run as root, so that the unprivileged worker
    could not reach the bound interpreter.)
    """
    args: list[str] = []
    for parent in reversed(target.parents):
        if parent in made or str(parent).startswith("/usr"):
            continue
        made.add(parent)
        args += ["--perms", "0755", "--dir", str(parent)]
    return args


def build_command(level: str, paths: SandboxPaths, limits: Limits, worker_args: list[str],
                  drop_to: int | None) -> list[str]:
    """The command line that starts the worker at ``level``.

    Parameters
    ----------
    level : {"bwrap", "uid", "process"}
        The isolation level.
    paths : SandboxPaths
        What the worker needs.
    limits : Limits
        For the sizes of the tmpfs folders.
    worker_args : list of str
        Arguments of ``python -m gradcam_kit.grading.worker``.
    drop_to : int or None
        The uid the worker switches to itself (``bwrap`` as root); ``None`` to keep the uid.
    """
    python = [sys.executable, "-I", "-B", "-m", "gradcam_kit.grading.worker", *worker_args]
    if drop_to is not None:
        python += ["--uid", str(drop_to), "--gid", str(drop_to)]
    if level != "bwrap":
        return python
    home, workdir = SANDBOX_HOME, paths.workdir("bwrap")
    size = str(limits.scratch_bytes)
    args = [BWRAP, "--die-with-parent", "--new-session", "--unshare-ipc", "--unshare-pid", "--unshare-net",
            "--unshare-uts", "--unshare-cgroup-try", "--hostname", "grader"]
    if os.geteuid() == 0:
        args += ["--cap-drop", "ALL"]
        if drop_to is not None:
            args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    args += _system_binds()
    args += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--size", size, "--tmpfs", "/tmp"]
    made: set[Path] = {Path("/")}
    roots = _python_roots()
    kit = [path for path in kit_files() if not any(root in path.parents for root in roots)]
    for target in [*roots, *kit, *(extra for extra in paths.read_only if extra.exists())]:
        args += _parent_dirs(target, made) + ["--ro-bind", str(target), str(target)]
    args += ["--perms", "1777", "--size", size, "--tmpfs", home, "--perms", "0777", "--dir", workdir]
    args += ["--ro-bind", str(paths.helper_module), f"{workdir}/{paths.helper_module.name}"]
    args += ["--ro-bind", str(paths.images_dir), f"{workdir}/TP2_images"]
    if paths.submission is not None and paths.submission.is_file():
        args += ["--ro-bind", str(paths.submission), f"{workdir}/{paths.submission.name}"]
    if paths.font_cache is not None:
        args += ["--ro-bind", str(paths.font_cache), FONT_CACHE_IN_SANDBOX]
    args += ["--chdir", workdir, "--"]
    return args + python


def prepare_host_home(level: str, paths: SandboxPaths, owner: int | None) -> None:
    """Create a fresh scratch folder on the host for the ``uid`` and ``process`` levels.

    It holds a copy of the helper module, of the submission and of the font list, and a link to
    the images; ``owner`` (a leased uid) owns it, mode 0700.
    """
    if level == "bwrap":
        return
    home = paths.host_home
    if home.exists():
        shutil.rmtree(home, ignore_errors=True)
    workdir = home / WORKDIR_NAME
    workdir.mkdir(parents=True)
    shutil.copyfile(paths.helper_module, workdir / paths.helper_module.name)
    if paths.submission is not None and paths.submission.is_file():
        shutil.copyfile(paths.submission, workdir / paths.submission.name)
    (workdir / "TP2_images").symlink_to(paths.images_dir.resolve(), target_is_directory=True)
    if paths.font_cache is not None:
        shutil.copyfile(paths.font_cache, home / ".fontlist.json")
    if owner is not None:
        for folder, folders, files in os.walk(home):
            os.chown(folder, owner, owner)
            for name in folders + files:
                os.lchown(os.path.join(folder, name), owner, owner)
        os.chmod(home, 0o700)


def worker_environment(level: str, paths: SandboxPaths, weights: str, torch_home: Path | None) -> dict[str, str]:
    """The worker's whole environment: nothing of the grader's (no ``NBGRADER_*``), one thread, no GPU."""
    home = paths.home(level)
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "USER": "student",
        "LOGNAME": "student",
        "TMPDIR": f"{home}/.tmp",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "MPLBACKEND": "Agg",
        "MPLCONFIGDIR": f"{home}/.config/matplotlib",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "NUMEXPR_NUM_THREADS": "1",
        "VECLIB_MAXIMUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
        "GRADCAM_WEIGHTS": weights,
        "TP2_IMAGES_DIR": f"{paths.workdir(level)}/TP2_images",
    }
    if torch_home is not None:
        env["TORCH_HOME"] = str(torch_home)
    return env


# ------------------------------------------------------------------------------------------------
# which level works here
# ------------------------------------------------------------------------------------------------
def _probe(command: list[str], **popen: object) -> bool:
    try:
        result = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, timeout=60, check=False, **popen)
    except (OSError, subprocess.SubprocessError):
        return False
    return result.returncode == 0


@lru_cache(maxsize=None)
def available_isolation() -> tuple[str, ...]:
    """The isolation levels that work on this machine, strongest first (always ends with ``process``).

    Each is tried once per process with a real interpreter start: ``bwrap`` with the worker's
    binds, ``uid`` by starting the interpreter as an unused uid (it fails when the interpreter is
    in a folder that other users cannot enter, such as ``/root``).
    """
    levels = []
    root = os.geteuid() == 0
    if shutil.which(BWRAP):
        with tempfile.TemporaryDirectory() as scratch:
            helper = Path(scratch) / "tp2_utils.py"
            helper.write_text("")
            paths = SandboxPaths(Path(scratch), Path(scratch), helper, None)
            command = build_command("bwrap", paths, Limits(), [], None)
            python_at = command.index(sys.executable)
            check = [*command[:python_at], sys.executable, "-I", "-c", "import gradcam_kit.grading"]
            if _probe(check):
                levels.append("bwrap")
    if root:
        try:
            lease = UidLease()
        except (RuntimeError, OSError):
            lease = None
        if lease is not None:
            try:
                if _probe([sys.executable, "-I", "-c", "import gradcam_kit.grading"], user=lease.uid,
                          group=lease.gid, extra_groups=[], cwd="/"):
                    levels.append("uid")
            finally:
                lease.release()
    levels.append("process")
    return tuple(levels)


def hub_dir() -> Path:
    """torch's hub folder, computed as torch does (without importing torch)."""
    if os.environ.get("TORCH_HOME"):
        return Path(os.environ["TORCH_HOME"]).expanduser() / "hub"
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "torch" / "hub"

