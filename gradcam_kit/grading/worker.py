"""The worker: the only process that runs a student's code (its :func:`main`, started with the kit's
code staged by :mod:`gradcam_kit.grading.worker_code` first on ``sys.path``).

It is started by :class:`gradcam_kit.grading.session.WorkerSession`, inside the sandbox of
:mod:`gradcam_kit.grading.sandbox` (in a new session keyring, under the system-call filter of
:mod:`gradcam_kit.grading.syscalls`), and talks to it over two pipes given by number
(``--request-fd``, ``--reply-fd``) in the frames of :mod:`gradcam_kit.grading.protocol`. Its
standard output and error go to a capped log: the student's prints never mix with the protocol.

Start-up, in this order, before any of the student's code runs:

1. switch to the unprivileged uid given by ``--uid``/``--gid`` (when started as root);
2. read the ``start`` message; set the resource limits (address space, CPU, file size, processes,
   no core dumps);
3. import torch (one thread), torchvision and matplotlib (Agg) (a worker forked by the zygote,
   :mod:`gradcam_kit.grading.zygote_server`, has them already); import a private copy of the
   helper module, which the models are built with (the student's ``tp2_utils`` may be
   monkeypatched);
4. at the ``uid`` and ``process`` levels, load the system-call filter (bubblewrap applies it to the
   whole sandbox at the ``bwrap`` level); install the audit hook (the tripwire of the ``process``
   level, kept at every level);
5. run the setup cells and the graded cells, each compiled with the file name ``<cell ID>`` so that
   errors can be located in the student's code and nowhere else.

Then it answers ``call`` and ``probe`` requests (and ``explore``, which runs an exploration cell:
:mod:`gradcam_kit.grading.exploration_runtime`) until ``bye`` or the end of the request pipe.
Global state that a call could leave behind is reset before each call (grad mode, default dtype,
random seeds, open figures); every model argument is built afresh.
"""

from __future__ import annotations

import argparse
import builtins
import errno
import faulthandler
import importlib.util
import linecache
import os
import resource
import shutil
import sys
import time
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import numpy as np

from gradcam_kit.grading.exploration_runtime import run_exploration_cell
from gradcam_kit.grading.protocol import LayerRef, ModelSpec, map_leaves, read_frame, write_frame

MAX_ITEMS = 10_000
MAX_STRING = 100_000
MAX_DEPTH = 20
MAX_MESSAGE = 600
CELL_PREFIX = "<cell "

MAIN_PID = os.getpid()


# ------------------------------------------------------------------------------------------------
# start-up
# ------------------------------------------------------------------------------------------------
def drop_privileges(uid: int, gid: int) -> None:
    """Become ``uid``/``gid`` for good, with no supplementary groups (and so no capabilities)."""
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    if os.getuid() != uid or os.geteuid() != uid or os.getgid() != gid:
        raise SystemExit("worker: could not switch user")
    try:
        os.setuid(0)
    except PermissionError:
        return
    raise SystemExit("worker: the switch of user can be undone; refusing to run")


def apply_limits(limits: dict[str, Any], own_uid: bool) -> None:
    """Set the worker's resource limits (hard limits too: the student's code cannot raise them).

    The process limit counts every process of the user, so it is set only when the worker has a
    uid of its own (leased by the session); it would not hold for root anyway.
    """
    memory = int(limits["memory_bytes"])
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    total_cpu = int(limits["cpu_total_seconds"])
    resource.setrlimit(resource.RLIMIT_CPU, (min(total_cpu, int(limits["startup_seconds"]) * 2), total_cpu))
    output = int(limits["output_bytes"])
    resource.setrlimit(resource.RLIMIT_FSIZE, (output, output))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if own_uid and os.geteuid() != 0:
        processes = int(limits["max_processes"])
        resource.setrlimit(resource.RLIMIT_NPROC, (processes, processes))


def prepare_home(home: str, font_cache: str | None, font_cache_name: str | None) -> None:
    """The scratch folder's ``.tmp`` and matplotlib folders, with the grader's font list (so that
    matplotlib does not rebuild it, which takes seconds)."""
    config = Path(home) / ".config" / "matplotlib"
    for folder in (Path(home) / ".tmp", config):
        folder.mkdir(parents=True, exist_ok=True)
    if font_cache and font_cache_name and Path(font_cache).is_file():
        target = config / font_cache_name
        if not target.exists():
            shutil.copyfile(font_cache, target)


def import_libraries() -> None:
    """Import what every worker needs before the student's code: torch (one thread), matplotlib
    (Agg) and torchvision. About 2.5 s of CPU; the zygote does it once for all its workers."""
    import torch

    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401
    import torchvision  # noqa: F401


