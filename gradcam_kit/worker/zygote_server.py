"""The zygote, inside the sandbox: it imports torch once and forks a fresh worker per submission.

Started by :class:`gradcam_kit.host.zygote.Zygote` as the worker's ``main`` with ``--zygote-fd
N``, in a ``bwrap`` sandbox of its own (under the system-call filter, in a new session keyring), it
reads its configuration from the control socket ``N`` (a ``SOCK_SEQPACKET`` socket: one JSON
message per packet, file descriptors passed alongside), imports the libraries
(:func:`~gradcam_kit.worker.boot.import_libraries`), says ``ready``, then serves one request at a time:

``{"op": "fork"}`` with three descriptors (request pipe, reply pipe, log file)
    fork a worker: in the child, a new session, the log as standard output and error, then
    exactly what a freshly started worker does (:func:`~gradcam_kit.worker.entry.run_worker`).
    Answers ``{"event": "forked", "pid": P}``.
``{"op": "kill", "pid": P}``
    kill that worker's process group.
``{"op": "bye"}``
    leave.

When a worker ends, the zygote kills every other process left in the sandbox, removes whatever was
written on the sandbox's writable mounts (the scratch folder, ``/tmp``, ``/dev/shm``, the POSIX
message queues, anything new elsewhere: :class:`~gradcam_kit.worker.mounts.Wiper`, which reads
them from the mount table) and every System V IPC object, and only then reports ``{"event":
"exited", "pid": P, "status": S}`` (``S`` as ``Popen.returncode``: negative for a signal). The next worker therefore
starts in the same clean sandbox as a freshly started one, and nothing of one student's code
survives into the next. If the clean-up fails, the zygote says ``{"event": "dirty"}`` and leaves;
the grader starts a new sandbox.

The zygote runs none of the students' code itself, and is not dumpable: a worker cannot read or
change its memory (no ``/proc/<pid>/mem``; ``ptrace`` is filtered anyway). A worker can still signal it (same uid);
then the sandbox ends and the grader starts a new one.
"""

from __future__ import annotations

import gc
import json
import os
import select
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable

from gradcam_kit.fsutil import kill_group
from gradcam_kit.worker.boot import import_libraries, prepare_home
from gradcam_kit.worker.mounts import Wiper

_PR_SET_DUMPABLE = 4
_PR_SET_CHILD_SUBREAPER = 36
SWEEP_SECONDS = 5.0
"""How long the zygote tries to kill a finished worker's leftover processes before giving up."""


def _prctl(option: int, value: int) -> None:
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)


