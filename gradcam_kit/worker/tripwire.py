"""The tripwire: an audit hook that refuses, inside the worker, what a graded function never does.

It is the only wall of the ``process`` level, and is kept at every level (installed by
:meth:`gradcam_kit.worker.runtime.Worker.prepare` after the harness imported what it needs, from
the rules of the ``start`` message: :class:`gradcam_kit.wire.messages.TripwireRules`). It is a
tripwire, not a wall: code that uses ``ctypes`` can get past it.
"""

from __future__ import annotations

import os
from typing import Any, Iterable

__all__ = ["Tripwire"]


class Tripwire:
    """An audit hook that refuses what a graded function never needs to do.

    Reading is allowed under the ``allow`` folders only (the system's folders, the interpreter, the
    scratch folder, the images...), except under the more specific ``deny`` folders (the course,
    other scratch folders): the longest matching folder decides, so the tripwire mirrors what the
    ``bwrap`` sandbox shows. Writing is allowed under the ``writable`` folders only. Starting
    processes, signalling other processes, opening network connections and reading other
    processes' ``/proc`` entries are refused. It is installed after the harness has imported what
    it needs, so it costs nothing until then.
    """

    _WRITES = ("os.remove", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.truncate", "os.utime",
               "os.chflags", "os.lchflags", "os.setxattr", "os.removexattr", "shutil.rmtree")
    _SPAWNS = ("os.exec", "os.posix_spawn", "os.spawn", "os.system", "subprocess.Popen", "os.fork",
               "os.forkpty", "pty.spawn", "os.startfile")
    _NETWORK = ("socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg")
    _WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def __init__(self, allow: Iterable[str], deny: Iterable[str], writable: Iterable[str]) -> None:
        rules = {self._real(path): False for path in deny}
        rules.update({self._real(path): True for path in allow})
        self.rules = tuple(rules.items())
        self.writable = tuple(self._real(path) for path in writable) + ("/dev/null",)

    @staticmethod
    def _real(path: Any) -> str:
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        return os.path.realpath(os.fspath(path))

    @staticmethod
    def _under(path: str, root: str) -> bool:
        return root == "/" or path == root or path.startswith(root + "/")

    def readable(self, path: str) -> bool:
        """Whether the most specific rule matching ``path`` (a real path) allows it."""
        best, verdict = -1, False
        for root, allowed in self.rules:
            if len(root) > best and self._under(path, root):
                best, verdict = len(root), allowed
        if verdict and path.startswith("/proc/"):
            head = path.split("/")[2]
            verdict = not head.isdigit() or int(head) == os.getpid()
        return verdict

    def _check_read(self, raw: Any) -> None:
        if raw is None or isinstance(raw, int):
            return
        if not self.readable(self._real(raw)):
            raise PermissionError(f"reading {raw!s} is not allowed during grading")

    def _check_write(self, raw: Any) -> None:
        if raw is None or isinstance(raw, int):
            return
        path = self._real(raw)
        if not self.readable(path) or not any(self._under(path, root) for root in self.writable):
            raise PermissionError(f"writing {raw!s} is not allowed during grading (write in your folder)")

    def __call__(self, event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = (tuple(args) + (None, None, None))[:3]
            writing = (isinstance(flags, int) and flags & self._WRITE_FLAGS) or (
                isinstance(mode, str) and any(letter in mode for letter in "wax+"))
            (self._check_write if writing else self._check_read)(path)
        elif event in ("os.listdir", "os.scandir", "os.chdir"):
            self._check_read(args[0] if args else ".")
        elif event in self._WRITES:
            self._check_write(args[0])
        elif event in ("os.rename", "os.link", "os.symlink", "shutil.copyfile", "shutil.copytree", "shutil.move"):
            self._check_read(args[0])
            self._check_write(args[1])
        elif event in self._SPAWNS:
            raise PermissionError("starting other programs or processes is not allowed during grading")
        elif event in ("os.kill", "os.killpg"):
            if args and args[0] != os.getpid():
                raise PermissionError("signalling other processes is not allowed during grading")
        elif event in self._NETWORK:
            raise PermissionError("network connections are not allowed during grading")

