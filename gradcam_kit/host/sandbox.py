"""The bubblewrap sandbox, and the command line and environment that start a worker at each level.

The levels themselves (what each one keeps from the worker, and which one a grading run uses) are
described in :mod:`gradcam_kit.host.isolation`. At every level the worker runs the kit code the
grader imported, staged by :mod:`gradcam_kit.host.worker_code`, in a new session keyring
(:func:`in_new_keyring`), with an environment built from nothing (:func:`worker_environment`); at
the ``uid`` and ``process`` levels in a scratch folder on the host (:func:`prepare_host_home`), at
the ``bwrap`` level in a sandbox that shows only what the worker needs (:func:`build_command`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from gradcam_kit.contract import BWRAP_ENV, IMAGES_DIR_ENV, WEIGHTS_ENV
from gradcam_kit.host.worker_code import CODE_IN_SANDBOX, staged_worker_code, worker_command
from gradcam_kit.wire.limits import Limits

__all__ = [
    "SANDBOX_HOME",
    "SandboxPaths",
    "build_command",
    "bwrap_program",
    "code_folder",
    "hub_dir",
    "in_new_keyring",
    "prepare_host_home",
    "python_roots",
    "worker_environment",
]

SANDBOX_HOME = "/home/student"
"""The scratch folder's path inside the bubblewrap sandbox (HOME of the worker)."""
WORKDIR_NAME = "TP2_GradCAM"
FONT_CACHE_IN_SANDBOX = f"{SANDBOX_HOME}/.fontlist.json"


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
    except Exception:  # no libseccomp: the worker's filter cannot be built either
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
        Arguments of the worker's ``main`` (:mod:`gradcam_kit.worker.entry`).
    drop_to : int or None
        The uid the worker switches to itself (``bwrap`` as root); ``None`` to keep the uid.
    seccomp_fd : int, optional
        ``bwrap``: a descriptor holding the system-call filter (:func:`~gradcam_kit.worker.syscalls.filter_fd`),
        which the caller passes to the process.

    Every level starts the worker in a new session keyring, with the kit's code staged by
    :func:`~gradcam_kit.host.worker_code.staged_worker_code` first on its ``sys.path``.
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
    """Where the worker finds the kit's code (see :mod:`gradcam_kit.host.worker_code`)."""
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
        WEIGHTS_ENV: weights,
        IMAGES_DIR_ENV: f"{paths.workdir(level)}/TP2_images",
    }
    if torch_home is not None:
        env["TORCH_HOME"] = str(torch_home)
    return env



def hub_dir() -> Path:
    """torch's hub folder, computed as torch does (without importing torch)."""
    if os.environ.get("TORCH_HOME"):
        return Path(os.environ["TORCH_HOME"]).expanduser() / "hub"
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "torch" / "hub"


