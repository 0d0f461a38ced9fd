"""Isolation levels, resource limits and the launch of the worker process.

Isolation levels
----------------
``gradcam-kit grade`` grades at the strongest level this machine supports, or refuses
(:mod:`gradcam_kit.grading.isolation`); a session uses ``$GRADCAM_ISOLATION`` when set, else the
strongest level that works (``WorkerSession.isolation_level`` says which one it got). Each level
keeps every guarantee of the levels below it. At every level the worker runs the kit code the judge
imported, staged by :mod:`gradcam_kit.grading.worker_code`, in a new session keyring, under the
system-call filter of :mod:`gradcam_kit.grading.syscalls` (keyrings, tracing, mounts, namespaces,
BPF, ...: Docker's default denials).

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
    stops it from reading what that user can read. The system-call filter also denies System V and
    POSIX message-queue IPC (their objects would land in the grader's namespace).
``uid``
    As ``process``, and the worker runs as a user of its own (a uid leased once, never again, so
    that parallel workers cannot read or signal one another and nothing of a uid carries over from
    one grading run to the next), set before the interpreter starts. The grader's files can no
    longer be written, files not readable by "others" can no longer be read (make the course
    folder 0700 or 0750, with the interpreter and the virtual environment outside it), and the
    limit on the number of processes holds (it does not for root). Needs root.
``bwrap``
    As ``uid`` when the grader is root, and the worker runs in a bubblewrap sandbox: its own view of
    the file system holding only the system folders, the interpreter and the folders of its
    ``sys.path``, the staged kit code, the weights files and the scratch folder (a size-limited
    tmpfs with the submission, the helper module and the images bound read-only), everything
    read-only but the scratch folder, /tmp and a private POSIX message-queue mount; no network (its
    own empty network namespace); its own PID, IPC and UTS namespaces; killed with the grader; a
    new session (no terminal injection); the system-call filter for the whole sandbox. The
    solutions, the hidden tests, the source notebook, the gradebook and other students' files do
    not exist inside. Needs the ``bwrap`` program (Debian/Ubuntu: ``apt-get install bubblewrap``).
    At this level a judge process keeps one sandbox whose first process, the zygote, imports torch
    once and forks each worker; between two workers it kills every process left in the sandbox,
    removes whatever was written on its writable mounts and removes the System V IPC objects
    (:mod:`gradcam_kit.grading.zygote`).
"""

from __future__ import annotations

import fcntl
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from gradcam_kit.contract import BWRAP_ENV
from gradcam_kit.grading.worker_code import CODE_IN_SANDBOX, staged_worker_code, worker_command

__all__ = [
    "ISOLATION_LEVELS",
    "Limits",
    "SANDBOX_HOME",
    "SandboxPaths",
    "UidLease",
    "available_isolation",
    "build_command",
    "describe_bytes",
    "bwrap_program",
    "code_folder",
    "hub_dir",
    "in_new_keyring",
    "probe_isolation",
    "python_roots",
    "supported_isolation",
    "prepare_host_home",
    "worker_environment",
]

ISOLATION_LEVELS = ("bwrap", "uid", "process")
"""From the strongest to the weakest."""

SANDBOX_HOME = "/home/student"
"""The scratch folder's path inside the bubblewrap sandbox (HOME of the worker)."""
WORKDIR_NAME = "TP2_GradCAM"
FONT_CACHE_IN_SANDBOX = f"{SANDBOX_HOME}/.fontlist.json"