class ZygoteServer:
    """Serve fork requests on ``control_fd``; ``run_worker(request_fd, reply_fd)`` is a worker's life."""

    def __init__(self, control_fd: int, run_worker: Callable[[int, int], int]) -> None:
        self.control = socket.socket(fileno=control_fd)
        self.run_worker = run_worker
        self.child: int | None = None
        self.config: dict[str, Any] = {}
        self.wiper: Wiper | None = None

    # -- messages -----------------------------------------------------------------------------
    def send(self, message: dict[str, Any]) -> None:
        self.control.send(json.dumps(message).encode())

    def receive(self) -> tuple[dict[str, Any] | None, list[int]]:
        data, fds, _, _ = socket.recv_fds(self.control, 65536, 8)
        if not data:
            return None, fds
        return json.loads(data), fds

    # -- life -----------------------------------------------------------------------------------
    def serve(self) -> int:
        config, _ = self.receive()
        if config is None:
            return 0
        self.config = config
        _prctl(_PR_SET_DUMPABLE, 0)
        _prctl(_PR_SET_CHILD_SUBREAPER, 1)
        self.wiper = Wiper(self.config["home"])  # the sandbox as it was built
        prepare_home(self.config["home"], self.config.get("font_cache"), self.config.get("font_cache_name"))
        import_libraries()
        gc.collect()
        gc.freeze()  # the collector then leaves the inherited objects alone: fewer pages copied on write
        if not self.clean():
            self.send({"event": "dirty"})
            return 1
        self.send({"event": "ready"})
        while True:
            ready, _, _ = select.select([self.control], [], [], 0.05 if self.child else None)
            if self.child is not None:
                self.reap()
            if not ready:
                continue
            message, fds = self.receive()
            op = (message or {}).get("op")
            if op == "fork" and len(fds) == 3:
                self.fork(*fds)
            else:
                for fd in fds:
                    os.close(fd)
            if op == "kill" and self.child is not None and message is not None and message.get("pid") == self.child:
                kill_group(self.child)
            elif message is None or op == "bye":
                if self.child is not None:
                    kill_group(self.child)
                self.sweep()
                return 0

    def fork(self, request_fd: int, reply_fd: int, log_fd: int) -> None:
        if self.child is not None:  # one worker at a time: the previous one is ended first
            kill_group(self.child)
            while self.child is not None:
                self.reap(block=True)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the worker
            code = 70
            try:
                os.setsid()
                self.control.close()
                os.dup2(log_fd, 1)
                os.dup2(log_fd, 2)
                os.close(log_fd)
                code = self.run_worker(request_fd, reply_fd)
            except SystemExit as leaving:
                code = leaving.code if isinstance(leaving.code, int) else 1
            except BaseException:
                import traceback

                traceback.print_exc()
            finally:
                os._exit(code)
        for fd in (request_fd, reply_fd, log_fd):
            os.close(fd)
        self.child = pid
        self.send({"event": "forked", "pid": pid})

    def reap(self, block: bool = False) -> None:
        """Collect ended processes; when the worker is among them, clean up and report it."""
        while True:
            try:
                pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.child:
                self.child = None
                if not self.clean():
                    self.send({"event": "dirty"})
                    raise SystemExit(1)
                code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
                self.send({"event": "exited", "pid": pid, "status": code})
                return

    # -- between two workers --------------------------------------------------------------------
    def clean(self) -> bool:
        """Kill every other process of the sandbox, remove what was written on its writable mounts,
        and remove the System V IPC objects (the sandbox has an IPC namespace of its own)."""
        return self.sweep() and self.wipe() and remove_ipc_objects()

    def sweep(self) -> bool:
        """Kill every process of the sandbox but this one (and the sandbox's init), and reap them."""
        deadline = time.monotonic() + SWEEP_SECONDS
        while time.monotonic() < deadline:
            try:
                os.kill(-1, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):  # nothing left that we may signal
                return True
            time.sleep(0.005)
            try:
                while os.waitpid(-1, os.WNOHANG)[0] > 0:
                    pass
            except ChildProcessError:
                pass
        return False

    def wipe(self) -> bool:
        """Remove what the workers wrote anywhere in the sandbox (:class:`~gradcam_kit.worker.mounts.Wiper`:
        the writable mounts, read from the sandbox's mount table). True when it is as it was built."""
        if self.wiper is None:
            self.wiper = Wiper(self.config["home"])
        left = self.wiper.wipe()
        if left:
            print(f"[zygote] could not clean: {', '.join(left[:5])}", file=sys.stderr, flush=True)
        return not left


_IPC_RMID = 0


def _ipc_ids(kind: str) -> list[int]:
    """The ids of the System V objects of ``kind`` (``shm``, ``sem``, ``msg``) in this IPC namespace."""
    try:
        lines = Path(f"/proc/sysvipc/{kind}").read_text().splitlines()[1:]
    except OSError:
        return []
    return [int(line.split()[1]) for line in lines if len(line.split()) > 1]


def remove_ipc_objects() -> bool:
    """Remove every System V shared memory segment, semaphore set and message queue; True when
    none is left."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    removers = {"shm": lambda ident: libc.shmctl(ident, _IPC_RMID, None),
                "sem": lambda ident: libc.semctl(ident, 0, _IPC_RMID),
                "msg": lambda ident: libc.msgctl(ident, _IPC_RMID, None)}
    for kind, remove in removers.items():
        for ident in _ipc_ids(kind):
            remove(ident)
    return not any(_ipc_ids(kind) for kind in removers)

