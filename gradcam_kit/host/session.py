"""The judge's handle on one submission's worker: the session that decides.

::

    program = read_submission(submission_path, source_notebook_path)   # never raises on bad input
    with WorkerSession(program, images_dir=..., helper_module=..., limits=Limits()) as worker:
        load = worker.load()          # LoadResult(ok, defined, errors, notes, fatal, isolation, seconds)
        out = worker.call("channel_weights", np_array)                    # Outcome
        out = worker.call("grad_cam", ModelSpec("densenet121", weights="random"), image, 5,
                          LayerRef("features"))
        out = worker.probe_hooks(ModelSpec(...), "features.denseblock3", image, class_idx=5)

One worker serves every call of a submission. A worker that dies or hits a limit is replaced for
the next call; the call that failed gets the reason in ``Outcome.error`` (``"timed out after 60 s"``,
``"used more than 6.0 GB of memory"``, ``"crashed (SIGSEGV, a segmentation fault)"``...). A cell
that kills the worker while the notebook loads is skipped on the next start (its function gets the
reason, the other functions are graded); a setup cell or the start-up itself failing makes every
call fail at once with that reason.

The session decides (what to skip, when to restart, whose fault a failure is); starting a worker
is :mod:`gradcam_kit.host.launcher`'s, talking to it :mod:`gradcam_kit.host.channel`'s, and saying
why it was lost :mod:`gradcam_kit.host.postmortem`'s; whose fault a failure while loading is,
:mod:`gradcam_kit.host.blame`'s.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any, Mapping

from gradcam_kit.contract import weights_policy
from gradcam_kit.host.blame import failed_setup, grader_at_fault, not_run_message, skipped_cell_message
from gradcam_kit.host.channel import ChannelBroken
from gradcam_kit.host.isolation import session_level
from gradcam_kit.host.launcher import Launcher, RunningWorker, course_root_of, resolved_policy
from gradcam_kit.host.outcomes import LoadResult, Outcome
from gradcam_kit.host.postmortem import WorkerLost, kill_worker, log_tail, why_lost
from gradcam_kit.program import SubmissionProgram
from gradcam_kit.wire.failures import Failure
from gradcam_kit.wire.frames import LayerRef, ModelSpec, ProtocolError, map_leaves
from gradcam_kit.wire.limits import Limits
from gradcam_kit.wire.messages import (
    BYE,
    Answer,
    CallRequest,
    ExploreRequest,
    LoadAnswer,
    ProbeRequest,
    Request,
    request_to_plain,
)

__all__ = ["LayerRef", "Limits", "LoadResult", "ModelSpec", "Outcome", "WorkerSession"]

DEFAULT_LIMITS = Limits()


class WorkerSession:
    """One submission's worker: loads the notebook, answers calls, restarts when needed.

    One session per submission, used from one thread. Sessions in the same process or in parallel
    processes are independent (each leases its own uid when the grader runs as root).

    Parameters
    ----------
    program : SubmissionProgram
        From :func:`gradcam_kit.grading.notebook.read_submission`.
    images_dir : path
        The course images (bound read-only as ``TP2_images/`` next to the notebook).
    helper_module : path
        The course's ``tp2_utils.py`` (copied next to the notebook).
    limits : Limits
        Resource limits.
    isolation : {"bwrap", "uid", "process"}, optional
        Force a level (it must be available here); default: ``$GRADCAM_ISOLATION``, the level
        ``gradcam-kit grade`` chose and tried (when a worker cannot be started at that level, every
        call fails as a grader fault, with the reason), else the strongest level available.
    weights : str, optional
        The weights policy of the worker's models (default: ``$GRADCAM_WEIGHTS``, else
        ``imagenet``); ``ModelSpec(weights=None)`` means this policy.
    tripwire : bool
        Install the audit hook in the worker (tests turn it off to check the OS-level isolation).
    course_root : path, optional
        The course whose files the tripwire refuses (default: the course holding ``helper_module``).
    """

    def __init__(self, program: SubmissionProgram, images_dir: str | Path, helper_module: str | Path,
                 limits: Limits = DEFAULT_LIMITS, *, isolation: str | None = None, weights: str | None = None,
                 tripwire: bool = True, course_root: str | Path | None = None) -> None:
        self.program = program
        self.limits = limits
        self.images_dir = Path(images_dir).resolve()
        self.helper_module = Path(helper_module).resolve()
        self.isolation_level, self._unavailable = session_level(isolation)
        """The level, and why the one the grader asked for (``$GRADCAM_ISOLATION``) cannot be had here."""
        self.weights = resolved_policy(weights or weights_policy())
        self.tripwire = tripwire
        self.course_root = Path(course_root).resolve() if course_root else course_root_of(self.helper_module.parent)
        self.restarts = 0
        self.planned_restarts = 0
        """Restarts after calls with substitutes (they do not count against ``max_restarts``)."""
        self._planned_restart = False

        self._launcher = Launcher(program, self.images_dir, self.helper_module, limits, self.isolation_level,
                                  self.weights, tripwire, self.course_root)
        self._worker: RunningWorker | None = None
        self._worker_uid: int | None = None
        self._log_path: Path | None = None
        self._forked = False
        self._next_id = 0
        self._skip: dict[str, str] = {}
        self._load: LoadResult | None = None
        self._defined: dict[str, bool] = {}
        self._errors: dict[str, str] = {}
        self._fatal: str | None = None
        self._fault: Failure | None = None
        """``Failure.GRADER`` when ``_fatal`` is the grader's fault."""
        self._closed = False

    # -- context manager ------------------------------------------------------------------------
    def __enter__(self) -> "WorkerSession":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:  # a session left open: do not leave a worker behind
        try:
            self.close()
        except Exception:
            pass

    # -- public API --------------------------------------------------------------------------------
    @property
    def uid(self) -> int | None:
        """The uid leased to the last worker started (its own, or its zygote's), or ``None``: it ran
        as the grader's user (then no process limit holds), or none was started yet."""
        return self._worker_uid

    @property
    def forked(self) -> bool:
        """The current (or last) worker was forked by the zygote."""
        return self._forked

    @property
    def _process(self) -> Any:
        """The current worker's process (``Popen`` or ``ZygoteChild``), or ``None``."""
        return None if self._worker is None else self._worker.process

    @property
    def _dir(self) -> Path:
        """The session's scratch folder on the host (logs, the worker's home)."""
        return self._launcher.folder

    @property
    def _starts(self) -> int:
        """Workers started so far."""
        return self._launcher.starts

    def load(self) -> LoadResult:
        """Start the worker and run the notebook's cells (once; later calls return the same result)."""
        if self._load is not None:
            return self._load
        started = time.perf_counter()
        functions = self.program.functions
        if self.program.fatal is not None:
            self._fatal = self.program.fatal
            self._load = LoadResult(False, {name: False for name in functions}, dict(self.program.problems),
                                    list(self.program.notes), self._fatal, self.isolation_level, 0.0)
            return self._load
        if self._unavailable is not None:
            self._fatal = not_run_message(f"{self._unavailable}.")
            self._fault = Failure.GRADER
            answer = None
        else:
            answer = self._start_and_load()
        if answer is None:
            self._load = LoadResult(False, {name: False for name in functions},
                                    {name: self._fatal or "" for name in functions}, list(self.program.notes),
                                    self._fatal, self.isolation_level, time.perf_counter() - started,
                                    failure=self._fault, zygote=self.forked)
        else:
            errors = dict(answer.errors)
            self._load = LoadResult(answer.ok and not self._skip, dict(answer.defined), errors,
                                    list(self.program.notes) + list(answer.notes), None, self.isolation_level,
                                    time.perf_counter() - started, zygote=self.forked)
            setup = failed_setup(self.program, errors)
            if setup is not None:
                self._load.fatal = self._fatal = setup
                self._load.failure = self._fault = Failure.GRADER
        return self._load

    def call(self, function: str, *args: Any, substitutes: Mapping[str, str] | None = None,
             **kwargs: Any) -> Outcome:
        """Call the student's ``function`` with plain-data arguments (see the module docstring).

        ``substitutes`` maps the names of some of the student's helpers to Python source text
        defining the grader's own version of each (``torch`` and ``F`` are available to it). For
        this call only, the worker binds them in place of the student's in the notebook's global
        namespace, then restores the student's (or removes the name if the notebook had none).
        The sources travel with the request and are never written to a file; the worker is
        restarted before the next call, so that nothing the student's code did with them lasts
        (a planned restart: it does not count against ``Limits.max_restarts``).
        """
        plain: dict[str, str] = {}
        for name, source in (substitutes or {}).items():
            if not (isinstance(name, str) and name.isidentifier() and isinstance(source, str)):
                raise TypeError("substitutes maps function names to source text (str -> str)")
            plain[name] = source
        request = CallRequest(function, list(self._resolve(args)), self._resolve(kwargs), plain)
        if not plain:
            return self._request(function, request)
        try:
            return self._request(function, request)
        finally:
            self._planned_restart = self._starts > 0
            if self._worker is not None:
                self._stop(polite=False)

    def probe_hooks(self, model_spec: ModelSpec, layer_name: str, image: Any, class_idx: int,
                    function: str = "register_gradcam_hooks") -> Outcome:
        """Check ``register_gradcam_hooks`` on a fresh model, step by step.

        Registers the hooks on ``layer_name``, runs ``scores = model(image)`` and
        ``scores[:, class_idx].sum().backward()``, reads ``store["activations"]`` and
        ``store["gradients"]``, then removes every handle. ``Outcome.value`` holds ``returned``
        (the description of what the function returned), ``hooks_added`` (module name -> hook
        kinds: ``forward``, ``forward_pre``, ``backward``, ``full_backward``, ``full_backward_pre``),
        ``activations``, ``gradients`` (tensor descriptions), ``removed`` and ``step`` (where it
        failed: ``register``, ``returned``, ``forward``, ``backward``, ``store``, ``remove``; or
        ``None``; also ``Outcome.student_error.step``); ``observations["hooks_left"]`` lists the
        hooks left after removal. ``function`` names another function of the notebook with the same
        contract (for tests).
        """
        request = ProbeRequest(function, self._resolve(model_spec), str(layer_name), image, int(class_idx))
        return self._request(function, request)

    def run_cell(self, grade_id: str, code: str, source: str) -> Outcome:
        """Run an exploration cell of the notebook in the worker, after its setup and graded cells
        and the exploration cells run before it, under the limits of a call (for formgrader; see
        :mod:`gradcam_kit.grading.exploration`).

        ``Outcome.value`` is ``{"outputs": [...]}``: what the cell printed and the figures it drew
        (:mod:`gradcam_kit.worker.exploration`), also when it failed (``ok`` false, ``error`` and
        ``failure`` as for a call). A worker lost on the way gives no outputs.
        """
        return self._request(str(grade_id), ExploreRequest(str(grade_id), str(code), str(source)))

    def output_tail(self, max_chars: int = 4000) -> str:
        """The end of what the student's code printed in the current (or last) worker."""
        return log_tail(self._log_path, max_chars)

    def close(self) -> None:
        """Stop the worker and delete its scratch folder (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._stop(polite=True)
        self._launcher.close()

    # -- requests -------------------------------------------------------------------------------
    def _resolve(self, value: Any) -> Any:
        """Give ``ModelSpec(weights=None)`` the session's policy, so judge and worker agree."""
        return map_leaves(value, lambda item: ModelSpec(item.arch, self.weights, item.head)
                          if isinstance(item, ModelSpec) and item.weights is None else item)

    def _unavailable_outcome(self, function: str) -> Outcome | None:
        if self._fatal is not None:
            return Outcome(False, error=self._fatal, failure=self._fault or Failure.UNAVAILABLE)
        if not self._defined.get(function, True):
            return Outcome(False, error=self._errors.get(function) or f"`{function}` is not available",
                           failure=Failure.UNAVAILABLE)
        return None

    def _request(self, function: str, request: Request) -> Outcome:
        self.load()
        refused = self._unavailable_outcome(function)
        if refused is not None:
            return refused
        if self._worker is None and self._start_and_load() is None:
            return Outcome(False, error=self._fatal, failure=self._fault or Failure.UNAVAILABLE)
        refused = self._unavailable_outcome(function)
        if refused is not None:
            return refused
        self._next_id += 1
        plain = request_to_plain(request)
        plain["id"] = self._next_id
        started = time.perf_counter()
        try:
            self._send(plain)
            answer = self._receive_answer(self._next_id)
        except WorkerLost as lost:
            self._stop(polite=False)
            return Outcome(False, error=lost.reason, failure=lost.kind, seconds=time.perf_counter() - started)
        if answer.restart:
            self._stop(polite=True)
        return Outcome.from_answer(answer)

    # -- worker life ------------------------------------------------------------------------------
    def _start(self) -> None:
        """Start a fresh worker (fresh scratch folder) and send it the ``start`` message."""
        worker = self._launcher.start(self._skip)
        self._worker, self._worker_uid, self._log_path = worker, worker.uid, worker.log_path
        self._forked = worker.forked
        self._send(worker.start.to_plain(), timeout=self.limits.startup_seconds)

    def _start_and_load(self) -> LoadAnswer | None:
        """Start a worker and load the notebook, skipping cells that killed earlier workers.

        Returns the worker's load answer, or ``None`` (then ``self._fatal`` says why).
        """
        functions = set(self.program.functions)
        while True:
            if self.restarts > self.limits.max_restarts:
                self._fatal = (f"The grader had to restart your code more than {self.limits.max_restarts} times "
                               "(crashes or limits), so the remaining tests were not run.")
                return None
            if self._starts:
                if self._planned_restart:
                    self.planned_restarts += 1
                else:
                    self.restarts += 1
                self._planned_restart = False
            progress: list[str] = []
            expected = [cell.grade_id for cell in self.program.cells if cell.grade_id not in self._skip]
            try:
                self._start()
                assert self._worker is not None
                try:
                    loaded = self._worker.channel.receive_load(expected, progress, self.limits.startup_seconds,
                                                               self.limits.call_seconds)
                except ChannelBroken as broken:
                    raise self._lost(broken) from None
                if loaded is None:  # the worker failed before the first cell: the grader's fault
                    raise WorkerLost(f"could not start ({self._worker.channel.failure})", Failure.GRADER)
                if loaded.restart:
                    cell = loaded.failed_cell
                    reason = loaded.failed_reason or f"it hit a limit ({loaded.restart})"
                    self._stop(polite=False)
                    if cell in functions and cell not in self._skip:
                        self._skip[cell] = skipped_cell_message(cell, reason, hint=False)
                        continue
                    self._fatal = not_run_message(reason)
                    # (an honest worker always names the cell it stopped in)
                    self._fault = Failure.GRADER if cell is not None and grader_at_fault(self.program, cell) else None
                    return None
                self._defined = dict(loaded.defined)
                self._errors = dict(loaded.errors)
                return loaded
            except WorkerLost as lost:
                self._stop(polite=False)
                current = progress[-1] if progress else None
                if current in functions and current not in self._skip:
                    self._skip[current] = skipped_cell_message(current, lost.reason, hint=True)
                    continue
                where = f"while running the cell `{current}`" if current else "while starting"
                self._fatal = not_run_message(f"it {lost.reason} {where}.")
                if grader_at_fault(self.program, current):
                    self._fault = Failure.GRADER
                return None

    def _stop(self, polite: bool) -> None:
        worker = self._worker
        if worker is not None:
            if polite and worker.process.poll() is None:
                try:
                    self._send(BYE, timeout=2.0)
                    worker.process.wait(timeout=2.0)
                except (WorkerLost, subprocess.TimeoutExpired, OSError):
                    pass
            kill_worker(worker.process)
            worker.channel.close()
        self._worker = None
        self._launcher.after_worker()

    # -- talking to the worker --------------------------------------------------------------------
    def _send(self, message: dict[str, Any], timeout: float | None = None) -> None:
        assert self._worker is not None
        try:
            self._worker.channel.send(message, timeout if timeout is not None else self.limits.call_seconds)
        except ChannelBroken as broken:
            broken.timeout = timeout
            raise self._lost(broken) from None

    def _receive_answer(self, request_id: int) -> Answer:
        """The worker's answer to request ``request_id`` (building models and decoding arguments
        may take ``startup_seconds``; the student's code, ``call_seconds``)."""
        assert self._worker is not None
        try:
            plain = self._worker.channel.receive_answer(request_id, self.limits.startup_seconds,
                                                        self.limits.call_seconds)
            return Answer.from_plain(plain)
        except ChannelBroken as broken:
            raise self._lost(broken) from None
        except ProtocolError as error:
            raise self._lost(ChannelBroken(False, garbled=str(error))) from None

    def _lost(self, broken: ChannelBroken) -> WorkerLost:
        """Stop the worker and say, in the student's terms, why it was lost."""
        process = self._process
        # bwrap reports its child's signal as 128 + n; the zygote, exactly
        shifted = self.isolation_level == "bwrap" and not (self._worker is not None and self._worker.forked)
        return why_lost(broken, process, self.limits, self._log_path, shifted)
