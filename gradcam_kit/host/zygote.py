"""The grader's side of the zygote: one pre-started sandbox that forks the workers of a judge process.

Starting a worker costs about 2.5 s of CPU, almost all of it importing torch, torchvision and
matplotlib. At the ``bwrap`` level a judge process keeps one sandbox whose first process, the
zygote (:mod:`gradcam_kit.worker.zygote_server`), imports them once; each worker is then a fork of
it, started in a few milliseconds, in a sandbox cleaned of everything the previous worker left
(processes, files, System V IPC objects). A worker forked so gets the same ``start`` message, limits and audit hook
as a freshly started one, and :class:`ZygoteChild` offers the part of ``subprocess.Popen`` that
:class:`~gradcam_kit.host.session.WorkerSession` uses.

Only one worker lives in a zygote's sandbox at a time. A session that finds the zygote busy, or
a zygote that fails in any way, falls back to starting a worker of its own, as before; a zygote
that fails is stopped and a new one is started for the next session.

``GRADCAM_WORKER_ZYGOTE=0`` turns the zygote off (every worker is then started afresh).
"""

from __future__ import annotations

import atexit
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from gradcam_kit.contract import ZYGOTE_ENV
from gradcam_kit.fsutil import kill_group
from gradcam_kit.worker.syscalls import filter_fd

_ANSWER_SECONDS = 30.0
"""How long the zygote may take to answer a request (it may be cleaning up after a worker)."""


def zygote_enabled() -> bool:
    """Whether workers at the ``bwrap`` level are forked by a zygote (``$GRADCAM_WORKER_ZYGOTE``, default on)."""
    return os.environ.get(ZYGOTE_ENV, "1").strip() not in ("0", "no", "false", "off")


class ZygoteError(Exception):
    """The zygote did not do what was asked; it has been stopped."""


