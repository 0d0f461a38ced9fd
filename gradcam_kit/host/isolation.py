"""Isolation levels: what each keeps from the worker, which ones work here, which one a run uses.

Isolation levels
----------------
``gradcam-kit grade`` grades at the strongest level this machine supports, or refuses
(:func:`choose_isolation`); a session uses ``$GRADCAM_ISOLATION`` when set, else the
strongest level that works (``WorkerSession.isolation_level`` says which one it got). Each level
keeps every guarantee of the levels below it. At every level the worker runs the kit code the judge
imported, staged by :mod:`gradcam_kit.host.worker_code`, in a new session keyring, under the
system-call filter of :mod:`gradcam_kit.worker.syscalls` (keyrings, tracing, mounts, namespaces,
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
    (:mod:`gradcam_kit.host.zygote`).

Choosing a level
----------------
The strongest level a machine supports (:func:`supported_isolation`)
follows from what is installed: ``bwrap`` when bubblewrap is, else ``uid`` for root, else
``process``. Every level is then tried for real (:func:`probe_isolation`).
When the strongest supported level does not work, grading stops before it starts, with an error
that names the level, what failed and how to fix it (:class:`IsolationRefused`); ``--isolation
LEVEL`` accepts a weaker level that works, and that choice is recorded in every student's results,
in the CSV and in the feedback's notes. The chosen level is handed to the judges
(``$GRADCAM_ISOLATION``), whose sessions then use exactly that level or fail as a grader fault.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

from gradcam_kit.contract import ISOLATION_ENV
from gradcam_kit.errors import KitError
from gradcam_kit.host.sandbox import SandboxPaths, build_command, bwrap_program
from gradcam_kit.host.uids import UidLease
from gradcam_kit.wire.limits import Limits

__all__ = ["ISOLATION_LEVELS", "IsolationChoice", "IsolationRefused", "available_isolation", "choose_isolation",
           "probe_isolation", "session_level", "supported_isolation"]

ISOLATION_LEVELS = ("bwrap", "uid", "process")
"""From the strongest to the weakest."""


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
        from gradcam_kit.worker.syscalls import filter_fd

        seccomp = filter_fd(private_ipc=True)
    except Exception as error:  # no libseccomp, no pyseccomp
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
    :func:`choose_isolation`)."""
    if bwrap_program() is not None:
        return "bwrap"
    return "uid" if os.geteuid() == 0 else "process"



# ------------------------------------------------------------------------------------------------
# which level a grading run uses
# ------------------------------------------------------------------------------------------------
_FIXES = {
    "bwrap": ("bubblewrap is installed but cannot start a sandbox here. Usual causes: unprivileged user "
              "namespaces are disabled (as root this does not matter; otherwise `sysctl "
              "kernel.unprivileged_userns_clone=1` or `sysctl user.max_user_namespaces=15000`), a container "
              "that forbids namespaces, or libseccomp2 missing (`apt-get install libseccomp2`)."),
    "uid": ("Only root can run workers as uids of their own, and the interpreter and its virtual environment must "
            "be readable by other users (not under a folder of mode 0700 such as /root). Or install bubblewrap "
            "(`apt-get install bubblewrap`) for the stronger bwrap level."),
}


class IsolationRefused(KitError):
    """The strongest isolation level this machine supports does not work, and no weaker one was accepted."""


@dataclass(frozen=True)
class IsolationChoice:
    """The level a grading run uses, and what it was chosen against.

    Attributes
    ----------
    level : str
        The level every worker of this run uses.
    strongest : str
        The strongest level this machine supports.
    requested : str or None
        What ``--isolation`` asked for (``None``: the default, the strongest).
    reasons : dict
        Level -> why it does not work here (``None``: it works).
    """

    level: str
    strongest: str
    requested: str | None
    reasons: Mapping[str, str | None]

    @property
    def below_strongest(self) -> bool:
        return ISOLATION_LEVELS.index(self.level) > ISOLATION_LEVELS.index(self.strongest)

    def describe(self) -> str:
        """One line for the terminal, before grading and in the summary."""
        if self.below_strongest:
            return (f"isolation level: {self.level}, below the strongest this machine supports ({self.strongest}: "
                    f"{self.reasons.get(self.strongest) or 'not used'}), as asked with --isolation {self.level}")
        stronger = [level for level in ISOLATION_LEVELS[:ISOLATION_LEVELS.index(self.level)]]
        missing = f" ({stronger[0]}: {self.reasons.get(stronger[0])})" if stronger else ""
        return f"isolation level: {self.level}, the strongest this machine supports{missing}"

    def note(self) -> str:
        """The note kept in a student's results and feedback when the level is below the strongest."""
        return (f"Graded at the isolation level `{self.level}`, below the strongest this machine supports "
                f"(`{self.strongest}`), as the instructor asked (--isolation {self.level}).")

    def to_plain(self) -> dict[str, Any]:
        return {"level": self.level, "strongest": self.strongest, "requested": self.requested,
                "below_strongest": self.below_strongest}


def choose_isolation(requested: str | None = None) -> IsolationChoice:
    """The level to grade at.

    Parameters
    ----------
    requested : str, optional
        ``--isolation``: a level to use even if weaker than the strongest supported (it must work).

    Raises
    ------
    KitError
        ``requested`` is not a level, or does not work here.
    IsolationRefused
        Nothing was requested and the strongest level supported here does not work.
    """
    reasons = dict(probe_isolation())
    strongest = supported_isolation()
    if requested is not None:
        if requested not in ISOLATION_LEVELS:
            choices = ", ".join(ISOLATION_LEVELS)
            raise KitError(f"--isolation {requested}: not an isolation level (choose from {choices})")
        if reasons.get(requested) is not None:
            raise KitError(f"--isolation {requested}: that level does not work here: {reasons[requested]}. "
                           f"{_FIXES.get(requested, '')}".strip())
        return IsolationChoice(requested, strongest, requested, reasons)
    if reasons.get(strongest) is None:
        return IsolationChoice(strongest, strongest, None, reasons)
    working = next(level for level in ISOLATION_LEVELS if reasons.get(level) is None)
    raise IsolationRefused(
        f"refusing to grade below the strongest isolation level this machine supports, `{strongest}`: "
        f"{reasons[strongest]}. {_FIXES.get(strongest, '')} To grade at the weaker level that works here, "
        f"`{working}`, say so: --isolation {working} (it is then recorded in every student's results).")


def session_level(requested: str | None = None) -> tuple[str, str | None]:
    """The level of one worker session, and why it cannot be had (``None``: it can).

    ``requested`` (a test's choice) must be available here (else ``ValueError``); without it the
    level is ``$GRADCAM_ISOLATION``, chosen and tried by ``gradcam-kit grade`` (a worker that then
    fails to start is a grader fault: an unknown level gives ``process`` and the reason), else the
    strongest level available.
    """
    required = os.environ.get(ISOLATION_ENV, "").strip() if requested is None else ""
    if required:
        if required not in ISOLATION_LEVELS:
            return "process", f"{ISOLATION_ENV}={required!r} is not an isolation level"
        return required, None
    available = available_isolation()
    if requested is not None and requested not in available:
        raise ValueError(f"isolation level {requested!r} is not available here (available: {available})")
    return requested or available[0], None
