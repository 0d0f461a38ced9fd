"""The worker's runtime: one submission's namespace, and the answers to the grader's requests.

:class:`Worker` holds the notebook's global namespace once its cells ran
(:func:`gradcam_kit.worker.loading.load_cells`) and answers requests until ``bye`` or the end of
the request pipe: ``call`` (a graded function with plain-data arguments), ``probe`` (the hooks of
``register_gradcam_hooks``, step by step) and ``explore`` (an exploration cell:
:mod:`gradcam_kit.worker.exploration`). Global state that a call could leave behind is reset before
each call (grad mode, default dtype, random seeds, open figures); every model argument is built
afresh. What the student's code returns crosses as a description (:mod:`gradcam_kit.worker.describe`).
"""

from __future__ import annotations

import builtins
import os
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import numpy as np

from gradcam_kit.wire.failures import Failure, StudentError
from gradcam_kit.wire.frames import LayerRef, ModelSpec, ProtocolError, map_leaves, read_frame, write_frame
from gradcam_kit.wire.limits import describe_bytes
from gradcam_kit.wire.messages import (
    Answer,
    CallRequest,
    ExploreRequest,
    LoadAnswer,
    ProbeRequest,
    StartMessage,
    request_from_plain,
    running_event,
)
from gradcam_kit.worker.boot import allow_cpu, import_libraries, load_private_module, prepare_home, release_free_memory
from gradcam_kit.worker.describe import Describer, ResultTooLarge, type_name
from gradcam_kit.worker.exploration import run_exploration_cell
from gradcam_kit.worker.failures import CallFailure, failure_from, harness_failure
from gradcam_kit.worker.ipython import NoIPython, display
from gradcam_kit.worker.loading import load_cells
from gradcam_kit.worker.observe import ModelWatch, added_hooks, hook_table
from gradcam_kit.worker.tripwire import Tripwire

__all__ = ["Worker"]

MAX_REQUEST_BYTES = 2**30
"""Largest request accepted (arguments are images and feature maps)."""


