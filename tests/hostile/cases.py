"""The hostile and broken corpus, with the outcome each case must get.

Three tables:

``RUNTIME``
    Functions that misbehave when called (limits, crashes, forbidden actions). They are added to a
    graded cell of an otherwise correct submission and called by name; each row gives the failure
    kind (``Outcome.failure``) and a fragment of the reason (``Outcome.error``).
``RETURNS``
    Functions that return something a judge must not be fooled by; each row gives a check of the
    plain data that crosses the boundary.
``BROKEN``
    Notebooks broken on disk; each row gives, per function, a fragment of the problem recorded by
    ``read_submission`` (or of ``fatal``) and of the notes.

Every hostile case is bounded: the limits of :data:`HOSTILE_LIMITS` stop it within seconds and a
few hundred MB, and the cases that only a non-root uid can bound (a fork bomb, ``kill(-1)``) are
marked so and refuse to run as root.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from gradcam_kit.wire.limits import Limits

from . import notebooks

HOSTILE_LIMITS = Limits(call_seconds=10.0, cpu_seconds=3, memory_bytes=int(4.5 * 2**30), output_bytes=2 * 2**20,
                        max_processes=32, result_bytes=2 * 2**20, max_restarts=30)
"""Tight limits: the memory bomb stops about 1 GB above torch's own mappings; the call limit leaves room
for the CPU limit to strike first on a busy machine."""

LOAD_LIMITS = Limits(call_seconds=4.0)
"""For the load-time cases: one cell loops forever at its top level."""


@dataclass(frozen=True)
class HostileCall:
    name: str
    code: str
    failure: str
    fragments: tuple[str, ...]
    needs_unprivileged: bool = False
    needs_tripwire: bool = False


RUNTIME: tuple[HostileCall, ...] = (
    HostileCall("raises", '''
def hostile_raises():
    shape = (3, 4)
    raise ValueError(f"bad shape {shape}")
''', "exception", ("ValueError: bad shape (3, 4) (cell `top_and_least`, line ",
                                 ': `raise ValueError(f"bad shape {shape}")`)')),
    HostileCall("sys_exit", '''
def hostile_sys_exit():
    import sys
    sys.exit(3)
''', "exit", ("sys.exit(3)",)),
    HostileCall("os_exit", '''
def hostile_os_exit():
    import os
    os._exit(3)
''', "exit", ("exited with status 3",)),
    HostileCall("segfault", '''
def hostile_segfault():
    import ctypes
    return ctypes.string_at(0)
''', "crash", ("SIGSEGV",)),
    HostileCall("sleeps_forever", '''
def hostile_sleeps_forever():
    import time
    while True:
        time.sleep(1)
''', "timeout", ("timed out after 10 s",)),
    HostileCall("burns_cpu", '''
def hostile_burns_cpu():
    torch.set_num_threads(2)   # two threads: the CPU time grows faster than the wall clock
    a = torch.rand(512, 512)
    while True:
        a = (a @ a).clamp(-1, 1)
''', "cpu", ("more than 3 s of CPU time",)),
    HostileCall("memory_bomb", '''
def hostile_memory_bomb():
    import numpy as np
    blocks = []
    while True:
        blocks.append(np.ones(2**24))   # 128 MB, touched
''', "memory", ("used more than 4.5 GB of memory",)),
    HostileCall("huge_tensor", '''
def hostile_huge_tensor():
    return torch.empty(2**40)
''', "memory", ("used more than 4.5 GB of memory",)),
    HostileCall("print_bomb", '''
def hostile_print_bomb():
    line = "x" * 99
    for _ in range(1_000_000):   # 100 MB
        print(line)
''', "output", ("more than 2 MB",)),
    HostileCall("print_bomb_swallowed", '''
def hostile_print_bomb_swallowed():
    line = "y" * 99
    for _ in range(1_000_000):
        try:
            print(line)
        except OSError:
            pass
    return 1
''', "output", ("printed more than 2 MB",)),
    HostileCall("fork_bomb", '''
def hostile_fork_bomb():
    import ctypes, os
    if os.getuid() == 0:
        raise RuntimeError("refusing to run a fork bomb as root")
    libc = ctypes.CDLL(None, use_errno=True)
    while True:
        if libc.fork() < 0:
            raise OSError(ctypes.get_errno(), "fork failed")
''', "processes", ("too many processes",), needs_unprivileged=True),
    HostileCall("python_fork", '''
def hostile_python_fork():
    import os
    return os.fork()
''', "exception", ("not allowed during grading",), needs_tripwire=True),
    HostileCall("subprocess", '''
def hostile_subprocess():
    import subprocess
    return subprocess.run(["id"], capture_output=True).stdout
''', "exception", ("not allowed during grading",), needs_tripwire=True),
    HostileCall("huge_result", '''
def hostile_huge_result():
    return torch.zeros(1024, 1024)   # 4 MB > the 2 MB result limit
''', "result", ("returned more data than the grader accepts (2 MB)",)),
    HostileCall("cuda", '''
def hostile_cuda():
    return torch.zeros(3).cuda()
''', "exception", ("the grader runs on a CPU",)),
)


@dataclass(frozen=True)
class ReturnCase:
    name: str
    code: str
    check: Callable[[Any], bool]
    explanation: str


def _tensor(value: Any, **expected: Any) -> bool:
    return isinstance(value, dict) and value.get("kind") == "tensor" and all(
        value.get(key) == wanted for key, wanted in expected.items())


RETURNS: tuple[ReturnCase, ...] = (
    ReturnCase("always_equal", '''
def hostile_always_equal():
    class AlwaysEqual:
        def __eq__(self, other):
            return True
        def __bool__(self):
            return True
    return AlwaysEqual()
''', lambda v: isinstance(v, dict) and set(v) == {"kind", "type"} and v["kind"] == "object"
        and v["type"].endswith("hostile_always_equal.<locals>.AlwaysEqual"), "a non-tensor is described by its type"),
    ReturnCase("int_subclass", '''
def hostile_int_subclass():
    class Yes(int):
        def __eq__(self, other):
            return True
    return [Yes(7), Yes(8)]
''', lambda v: v == [7, 8] and all(type(item) is int for item in v), "reduced to plain ints"),
    ReturnCase("tensor_subclass", '''
def hostile_tensor_subclass():
    class Liar(torch.Tensor):
        def __eq__(self, other):
            return torch.ones((), dtype=torch.bool)
        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            return torch.zeros(224, 224)
    return torch.arange(4.0).as_subclass(Liar)
''', lambda v: _tensor(v, shape=[4], dtype="torch.float32") and v["type"].endswith("Liar")
        and v["array"].tolist() == [0.0, 1.0, 2.0, 3.0], "its real values, and its type"),
    ReturnCase("float64", '''
def hostile_float64():
    return torch.zeros(2, 3, dtype=torch.float64)
''', lambda v: _tensor(v, dtype="torch.float64", shape=[2, 3]) and str(v["array"].dtype) == "float64",
        "the wrong dtype is visible"),
    ReturnCase("nan", '''
def hostile_nan():
    return torch.full((2,), float("nan"))
''', lambda v: _tensor(v, shape=[2]) and bool((v["array"] != v["array"]).all()), "NaN crosses as NaN"),
    ReturnCase("requires_grad", '''
def hostile_requires_grad():
    return torch.ones(3, requires_grad=True) * 2
''', lambda v: _tensor(v, requires_grad=True, shape=[3]), "requires_grad is reported"),
    ReturnCase("numpy_scalar", '''
def hostile_numpy_scalar():
    return [np.int64(3), np.float32(0.5)]
''', lambda v: [item.get("kind") for item in v] == ["numpy_scalar", "numpy_scalar"] and v[0]["value"] == 3,
        "numpy scalars are described, with their value"),
    ReturnCase("self_containing", '''
def hostile_self_containing():
    loop = []
    loop.append(loop)
    return loop
''', lambda v: isinstance(v, list), "a cycle is cut at a fixed depth"),
)


# ------------------------------------------------------------------------------------------------
# load-time cases: one submission whose cells fail in different ways while the notebook loads
# ------------------------------------------------------------------------------------------------
LOAD_CELLS = {
    "weighted_cam": notebooks.SOLUTIONS["weighted_cam"] + "\nimport ctypes\nctypes.string_at(0)\n",
    "grad_cam": notebooks.SOLUTIONS["grad_cam"] + "\nwhile True:\n    pass\n",
    "channel_weights": "import not_a_module_anyone_has\n\n" + notebooks.SOLUTIONS["channel_weights"],
    "upsample_normalize": "def upsample_normalize(cam, size=(224, 224):\n    return cam\n",
    "register_gradcam_hooks": "def register_gradcam_hooks(layer):\n    return None\n\n"
                              + notebooks.SOLUTIONS["register_gradcam_hooks"],
    "show_grad_cam": notebooks.SOLUTIONS["show_grad_cam"] + """
