"""The judges' shared cache of reference values: where it is, and how a judge waits for it to fill.

The judge (``autograder_tests/_reference.py``) keeps the reference arrays it computes in a folder
given by ``--reference-cache`` or ``$GRADCAM_REFERENCE_CACHE``. ``gradcam-kit grade`` points every judge at
``grades/.reference-cache/`` and fills it once, with ``python -m autograder_tests --prepare``,
while the judges start; during that time the folder holds a :data:`PREPARING` file with the pid of
the process filling it, and a judge that misses a value waits (:func:`wait_for_preparation`) rather
than compute it too.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from gradcam_kit.contract import DEFAULT_JUDGE_TIMEOUT
from gradcam_kit.fsutil import process_alive

PREPARING = ".preparing"
POLL_SECONDS = 0.1


def wait_for_preparation(folder: Path, timeout: float = DEFAULT_JUDGE_TIMEOUT) -> None:
    """Return once nobody is filling ``folder``: no :data:`PREPARING` file, or its process is gone,
    or ``timeout`` seconds have passed."""
    marker = Path(folder) / PREPARING
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid = int(marker.read_text().strip())
        except (OSError, ValueError):
            return
        if pid == os.getpid() or not process_alive(pid):  # the preparing process itself never waits
            return
        time.sleep(POLL_SECONDS)