class Worker:
    """Runs one submission's cells and answers calls of its functions.

    Parameters
    ----------
    request_fd, reply_fd : int
        The pipes from and to the grader.
    start : StartMessage
        The ``start`` message.
    """

    def __init__(self, request_fd: int, reply_fd: int, start: StartMessage) -> None:
        self.request_fd, self.reply_fd = request_fd, reply_fd
        self.start = start
        self.limits = start.limits
        self.main_pid = os.getpid()
        """The worker's own process (a copy forked by the student's code must stay silent)."""
        self.namespace: dict[str, Any] = {}
        self.helpers: ModuleType | None = None
        self._pristine: dict[ModelSpec, Any] = {}

    # -- messages --------------------------------------------------------------------------------
    def send(self, message: dict[str, Any] | Answer | LoadAnswer) -> None:
        if os.getpid() != self.main_pid:  # a copy made by a fork in the student's code: stay silent
            os._exit(0)
        write_frame(self.reply_fd, message if isinstance(message, dict) else message.to_plain())

    # -- start-up ---------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Prepare the scratch folder, import the libraries and the helper module, then arm the
        system-call filter (``uid`` and ``process`` levels) and the tripwire."""
        start = self.start
        prepare_home(start.home, start.font_cache, start.font_cache_name)
        os.chdir(start.workdir)
        sys.path[:] = [start.workdir] + [entry for entry in sys.path if entry not in ("", ".")]
        import_libraries()  # already done, in a worker forked by the zygote
        self.helpers = load_private_module(str(Path(start.workdir) / start.helper_name), "_grader_tp2_utils")
        if start.syscall_filter:  # the uid and process levels (bwrap applies it to the whole sandbox)
            from gradcam_kit.worker.syscalls import install

            install(private_ipc=False)
        if start.tripwire is not None:
            sys.addaudithook(Tripwire(start.tripwire.allow, start.tripwire.deny, start.tripwire.writable))
        ipython = NoIPython()
        self.namespace.update({"__name__": "__main__", "__builtins__": builtins, "get_ipython": lambda: ipython,
                               "display": display})

    def load(self) -> LoadAnswer:
        """Run the notebook's cells (see :func:`~gradcam_kit.worker.loading.load_cells`)."""
        return load_cells(self)

    # -- the student's code ----------------------------------------------------------------------
    def fresh_model(self, spec: ModelSpec) -> Any:
        """A new model for ``spec``: a deep copy of one built by ``build_model`` at first use.

        Copying is about four times faster than building DenseNet-121 again, and gives the same
        weights bit for bit; no two calls share a parameter, a buffer or a hook.
        """
        import copy

        from gradcam_kit.worker.models import build_model

        pristine = self._pristine.get(spec)
        if pristine is None:
            pristine = self._pristine[spec] = build_model(spec, self.helpers)
        return copy.deepcopy(pristine)

    def reset_state(self) -> None:
        """Grad mode on, float32 by default, every random generator seeded with 0."""
        import torch

        torch.set_grad_enabled(True)
        torch.set_default_dtype(torch.float32)
        torch.manual_seed(0)
        np.random.seed(0)

    def _to_student(self, value: Any, models: list[Any]) -> Any:
        """Arrays as CPU tensors (float32 unless integer or boolean), and a fresh model for each
        ``ModelSpec`` (appended to ``models``), inside any lists, tuples and dicts."""
        import torch

        def leaf(item: Any) -> Any:
            if isinstance(item, np.ndarray):
                if np.issubdtype(item.dtype, np.integer) or item.dtype == np.bool_:
                    return torch.from_numpy(np.array(item, copy=True))
                return torch.from_numpy(np.array(item, dtype=np.float32, copy=True))
            if isinstance(item, ModelSpec):
                model = self.fresh_model(item)
                models.append(model)
                return model
            return item

        return map_leaves(value, leaf)

    @staticmethod
    def _resolve_layers(value: Any, models: list[Any]) -> Any:
        """Each ``LayerRef`` as the submodule of the call's first model."""
        def leaf(item: Any) -> Any:
            if not isinstance(item, LayerRef):
                return item
            if not models:
                raise CallFailure(f"the grader asked for layer {item.name!r} without a model", Failure.GRADER)
            import torch

            return torch.nn.Module.get_submodule(models[0], item.name)

        return map_leaves(value, leaf)

    def _function(self, name: str) -> Callable[..., Any]:
        function = self.namespace.get(name)
        if function is None or not callable(function):
            raise CallFailure(f"`{name}` is not defined by your notebook", Failure.UNAVAILABLE)
        return function

    def run_student(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call the student's code under the per-call CPU budget; translate what it raises."""
        allow_cpu(self.limits.cpu_seconds)
        try:
            return function(*args, **kwargs)
        except BaseException as error:
            raise failure_from(error, self.limits) from None
        finally:
            if os.getpid() != self.main_pid:
                os._exit(0)
            self.harness_cpu()

    def harness_cpu(self) -> None:
        """A generous CPU budget for the grader's own work (building models, describing results)."""
        allow_cpu(max(float(self.limits.startup_seconds), float(self.limits.cpu_seconds)))

    def after_call(self) -> str | None:
        """Why the worker must be restarted after this call (``None``: it can go on)."""
        self.flush_streams()
        release_free_memory()
        if self.output_exceeded():
            return Failure.OUTPUT.value
        try:
            while True:
                pid, _ = os.waitpid(-1, os.WNOHANG)
                if pid == 0:
                    return Failure.PROCESSES.value
        except ChildProcessError:
            pass
        return None

    def output_exceeded(self) -> bool:
        """Whether the log (standard output and error) is about to reach ``Limits.output_bytes``."""
        try:
            size = max(os.fstat(1).st_size, os.fstat(2).st_size)
        except OSError:
            return False
        return size >= int(self.limits.output_bytes) - 4096

    @staticmethod
    def flush_streams() -> None:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:  # a full log, a replaced stream
                pass

    @staticmethod
    def _compile_substitutes(sources: dict[str, str]) -> dict[str, Callable[..., Any]]:
        """The grader's own versions of some helpers, each compiled in a private namespace.

        ``sources`` maps a helper's name to Python source text defining that function (it came over
        the protocol channel for this call only; it is never written to a file).
        """
        if not sources:
            return {}
        import torch
        import torch.nn.functional as F

        compiled: dict[str, Callable[..., Any]] = {}
        for name, source in sources.items():
            if not (isinstance(name, str) and name.isidentifier() and isinstance(source, str)):
                raise CallFailure("the grader sent malformed substitutes", Failure.GRADER)
            private: dict[str, Any] = {"__builtins__": builtins, "__name__": "_grader_substitutes",
                                       "torch": torch, "F": F}
            exec(compile(source, f"<grader's {name}>", "exec"), private)  # the grader's own code
            function = private.get(name)
            if not callable(function):
                raise CallFailure(f"the grader's substitute for `{name}` defines no function", Failure.GRADER)
            compiled[name] = function
        return compiled

    def _run_with_substitutes(self, substitutes: dict[str, Callable[..., Any]], function: Callable[..., Any],
                              *args: Any, **kwargs: Any) -> Any:
        """Run the student's function with ``substitutes`` bound in its global namespace for this
        call only; the previous bindings (or their absence) are restored afterwards, even on error."""
        missing = object()
        saved = {name: self.namespace.get(name, missing) for name in substitutes}
        try:
            self.namespace.update(substitutes)
            return self.run_student(function, *args, **kwargs)
        finally:
            for name, previous in saved.items():
                if previous is missing:
                    self.namespace.pop(name, None)
                else:
                    self.namespace[name] = previous

    def _too_large(self, seconds: float) -> Answer:
        return Answer(False, error=StudentError(f"returned more data than the grader accepts "
                                                f"({describe_bytes(self.limits.result_bytes)})"),
                      failure=Failure.RESULT, seconds=seconds)

    # -- requests --------------------------------------------------------------------------------
    def call(self, request: CallRequest) -> Answer:
        models: list[Any] = []
        started = time.perf_counter()
        watch: ModelWatch | None = None
        try:
            function = self._function(request.function)
            substitutes = self._compile_substitutes(request.substitutes)
            self.reset_state()
            args = self._resolve_layers(self._to_student(list(request.args), models), models)
            kwargs = self._resolve_layers(self._to_student(request.kwargs, models), models)
            watch = ModelWatch(models[0]) if models else None
            self.send(running_event())
            started = time.perf_counter()
            result = self._run_with_substitutes(substitutes, function, *args, **kwargs)
            seconds = time.perf_counter() - started
            answer = Answer(True, Describer(int(self.limits.result_bytes)).describe(result), seconds=seconds)
        except CallFailure as failure:
            answer = failure.answer(time.perf_counter() - started)
        except ResultTooLarge:
            answer = self._too_large(time.perf_counter() - started)
        answer.observations = watch.observations() if watch is not None else {}
        self._close_figures()
        restart = self.after_call()
        if restart == Failure.OUTPUT and answer.ok:
            answer.fail(StudentError(f"printed more than {describe_bytes(self.limits.output_bytes)}"), Failure.OUTPUT)
        # nothing the student's code did with the grader's substitutes may outlive this call
        answer.restart = answer.restart or restart or ("substitutes" if request.substitutes else None)
        return answer

    @staticmethod
    def _close_figures() -> None:
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is not None:
            try:
                pyplot.close("all")
            except Exception:
                pass

    def probe(self, request: ProbeRequest) -> Answer:
        """Register the hooks, run a forward and a backward pass, read the store, remove the hooks;
        the answer's value says how far it went and what it saw (see ``WorkerSession.probe_hooks``)."""
        import torch

        describer = Describer(int(self.limits.result_bytes))
        value: dict[str, Any] = {"step": None, "returned": None, "hooks_added": {}, "activations": None,
                                 "gradients": None, "removed": False}
        answer = Answer(False)
        started = time.perf_counter()
        self.reset_state()
        model = self.fresh_model(request.model)
        watch = ModelWatch(model)
        layer = torch.nn.Module.get_submodule(model, request.layer)
        image = torch.from_numpy(np.array(request.image, dtype=np.float32, copy=True))
        class_idx = request.class_idx
        step: str | None = "register"
        try:
            register = self._function(request.function or "register_gradcam_hooks")
            before = hook_table(model)
            self.send(running_event())
            started = time.perf_counter()
            returned = self.run_student(register, layer)
            value["hooks_added"] = added_hooks(before, hook_table(model))
            value["returned"] = describer.describe(returned)
            step = "returned"
            if type(returned) not in (tuple, list) or len(returned) != 2:
                raise CallFailure(f"register_gradcam_hooks should return (store, handles); it returned "
                                  f"a {type_name(returned)}", Failure.WRONG_RETURN)
            store, handles = returned
            step = "forward"
            scores = self.run_student(model, image)
            step = "backward"
            self.run_student(lambda: scores[:, class_idx].sum().backward())
            step = "store"
            value["activations"] = describer.describe(self.run_student(lambda: store["activations"]))
            value["gradients"] = describer.describe(self.run_student(lambda: store["gradients"]))
            step = "remove"
            for handle in (handles if type(handles) in (list, tuple) else [handles]):
                self.run_student(handle.remove)
            value["removed"] = True
            step = None
            answer.ok = True
        except CallFailure as failure:
            value["step"] = step
            answer = failure.answer()
            answer.error = failure.error.at_step(step)
        except ResultTooLarge:
            value["step"] = step
            answer = Answer(False, error=StudentError("the store held more data than the grader accepts"),
                            failure=Failure.RESULT)
        answer.seconds = time.perf_counter() - started
        answer.value = value
        answer.observations = watch.observations()
        answer.restart = answer.restart or self.after_call()
        return answer

    # -- the loop ---------------------------------------------------------------------------------
    def serve(self) -> None:
        """Answer requests until ``bye``, the end of the pipe, or an answer that needs a restart."""
        while True:
            try:
                message = read_frame(self.request_fd, max_bytes=MAX_REQUEST_BYTES)
            except EOFError:
                return
            try:
                request = request_from_plain(message)
            except ProtocolError as error:
                answer = Answer(False, error=StudentError(str(error)), failure=Failure.GRADER)
            else:
                if request is None:  # bye: nothing is left to keep: skip the interpreter's slow tear-down of torch
                    self.flush_streams()
                    os._exit(0)
                self.harness_cpu()
                try:
                    answer = self._answer(request)
                except Exception as error:  # a bug of the harness, or code the student replaced
                    answer = harness_failure(error)
            answer.id = message.get("id") if isinstance(message, dict) else None
            self.send(answer)
            if answer.restart:
                return

    def _answer(self, request: CallRequest | ProbeRequest | ExploreRequest) -> Answer:
        if isinstance(request, CallRequest):
            return self.call(request)
        if isinstance(request, ProbeRequest):
            return self.probe(request)
        return run_exploration_cell(self, request)
