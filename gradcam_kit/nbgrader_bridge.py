"""The bridge to ``nbgrader autograde`` and ``validate``: the hidden tests of the notebook.

Each test cell of the source notebook ends with::

    ### BEGIN HIDDEN TESTS
    from gradcam_kit.nbgrader_bridge import run_hidden_test
    run_hidden_test("test_grad_cam")
    ### END HIDDEN TESTS

:func:`run_hidden_test` runs the same judge as ``gradcam-kit grade`` (``python -m
autograder_tests``, in a subprocess that starts the sandboxed worker) on the notebook being
executed, once per notebook: the results (:class:`~gradcam_kit.judge_results.JudgeResults`) are
kept under the notebook's sha256, so the seven hidden cells cost one run. It then
passes (no output at all: nbgrader gives no credit to a test cell that writes to stderr), returns
the points for a partially passed test (nbgrader reads a cell's value as partial credit), or
raises ``AssertionError`` with the feedback for the student.

Which notebook: nbgrader executes a notebook with its folder as the current directory.
``nbgrader autograde`` first writes the sanitized copy to ``autograded/<student>/<assignment>/``
and executes that file, so the notebook is ``./TP2_GradCAM.ipynb``; should that copy be missing,
the submitted one (``submitted/<student>/<assignment>/``) is used. ``nbgrader validate`` runs in the
folder of the notebook it validates.

The judge keeps its reference arrays in ``$GRADCAM_REFERENCE_CACHE``, by default a folder of
that private cache, so that only the first notebook of a batch computes them.

Trust: under ``nbgrader autograde`` the student's code runs, unsandboxed, in the kernel that
makes these calls. It could replace this function, forge the kept results or edit the files the
judge reads. The verdict is only as trustworthy as the submission is honest; ``gradcam-kit grade``
never runs student code outside the sandboxed worker.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO

from gradcam_kit.contract import HIDDEN_CACHE_ENV, REFERENCE_CACHE_ENV, judge_timeout
from gradcam_kit.course import CONFIG_FILE, NOTEBOOK
from gradcam_kit.fsutil import kill_group, write_atomically
from gradcam_kit.judge_results import JudgeResults, JudgeResultsError

__all__ = ["run_hidden_test", "locate_notebook", "judge_results"]


# Results already computed in this process (the kernel), by key: a crash is remembered too, so
# that a failing judge is not started again by each of the seven cells.
_memo: dict[str, JudgeResults | str] = {}


class HiddenTestError(RuntimeError):
    """The hidden tests could not run (no course, no notebook, the judge failed)."""


def run_hidden_test(name: str) -> float | None:
    """Check one graded function of the notebook being executed.

    Parameters
    ----------
    name : str
        The test, e.g. ``"test_grad_cam"``.

    Returns
    -------
    None or float
        ``None`` when the test passed; the points earned when it partly passed.

    Raises
    ------
    AssertionError
        When the test failed: the message is the judge's feedback, in the student's terms.
    HiddenTestError
        When the judge could not be run (the cell then gets no credit, as for any error).
    """
    __tracebackhide__ = True  # pytest and IPython's debugger skip this frame
    root, notebook = locate_notebook()
    test = JudgeResults.of(judge_results(root, notebook)).tests.get(name)
    if test is None:
        raise HiddenTestError(f"the autograder has no test named {name!r}")
    if test.outcome == "error":
        raise HiddenTestError(f"the autograder failed on {name}: {test.feedback or 'no message'}")
    if test.passed and test.points >= test.max_points:
        return None
    if test.points > 0.0:
        return test.points
    raise AssertionError(test.feedback or f"{name} failed")


# ---------------------------------------------------------------------------------------------
def find_root(start: Path) -> Path:
    """The first folder at or above ``start`` holding ``nbgrader_config.py``."""
    for folder in (start, *start.parents):
        if (folder / CONFIG_FILE).is_file():
            return folder
    raise HiddenTestError(f"no {CONFIG_FILE} in {start} or above: the hidden tests need the course folder")


def locate_notebook(cwd: Path | None = None) -> tuple[Path, Path]:
    """The course root and the notebook that nbgrader is executing (see the module docstring)."""
    here = (cwd or Path.cwd()).resolve()
    root = find_root(here)
    candidates = [here / NOTEBOOK]
    parts = here.relative_to(root).parts
    if len(parts) == 3 and parts[0] == "autograded":
        candidates.append(root / "submitted" / parts[1] / parts[2] / NOTEBOOK)
    for candidate in candidates:
        if candidate.is_file():
            return root, candidate
    notebooks = sorted(here.glob("*.ipynb"))
    if len(notebooks) == 1:
        return root, notebooks[0]
    raise HiddenTestError(f"cannot tell which notebook is being graded: no {' or '.join(map(str, candidates))}")


def judge_fingerprint(root: Path) -> str:
    """What the results depend on besides the notebook: the course folder and what decides a grade
    (:class:`gradcam_kit.grading.fingerprint.GradingInputs`: points, setup and test cells, helper
    module, answer key, judge, weights policy), the same as ``gradcam-kit grade`` compares."""
    from gradcam_kit.course import Course
    from gradcam_kit.grading.fingerprint import GradingInputs

    return hashlib.sha256(f"{root}|{GradingInputs.of(Course(root)).digest()}".encode()).hexdigest()


def cache_dir() -> Path:
    """A private folder of kept results, made if needed.

    ``$GRADCAM_HIDDEN_CACHE`` when set, else ``<temporary folder>/gradcam-kit-hidden-<uid>``.
    """
    uid = os.getuid() if hasattr(os, "getuid") else 0
    chosen = os.environ.get(HIDDEN_CACHE_ENV, "").strip()
    folder = Path(chosen) if chosen else Path(tempfile.gettempdir()) / f"gradcam-kit-hidden-{uid}"
    folder.mkdir(mode=0o700, parents=bool(chosen), exist_ok=True)
    info = folder.lstat()
    if folder.is_symlink() or (hasattr(os, "getuid") and info.st_uid != uid):
        raise HiddenTestError(f"{folder} is not a private folder of this user")
    return folder


def judge_results(root: Path, notebook: Path) -> JudgeResults:
    """The judge's results for ``notebook``: computed once, then kept under its sha256."""
    content = notebook.read_bytes()
    key = hashlib.sha256(hashlib.sha256(content).digest() + judge_fingerprint(root).encode()).hexdigest()
    if key in _memo:
        return _checked(_memo[key])
    folder = cache_dir()
    kept = folder / f"{key}.json"
    with _Lock(folder / f"{key}.lock"):
        result: JudgeResults | str
        try:
            result = JudgeResults.from_json(kept)
        except (OSError, JudgeResultsError):
            result = _run_judge(root, content)
            if isinstance(result, JudgeResults):
                write_atomically(kept, result.to_json(), durable=False)
        _memo[key] = result
    return _checked(_memo[key])