import sys
from gradcam_kit.wire.frames import write_frame
reply = int(sys.argv[sys.argv.index("--reply-fd") + 1])
for _ in range(100):   # forged progress messages, to stretch the loading deadline forever
    write_frame(reply, {"event": "cell", "grade_id": "setup_imports"})
""",
    "top_and_least": notebooks.SOLUTIONS["top_and_least"] + "\nraise RuntimeError('left-over test code')\n",
}
"""Cell sources of the load-time submission."""

WRONG_NAME = "def show_gradcam(image, model, layer, class_names):\n    return None\n"
WRONG_NAME_ERROR = ("The cell `show_grad_cam` does not define a function named `show_grad_cam` "
                    "(it defines `show_gradcam`)")

LOAD_EXPECTED = {
    "weighted_cam": ("crashed (SIGSEGV", False),
    "grad_cam": ("timed out after 4 s while the notebook was loading", False),
    "channel_weights": ("ModuleNotFoundError: No module named 'not_a_module_anyone_has'", False),
    "upsample_normalize": ("Syntax error in the cell `upsample_normalize`, line 1", False),
    "register_gradcam_hooks": (None, True),
    "show_grad_cam": ("broke the grader's channel", False),
    "top_and_least": (None, True),
}
"""Function -> (fragment of its error or None, whether it can still be called)."""


# ------------------------------------------------------------------------------------------------
# notebooks broken on disk
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BrokenNotebook:
    name: str
    write: Callable[[Path], Path]
    fatal: str | None = None
    problems: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    runnable_functions: tuple[str, ...] = ()


def _raw(text: str | bytes) -> Callable[[Path], Path]:
    def write(path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
        return path
    return write


def _notebook(**changes: Any) -> Callable[[Path], Path]:
    return lambda path: notebooks.write(notebooks.submission(**changes), path)


def _nbformat3(path: Path) -> Path:
    document = json.loads(json.dumps(notebooks.submission(), default=dict))
    document["nbformat"] = 3
    return _raw(json.dumps(document))(path)


def _bad_cell(path: Path) -> Path:
    document = json.loads(json.dumps(notebooks.submission(), default=dict))
    document["cells"].insert(0, {"cell_type": "code", "source": 42, "metadata": {}})
    document["cells"].insert(0, "not a cell")
    document["cells"].append({"cell_type": "code", "source": "x = 1", "metadata": {"nbgrader": "not a dict"}})
    document["cells"].append({"cell_type": "code", "source": "y = 2", "metadata": {"nbgrader": {"grade_id": 5}}})
    document["cells"].append({"cell_type": "code", "source": "z = 3", "metadata": []})
    return _raw(json.dumps(document))(path)


_ALL = notebooks.FUNCTIONS
_DEFINED_TWICE = (notebooks.SOLUTIONS["channel_weights"]
                  + "\n\ndef channel_weights(gradients):\n    return gradients.sum(dim=(2, 3))\n")

BROKEN: tuple[BrokenNotebook, ...] = (
    BrokenNotebook("invalid_json", _raw('{"cells": [,]}'), fatal="not valid JSON (line 1, column 12"),
    BrokenNotebook("truncated_json", lambda p: _raw(json.dumps(notebooks.submission(), default=dict)[:500])(p),
                   fatal="not valid JSON"),
    BrokenNotebook("empty_file", _raw(""), fatal="is empty"),
    BrokenNotebook("binary_file", _raw(b"\x89PNG\r\n\x1a\n\xff\xfe\x00"), fatal="not a text file"),
    BrokenNotebook("json_list", _raw("[1, 2, 3]"), fatal="not a notebook"),
    BrokenNotebook("nbformat_3", _nbformat3, fatal="notebook format 3, not format 4"),
    BrokenNotebook("no_cells", _raw('{"nbformat": 4, "nbformat_minor": 5, "metadata": {}}'), fatal="no list of cells"),
    BrokenNotebook("missing_file", lambda path: path, fatal="No notebook was found"),
    BrokenNotebook("deleted_cell", _notebook(remove=["grad_cam"]),
                   problems={"grad_cam": "The cell `grad_cam` is missing from your notebook — was it deleted or "
                                         "renamed? Restore it from the release"},
                   runnable_functions=tuple(name for name in _ALL if name != "grad_cam")),
    BrokenNotebook("renamed_cell", _notebook(rename={"weighted_cam": "weighted_cam_v2"}),
                   problems={"weighted_cam": "(A function `weighted_cam` is defined in another cell"},
                   runnable_functions=tuple(name for name in _ALL if name != "weighted_cam")),
    BrokenNotebook("duplicated_cell", _notebook(duplicate=["channel_weights"]),
                   problems={"channel_weights": "has 2 cells with the id `channel_weights`"},
                   runnable_functions=tuple(name for name in _ALL if name != "channel_weights")),
    BrokenNotebook("cell_turned_markdown", _notebook(to_markdown=["top_and_least"]),
                   problems={"top_and_least": "no longer a code cell (it is a markdown cell)"},
                   runnable_functions=tuple(name for name in _ALL if name != "top_and_least")),
    BrokenNotebook("syntax_error", _notebook(replace={"upsample_normalize": "def upsample_normalize(cam:\n    pass\n"}),
                   problems={"upsample_normalize": "Syntax error in the cell `upsample_normalize`, line 1"},
                   runnable_functions=tuple(name for name in _ALL if name != "upsample_normalize")),
    BrokenNotebook("foreign_cell_magic", _notebook(replace={"grad_cam": "%%bash\necho hi\n"}),
                   problems={"grad_cam": "cell magic %%bash"}),
    BrokenNotebook("tampered_setup", _notebook(replace={"setup_data": "class_names = ['hacked']\n"}),
                   notes=("The locked cell `setup_data` was changed",), runnable_functions=_ALL),
    BrokenNotebook("deleted_setup", _notebook(remove=["setup_imports"]),
                   notes=("The locked cell `setup_imports` was deleted",), runnable_functions=_ALL),
    BrokenNotebook("tampered_test", _notebook(replace={"test_grad_cam": "assert True\n"}),
                   notes=("The locked cell `test_grad_cam` was changed",), runnable_functions=_ALL),
    BrokenNotebook("defined_twice", _notebook(replace={"channel_weights": _DEFINED_TWICE}),
                   notes=("`channel_weights` is defined 2 times in the cell `channel_weights`; as in Python, the "
                          "last definition is the one graded.",), runnable_functions=_ALL),
    BrokenNotebook("redefined_elsewhere", _notebook(replace={"grad_cam": notebooks.SOLUTIONS["grad_cam"]
                                                             + "\n" + notebooks.SOLUTIONS["channel_weights"]}),
                   notes=("`channel_weights` is defined in several graded cells (`channel_weights`, `grad_cam`)",),
                   runnable_functions=_ALL),
    BrokenNotebook("malformed_cells", _bad_cell, notes=("Cell number 1 of your notebook is malformed",
                                                        "Cell number 2 of your notebook is malformed"),
                   runnable_functions=_ALL),
    BrokenNotebook("ipython_magics", _notebook(replace={"top_and_least": "%matplotlib inline\n!ls\n"
                                                        + notebooks.SOLUTIONS["top_and_least"]}),
                   runnable_functions=_ALL),
)