class Zygote:
    """A sandboxed zygote process and its control socket.

    Parameters
    ----------
    command : callable
        ``command(worker_args, seccomp_fd)``: the sandbox's command line running the worker's
        ``main`` with those arguments, under the system-call filter held by ``seccomp_fd``.
    env : dict
        The sandbox's environment (the workers' environment).
    config : dict
        Sent to the zygote: ``home``, ``font_cache``, ``font_cache_name``.
    startup_seconds : float
        How long the imports may take.
    lease : UidLease, optional
        The uid the sandbox runs as (released when the zygote stops).
    scratch : Path, optional
        A folder of the grader's for this zygote (removed when it stops).
    """

    def __init__(self, command: Callable[[list[str], int], list[str]], env: dict[str, str], config: dict[str, Any],
                 startup_seconds: float, lease: Any = None, scratch: Path | None = None) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._socket = ours
        self._log = tempfile.TemporaryFile()
        self.lease = lease
        self.scratch = scratch
        seccomp = -1
        try:
            seccomp = filter_fd(private_ipc=True)
            self.process = subprocess.Popen(
                command(["--zygote-fd", str(theirs.fileno())], seccomp), stdin=subprocess.DEVNULL, stdout=self._log,
                stderr=self._log, pass_fds=(theirs.fileno(), seccomp), env=env, cwd="/", start_new_session=True)
        except Exception as error:  # no bwrap, no libseccomp
            ours.close()
            self._log.close()
            raise ZygoteError(f"the zygote could not be started ({error})") from None
        finally:
            theirs.close()
            if seccomp >= 0:
                os.close(seccomp)
        self.child: ZygoteChild | None = None
        self._events: list[dict[str, Any]] = []
        try:
            self._send(config)
            self._expect("ready", startup_seconds)
        except ZygoteError:
            self.stop()
            raise

    # -- requests ---------------------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    @property
    def busy(self) -> bool:
        """A worker of this zygote is still running (or not yet reported ended)."""
        return self.child is not None and self.child.returncode is None

    def fork(self, request_fd: int, reply_fd: int, log_fd: int) -> "ZygoteChild":
        """A new worker reading ``request_fd``, answering on ``reply_fd`` and printing to ``log_fd``."""
        if self.busy:
            raise ZygoteError("the zygote is busy")
        try:
            socket.send_fds(self._socket, [json.dumps({"op": "fork"}).encode()], [request_fd, reply_fd, log_fd])
        except OSError as error:
            self.stop()
            raise ZygoteError(f"the zygote is gone ({error})") from None
        answer = self._expect("forked", _ANSWER_SECONDS)
        self.child = ZygoteChild(self, int(answer["pid"]))
        return self.child

    def kill(self, child: "ZygoteChild") -> None:
        """Kill ``child``; if the zygote does not confirm it in time, stop the whole sandbox."""
        if child.returncode is not None:
            return
        try:
            self._send({"op": "kill", "pid": child.pid})
            self.wait(child, _ANSWER_SECONDS)
        except (ZygoteError, subprocess.TimeoutExpired):
            self.stop()

    def wait(self, child: "ZygoteChild", timeout: float | None) -> int:
        """Wait until ``child`` has ended and the sandbox is clean; its status."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while child.returncode is None:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise subprocess.TimeoutExpired("zygote worker", timeout or 0)
            try:
                self._read(remaining)
            except ZygoteError:
                child.returncode = -signal.SIGKILL  # the sandbox is gone, and the worker with it
        return child.returncode

    def stop(self) -> None:
        """End the sandbox (every worker in it dies too)."""
        if self.process.poll() is None:
            kill_group(self.process, wait=None)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        if self.child is not None and self.child.returncode is None:
            self.child.returncode = -signal.SIGKILL
        self._socket.close()
        self._log.close()
        if self.lease is not None:
            self.lease.kill_all()
            self.lease.release()
            self.lease = None
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)

    def output_tail(self, size: int = 4000) -> str:
        """The end of the zygote's own output (for the grader's log when it fails)."""
        try:
            self._log.seek(0, os.SEEK_END)
            self._log.seek(max(0, self._log.tell() - size))
            return self._log.read().decode("utf-8", "replace")
        except (OSError, ValueError):
            return ""

    # -- messages ----------------------------------------------------------------------------------
    def _send(self, message: dict[str, Any]) -> None:
        try:
            self._socket.send(json.dumps(message).encode())
        except OSError as error:
            raise ZygoteError(f"the zygote is gone ({error})") from None

    def _read(self, timeout: float | None) -> None:
        """Read one message into the queue (``exited`` ones are applied to the child at once)."""
        ready, _, _ = select.select([self._socket], [], [], timeout)
        if not ready:
            return
        try:
            data = self._socket.recv(65536)
        except OSError:
            data = b""
        if not data:
            self.stop()
            raise ZygoteError(f"the zygote ended: {self.output_tail()[-500:]}")
        message = json.loads(data)
        if message.get("event") == "dirty":
            self.stop()
            raise ZygoteError("the zygote could not clean its sandbox")
        if message.get("event") == "exited" and self.child is not None and message.get("pid") == self.child.pid:
            self.child.returncode = int(message["status"])
        else:
            self._events.append(message)

    def _expect(self, event: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for index, message in enumerate(self._events):
                if message.get("event") == event:
                    return self._events.pop(index)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.stop()
                raise ZygoteError(f"the zygote did not answer ({event}) within {timeout:g} s")
            self._read(remaining)


class ZygoteChild:
    """A worker forked by a :class:`Zygote`: ``poll``, ``wait``, ``kill`` and ``returncode`` as in Popen.

    ``pid`` is its number inside the sandbox; ``returncode`` is set once the zygote has reported it
    ended and cleaned up after it (negative: the signal that ended it).
    """

    def __init__(self, zygote: Zygote, pid: int) -> None:
        self.zygote = zygote
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                self.zygote._read(0)
            except ZygoteError:
                self.returncode = -signal.SIGKILL
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        return self.zygote.wait(self, timeout)

    def kill(self) -> None:
        self.zygote.kill(self)


# ------------------------------------------------------------------------------------------------
# one zygote per sandbox layout, for the life of the process
# ------------------------------------------------------------------------------------------------
_ZYGOTES: dict[tuple, Zygote] = {}


def shared_zygote(key: tuple, start: Callable[[], Zygote]) -> Zygote:
    """The process's zygote for ``key`` (a description of the sandbox), started by ``start()`` if
    there is none or the last one died. Raises :class:`ZygoteError` if it cannot be started."""
    zygote = _ZYGOTES.get(key)
    if zygote is not None and not zygote.alive:
        zygote.stop()
        zygote = None
    if zygote is None:
        zygote = _ZYGOTES[key] = start()
    return zygote


@atexit.register
def _stop_all() -> None:
    for zygote in list(_ZYGOTES.values()):
        try:
            zygote._send({"op": "bye"})
        except ZygoteError:
            pass
        zygote.stop()
    _ZYGOTES.clear()

