"""The worker's command line: ``python -m gradcam_kit.worker`` (and the zygote's, with ``--zygote-fd``).

The grader starts it with the kit's code staged by :mod:`gradcam_kit.host.worker_code` first on
``sys.path``, inside the sandbox of :mod:`gradcam_kit.host.sandbox` (in a new session keyring, under
the system-call filter of :mod:`gradcam_kit.worker.syscalls`). It talks to the grader over two pipes
given by number (``--request-fd``, ``--reply-fd``) in the frames of :mod:`gradcam_kit.wire.frames`;
its standard output and error go to a capped log: the student's prints never mix with the protocol.

Start-up, in this order, before any of the student's code runs (:func:`run_worker`):

1. switch to the unprivileged uid given by ``--uid``/``--gid`` (when started as root);
2. read the ``start`` message; set the resource limits (address space, CPU, file size, processes,
   no core dumps);
3. import torch, torchvision and matplotlib (a worker forked by the zygote,
   :mod:`gradcam_kit.worker.zygote_server`, has them already) and a private copy of the helper
   module, which the models are built with (the student's ``tp2_utils`` may be monkeypatched);
4. at the ``uid`` and ``process`` levels, load the system-call filter (bubblewrap applies it to the
   whole sandbox at the ``bwrap`` level); install the audit hook (the tripwire);
5. run the setup cells and the graded cells (:mod:`gradcam_kit.worker.loading`), then answer
   requests (:class:`gradcam_kit.worker.runtime.Worker`).
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import sys
from pathlib import Path

import numpy as np

from gradcam_kit.wire.frames import read_frame
from gradcam_kit.wire.messages import StartMessage, failed_event
from gradcam_kit.worker.boot import apply_limits, drop_privileges
from gradcam_kit.worker.failures import exception_message
from gradcam_kit.worker.runtime import Worker
from gradcam_kit.worker.zygote_server import ZygoteServer

__all__ = ["main", "run_worker"]


def main(argv: list[str] | None = None) -> int:
    """Run a worker (``--request-fd``, ``--reply-fd``) or the zygote (``--zygote-fd``); ``--probe``
    only checks that the worker's code imports, and prints where it was imported from."""
    parser = argparse.ArgumentParser(prog="gradcam_kit.worker")
    parser.add_argument("--request-fd", type=int)
    parser.add_argument("--reply-fd", type=int)
    parser.add_argument("--zygote-fd", type=int, help="serve as the zygote on this control socket")
    parser.add_argument("--uid", type=int)
    parser.add_argument("--gid", type=int)
    parser.add_argument("--probe", action="store_true", help="check that the worker's code imports, and leave")
    options = parser.parse_args(argv)
    if options.probe:
        import gradcam_kit.worker.models  # noqa: F401 - imported lazily by real workers

        print(Path(sys.modules["gradcam_kit"].__file__ or "").parent)
        return 0
    if options.uid is not None:
        drop_privileges(options.uid, options.gid if options.gid is not None else options.uid)
    faulthandler.enable(file=sys.stderr)
    if options.zygote_fd is not None:
        return ZygoteServer(options.zygote_fd, run_worker).serve()
    if options.request_fd is None or options.reply_fd is None:
        parser.error("--request-fd and --reply-fd are required")
    return run_worker(options.request_fd, options.reply_fd)


def run_worker(request_fd: int, reply_fd: int) -> int:
    """Read the ``start`` message, load the notebook and answer calls until ``bye``."""
    os.set_inheritable(request_fd, False)
    os.set_inheritable(reply_fd, False)
    start = StartMessage.from_plain(read_frame(request_fd))
    if start.notebook:  # forked by the zygote, whose sandbox does not bind the submission: a copy, written
        # before the limits (a notebook with outputs may be larger than what the student may write)
        data = np.asarray(start.notebook["data"], dtype=np.uint8).tobytes()
        Path(start.workdir, start.notebook["name"]).write_bytes(data)
    apply_limits(start.limits, own_uid=start.own_uid)
    worker = Worker(request_fd, reply_fd, start)
    try:
        worker.prepare()
    except BaseException as error:
        worker.send(failed_event(f"{type(error).__name__}: {exception_message(error)}"))
        return 3
    answer = worker.load()
    worker.send(answer)
    if answer.restart:
        return 0
    worker.serve()
    return 0
