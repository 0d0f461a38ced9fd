"""What a worker may have written in its sandbox, found from the sandbox's own mounts, and removed.

Used inside the ``bwrap`` sandbox by the zygote (:mod:`gradcam_kit.worker.zygote_server`) between
two workers. Nothing here is a hand-kept list of paths: the writable places are the sandbox's
writable in-memory mounts, read from ``/proc/self/mountinfo`` (``tmpfs`` and ``mqueue``: the root
of the sandbox, ``/dev``, ``/tmp``, the scratch folder, the POSIX message queues), and what must
stay is what the sandbox was built with:

* every mount point (the read-only binds of the interpreter, the virtual environment, the helper
  module, the images, which may lie under ``/tmp`` or the scratch folder) and the folders that
  hold one are left in place;
* in the *scratch* folders (the worker's home, ``/tmp``, ``/dev/shm``, ``/dev/mqueue``) everything
  else is removed;
* elsewhere on a writable mount (the sandbox's root, ``/dev``) every entry must be one that was
  there when the zygote started (:class:`Baseline`, same inode, type and mode); anything new is
  removed, and an entry that was changed makes the sandbox *dirty* (then the grader starts a new one).
"""

from __future__ import annotations

import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Baseline", "MountTable", "WRITABLE_FILESYSTEMS", "Wiper"]

WRITABLE_FILESYSTEMS = ("tmpfs", "mqueue")
"""The kinds of mount a worker may write to (in memory, made by bwrap for this sandbox)."""
SCRATCH_FOLDERS = ("/tmp", "/dev/shm", "/dev/mqueue")
"""Folders that start empty in every sandbox (besides the worker's home)."""


def _unescape(field: str) -> str:
    r"""mountinfo writes space, tab, newline and backslash as ``\040``, ``\011``, ``\012``, ``\134``."""
    out, index = [], 0
    while index < len(field):
        if field[index] == "\\" and field[index + 1:index + 4].isdigit() and len(field[index + 1:index + 4]) == 3:
            out.append(chr(int(field[index + 1:index + 4], 8)))
            index += 4
        else:
            out.append(field[index])
            index += 1
    return "".join(out)


@dataclass(frozen=True)
class Mount:
    """One line of ``/proc/self/mountinfo``."""

    point: str
    filesystem: str
    read_only: bool


class MountTable:
    """The mounts of this process's mount namespace.

    Parameters
    ----------
    text : str, optional
        The content of ``/proc/self/mountinfo`` (read when not given).
    """

    def __init__(self, text: str | None = None) -> None:
        if text is None:
            text = Path("/proc/self/mountinfo").read_text()
        self.mounts: list[Mount] = []
        for line in text.splitlines():
            before, _, after = line.partition(" - ")
            fields, tail = before.split(), after.split()
            if len(fields) < 6 or not tail:
                continue
            options = fields[5].split(",")
            self.mounts.append(Mount(_unescape(fields[4]), tail[0], "ro" in options))

    @property
    def points(self) -> frozenset[str]:
        return frozenset(mount.point for mount in self.mounts)

    @property
    def holders(self) -> frozenset[str]:
        """The folders that hold a mount point (its ancestors)."""
        return frozenset(str(parent) for point in self.points for parent in Path(point).parents)

    @property
    def writable(self) -> list[str]:
        """The mount points of the writable in-memory file systems, outermost first."""
        return sorted({mount.point for mount in self.mounts
                       if mount.filesystem in WRITABLE_FILESYSTEMS and not mount.read_only},
                      key=lambda point: (point.count("/") - (point == "/"), point))


def _identity(path: str) -> tuple[int, int] | None:
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return info.st_ino, info.st_mode


@dataclass
class Baseline:
    """The entries of the writable mounts outside the scratch folders, as the sandbox was built:
    path -> (inode, mode)."""

    entries: dict[str, tuple[int, int]]


class Wiper:
    """Removes what workers wrote in the sandbox (see the module docstring).

    Parameters
    ----------
    home : str
        The worker's scratch folder.
    table : MountTable, optional
        The sandbox's mounts (read from ``/proc/self/mountinfo`` when not given).
    """

    def __init__(self, home: str, table: MountTable | None = None) -> None:
        self.table = table or MountTable()
        self.points = self.table.points
        self.holders = self.table.holders
        self.roots = self.table.writable
        self.scratch = tuple(dict.fromkeys([str(Path(home)), *SCRATCH_FOLDERS]))
        self.baseline = Baseline(dict(self._walk_kept()))

    def _in_scratch(self, path: str) -> bool:
        return any(path == folder or path.startswith(folder + "/") for folder in self.scratch)

    def _children(self, folder: str) -> list[str]:
        try:
            names = os.listdir(folder)
        except OSError:
            return []
        return [os.path.join(folder, name) for name in names]

    def _walk_kept(self):
        """(path, identity) of every entry outside the scratch folders on a writable mount."""
        for root in self.roots:
            stack = [root]
            while stack:
                folder = stack.pop()
                for path in self._children(folder):
                    if path in self.points or self._in_scratch(path):
                        continue
                    identity = _identity(path)
                    if identity is None:
                        continue
                    yield path, identity
                    if stat.S_ISDIR(identity[1]):
                        stack.append(path)

    def wipe(self) -> list[str]:
        """Remove everything workers added. Returns what is still not as the sandbox was built (empty
        when the wipe succeeded): entries that could not be removed, and entries changed in place."""
        for root in self.roots:
            self._scan(root, remove=True)
        return [problem for root in self.roots for problem in self._scan(root, remove=False)]

    def _scan(self, folder: str, remove: bool) -> list[str]:
        """Entries under ``folder`` that are not as they were built (removed first when ``remove``)."""
        problems: list[str] = []
        for path in self._children(folder):
            if path in self.points:
                continue  # a bind, or a writable mount scanned as a root of its own
            identity = _identity(path)
            if identity is None:
                continue
            is_folder = stat.S_ISDIR(identity[1])
            if self._in_scratch(path):
                if is_folder and (path in self.holders or path in self.scratch):
                    problems += self._scan(path, remove)  # holds a bind, or is a scratch folder: emptied
                elif remove:
                    _remove(path)
                else:
                    problems.append(path)
            elif path not in self.baseline.entries:
                if remove:
                    _remove(path)
                else:
                    problems.append(path)
            elif identity != self.baseline.entries[path]:
                problems.append(path)  # changed in place: this sandbox cannot be trusted to be clean
            elif is_folder:
                problems += self._scan(path, remove)
        return problems


def _remove(path: str) -> None:
    """Delete ``path`` whatever its permissions (a worker may have made its folders read-only)."""
    try:
        info = os.lstat(path)
    except OSError:
        return
    try:
        if stat.S_ISDIR(info.st_mode):
            os.chmod(path, stat.S_IRWXU)
            for folder, folders, _ in os.walk(path):
                for name in folders:
                    try:
                        os.chmod(os.path.join(folder, name), stat.S_IRWXU, follow_symlinks=False)
                    except OSError:
                        pass
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
    except OSError:
        pass
