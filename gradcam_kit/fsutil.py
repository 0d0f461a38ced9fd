"""Files written whole or not at all, and processes ended with everything they started.

Every file the kit writes for people or for other processes (results, markers, feedback pages,
notebooks, cached arrays) goes through :func:`write_atomically`: readers see the old file or the
new one, never half of one, and a grader killed midway leaves no torn file behind. Every process
the kit ends goes through :func:`kill_group`, which kills the process group the process leads, so
that nothing it started survives it.

This module runs on both sides of the sandbox (the zygote ends its workers with it), so it imports
nothing but the standard library.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import IO, Any, Callable

__all__ = ["FILE_MODE", "kill_group", "process_alive", "write_atomically", "write_json_atomically"]


def _file_mode() -> int:
    """The mode of a new file under the current umask (``mkstemp`` alone would make it 0600)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


FILE_MODE = _file_mode()


def write_atomically(path: Path, data: bytes | str | Callable[[IO[bytes]], Any], *, durable: bool = True) -> None:
    """Write ``path`` whole, through a temporary file in the same folder renamed over it.

    Parameters
    ----------
    path : Path
        The file; its folder is created when missing.
    data : bytes, str or callable
        The content (a ``str`` is written as UTF-8), or a function that writes it to the binary
        stream it is given (``np.savez``, ``nbformat.write`` through a text wrapper...).
    durable : bool
        ``fsync`` before the rename, so that the new content survives a crash of the machine too.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            if callable(data):
                data(stream)
            else:
                stream.write(data.encode("utf-8") if isinstance(data, str) else data)
            stream.flush()
            if durable:
                os.fsync(stream.fileno())
        os.chmod(temporary, FILE_MODE)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_json_atomically(path: Path, value: Any) -> None:
    """:func:`write_atomically` of ``value`` as indented JSON (non-ASCII kept), with a final newline."""
    write_atomically(path, json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def kill_group(process: subprocess.Popen[Any] | int, wait: float | None = 10.0) -> None:
    """Kill ``process`` and its process group (SIGKILL), then collect it.

    Parameters
    ----------
    process : Popen or int
        A process started with ``start_new_session=True`` (it leads its group), or a pid.
    wait : float or None
        Seconds to wait for a ``Popen`` to be collected (``None``: do not wait). A bare pid is not
        waited for: its parent collects it.
    """
    pid = process if isinstance(process, int) else process.pid
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    if isinstance(process, int) or wait is None:
        return
    try:
        process.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        pass


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, ended but not yet collected by its parent, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