def release_free_memory() -> None:
    """Give the heap's free pages back to the system (glibc keeps them after a model is freed).

    Each call builds a model and runs a backward pass; without this the worker's resident size
    creeps up towards the sum of its largest calls. It costs about a millisecond.
    """
    try:
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def cpu_used() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def allow_cpu(seconds: float) -> None:
    """Let the next phase use ``seconds`` more of CPU time (SIGXCPU after that)."""
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = int(cpu_used() + seconds) + 1
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def load_private_module(path: str, name: str) -> ModuleType:
    """Import a file as a module that is not registered in ``sys.modules``."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------------------------
# the tripwire (audit hook)
# ------------------------------------------------------------------------------------------------
class Tripwire:
    """An audit hook that refuses what a graded function never needs to do.

    Reading is allowed under the ``allow`` folders only (the system's folders, the interpreter, the
    scratch folder, the images...), except under the more specific ``deny`` folders (the course,
    other scratch folders): the longest matching folder decides, so the tripwire mirrors what the
    ``bwrap`` sandbox shows. Writing is allowed under the ``writable`` folders only. Starting
    processes, signalling other processes, opening network connections and reading other
    processes' ``/proc`` entries are refused. It is installed after the harness has imported what
    it needs, so it costs nothing until then.
    """

    _WRITES = ("os.remove", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.truncate", "os.utime",
               "os.chflags", "os.lchflags", "os.setxattr", "os.removexattr", "shutil.rmtree")
    _SPAWNS = ("os.exec", "os.posix_spawn", "os.spawn", "os.system", "subprocess.Popen", "os.fork",
               "os.forkpty", "pty.spawn", "os.startfile")
    _NETWORK = ("socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg")
    _WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def __init__(self, allow: list[str], deny: list[str], writable: list[str]) -> None:
        rules = {self._real(path): False for path in deny}
        rules.update({self._real(path): True for path in allow})
        self.rules = tuple(rules.items())
        self.writable = tuple(self._real(path) for path in writable) + ("/dev/null",)

    @staticmethod
    def _real(path: Any) -> str:
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        return os.path.realpath(os.fspath(path))

    @staticmethod
    def _under(path: str, root: str) -> bool:
        return root == "/" or path == root or path.startswith(root + "/")

    def readable(self, path: str) -> bool:
        """Whether the most specific rule matching ``path`` (a real path) allows it."""
        best, verdict = -1, False
        for root, allowed in self.rules:
            if len(root) > best and self._under(path, root):
                best, verdict = len(root), allowed
        if verdict and path.startswith("/proc/"):
            head = path.split("/")[2]
            verdict = not head.isdigit() or int(head) == os.getpid()
        return verdict

    def _check_read(self, raw: Any) -> None:
        if raw is None or isinstance(raw, int):
            return
        if not self.readable(self._real(raw)):
            raise PermissionError(f"reading {raw!s} is not allowed during grading")

    def _check_write(self, raw: Any) -> None:
        if raw is None or isinstance(raw, int):
            return
        path = self._real(raw)
        if not self.readable(path) or not any(self._under(path, root) for root in self.writable):
            raise PermissionError(f"writing {raw!s} is not allowed during grading (write in your folder)")

    def __call__(self, event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = (tuple(args) + (None, None, None))[:3]
            writing = (isinstance(flags, int) and flags & self._WRITE_FLAGS) or (
                isinstance(mode, str) and any(letter in mode for letter in "wax+"))
            (self._check_write if writing else self._check_read)(path)
        elif event in ("os.listdir", "os.scandir", "os.chdir"):
            self._check_read(args[0] if args else ".")
        elif event in self._WRITES:
            self._check_write(args[0])
        elif event in ("os.rename", "os.link", "os.symlink", "shutil.copyfile", "shutil.copytree", "shutil.move"):
            self._check_read(args[0])
            self._check_write(args[1])
        elif event in self._SPAWNS:
            raise PermissionError("starting other programs or processes is not allowed during grading")
        elif event in ("os.kill", "os.killpg"):
            if args and args[0] != os.getpid():
                raise PermissionError("signalling other processes is not allowed during grading")
        elif event in self._NETWORK:
            raise PermissionError("network connections are not allowed during grading")


# ------------------------------------------------------------------------------------------------
# errors in the student's terms
# ------------------------------------------------------------------------------------------------
class CallFailure(Exception):
    """A failure with a message for the student and a kind (exception, memory, processes...)."""

    def __init__(self, message: str, kind: str = "exception", restart: bool = False) -> None:
        super().__init__(message)
        self.message, self.kind, self.restart = message, kind, restart


def _safe_text(exc: BaseException) -> str:
    try:
        text = str(exc)
    except BaseException:  # noqa: BLE001 - a hostile __str__
        text = "(its message could not be read)"
    if not isinstance(text, str):
        text = "(its message could not be read)"
    text = text.strip()
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + " [...]"


def student_location(exc: BaseException) -> str:
    """``" (cell `grad_cam`, line 12: `cam = ...`)"`` for the innermost frame of a student's cell."""
    try:
        frames = traceback.extract_tb(exc.__traceback__)
    except Exception:  # noqa: BLE001
        return ""
    mine = [frame for frame in frames if str(frame.filename).startswith(CELL_PREFIX)]
    if not mine:
        return ""
    frame = mine[-1]
    cell = frame.filename[len(CELL_PREFIX):-1]
    line = (frame.line or "").strip()
    shown = f": `{line[:200]}`" if line else ""
    return f" (cell `{cell}`, line {frame.lineno}{shown})"