def _checked(result: JudgeResults | str) -> JudgeResults:
    if isinstance(result, str):
        raise HiddenTestError(result)
    return result


def _run_judge(root: Path, content: bytes) -> JudgeResults | str:
    """Run the judge (``python -m autograder_tests``) on a copy of the notebook; the results, or
    why there are none."""
    timeout = judge_timeout()
    work = Path(tempfile.mkdtemp(prefix="gradcam-kit-judge-"))
    try:
        copy = work / NOTEBOOK
        copy.write_bytes(content)
        out = work / "out"
        env = dict(os.environ, MPLBACKEND="Agg")  # not the kernel's inline backend
        env.setdefault(REFERENCE_CACHE_ENV, str(cache_dir() / "references"))
        command = [sys.executable, "-m", "autograder_tests", "--out", str(out), str(copy)]
        with open(work / "judge.log", "wb") as log:
            judge = subprocess.Popen(command, cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
            status: int | None
            try:
                status = judge.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                kill_group(judge)  # the judge leads its group: its worker and zygote go with it
                status = None
            except BaseException:  # the kernel was interrupted
                kill_group(judge)
                raise
        if status is None:
            return f"the autograder did not finish within {timeout:g} s"
        tail = (work / "judge.log").read_text(errors="replace")[-2000:]
        if status not in (0, 1):
            return f"the autograder failed (exit status {status}):\n{tail}"
        try:
            return JudgeResults.from_json(out / f"{copy.stem}.json")
        except (OSError, JudgeResultsError) as error:
            return f"the autograder wrote no usable results ({error}):\n{tail}"
    finally:
        shutil.rmtree(work, ignore_errors=True)


class _Lock:
    """An exclusive lock on a file (so that two kernels grading one notebook run the judge once)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.handle: IO[str] | None = None

    def __enter__(self) -> "_Lock":
        try:
            import fcntl
        except ImportError:  # not on POSIX: no lock, at worst the judge runs twice
            return self
        handle = self.handle = open(self.path, "a")
        fcntl.flock(handle, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.handle is not None:
            self.handle.close()
