"""The judge's handle on one submission's worker.

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
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from gradcam_kit.contract import ISOLATION_ENV
from gradcam_kit.contract import weights_policy
from gradcam_kit.grading.notebook import SubmissionProgram
from gradcam_kit.grading.protocol import FrameReader, LayerRef, ModelSpec, ProtocolError, map_leaves, pack_frame
from gradcam_kit.grading.sandbox import (
    ISOLATION_LEVELS,
    Limits,
    SandboxPaths,
    UidLease,
    available_isolation,
    build_command,
    code_folder,
    describe_bytes,
    hub_dir,
    prepare_host_home,
    python_roots,
    worker_environment,
)
from gradcam_kit.grading.syscalls import filter_fd
from gradcam_kit.grading.zygote import Zygote, ZygoteChild, ZygoteError, shared_zygote, zygote_enabled

__all__ = ["LayerRef", "Limits", "LoadResult", "ModelSpec", "Outcome", "WorkerSession"]

_KILL_WAIT = 10.0
SYSTEM_FOLDERS = ("/usr", "/etc", "/lib", "/lib32", "/lib64", "/bin", "/sbin", "/proc", "/sys", "/dev")
"""Folders the worker may read at every level (they are bound read-only in the sandbox)."""
_MEMORY_MARKERS = ("MemoryError", "bad_alloc", "Cannot allocate memory", "can't allocate memory",
                   "out of memory")
_SIGNAL_WORDS = {
    signal.SIGSEGV: "crashed (SIGSEGV, a segmentation fault)",
    signal.SIGBUS: "crashed (SIGBUS, a bus error)",
    signal.SIGILL: "crashed (SIGILL, an illegal instruction)",
    signal.SIGFPE: "crashed (SIGFPE, an arithmetic error)",
    signal.SIGABRT: "crashed (SIGABRT, aborted)",
}


@dataclass
class Outcome:
    """What one call of a student's function gave.

    Attributes
    ----------
    ok : bool
        The function returned (``value`` holds what); otherwise ``error`` says why not.
    value : Any
        Plain data: numbers, strings, lists, tuples, dicts, and descriptions
        (``{"kind": "tensor", "array", "dtype", "device", "requires_grad", "shape", "type"}``,
        ``{"kind": "ndarray", ...}``, ``{"kind": "numpy_scalar", ...}``,
        ``{"kind": "figure", "axes": [{"title", "n_images"}, ...], "suptitle"}``,
        ``{"kind": "object", "type": ...}``).
    error : str or None
        For the student: the exception and the line of their cell, or the limit that was hit.
    observations : dict
        After a call with a model: ``hooks_left`` (names of the modules still carrying hooks, the
        root being ``"<model>"``), ``training``, ``weights_changed``, ``buffers_changed``.
    failure : str or None
        The kind of failure: ``exception``, ``exit``, ``unavailable``, ``timeout``, ``cpu``,
        ``memory``, ``output``, ``processes``, ``crash``, ``result``, ``lost``, ``grader``,
        ``wrong_return``.
    seconds : float
        Time spent in the student's code (or until the failure).
    """

    ok: bool
    value: Any = None
    error: str | None = None
    observations: dict[str, Any] = field(default_factory=dict)
    failure: str | None = None
    seconds: float = 0.0


@dataclass
class LoadResult:
    """What loading the notebook in the worker gave.

    Attributes
    ----------
    ok : bool
        Every graded function is defined and every cell ran without error.
    defined : dict
        Function name -> whether it can be called.
    errors : dict
        Function name (or setup cell id) -> why it cannot be called / why the cell failed.
    notes : list of str
        Remarks for the student that cost no points.
    fatal : str or None
        Why nothing can be called at all.
    isolation : str
        The isolation level of the worker.
    seconds : float
        Wall-clock time of the load (worker start-up included).
    failure : str or None
        ``"grader"`` when ``fatal`` is the grader's own fault (the worker could not be started, or
        failed before any of the student's code ran): the student must not be charged for it.
    zygote : bool
        The worker was forked by the zygote (see :mod:`gradcam_kit.grading.zygote`).
    """

    ok: bool
    defined: dict[str, bool]
    errors: dict[str, str]
    notes: list[str] = field(default_factory=list)
    fatal: str | None = None
    isolation: str = ""
    seconds: float = 0.0
    failure: str | None = None
    zygote: bool = False


class _WorkerLost(Exception):
    def __init__(self, reason: str, kind: str) -> None:
        super().__init__(reason)
        self.reason, self.kind = reason, kind


@lru_cache(maxsize=1)
def _font_cache() -> tuple[Path, str] | None:
    """This process's matplotlib font list (built once if needed), copied into each worker."""
    try:
        import matplotlib
        from matplotlib import font_manager

        name = f"fontlist-v{font_manager.FontManager.__version__}.json"
        path = Path(matplotlib.get_cachedir()) / name
        return (path, name) if path.is_file() else None
    except Exception:  # noqa: BLE001 - no matplotlib, an unwritable cache: the worker builds its own
        return None