UID_RANGE = range(0x60000000, 0x70000000)
"""The uids leased to workers, each once (no account needs to exist for them): far above the ranges
that systems give to accounts and to containers' subordinate uids."""


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
    """An unprivileged uid for this lease alone, never handed out again on this machine.

    uids come from a counter kept in a lock file (:func:`_default_lock_dir`, under ``/run``, which
    starts empty at every boot, as the kernel's per-uid state does). A uid is skipped when a
    process runs as it, when an account has it, or when the kernel holds keys for it
    (``/proc/key-users``). So two graders on one machine never share a uid, and no uid carries a
    user keyring, a process or a file ownership over from an earlier grading run.

    Parameters
    ----------
    uids : range
        Where the uids come from (default :data:`UID_RANGE`).
    lock_dir : Path, optional
        The folder of the counter (default: one for every grader on the machine).
    """

    def __init__(self, uids: range = UID_RANGE, lock_dir: Path | None = None) -> None:
        self._lock_dir = lock_dir or _default_lock_dir()
        self._lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.uid = -1
        handle = os.open(self._lock_dir / "next-uid", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
            text = os.pread(handle, 64, 0).decode("ascii", "replace").strip()
            start = max(int(text) if text.isdigit() else uids.start, uids.start)  # never back: no uid twice
            taken = _uids_running() | _uids_with_keys()
            for uid in range(start, uids.stop):
                if uid in taken or _uid_has_account(uid):
                    continue
                os.ftruncate(handle, 0)
                os.pwrite(handle, f"{uid + 1}\n".encode("ascii"), 0)
                self.uid = uid
                return
        finally:
            os.close(handle)
        raise RuntimeError(f"no free uid left in {uids.start}..{uids.stop - 1} for a grading worker "
                           f"(remove {self._lock_dir / 'next-uid'} after a reboot to start again)")

    @property
    def gid(self) -> int:
        return self.uid

    def release(self) -> None:
        """Nothing to give back: the uid is never leased again."""

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


def _uids_with_keys() -> set[int]:
    """The uids for which the kernel keeps keys or keyrings (``/proc/key-users``)."""
    try:
        lines = Path("/proc/key-users").read_text().splitlines()
    except OSError:
        return set()
    return {int(line.split(":")[0]) for line in lines if line.split(":")[0].strip().isdigit()}


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
KEYCTL_JOIN_SESSION_KEYRING = 1
_NEW_KEYRING = (
    "import ctypes, os, sys\n"
    "if int(sys.argv[1]) >= 0 and ctypes.CDLL(None, use_errno=True).syscall(int(sys.argv[1]), {join}, None) < 0:\n"
    "    sys.exit('could not join a new session keyring: ' + os.strerror(ctypes.get_errno()))\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
).format(join=KEYCTL_JOIN_SESSION_KEYRING)
"""Start a program in a new, anonymous session keyring of its own (the grader's is out of reach)."""


@lru_cache(maxsize=1)
def _keyctl_number() -> int:
    """The number of the ``keyctl`` system call here (-1: unknown, then no keyring is joined)."""
    try:
        import pyseccomp

        return int(pyseccomp.resolve_syscall(pyseccomp.system_arch(), "keyctl"))
    except Exception:  # noqa: BLE001 - no libseccomp: the worker's filter cannot be built either
        return -1


def in_new_keyring(command: list[str]) -> list[str]:
    """``command`` (an absolute program path first) started in a new session keyring."""
    return [sys.executable, "-I", "-S", "-c", _NEW_KEYRING, str(_keyctl_number()), *command]


def bwrap_program() -> str | None:
    """The bubblewrap program: ``$GRADCAM_BWRAP`` if set, else ``bwrap`` on the ``PATH``."""
    chosen = os.environ.get(BWRAP_ENV, "").strip()
    if chosen:
        return chosen
    return shutil.which("bwrap")


@lru_cache(maxsize=1)
def _interpreter_path() -> tuple[str, ...]:
    """``sys.path`` of the worker's interpreter as the worker starts it (``python -I``): the standard
    library, the site-packages and every folder their ``.pth`` files add."""
    try:
        result = subprocess.run([sys.executable, "-I", "-c", "import json, sys; print(json.dumps(sys.path))"],
                                stdin=subprocess.DEVNULL, capture_output=True, timeout=60, check=True, cwd="/")
        return tuple(json.loads(result.stdout))
    except (OSError, subprocess.SubprocessError, ValueError):
        return tuple(sys.path)


def _is_a_course(path: Path) -> bool:
    """Whether ``path`` is a course folder (it would show the solutions and the hidden tests)."""
    return (path / "nbgrader_config.py").is_file()


def python_roots() -> list[Path]:
    """The interpreter's folders: its installation, the virtual environment, and every folder on the
    worker's ``sys.path`` (derived, not listed: a site-packages shared through a ``.pth`` file is
    found too), except a course folder itself (an editable install that puts a checkout on the path)."""
    roots = [Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve(), Path(sys.executable).resolve().parent]
    extra = [Path(entry).resolve() for entry in _interpreter_path() if entry and Path(entry).is_dir()]
    roots += [entry for entry in extra if not _is_a_course(entry)]  # a path-style editable install of a checkout
    unique: list[Path] = []
    for root in roots:
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
                  drop_to: int | None, seccomp_fd: int | None = None) -> list[str]:
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
        Arguments of the worker's ``main`` (:mod:`gradcam_kit.grading.worker`).
    drop_to : int or None
        The uid the worker switches to itself (``bwrap`` as root); ``None`` to keep the uid.
    seccomp_fd : int, optional
        ``bwrap``: a descriptor holding the system-call filter (:func:`~gradcam_kit.grading.syscalls.filter_fd`),
        which the caller passes to the process.

    Every level starts the worker in a new session keyring, with the kit's code staged by
    :func:`~gradcam_kit.grading.worker_code.staged_worker_code` first on its ``sys.path``.
    """
    code = staged_worker_code()
    arguments = list(worker_args)
    if drop_to is not None:
        arguments += ["--uid", str(drop_to), "--gid", str(drop_to)]
    if level != "bwrap":
        return in_new_keyring(worker_command(str(code), arguments))
    python = worker_command(CODE_IN_SANDBOX, arguments)
    home, workdir = SANDBOX_HOME, paths.workdir("bwrap")
    size = str(limits.scratch_bytes)
    program = bwrap_program() or "bwrap"
    args = [shutil.which(program) or program, "--die-with-parent", "--new-session", "--unshare-ipc",
            "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try", "--hostname", "grader"]
    if os.geteuid() == 0:
        args += ["--cap-drop", "ALL"]
        if drop_to is not None:
            args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    if seccomp_fd is not None:
        args += ["--seccomp", str(seccomp_fd)]
    args += _system_binds()
    args += ["--proc", "/proc", "--dev", "/dev", "--mqueue", "/dev/mqueue",
             "--perms", "1777", "--size", size, "--tmpfs", "/tmp"]
    made: set[Path] = {Path("/")}
    for target in [*python_roots(), *(extra for extra in paths.read_only if extra.exists())]:
        args += _parent_dirs(target, made) + ["--ro-bind", str(target), str(target)]
    args += _parent_dirs(Path(CODE_IN_SANDBOX), made) + ["--ro-bind", str(code), CODE_IN_SANDBOX]
    args += ["--perms", "1777", "--size", size, "--tmpfs", home, "--perms", "0777", "--dir", workdir]
    args += ["--ro-bind", str(paths.helper_module), f"{workdir}/{paths.helper_module.name}"]
    args += ["--ro-bind", str(paths.images_dir), f"{workdir}/TP2_images"]
    if paths.submission is not None and paths.submission.is_file():
        args += ["--ro-bind", str(paths.submission), f"{workdir}/{paths.submission.name}"]
    if paths.font_cache is not None:
        args += ["--ro-bind", str(paths.font_cache), FONT_CACHE_IN_SANDBOX]
    args += ["--chdir", workdir, "--"]
    return in_new_keyring(args + python)


def code_folder(level: str) -> str:
    """Where the worker finds the kit's code (see :mod:`gradcam_kit.grading.worker_code`)."""
    return CODE_IN_SANDBOX if level == "bwrap" else str(staged_worker_code())


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
def _probe(command: list[str], pass_fds: tuple[int, ...] = (), **popen: Any) -> str | None:
    """Run ``command`` (a worker started with ``--probe``); ``None`` when it worked, else why not."""
    try:
        result = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                timeout=60, check=False, pass_fds=pass_fds, **popen)
    except (OSError, subprocess.SubprocessError) as error:
        return f"{command[0]} could not be run ({error})"
    if result.returncode == 0:
        return None
    lines = [line.strip() for line in result.stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    said = lines[-1] if lines else "no message"
    return f"the test start of a worker failed (exit status {result.returncode}: {said[:300]})"


def _probe_bwrap() -> str | None:
    program = bwrap_program()
    if program is None:
        return "bubblewrap is not installed (no `bwrap` on the PATH)"
    try:
        from gradcam_kit.grading.syscalls import filter_fd

        seccomp = filter_fd(private_ipc=True)
    except Exception as error:  # noqa: BLE001 - no libseccomp, no pyseccomp
        return f"the system-call filter cannot be built ({type(error).__name__}: {error}); install libseccomp2"
    try:
        with tempfile.TemporaryDirectory() as scratch:
            helper = Path(scratch) / "tp2_utils.py"
            helper.write_text("")
            paths = SandboxPaths(Path(scratch), Path(scratch), helper, None)
            command = build_command("bwrap", paths, Limits(), ["--probe"], None, seccomp_fd=seccomp)
            return _probe(command, pass_fds=(seccomp,))
    finally:
        os.close(seccomp)


def _probe_uid() -> str | None:
    if os.geteuid() != 0:
        return "the grader is not root (only root can run the worker as a uid of its own)"
    try:
        lease = UidLease()
    except (RuntimeError, OSError) as error:
        return f"no uid could be leased ({error})"
    try:
        reason = _probe(build_command("uid", SandboxPaths(Path("/"), Path("/"), Path("/"), None), Limits(),
                                      ["--probe"], None),
                        user=lease.uid, group=lease.gid, extra_groups=[], cwd="/")
    finally:
        lease.release()
    if reason is not None:
        reason += (f"; the interpreter ({sys.executable}) must be readable by other users: is it under a "
                   "folder of mode 0700, such as /root?")
    return reason


@lru_cache(maxsize=None)
def probe_isolation() -> dict[str, str | None]:
    """Each isolation level, strongest first, with ``None`` when it works here, else why not.

    Each level is tried once per process with a real start of a worker (``--probe``: it imports the
    worker's code and leaves): ``bwrap`` with the worker's binds and system-call filter, ``uid`` as
    an unused uid.
    """
    return {"bwrap": _probe_bwrap(), "uid": _probe_uid(), "process": None}


def available_isolation() -> tuple[str, ...]:
    """The isolation levels that work on this machine, strongest first (always ends with ``process``)."""
    return tuple(level for level, reason in probe_isolation().items() if reason is None)


def supported_isolation() -> str:
    """The strongest level this machine is set up for: ``bwrap`` when bubblewrap is installed,
    else ``uid`` for root, else ``process``. Grading below it is never silent (see
    :mod:`gradcam_kit.grading.isolation`)."""
    if bwrap_program() is not None:
        return "bwrap"
    return "uid" if os.geteuid() == 0 else "process"


def hub_dir() -> Path:
    """torch's hub folder, computed as torch does (without importing torch)."""
    if os.environ.get("TORCH_HOME"):
        return Path(os.environ["TORCH_HOME"]).expanduser() / "hub"
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "torch" / "hub"

