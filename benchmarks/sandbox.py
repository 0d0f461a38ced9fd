"""What the worker's kernel walls cost: the system-call filter, the new session keyring, the private
message-queue mount, side by side in one run.

Run it with ``./kit bench sandbox`` (or ``.venv/bin/python benchmarks/sandbox.py``). Two measures,
each alternating the contenders, median of ``--runs``:

* **start**: a ``bwrap`` sandbox as the grader builds it, starting the worker's interpreter and
  importing its code (``--probe``), with the filter, the keyring and the mqueue mount, and without
  them (the sandbox as it was before). This is what a fresh worker or a zygote pays once.
* **calls**: inside one sandbox, a loop of cheap system calls (``os.stat``, ``os.getpid``) with the
  filter loaded and without: the filter's cost on every system call of the student's code (a
  DenseNet forward and backward pass makes few: the work is in user space).

The figures are printed as a markdown table. It is a script, not a test: nothing fails.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gradcam_kit.host.sandbox import SandboxPaths, build_command, bwrap_program
from gradcam_kit.wire.limits import Limits
from gradcam_kit.worker.syscalls import filter_fd

LOOP = ("import os, time\n"
        "started = time.perf_counter()\n"
        "for _ in range(200_000):\n"
        "    os.stat('/'); os.getpid()\n"
        "print(time.perf_counter() - started)\n")


def bare(command: list[str]) -> list[str]:
    """``command`` without the keyring launcher, the filter and the mqueue mount."""
    start = command.index(next(word for word in command if word.endswith("bwrap")))
    words = command[start:]
    out: list[str] = []
    skip = 0
    for word in words:
        if skip:
            skip -= 1
            continue
        if word == "--seccomp":
            skip = 1
            continue
        if word == "--mqueue":
            skip = 1
            continue
        out.append(word)
    return out


def timed(command: list[str], fds: tuple[int, ...] = ()) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, pass_fds=fds,
                   timeout=300)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    options = parser.parse_args()
    if bwrap_program() is None:
        print("no bubblewrap here: nothing to measure")
        return 0
    with tempfile.TemporaryDirectory() as scratch:
        helper = Path(scratch) / "tp2_utils.py"
        helper.write_text("")
        paths = SandboxPaths(Path(scratch), Path(scratch), helper, None)
        starts: dict[str, list[float]] = {"walled": [], "bare": []}
        loops: dict[str, list[float]] = {"walled": [], "bare": []}
        for _ in range(options.runs):
            fd = filter_fd()
            try:
                walled = build_command("bwrap", paths, Limits(), ["--probe"], None, seccomp_fd=fd)
                starts["walled"].append(timed(walled, (fd,)))
            finally:
                os.close(fd)
            starts["bare"].append(timed(bare(walled)))
            fd = filter_fd()
            try:
                inside = build_command("bwrap", paths, Limits(), ["--probe"], None, seccomp_fd=fd)
                python = inside.index("-B") - 2
                shell = inside[:python] + [sys.executable, "-I", "-c", LOOP]
                result = subprocess.run(shell, pass_fds=(fd,), capture_output=True, text=True, check=True)
                loops["walled"].append(float(result.stdout))
            finally:
                os.close(fd)
            result = subprocess.run(bare(shell), capture_output=True, text=True, check=True)
            loops["bare"].append(float(result.stdout))
    start_w, start_b = statistics.median(starts["walled"]), statistics.median(starts["bare"])
    loop_w, loop_b = statistics.median(loops["walled"]), statistics.median(loops["bare"])
    print("| measure | with filter, keyring, mqueue (s) | without (s) | ratio |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| start a sandboxed worker (import its code) | {start_w:.3f} | {start_b:.3f} | {start_w / start_b:.2f} |")
    print(f"| 400,000 cheap system calls inside | {loop_w:.3f} | {loop_b:.3f} | {loop_w / loop_b:.2f} |")
    print(f"(median of {options.runs} runs, alternating)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