def _course_root_of(path: Path) -> Path | None:
    from gradcam_kit.course import CourseNotFound, find_course_root

    try:
        return find_course_root(path)
    except CourseNotFound:
        return None


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
                 limits: Limits = Limits(), *, isolation: str | None = None, weights: str | None = None,
                 tripwire: bool = True, course_root: str | Path | None = None) -> None:
        self.program = program
        self.limits = limits
        self.images_dir = Path(images_dir).resolve()
        self.helper_module = Path(helper_module).resolve()
        required = os.environ.get(ISOLATION_ENV, "").strip() if isolation is None else ""
        self._unavailable: str | None = None
        """Why the level the grader asked for (``$GRADCAM_ISOLATION``) cannot be had here."""
        if required:  # chosen (and tried) by the grader: a worker that then fails to start is a grader fault
            if required not in ISOLATION_LEVELS:
                self._unavailable = f"{ISOLATION_ENV}={required!r} is not an isolation level"
            self.isolation_level: str = required if required in ISOLATION_LEVELS else "process"
        else:
            available = available_isolation()
            if isolation is not None and isolation not in available:
                raise ValueError(f"isolation level {isolation!r} is not available here (available: {available})")
            self.isolation_level = isolation or available[0]
        policy = weights or weights_policy()
        if policy not in ("imagenet", "random"):
            policy = str(Path(policy).expanduser().resolve())
        self.weights = policy
        self.tripwire = tripwire
        self.course_root = Path(course_root).resolve() if course_root else _course_root_of(self.helper_module.parent)
        self.restarts = 0
        self.planned_restarts = 0
        """Restarts after calls with substitutes (they do not count against ``max_restarts``)."""
        self._planned_restart = False

        self._dir = Path(tempfile.mkdtemp(prefix="gradcam-worker-"))
        self._lease: UidLease | None = None
        self._use_zygote = self.isolation_level == "bwrap" and zygote_enabled()
        """Fork the workers from the process's zygote (see :mod:`gradcam_kit.grading.zygote`)."""
        self._process: subprocess.Popen[bytes] | ZygoteChild | None = None
        self._worker_uid: int | None = None
        self._request_fd = -1
        self._reply_fd = -1
        self._reader = FrameReader(limits.result_bytes + 2**20)
        self._inbox: list[Any] = []
        self._log_path: Path | None = None
        self._starts = 0
        self._next_id = 0
        self._skip: dict[str, str] = {}
        self._load: LoadResult | None = None
        self._defined: dict[str, bool] = {}
        self._errors: dict[str, str] = {}
        self._fatal: str | None = None
        self._fault: str | None = None
        """``"grader"`` when ``_fatal`` is the grader's fault."""
        self._closed = False
        self._forked = False

    # -- context manager ------------------------------------------------------------------------
    def __enter__(self) -> "WorkerSession":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:  # a session left open: do not leave a worker behind
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass

    # -- public API --------------------------------------------------------------------------------
    @property
    def uid(self) -> int | None:
        """The uid leased to the last worker started (its own, or its zygote's), or ``None``: it ran
        as the grader's user (then no process limit holds), or none was started yet."""
        return self._worker_uid

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
            self._fatal, self._fault = f"The grader could not run your notebook: {self._unavailable}.", "grader"
            answer = None
        else:
            answer = self._start_and_load()
        if answer is None:
            self._load = LoadResult(False, {name: False for name in functions},
                                    {name: self._fatal or "" for name in functions}, list(self.program.notes),
                                    self._fatal, self.isolation_level, time.perf_counter() - started,
                                    failure=self._fault, zygote=self.forked)
        else:
            errors = dict(answer["errors"])
            self._load = LoadResult(bool(answer["ok"]) and not self._skip, dict(answer["defined"]), errors,
                                    list(self.program.notes) + list(answer["notes"]), None, self.isolation_level,
                                    time.perf_counter() - started, zygote=self.forked)
            setup = self._failed_setup(errors)
            if setup is not None:
                self._load.fatal = self._fatal = setup
                self._load.failure = self._fault = "grader"
        return self._load

    @property
    def forked(self) -> bool:
        """The current (or last) worker was forked by the zygote."""
        return isinstance(self._process, ZygoteChild) or self._forked

    def _student_cell_before(self, grade_id: str) -> bool:
        """Whether a cell of the student's runs before the cell ``grade_id`` (a setup cell)."""
        for cell in self.program.cells:
            if cell.grade_id == grade_id:
                return False
            if cell.grade_id in self.program.functions:
                return True
        return False

    def _failed_setup(self, errors: Mapping[str, str]) -> str | None:
        """Why the notebook's setup failed before any of the student's cells ran (the setup cells are
        the source notebook's own: their failure is the grader's), or ``None``."""
        for cell in self.program.cells:
            if cell.grade_id in self.program.functions:
                return None
            if cell.grade_id in errors:
                return f"The grader could not prepare your notebook: {errors[cell.grade_id]}"
        return None

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
        request: dict[str, Any] = {"op": "call", "function": function, "args": list(self._resolve(args)),
                                   "kwargs": self._resolve(kwargs)}
        if substitutes:
            plain = {}
            for name, source in substitutes.items():
                if not (isinstance(name, str) and name.isidentifier() and isinstance(source, str)):
                    raise TypeError("substitutes maps function names to source text (str -> str)")
                plain[name] = source
            request["substitutes"] = plain
            try:
                return self._request(function, request)
            finally:
                self._planned_restart = self._starts > 0
                if self._process is not None:
                    self._stop(polite=False)
        return self._request(function, request)

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
        ``None``); ``observations["hooks_left"]`` lists the hooks left after removal. ``function``
        names another function of the notebook with the same contract (for tests).
        """
        request = {"op": "probe", "function": function, "model": self._resolve(model_spec),
                   "layer": str(layer_name), "image": image, "class_idx": int(class_idx)}
        return self._request(function, request)

    # -- exploration cells (for formgrader; see gradcam_kit/grading/exploration.py) --------------------
    def run_cell(self, grade_id: str, code: str, source: str) -> Outcome:
        """Run an exploration cell of the notebook in the worker, after its setup and graded cells
        and the exploration cells run before it, under the limits of a call.

        ``Outcome.value`` is ``{"outputs": [...]}``: what the cell printed and the figures it drew
        (:mod:`gradcam_kit.grading.exploration_runtime`), also when it failed (``ok`` false,
        ``error`` and ``failure`` as for a call). A worker lost on the way gives no outputs.
        """
        request = {"op": "explore", "grade_id": str(grade_id), "code": str(code), "source": str(source)}
        return self._request(str(grade_id), request)

    def output_tail(self, max_chars: int = 4000) -> str:
        """The end of what the student's code printed in the current (or last) worker."""
        if self._log_path is None or not self._log_path.exists():
            return ""
        with open(self._log_path, "rb") as log:
            log.seek(max(0, self._log_path.stat().st_size - max_chars))
            return log.read().decode("utf-8", "replace")

    def close(self) -> None:
        """Stop the worker and delete its scratch folder (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._stop(polite=True)
        if self._lease is not None:
            self._lease.release()
        shutil.rmtree(self._dir, ignore_errors=True)

    # -- requests -------------------------------------------------------------------------------
    def _resolve(self, value: Any) -> Any:
        """Give ``ModelSpec(weights=None)`` the session's policy, so judge and worker agree."""
        return map_leaves(value, lambda item: ModelSpec(item.arch, self.weights, item.head)
                          if isinstance(item, ModelSpec) and item.weights is None else item)

    def _request(self, function: str, request: dict[str, Any]) -> Outcome:
        self.load()
        if self._fatal is not None:
            return Outcome(False, error=self._fatal, failure=self._fault or "unavailable")
        if not self._defined.get(function, True):
            return Outcome(False, error=self._errors.get(function) or f"`{function}` is not available",
                           failure="unavailable")
        if self._process is None and self._start_and_load() is None:
            return Outcome(False, error=self._fatal, failure=self._fault or "unavailable")
        if not self._defined.get(function, True):
            return Outcome(False, error=self._errors.get(function) or f"`{function}` is not available",
                           failure="unavailable")
        self._next_id += 1
        request["id"] = self._next_id
        started = time.perf_counter()
        try:
            self._send(request)
            answer = self._receive_answer(request["id"])
        except _WorkerLost as lost:
            self._stop(polite=False)
            return Outcome(False, error=lost.reason, failure=lost.kind, seconds=time.perf_counter() - started)
        if answer.get("restart"):
            self._stop(polite=True)
        return Outcome(bool(answer.get("ok")), answer.get("value"), answer.get("error"),
                       dict(answer.get("observations") or {}), answer.get("failure"),
                       float(answer.get("seconds") or 0.0))

    # -- worker life ------------------------------------------------------------------------------
    def _paths(self) -> SandboxPaths:
        read_only: list[Path] = []
        checkpoints = hub_dir() / "checkpoints"
        if checkpoints.is_dir():
            read_only.append(checkpoints)
        if self.weights not in ("imagenet", "random"):
            read_only.append(Path(self.weights))
        font = _font_cache()
        font_copy = None
        if font is not None:  # a copy the worker's uid can read (the original may sit in /root)
            font_copy = self._dir / "fontlist.json"
            if not font_copy.exists():
                shutil.copyfile(font[0], font_copy)
                font_copy.chmod(0o644)
        submission = self.program.submission_path.resolve()  # bwrap binds it from cwd "/"
        return SandboxPaths(self._dir / "home", self.images_dir, self.helper_module,
                            submission if submission.is_file() else None,
                            tuple(read_only), font_copy)

    def _tripwire_config(self, paths: SandboxPaths) -> dict[str, list[str]] | None:
        """The audit hook's rules: what the ``bwrap`` sandbox would show, and no more."""
        if not self.tripwire:
            return None
        level = self.isolation_level
        home = paths.home(level)
        allow = [*SYSTEM_FOLDERS, *(str(root) for root in python_roots()),
                 str(self.images_dir), home, code_folder(level),
                 *(str(path) for path in paths.read_only)]
        deny = [str(self.program.source_path.resolve().parent), str(Path.home()),
                str(self.program.submission_path.resolve().parent)]
        if self.course_root is not None:
            deny.append(str(self.course_root))
        writable = [home]
        if level == "bwrap":
            allow.append("/tmp")
            writable.append("/tmp")
        else:
            deny.append(tempfile.gettempdir())
        return {"allow": allow, "deny": deny, "writable": writable}

    def _zygote(self, paths: SandboxPaths) -> Zygote | None:
        """This process's zygote for this session's sandbox (started at first use), or ``None``
        when it cannot be had (then the session starts its workers itself, for good) or is busy."""
        font = _font_cache()
        key = ("bwrap", str(paths.images_dir), str(paths.helper_module), paths.read_only, self.weights,
               self.limits.scratch_bytes, font)

        def start() -> Zygote:
            scratch = Path(tempfile.mkdtemp(prefix="gradcam-zygote-"))
            font_copy = None
            if font is not None:
                font_copy = scratch / "fontlist.json"
                shutil.copyfile(font[0], font_copy)
                font_copy.chmod(0o644)
            layout = SandboxPaths(scratch, paths.images_dir, paths.helper_module, None, paths.read_only, font_copy)
            lease = UidLease() if os.geteuid() == 0 else None
            config = {"home": layout.home("bwrap"), "font_cache": layout.font_cache_inside("bwrap"),
                      "font_cache_name": font[1] if font else None}
            env = worker_environment("bwrap", layout, self.weights, hub_dir().parent if hub_dir().is_dir() else None)
            try:
                return Zygote(lambda args, seccomp: build_command("bwrap", layout, self.limits, args,
                                                                  drop_to=lease.uid if lease else None,
                                                                  seccomp_fd=seccomp),
                              env, config, self.limits.startup_seconds, lease, scratch)
            except BaseException:
                if lease is not None:
                    lease.release()
                shutil.rmtree(scratch, ignore_errors=True)
                raise

        try:
            zygote = shared_zygote(key, start)
        except (ZygoteError, OSError, RuntimeError) as error:
            print(f"[worker] no zygote ({error}); starting each worker afresh", file=sys.stderr)
            self._use_zygote = False
            return None
        return None if zygote.busy else zygote  # busy: another session of this process has it

    def _notebook_copy(self) -> dict[str, Any] | None:
        """The submission's bytes, for a worker whose sandbox does not bind it (a forked one)."""
        path = self.program.submission_path
        if not path.is_file():
            return None
        return {"name": path.name, "data": np.frombuffer(path.read_bytes(), dtype=np.uint8)}

    def _start_message(self, paths: SandboxPaths, level: str, own_uid: bool,
                       notebook: dict[str, Any] | None = None) -> dict[str, Any]:
        font = _font_cache()
        return {
            "op": "start",
            "limits": self.limits.to_plain(),
            "own_uid": own_uid,
            "home": paths.home(level),
            "workdir": paths.workdir(level),
            "helper_name": self.helper_module.name,
            "font_cache": paths.font_cache_inside(level),
            "font_cache_name": font[1] if font else None,
            "tripwire": self._tripwire_config(paths),
            "syscall_filter": level != "bwrap",  # bwrap applies it to the whole sandbox
            "program": self.program.to_plain(),
            "skip": dict(self._skip),
            "notebook": notebook,
        }

    def _start(self) -> None:
        """Start a fresh worker (fresh scratch folder) and send it the program: forked by the
        zygote when there is one, else a process of its own."""
        level = self.isolation_level
        paths = self._paths()
        zygote = self._zygote(paths) if self._use_zygote else None
        if zygote is not None:
            try:
                self._connect(paths, lambda request, reply, log: zygote.fork(request, reply, log.fileno()),
                              uid=zygote.lease.uid if zygote.lease is not None else None,
                              notebook=self._notebook_copy())
                self._forked = True
                return
            except ZygoteError as error:
                print(f"[worker] the zygote failed ({error}); starting the worker afresh", file=sys.stderr)
        if self._lease is None and os.geteuid() == 0 and level in ("bwrap", "uid"):
            self._lease = UidLease()
            os.chmod(self._dir, 0o711)
        uid = self._lease.uid if self._lease is not None else None
        if self._lease is not None:
            self._lease.kill_all()
        prepare_host_home(level, paths, uid if level == "uid" else None)
        popen: dict[str, Any] = {}
        if level == "uid" and uid is not None:
            popen = {"user": uid, "group": uid, "extra_groups": []}
        env = worker_environment(level, paths, self.weights, hub_dir().parent if hub_dir().is_dir() else None)

        def spawn(request: int, reply: int, log: Any) -> subprocess.Popen[bytes]:
            try:
                seccomp = filter_fd(private_ipc=True) if level == "bwrap" else None
            except Exception as error:  # noqa: BLE001 - libseccomp missing or broken
                raise _WorkerLost(f"could not be started (no system-call filter: {error})", "grader") from None
            command = build_command(level, paths, self.limits, ["--request-fd", str(request), "--reply-fd", str(reply)],
                                    drop_to=uid if level == "bwrap" else None, seccomp_fd=seccomp)
            fds = (request, reply) if seccomp is None else (request, reply, seccomp)
            try:
                return subprocess.Popen(
                    command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, pass_fds=fds, env=env,
                    cwd=paths.workdir(level) if level != "bwrap" else "/", start_new_session=True, **popen)
            except OSError as error:
                raise _WorkerLost(f"could not be started ({error})", "grader") from None
            finally:
                if seccomp is not None:
                    os.close(seccomp)

        self._forked = False
        self._connect(paths, spawn, uid=uid)

    def _connect(self, paths: SandboxPaths, spawn: Any, uid: int | None,
                 notebook: dict[str, Any] | None = None) -> None:
        """Start a worker with ``spawn(request_fd, reply_fd, log)`` (which returns its process,
        reading requests from the first pipe, answering on the second and printing to the log),
        keep this side's ends of the pipes, and send it the ``start`` message."""
        request_read, request_write = os.pipe()
        reply_read, reply_write = os.pipe()
        log_path = self._dir / f"worker-{self._starts + 1}.log"
        try:
            with open(log_path, "ab") as log:
                self._process = spawn(request_read, reply_write, log)
        except BaseException:
            os.close(request_write)
            os.close(reply_read)
            raise
        finally:
            os.close(request_read)
            os.close(reply_write)
        self._starts += 1
        self._log_path = log_path
        self._worker_uid = uid
        self._request_fd, self._reply_fd = request_write, reply_read
        os.set_blocking(self._request_fd, False)
        self._reader = FrameReader(self.limits.result_bytes + 2**20)
        self._inbox = []
        self._send(self._start_message(paths, self.isolation_level, own_uid=uid is not None, notebook=notebook),
                   timeout=self.limits.startup_seconds)

    def _start_and_load(self) -> dict[str, Any] | None:
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
            current: str | None = None
            expected = [cell.grade_id for cell in self.program.cells if cell.grade_id not in self._skip]
            try:
                self._start()
                deadline = time.monotonic() + self.limits.startup_seconds
                while True:
                    message = self._next_message(deadline)
                    event = message.get("event")
                    if event == "cell":
                        # the worker announces each cell once, in order: anything else was forged by
                        # the student's code (to stretch the deadline, say)
                        if not expected or message.get("grade_id") != expected.pop(0):
                            raise self._lost(timed_out=False, garbled="an unexpected message while loading")
                        current = message.get("grade_id")
                        deadline = time.monotonic() + self.limits.call_seconds
                    elif event == "failed":
                        raise _WorkerLost(f"could not start ({message.get('error')})", "grader")
                    elif event == "loaded":
                        break
                if message.get("restart"):
                    cell = message.get("failed_cell")
                    reason = message.get("failed_reason") or f"it hit a limit ({message['restart']})"
                    self._stop(polite=False)
                    if cell in functions and cell not in self._skip:
                        self._skip[cell] = (f"The cell `{cell}` {reason} while the notebook was loading, so it "
                                            "was not run.")
                        continue
                    self._fatal = f"The grader could not run your notebook: {reason}"
                    self._fault = "grader" if cell not in functions and not self._student_cell_before(cell) else None
                    return None
                self._defined = dict(message["defined"])
                self._errors = dict(message["errors"])
                return message
            except _WorkerLost as lost:
                self._stop(polite=False)
                if current in functions and current not in self._skip:
                    self._skip[current] = (f"The cell `{current}` {lost.reason} while the notebook was loading, so "
                                           "it was not run (is there a long computation, an infinite loop or a "
                                           "crash at the top level of the cell?).")
                    continue
                where = f"while running the cell `{current}`" if current else "while starting"
                self._fatal = f"The grader could not run your notebook: it {lost.reason} {where}."
                # nothing of the student's had run yet (or only the source's setup cells): the grader's fault
                if current is None or (current not in functions and not self._student_cell_before(current)):
                    self._fault = "grader"
                return None

    def _stop(self, polite: bool) -> None:
        process = self._process
        if process is not None:
            if polite and process.poll() is None:
                try:
                    self._send({"op": "bye"}, timeout=2.0)
                    process.wait(timeout=2.0)
                except (_WorkerLost, subprocess.TimeoutExpired, OSError):
                    pass
            self._kill(process)
        for fd in (self._request_fd, self._reply_fd):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._request_fd = self._reply_fd = -1
        self._process = None
        if self._lease is not None:
            self._lease.kill_all()
        if self.isolation_level != "bwrap":
            shutil.rmtree(self._dir / "home", ignore_errors=True)

    @staticmethod
    def _kill(process: subprocess.Popen[bytes] | ZygoteChild) -> None:
        if isinstance(process, ZygoteChild):  # the zygote kills it and cleans up after it
            process.kill()
            return
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                process.kill()
            except ProcessLookupError:
                pass
        try:
            process.wait(timeout=_KILL_WAIT)
        except subprocess.TimeoutExpired:
            pass

    # -- talking to the worker --------------------------------------------------------------------
    def _send(self, message: dict[str, Any], timeout: float | None = None) -> None:
        data = memoryview(pack_frame(message))
        deadline = time.monotonic() + (timeout if timeout is not None else self.limits.call_seconds)
        while data:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._lost(timed_out=True, timeout=timeout)
            ready = select.poll()
            ready.register(self._request_fd, select.POLLOUT)
            if not ready.poll(remaining * 1000):
                continue
            try:
                written = os.write(self._request_fd, data)
            except BlockingIOError:
                continue
            except (BrokenPipeError, OSError):
                raise self._lost(timed_out=False) from None
            data = data[written:]

    def _next_message(self, deadline: float, timeout: float | None = None) -> dict[str, Any]:
        while not self._inbox:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._lost(timed_out=True, timeout=timeout)
            ready = select.poll()
            ready.register(self._reply_fd, select.POLLIN)
            if not ready.poll(min(remaining, 1.0) * 1000):
                continue
            try:
                chunk = os.read(self._reply_fd, 1 << 20)
            except OSError:
                chunk = b""
            if not chunk:
                raise self._lost(timed_out=False)
            try:
                self._inbox += self._reader.feed(chunk)
            except ProtocolError as error:
                raise self._lost(timed_out=False, garbled=f"an unreadable answer: {error}") from None
        message = self._inbox.pop(0)
        if not isinstance(message, dict):
            raise self._lost(timed_out=False, garbled="a message that is not a record")
        return message

    def _receive_answer(self, request_id: int) -> dict[str, Any]:
        deadline = time.monotonic() + self.limits.startup_seconds  # building models, decoding arguments
        running = False
        while True:
            message = self._next_message(deadline, timeout=self.limits.call_seconds)
            if message.get("event") == "running" and not running:  # the student's code starts: its clock
                running = True
                deadline = time.monotonic() + self.limits.call_seconds
            elif message.get("event") is None and message.get("id") == request_id:
                return message

    def _lost(self, timed_out: bool, timeout: float | None = None, garbled: str | None = None) -> _WorkerLost:
        """Stop the worker and say, in the student's terms, why it was lost."""
        process = self._process
        if timed_out:
            if process is not None:
                self._kill(process)
            seconds = timeout if timeout is not None else self.limits.call_seconds
            return _WorkerLost(f"timed out after {seconds:g} s", "timeout")
        if garbled is not None:
            if process is not None:
                self._kill(process)
            return _WorkerLost(f"broke the grader's channel ({garbled})", "lost")
        status = None
        if process is not None:
            try:
                status = process.wait(timeout=_KILL_WAIT)
            except subprocess.TimeoutExpired:
                self._kill(process)
                return _WorkerLost("closed the grader's channel", "lost")
        return self._death_reason(status)

    def _death_reason(self, status: int | None) -> _WorkerLost:
        limits = self.limits
        log_size = self._log_path.stat().st_size if self._log_path and self._log_path.exists() else 0
        if log_size >= limits.output_bytes - 4096:
            return _WorkerLost(f"printed more than {describe_bytes(limits.output_bytes)}", "output")
        tail = self.output_tail(20000)
        signum = None
        if status is not None and status < 0:
            signum = -status
        elif status is not None and status > 128 and self.isolation_level == "bwrap" \
                and not isinstance(self._process, ZygoteChild):
            signum = status - 128  # bwrap reports its child's signal as 128 + n; the zygote, exactly
        if signum is not None:
            if signum == signal.SIGXCPU:
                return _WorkerLost(f"used more than {limits.cpu_seconds} s of CPU time", "cpu")
            if signum == signal.SIGXFSZ:
                return _WorkerLost(f"printed or wrote more than {describe_bytes(limits.output_bytes)}", "output")
            if any(marker in tail for marker in _MEMORY_MARKERS):
                return _WorkerLost(f"used more than {describe_bytes(limits.memory_bytes)} of memory", "memory")
            if signum == signal.SIGKILL:
                return _WorkerLost("was killed (SIGKILL: too much memory or CPU time?)", "killed")
            words = _SIGNAL_WORDS.get(signum)
            if words is None:
                try:
                    words = f"was stopped by signal {signal.Signals(signum).name}"
                except ValueError:
                    words = f"was stopped by signal {signum}"
            return _WorkerLost(words, "crash")
        if status is None:
            return _WorkerLost("closed the grader's channel", "lost")
        if any(marker in tail for marker in _MEMORY_MARKERS[:3]):
            return _WorkerLost(f"used more than {describe_bytes(limits.memory_bytes)} of memory", "memory")
        return _WorkerLost(f"ended the process: it exited with status {status} (os._exit or sys.exit)", "exit")