def _is_memory_error(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    text = _safe_text(exc) if isinstance(exc, RuntimeError) else ""
    return any(marker in text for marker in ("can't allocate memory", "not enough memory", "bad_alloc",
                                             "Cannot allocate memory"))


def _is_process_error(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno == errno.EAGAIN:
        return True
    return isinstance(exc, RuntimeError) and "can't start new thread" in _safe_text(exc)


def failure_from(exc: BaseException, limits: dict[str, Any]) -> CallFailure:
    """Turn an exception raised by the student's code into a :class:`CallFailure`."""
    from gradcam_kit.grading.sandbox import describe_bytes

    where = student_location(exc)
    if isinstance(exc, SystemExit):
        return CallFailure(f"your code called sys.exit({exc.code!r}){where}", "exit")
    if _is_memory_error(exc):
        return CallFailure(f"used more than {describe_bytes(limits['memory_bytes'])} of memory{where}",
                           "memory", restart=True)
    if _is_process_error(exc):
        return CallFailure(f"tried to start too many processes or threads (the limit is "
                           f"{limits['max_processes']}){where}", "processes", restart=True)
    if isinstance(exc, OSError) and exc.errno == errno.EFBIG:
        return CallFailure(f"printed or wrote more than {describe_bytes(limits['output_bytes'])}{where}",
                           "output", restart=True)
    message = f"{type(exc).__name__}: {_safe_text(exc)}{where}"
    if "CUDA" in message or "cuda" in message:
        message += " — the grader runs on a CPU: put tensors on the device of the input (e.g. image.device)."
    if "BackwardHookFunction" in message:
        message += (" — this happens with register_full_backward_hook on a module whose output is then "
                    "modified in place (DenseNet applies an in-place ReLU to the output of `features`): "
                    "capture the gradient with a hook on the output tensor (output.register_hook) instead.")
    return CallFailure(message)


# ------------------------------------------------------------------------------------------------
# plain-data descriptions of what the student's code returned
# ------------------------------------------------------------------------------------------------
class ResultTooLarge(Exception):
    pass


def _type_name(value: Any) -> str:
    kind = type(value)
    module = getattr(kind, "__module__", "") or ""
    name = getattr(kind, "__qualname__", "") or kind.__name__
    name = name if isinstance(name, str) else "?"
    return name if module in ("builtins", "") or not isinstance(module, str) else f"{module}.{name}"


def _mro(value: Any) -> tuple[type, ...]:
    return type.__dict__["__mro__"].__get__(type(value))


class Describer:
    """Reduces any object to plain data, with a budget on the bytes of arrays."""

    def __init__(self, budget: int) -> None:
        self.budget = budget

    def _spend(self, array: np.ndarray) -> np.ndarray:
        self.budget -= array.nbytes
        if self.budget < 0:
            raise ResultTooLarge
        return array

    def describe(self, value: Any, depth: int = 0) -> Any:
        kind = type(value)
        if value is None or kind is bool:
            return value
        mro = _mro(value)
        if int in mro and bool not in mro:
            return int.__int__(value)
        if float in mro:
            return float.__float__(value)
        if str in mro:
            text = str.__str__(value)
            return text if len(text) <= MAX_STRING else {"kind": "object", "type": "str", "length": len(text)}
        if depth >= MAX_DEPTH:
            return {"kind": "object", "type": _type_name(value), "note": "nested too deeply"}
        torch = sys.modules.get("torch")
        if torch is not None and torch.Tensor in mro:
            return self._tensor(value, torch)
        if np.ndarray in mro:
            return self._ndarray(value)
        if np.generic in mro:
            return self._numpy_scalar(value)
        if list in mro or tuple in mro:
            items = list.__iter__(value) if list in mro else tuple.__iter__(value)
            size = list.__len__(value) if list in mro else tuple.__len__(value)
            if size > MAX_ITEMS:
                return {"kind": "object", "type": _type_name(value), "length": size, "note": "too long"}
            described = [self.describe(item, depth + 1) for item in items]
            return described if list in mro else tuple(described)
        if dict in mro:
            if dict.__len__(value) > MAX_ITEMS:
                return {"kind": "object", "type": _type_name(value), "length": dict.__len__(value), "note": "too long"}
            return {self._key(key): self.describe(item, depth + 1) for key, item in dict.items(value)}
        figure = self._figure(value, mro)
        if figure is not None:
            return figure
        return {"kind": "object", "type": _type_name(value)}

    def _key(self, key: Any) -> Any:
        mro = _mro(key)
        if str in mro:
            return str.__str__(key)
        if int in mro and bool not in mro:
            return int.__int__(key)
        if key is None or type(key) is bool:
            return key
        return f"<{_type_name(key)} key>"

    def _tensor(self, value: Any, torch: ModuleType) -> dict[str, Any]:
        with torch._C.DisableTorchFunctionSubclass():
            base = value if type(value) is torch.Tensor else torch.Tensor.as_subclass(value, torch.Tensor)
            info: dict[str, Any] = {
                "kind": "tensor", "type": _type_name(value), "dtype": str(base.dtype), "device": str(base.device),
                "requires_grad": bool(base.requires_grad), "shape": [int(size) for size in base.shape],
            }
            try:
                data = base.detach()
                if data.layout != torch.strided:
                    data = data.to_dense()
                if data.is_quantized:
                    data = data.dequantize()
                data = data.cpu().resolve_conj().resolve_neg()
                if data.dtype == torch.bfloat16 or "float8" in str(data.dtype):
                    data = data.float()
                array = np.array(data.contiguous().numpy(), copy=True)
                info["array"] = self._spend(array)
            except ResultTooLarge:
                raise
            except Exception as error:  # noqa: BLE001 - meta tensors, exotic subclasses
                info["array"] = None
                info["note"] = f"its values could not be read ({type(error).__name__})"
        return info

    def _ndarray(self, value: Any) -> dict[str, Any]:
        array = np.ndarray.view(value, np.ndarray)
        info: dict[str, Any] = {"kind": "ndarray", "type": _type_name(value), "dtype": str(array.dtype),
                                "shape": list(array.shape)}
        info["array"] = None if array.dtype.hasobject else self._spend(np.array(array, copy=True))
        return info

    def _numpy_scalar(self, value: Any) -> dict[str, Any]:
        info: dict[str, Any] = {"kind": "numpy_scalar", "type": _type_name(value), "dtype": str(value.dtype)}
        try:
            item = np.asarray(value).item()
        except Exception:  # noqa: BLE001
            item = None
        info["value"] = item if type(item) in (int, float, bool) else None
        return info

    def _figure(self, value: Any, mro: tuple[type, ...]) -> dict[str, Any] | None:
        """A figure: for each of its axes, the title and what its images draw (see :func:`drawn_image`)."""
        figure_module = sys.modules.get("matplotlib.figure")
        if figure_module is None or figure_module.Figure not in mro:
            return None
        axes = []
        try:
            for ax in list(value.get_axes())[:MAX_FIGURE_AXES]:
                images = list(ax.images)
                axes.append({"title": str(ax.get_title()), "n_images": len(images),
                             "images": [self._drawn_image(image) for image in images[:MAX_AXES_IMAGES]]})
            suptitle = value._suptitle.get_text() if getattr(value, "_suptitle", None) is not None else ""
        except ResultTooLarge:
            raise
        except Exception as error:  # noqa: BLE001
            return {"kind": "figure", "type": _type_name(value), "axes": axes, "note": f"unreadable ({error})"}
        return {"kind": "figure", "type": _type_name(value), "axes": axes, "suptitle": str(suptitle)}

    def _drawn_image(self, image: Any) -> dict[str, Any]:
        """What one ``AxesImage`` draws, or a note saying why it cannot be read."""
        try:
            described = drawn_image(image)
        except Exception as error:  # noqa: BLE001 - a broken or hostile artist
            return {"kind": "image", "type": _type_name(image), "grid": None,
                    "note": f"unreadable ({type(error).__name__})"}
        for key in ("grid", "alpha_grid"):
            if described.get(key) is not None:
                described[key] = self._spend(described[key])
        return described


FIGURE_GRID = 32
"""Each image drawn in a figure crosses as a ``FIGURE_GRID x FIGURE_GRID`` block mean of its data."""
MAX_FIGURE_AXES = 32
MAX_AXES_IMAGES = 8
MAX_IMAGE_SIDE = 2048
"""Larger images are subsampled (every n-th pixel) to this size before the block mean."""


def downsample_image(values: np.ndarray, grid: int = FIGURE_GRID) -> np.ndarray:
    """Block means of an image: (H, W) or (H, W, C) -> (grid, grid) or (grid, grid, C), float32.

    Cell ``(i, j)`` is the mean of the pixels whose rows are in ``[i H / grid, (i + 1) H / grid)``
    and whose columns are in ``[j W / grid, (j + 1) W / grid)``; a side shorter than ``grid`` is
    repeated (nearest pixel). NaN (masked pixels) propagates into its cell.
    """
    array = np.asarray(values, dtype=np.float64)
    for axis in (0, 1):
        size = array.shape[axis]
        if size >= grid:
            bounds = (np.arange(grid + 1) * size) // grid
            counts = np.diff(bounds).reshape([-1 if a == axis else 1 for a in range(array.ndim)])
            array = np.add.reduceat(array, bounds[:-1], axis=axis) / counts
        else:
            array = np.take(array, ((np.arange(grid) + 0.5) * size / grid).astype(int), axis=axis)
    return array.astype(np.float32)


def _plain_float(value: Any) -> float | None:
    try:
        number = float(np.asarray(value, dtype=np.float64).reshape(()))
    except Exception:  # noqa: BLE001
        return None
    return number if np.isfinite(number) else None


def drawn_image(image: Any) -> dict[str, Any]:
    """Plain data for one ``matplotlib.image.AxesImage``: what it draws, for the judge to compare.

    Returns
    -------
    dict
        ``grid``: the data (scalar (H, W), or RGB(A) (H, W, 3|4)) as block means
        (:func:`downsample_image`), masked pixels NaN, or ``None`` with a ``note``; ``shape`` and
        ``dtype`` of the data; ``extent`` (left, right, bottom, top) and ``origin``; ``alpha`` (a
        number, ``None``, or the mean of an alpha array, then given in full as ``alpha_grid``);
        ``vmin``/``vmax`` of its norm and ``cmap`` (they map scalar data to colours); ``visible``
        and ``zorder``.
    """
    data = image.get_array()
    info: dict[str, Any] = {"kind": "image", "grid": None, "alpha_grid": None}
    if data is None:
        info["note"] = "no data"
        return info
    mask = np.ma.getmaskarray(data)
    array = np.asarray(np.ma.getdata(data))
    info["shape"] = [int(size) for size in array.shape]
    info["dtype"] = str(array.dtype)
    if array.dtype.kind not in "biuf" or array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)) \
            or 0 in array.shape:
        info["note"] = "not an image"
        return info
    step = max(1, -(-max(array.shape[:2]) // MAX_IMAGE_SIDE))
    values = np.array(array[::step, ::step], dtype=np.float64)
    values[np.broadcast_to(mask, array.shape)[::step, ::step]] = np.nan
    info["grid"] = downsample_image(values)
    info["extent"] = [float(v) for v in image.get_extent()]
    info["origin"] = str(image.origin)
    alpha = image.get_alpha()
    if alpha is not None and np.ndim(alpha) == 2:
        alpha_array = np.asarray(alpha, dtype=np.float64)
        info["alpha"] = float(np.nanmean(alpha_array)) if alpha_array.size else None
        info["alpha_grid"] = downsample_image(alpha_array[::step, ::step])
    else:
        info["alpha"] = None if alpha is None else _plain_float(alpha)
    norm = getattr(image, "norm", None)
    info["vmin"] = _plain_float(getattr(norm, "vmin", None))
    info["vmax"] = _plain_float(getattr(norm, "vmax", None))
    info["cmap"] = str(getattr(image.get_cmap(), "name", ""))
    info["visible"] = bool(image.get_visible())
    info["zorder"] = _plain_float(image.get_zorder()) or 0.0
    return info


# ------------------------------------------------------------------------------------------------
# models: observations, hooks
# ------------------------------------------------------------------------------------------------
_HOOK_KINDS = (("_forward_pre_hooks", "forward_pre"), ("_forward_hooks", "forward"),
               ("_backward_pre_hooks", "full_backward_pre"), ("_backward_hooks", "backward"))


def hook_table(model: Any) -> dict[str, dict[str, set[int]]]:
    """Module name -> hook kind -> ids of the hooks registered on it (``<model>`` for the root)."""
    import torch

    table: dict[str, dict[str, set[int]]] = {}
    for name, module in torch.nn.Module.named_modules(model):
        entry: dict[str, set[int]] = {}
        for attribute, kind in _HOOK_KINDS:
            hooks = module.__dict__.get(attribute) or {}
            if hooks:
                if kind == "backward" and module.__dict__.get("_is_full_backward_hook"):
                    kind = "full_backward"
                entry[kind] = set(hooks.keys())
        if entry:
            table[name or "<model>"] = entry
    module_globals = torch.nn.modules.module
    global_entry = {
        kind: set(getattr(module_globals, attribute, {}).keys())
        for attribute, kind in (("_global_forward_pre_hooks", "forward_pre"), ("_global_forward_hooks", "forward"),
                                ("_global_backward_pre_hooks", "full_backward_pre"),
                                ("_global_backward_hooks", "full_backward"))
        if getattr(module_globals, attribute, None)
    }
    if global_entry:
        table["<all modules>"] = global_entry
    return table


def added_hooks(before: dict[str, dict[str, set[int]]], after: dict[str, dict[str, set[int]]]) -> dict[str, list[str]]:
    added: dict[str, list[str]] = {}
    for name, kinds in after.items():
        new = sorted(kind for kind, ids in kinds.items() if ids - before.get(name, {}).get(kind, set()))
        if new:
            added[name] = new
    return added


def _fingerprint(tensors: list[Any]) -> list[float]:
    import torch

    with torch.no_grad():
        return [float(t.detach().double().sum()) for t in tensors]


class ModelWatch:
    """What a call did to a model: hooks left, training flag, weights and buffers changed."""

    def __init__(self, model: Any) -> None:
        import torch

        self.model = model
        self.parameters = list(torch.nn.Module.parameters(model))
        self.buffers = [b for b in torch.nn.Module.buffers(model) if b.is_floating_point()]
        self.weights = _fingerprint(self.parameters)
        self.buffer_values = _fingerprint(self.buffers)

    def observations(self) -> dict[str, Any]:
        import torch

        try:
            return {
                "hooks_left": sorted(hook_table(self.model)),
                "training": bool(torch.nn.Module.__getattribute__(self.model, "training")),
                "weights_changed": _fingerprint(self.parameters) != self.weights,
                "buffers_changed": _fingerprint(self.buffers) != self.buffer_values,
            }
        except Exception as error:  # noqa: BLE001 - a model broken beyond reading
            return {"hooks_left": [], "training": None, "note": f"the model could not be inspected ({error})"}


# ------------------------------------------------------------------------------------------------
# the IPython stand-in
# ------------------------------------------------------------------------------------------------
class _NoIPython:
    """What ``get_ipython()`` returns in the worker: magics and shell commands do nothing."""

    def run_line_magic(self, name: str, line: str = "", *args: Any, **kwargs: Any) -> None:
        return None

    def run_cell_magic(self, name: str, line: str = "", cell: str = "", *args: Any, **kwargs: Any) -> None:
        return None

    def magic(self, *args: Any, **kwargs: Any) -> None:
        return None

    def system(self, command: str, *args: Any, **kwargs: Any) -> None:
        print(f"[grader] shell command skipped: {command}")

    def getoutput(self, command: str, *args: Any, **kwargs: Any) -> list[str]:
        print(f"[grader] shell command skipped: {command}")
        return []


def _display(*objects: Any, **kwargs: Any) -> None:
    return None


# ------------------------------------------------------------------------------------------------
# the worker
# ------------------------------------------------------------------------------------------------
class Worker:
    """Runs one submission's cells and answers calls of its functions."""

    def __init__(self, request_fd: int, reply_fd: int, start: dict[str, Any]) -> None:
        self.request_fd, self.reply_fd = request_fd, reply_fd
        self.limits: dict[str, Any] = start["limits"]
        self.start = start
        self.namespace: dict[str, Any] = {}
        self.helpers: ModuleType | None = None
        self._pristine: dict[ModelSpec, Any] = {}

    # -- messages --------------------------------------------------------------------------------
    def send(self, message: dict[str, Any]) -> None:
        if os.getpid() != MAIN_PID:  # a copy made by a fork in the student's code: stay silent
            os._exit(0)
        write_frame(self.reply_fd, message)

    # -- start-up ---------------------------------------------------------------------------------
    def prepare(self) -> None:
        start = self.start
        prepare_home(start["home"], start.get("font_cache"), start.get("font_cache_name"))
        workdir = start["workdir"]
        os.chdir(workdir)
        sys.path[:] = [workdir] + [entry for entry in sys.path if entry not in ("", ".")]
        import_libraries()  # already done, in a worker forked by the zygote
        self.helpers = load_private_module(str(Path(workdir) / start["helper_name"]), "_grader_tp2_utils")
        if start.get("syscall_filter"):  # the uid and process levels (bwrap applies it to the whole sandbox)
            from gradcam_kit.grading.syscalls import install

            install(private_ipc=False)
        tripwire = start.get("tripwire")
        if tripwire:
            sys.addaudithook(Tripwire(tripwire["allow"], tripwire["deny"], tripwire["writable"]))
        ipython = _NoIPython()
        self.namespace.update({"__name__": "__main__", "__builtins__": builtins, "get_ipython": lambda: ipython,
                               "display": _display})

    # -- loading the cells ------------------------------------------------------------------------
    def load(self) -> dict[str, Any]:
        program = self.start["program"]
        skip: dict[str, str] = self.start.get("skip", {})
        problems: dict[str, str] = program["problems"]
        functions: list[str] = program["functions"]
        errors: dict[str, str] = {}
        notes: list[str] = []
        failed_cells: dict[str, str] = {}
        for cell in program["cells"]:
            grade_id = cell["grade_id"]
            if grade_id in skip:
                errors[grade_id] = skip[grade_id]
                continue
            filename = f"{CELL_PREFIX}{grade_id}>"
            source_lines = cell["source"].splitlines(True)
            code_lines = cell["code"].splitlines(True)
            shown = source_lines if len(source_lines) == len(code_lines) else code_lines
            linecache.cache[filename] = (len(cell["code"]), None, shown, filename)
            self.send({"event": "cell", "grade_id": grade_id})
            allow_cpu(self.limits["cpu_seconds"])
            failure: CallFailure | None = None
            try:
                self._reset_state()
                exec(compile(cell["code"], filename, "exec"), self.namespace)  # noqa: S102 - the point
            except BaseException as error:  # noqa: BLE001 - anything the cell raises
                failure = failure_from(error, self.limits)
            finally:
                if os.getpid() != MAIN_PID:
                    os._exit(0)
                self._harness_cpu()
            self._flush_streams()
            if self._output_exceeded() and (failure is None or failure.kind != "output"):
                from gradcam_kit.grading.sandbox import describe_bytes

                failure = CallFailure(f"printed more than {describe_bytes(self.limits['output_bytes'])}", "output",
                                      restart=True)
            if failure is not None:
                failed_cells[grade_id] = failure.message
                if failure.restart:
                    return self._load_answer(functions, problems, errors, notes, failed_cells,
                                             restart=failure.kind, current=grade_id, program=program)
        return self._load_answer(functions, problems, errors, notes, failed_cells, restart=None, current=None,
                                 program=program)

    def _load_answer(self, functions: list[str], problems: dict[str, str], errors: dict[str, str],
                     notes: list[str], failed_cells: dict[str, str], restart: str | None, current: str | None,
                     program: dict[str, Any]) -> dict[str, Any]:
        cells = {cell["grade_id"]: cell for cell in program["cells"]}
        defined: dict[str, bool] = {}
        for name in functions:
            value = self.namespace.get(name)
            if name in problems:
                errors[name] = problems[name]
            elif name in errors:  # its cell was skipped: it killed an earlier worker
                pass
            elif name in failed_cells and (value is None or name == current):
                errors[name] = f"The cell `{name}` failed when it ran: {failed_cells[name]}"
            elif value is None:
                cell = cells.get(name)
                others = ", ".join(f"`{other}`" for other in (cell or {}).get("defines", []) if other != name)
                errors[name] = (f"The cell `{name}` does not define a function named `{name}`"
                                + (f" (it defines {others})" if others else "")
                                + ". Keep the name and the signature given in the release.")
            elif not callable(value):
                errors[name] = f"`{name}` is not a function (it is a {_type_name(value)})."
            elif name in failed_cells:
                notes.append(f"The cell `{name}` raised an error after defining `{name}` "
                             f"({failed_cells[name]}); the function is graded anyway.")
            defined[name] = name not in errors
        for grade_id, message in failed_cells.items():
            if grade_id not in functions:
                errors[grade_id] = f"The setup cell `{grade_id}` failed: {message}"
        return {"ok": all(defined.values()) and not failed_cells, "defined": defined, "errors": errors,
                "notes": notes, "restart": restart, "failed_cell": current if restart else None,
                "failed_reason": failed_cells.get(current) if restart and current else None}

    # -- calls ------------------------------------------------------------------------------------
    def fresh_model(self, spec: ModelSpec) -> Any:
        """A new model for ``spec``: a deep copy of one built by ``build_model`` at first use.

        Copying is about four times faster than building DenseNet-121 again, and gives the same
        weights bit for bit; no two calls share a parameter, a buffer or a hook.
        """
        import copy

        from gradcam_kit.grading.models import build_model

        pristine = self._pristine.get(spec)
        if pristine is None:
            pristine = self._pristine[spec] = build_model(spec, self.helpers)
        return copy.deepcopy(pristine)

    def _reset_state(self) -> None:
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
                raise CallFailure(f"the grader asked for layer {item.name!r} without a model", "grader")
            import torch

            return torch.nn.Module.get_submodule(models[0], item.name)

        return map_leaves(value, leaf)

    def _function(self, name: str) -> Callable[..., Any]:
        function = self.namespace.get(name)
        if function is None or not callable(function):
            raise CallFailure(f"`{name}` is not defined by your notebook", "unavailable")
        return function

    def _run_student(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call the student's code under the per-call CPU budget; translate what it raises."""
        allow_cpu(self.limits["cpu_seconds"])
        try:
            return function(*args, **kwargs)
        except BaseException as error:  # noqa: BLE001
            raise failure_from(error, self.limits) from None
        finally:
            if os.getpid() != MAIN_PID:
                os._exit(0)
            self._harness_cpu()

    def _harness_cpu(self) -> None:
        """A generous CPU budget for the grader's own work (building models, describing results)."""
        allow_cpu(max(float(self.limits["startup_seconds"]), float(self.limits["cpu_seconds"])))

    def _after_call(self) -> str | None:
        """Why the worker must be restarted after this call (``None``: it can go on)."""
        self._flush_streams()
        release_free_memory()
        if self._output_exceeded():
            return "output"
        try:
            while True:
                pid, _ = os.waitpid(-1, os.WNOHANG)
                if pid == 0:
                    return "processes"
        except ChildProcessError:
            pass
        return None

    def _output_exceeded(self) -> bool:
        try:
            size = max(os.fstat(1).st_size, os.fstat(2).st_size)
        except OSError:
            return False
        return size >= int(self.limits["output_bytes"]) - 4096

    @staticmethod
    def _flush_streams() -> None:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:  # noqa: BLE001 - a full log, a replaced stream
                pass

    @staticmethod
    def _compile_substitutes(sources: Any) -> dict[str, Callable[..., Any]]:
        """The grader's own versions of some helpers, each compiled in a private namespace.

        ``sources`` maps a helper's name to Python source text defining that function (it came over
        the protocol channel for this call only; it is never written to a file).
        """
        if not sources:
            return {}
        if not isinstance(sources, dict):
            raise CallFailure("the grader sent malformed substitutes", "grader")
        import torch
        import torch.nn.functional as F  # noqa: N812

        compiled: dict[str, Callable[..., Any]] = {}
        for name, source in sources.items():
            if not (isinstance(name, str) and name.isidentifier() and isinstance(source, str)):
                raise CallFailure("the grader sent malformed substitutes", "grader")
            private: dict[str, Any] = {"__builtins__": builtins, "__name__": "_grader_substitutes",
                                       "torch": torch, "F": F}
            exec(compile(source, f"<grader's {name}>", "exec"), private)  # noqa: S102 - the grader's own code
            function = private.get(name)
            if not callable(function):
                raise CallFailure(f"the grader's substitute for `{name}` defines no function", "grader")
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
            return self._run_student(function, *args, **kwargs)
        finally:
            for name, previous in saved.items():
                if previous is missing:
                    self.namespace.pop(name, None)
                else:
                    self.namespace[name] = previous

    def call(self, request: dict[str, Any]) -> dict[str, Any]:
        models: list[Any] = []
        started = time.perf_counter()
        watch: ModelWatch | None = None
        substituted = bool(request.get("substitutes"))
        try:
            function = self._function(request["function"])
            substitutes = self._compile_substitutes(request.get("substitutes"))
            self._reset_state()
            args = self._resolve_layers(self._to_student(request["args"], models), models)
            kwargs = self._resolve_layers(self._to_student(request["kwargs"], models), models)
            watch = ModelWatch(models[0]) if models else None
            self.send({"event": "running"})
            started = time.perf_counter()
            result = self._run_with_substitutes(substitutes, function, *args, **kwargs)
            seconds = time.perf_counter() - started
            value = Describer(int(self.limits["result_bytes"])).describe(result)
            answer = {"ok": True, "value": value, "error": None, "failure": None}
        except CallFailure as failure:
            seconds = time.perf_counter() - started
            answer = {"ok": False, "value": None, "error": failure.message, "failure": failure.kind,
                      "restart": failure.kind if failure.restart else None}
        except ResultTooLarge:
            seconds = time.perf_counter() - started
            from gradcam_kit.grading.sandbox import describe_bytes

            answer = {"ok": False, "value": None, "failure": "result",
                      "error": f"returned more data than the grader accepts "
                               f"({describe_bytes(self.limits['result_bytes'])})"}
        answer["seconds"] = seconds
        answer["observations"] = watch.observations() if watch is not None else {}
        self._close_figures()
        restart = self._after_call()
        if restart == "output" and answer["ok"]:
            from gradcam_kit.grading.sandbox import describe_bytes

            answer.update(ok=False, value=None, failure="output",
                          error=f"printed more than {describe_bytes(self.limits['output_bytes'])}")
        # nothing the student's code did with the grader's substitutes may outlive this call
        answer["restart"] = answer.get("restart") or restart or ("substitutes" if substituted else None)
        return answer

    @staticmethod
    def _close_figures() -> None:
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is not None:
            try:
                pyplot.close("all")
            except Exception:  # noqa: BLE001
                pass

    # -- probing the hooks ------------------------------------------------------------------------
    def probe(self, request: dict[str, Any]) -> dict[str, Any]:
        import torch

        describer = Describer(int(self.limits["result_bytes"]))
        value: dict[str, Any] = {"step": None, "returned": None, "hooks_added": {}, "activations": None,
                                 "gradients": None, "removed": False}
        answer: dict[str, Any] = {"ok": False, "error": None, "failure": None}
        started = time.perf_counter()
        self._reset_state()
        model = self.fresh_model(request["model"])
        watch = ModelWatch(model)
        layer = torch.nn.Module.get_submodule(model, request["layer"])
        image = torch.from_numpy(np.array(request["image"], dtype=np.float32, copy=True))
        class_idx = request["class_idx"]
        step = "register"
        try:
            register = self._function(request.get("function") or "register_gradcam_hooks")
            before = hook_table(model)
            self.send({"event": "running"})
            started = time.perf_counter()
            returned = self._run_student(register, layer)
            value["hooks_added"] = added_hooks(before, hook_table(model))
            value["returned"] = describer.describe(returned)
            step = "returned"
            if type(returned) not in (tuple, list) or len(returned) != 2:
                raise CallFailure(f"register_gradcam_hooks should return (store, handles); it returned "
                                  f"a {_type_name(returned)}", "wrong_return")
            store, handles = returned
            step = "forward"
            scores = self._run_student(model, image)
            step = "backward"
            self._run_student(lambda: scores[:, class_idx].sum().backward())
            step = "store"
            value["activations"] = describer.describe(self._run_student(lambda: store["activations"]))
            value["gradients"] = describer.describe(self._run_student(lambda: store["gradients"]))
            step = "remove"
            for handle in (handles if type(handles) in (list, tuple) else [handles]):
                self._run_student(handle.remove)
            value["removed"] = True
            step = None
            answer["ok"] = True
        except CallFailure as failure:
            value["step"] = step
            answer.update(error=f"at step '{step}': {failure.message}", failure=failure.kind,
                          restart=failure.kind if failure.restart else None)
        except ResultTooLarge:
            value["step"] = step
            answer.update(error="the store held more data than the grader accepts", failure="result")
        answer["seconds"] = time.perf_counter() - started
        answer["value"] = value
        answer["observations"] = watch.observations()
        restart = self._after_call()
        answer["restart"] = answer.get("restart") or restart
        return answer

    # -- the loop ---------------------------------------------------------------------------------
    def serve(self) -> None:
        while True:
            try:
                request = read_frame(self.request_fd, max_bytes=2**30)
            except EOFError:
                return
            op = request.get("op")
            if op == "bye":  # nothing is left to keep: skip the interpreter's slow tear-down of torch
                self._flush_streams()
                os._exit(0)
            self._harness_cpu()
            handler = {"call": self.call, "probe": self.probe,
                       # an exploration cell, for formgrader (gradcam_kit/grading/exploration_runtime.py)
                       "explore": lambda request: run_exploration_cell(self, request, CallFailure)}.get(op)
            if handler is None:
                answer = {"ok": False, "error": f"unknown request {op!r}", "failure": "grader"}
            else:
                try:
                    answer = handler(request)
                except Exception as error:  # noqa: BLE001 - a bug of the harness, or code the student replaced
                    answer = harness_failure(error)
            answer["id"] = request.get("id")
            self.send(answer)
            if answer.get("restart"):
                return


def harness_failure(error: BaseException) -> dict[str, Any]:
    """The answer to a call whose harness (not the student's function itself) raised ``error``.

    When the exception comes from the student's code (it went through a frame of one of their
    cells: a monkeypatched library, a model they changed), it is theirs: ``exception``. Otherwise
    the grader itself failed (its own files unreadable, a bug): ``grader``, never charged to them.
    """
    where = student_location(error)
    if where:
        return {"ok": False, "value": None, "failure": "exception", "observations": {},
                "error": f"your code broke the grader's call: {type(error).__name__}: {_safe_text(error)}{where}"}
    return {"ok": False, "value": None, "failure": "grader", "observations": {},
            "error": f"the grader failed to run this call: {type(error).__name__}: {_safe_text(error)}"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gradcam_kit.grading.worker")
    parser.add_argument("--request-fd", type=int)
    parser.add_argument("--reply-fd", type=int)
    parser.add_argument("--zygote-fd", type=int, help="serve as the zygote on this control socket")
    parser.add_argument("--uid", type=int)
    parser.add_argument("--gid", type=int)
    parser.add_argument("--probe", action="store_true", help="check that the worker's code imports, and leave")
    options = parser.parse_args(argv)
    if options.probe:
        import gradcam_kit.grading.models  # noqa: F401 - imported lazily by real workers

        print(Path(sys.modules["gradcam_kit"].__file__ or "").parent)
        return 0
    if options.uid is not None:
        drop_privileges(options.uid, options.gid if options.gid is not None else options.uid)
    faulthandler.enable(file=sys.stderr)
    if options.zygote_fd is not None:
        from gradcam_kit.grading.zygote_server import ZygoteServer

        return ZygoteServer(options.zygote_fd, run_worker).serve()
    if options.request_fd is None or options.reply_fd is None:
        parser.error("--request-fd and --reply-fd are required")
    return run_worker(options.request_fd, options.reply_fd)


def run_worker(request_fd: int, reply_fd: int) -> int:
    """Read the ``start`` message, load the notebook and answer calls until ``bye``."""
    global MAIN_PID
    MAIN_PID = os.getpid()  # a worker forked by the zygote is not the process that imported this module
    os.set_inheritable(request_fd, False)
    os.set_inheritable(reply_fd, False)
    start = read_frame(request_fd)
    notebook = start.get("notebook")
    if notebook:  # forked by the zygote, whose sandbox does not bind the submission: a copy, written
        # before the limits (a notebook with outputs may be larger than what the student may write)
        Path(start["workdir"], notebook["name"]).write_bytes(np.asarray(notebook["data"], dtype=np.uint8).tobytes())
    apply_limits(start["limits"], own_uid=bool(start.get("own_uid")))
    worker = Worker(request_fd, reply_fd, start)
    try:
        worker.prepare()
    except BaseException as error:  # noqa: BLE001
        worker.send({"event": "failed", "error": f"{type(error).__name__}: {_safe_text(error)}"})
        return 3
    answer = worker.load()
    answer["event"] = "loaded"
    worker.send(answer)
    if answer.get("restart"):
        return 0
    worker.serve()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
