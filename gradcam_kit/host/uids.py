"""Unprivileged uids for the workers, each leased once and never again on this machine.

At the ``uid`` and ``bwrap`` levels, when the grader runs as root, every worker (or zygote) runs as
a uid of its own (:class:`UidLease`), so that parallel workers cannot read or signal one another
and nothing of a uid (a user keyring, a process, a file) carries over from one grading run to the
next.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import subprocess
import tempfile
from pathlib import Path

__all__ = ["UID_RANGE", "UidLease"]

UID_RANGE = range(0x60000000, 0x70000000)
"""The uids leased to workers, each once (no account needs to exist for them): far above the ranges
that systems give to accounts and to containers' subordinate uids."""



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
