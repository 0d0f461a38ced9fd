"""Cheating submissions, graded end to end by the real judge, earn nothing.

Each notebook below is the release with every graded function replaced by a cheat. Were the
judge naive (comparing inside the student's process, trusting returned objects, or leaving the
answer key within reach), each of them would score; here every one must score 0 on every test,
and nothing outside the worker's scratch folder may change.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gradcam_kit.grading.samples import ALL_TESTS, release_notebook, with_cells

FUNCTIONS = [test.removeprefix("test_") for test in ALL_TESTS]

# What each function returns when a cheat has nothing better: well-shaped but wrong answers.
JUNK = '''
import torch, matplotlib.pyplot as _plt

def _junk(name, *args, **kwargs):
    if name == "register_gradcam_hooks":
        return {"activations": torch.zeros(1, 1024, 7, 7), "gradients": torch.zeros(1, 1024, 7, 7)}, []
    if name == "channel_weights":
        return torch.zeros(args[0].shape[:2])
    if name == "weighted_cam":
        return torch.zeros(args[0].shape[0], *args[0].shape[2:])
    if name == "upsample_normalize":
        size = args[1] if len(args) > 1 else kwargs.get("size", (224, 224))
        return torch.zeros(args[0].shape[0], *size)
    if name == "grad_cam":
        return torch.zeros(224, 224)
    if name == "top_and_least":
        return [0, 1, 2, 3]
    figure, axes = _plt.subplots(1, 4)
    for ax in axes:
        ax.imshow(torch.zeros(4, 4).numpy())
        ax.set_title("tench")
    return figure
'''

CHEATS = {
    # Make every comparison, assertion and equality say yes, then return junk.
    "monkeypatch": JUNK + '''
import builtins, numpy, numpy.testing, torch.testing
torch.allclose = lambda *a, **k: True
torch.equal = lambda *a, **k: True
torch.isclose = lambda a, b, *r, **k: torch.ones_like(torch.as_tensor(a), dtype=torch.bool)
torch.testing.assert_close = lambda *a, **k: None
numpy.allclose = lambda *a, **k: True
numpy.array_equal = lambda *a, **k: True
numpy.testing.assert_allclose = lambda *a, **k: None
torch.Tensor.__eq__ = lambda self, other: torch.ones((), dtype=torch.bool)
builtins.AssertionError = type("NotAnAssertion", (Exception,), {})
try:
    import pytest
    pytest.approx = lambda *a, **k: type("Yes", (), {"__eq__": lambda s, o: True})()
except ImportError:
    pass

def _answer(name, *args, **kwargs):
    return _junk(name, *args, **kwargs)
''',
    # Objects that claim to equal anything.
    "always_equal": '''
class _Yes(list):
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __hash__(self): return 0
    def allclose(self, *a, **k): return True
    def __array__(self, *a, **k):
        import numpy
        return numpy.zeros((224, 224), dtype="float32")
    def __getattr__(self, name): return self
    def __call__(self, *a, **k): return self

def _answer(name, *args, **kwargs):
    return _Yes()
''',
    # Read or import the answer key, the reference, the judge, the kit's sample solutions or the
    # source notebook from disk, and delegate to whatever is found.
    "steal_solutions": JUNK + '''
import importlib.util, json, os, sys

_stolen = {}

def _from_file(path):
    spec = importlib.util.spec_from_file_location("_stolen_module", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {name: getattr(module, name) for name in dir(module)}

def _from_notebook(path):
    namespace = {}
    for cell in json.load(open(path))["cells"]:
        if cell["cell_type"] == "code" and "def " in "".join(cell["source"]):
            try:
                exec("".join(cell["source"]), namespace)
            except Exception:
                pass
    return namespace

_roots = [COURSE_ROOT, os.getcwd(), os.path.dirname(os.getcwd()), "/", "/work", "/tmp"]
_tries = [
    lambda: __import__("solutions.answer_key", fromlist=["x"]).__dict__,
    lambda: __import__("autograder_tests._reference", fromlist=["x"]).__dict__,
    lambda: vars(__import__("gradcam_kit.grading.samples", fromlist=["x"])),
]
for _root in _roots:
    _tries += [
        (lambda r=_root: _from_file(os.path.join(r, "solutions", "answer_key.py"))),
        (lambda r=_root: _from_notebook(os.path.join(r, "source", "TP2_GradCAM", "TP2_GradCAM.ipynb"))),
    ]
sys.path.insert(0, COURSE_ROOT)
for _try in _tries:
    try:
        _stolen.update({k: v for k, v in _try().items() if callable(v)})
    except Exception:
        pass
open(os.path.join(os.getcwd(), "stolen.txt"), "w").write(" ".join(sorted(_stolen)))

def _answer(name, *args, **kwargs):
    if name in _stolen:
        return _stolen[name](*args, **kwargs)
    return _junk(name, *args, **kwargs)
''',
    # Write grades where the grader keeps them, then return junk.
    "write_grades": JUNK + '''
import json, os

_full = {"tests": {t: {"outcome": "passed", "points": 3.0, "max_points": 3.0, "feedback": ""}
                   for t in ["test_register_gradcam_hooks", "test_channel_weights", "test_weighted_cam",
                             "test_upsample_normalize", "test_grad_cam", "test_top_and_least",
                             "test_show_grad_cam"]}}
for _target in [TARGET_RESULTS, TARGET_CSV, TARGET_GRADEBOOK, "results.json", "grades.csv", "gradebook.db"]:
    try:
        with open(_target, "w") as _out:
            _out.write(json.dumps(_full))
    except Exception:
        pass

def _answer(name, *args, **kwargs):
    return _junk(name, *args, **kwargs)
''',
    # Behave differently when graded: look for signs of nbgrader or of the kit.
    "detect_grading": JUNK + '''
import os, sys

_graded = any(key.startswith(("NBGRADER", "GRADCAM_JUDGE", "PYTEST")) for key in os.environ) or \\
    "pytest" in sys.modules or "autograder_tests" in sys.modules
if _graded:
    import torch
    torch.allclose = lambda *a, **k: True

def _answer(name, *args, **kwargs):
    if _graded:
        return _junk(name, *args, **kwargs)
    raise NotImplementedError
''',
}


def _cheat_notebook(release, cheat: str, constants: dict[str, str]):
    prelude = "".join(f"{name} = {value!r}\n" for name, value in constants.items()) + cheat
    cells = {name: prelude + f"\ndef {name}(*args, **kwargs):\n    return _answer({name!r}, *args, **kwargs)\n"
             for name in FUNCTIONS}
    return with_cells(release, cells)


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def graded(course, tmp_path_factory):
    import nbformat

    work = tmp_path_factory.mktemp("cheats")
    targets = {"TARGET_RESULTS": work / "results" / "write_grades.json", "TARGET_CSV": work / "grades.csv",
               "TARGET_GRADEBOOK": work / "gradebook.db"}
    for path in targets.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    (work / "grades.csv").write_text("student_id,autograded_score\n")
    constants = {"COURSE_ROOT": str(course.root), **{k: str(v) for k, v in targets.items()}}
    release = release_notebook(course)
    paths = []
    for name, cheat in CHEATS.items():
        path = work / "submissions" / f"{name}.ipynb"
        path.parent.mkdir(exist_ok=True)
        nbformat.write(_cheat_notebook(release, cheat, constants), path)
        paths.append(path)
    protected = {folder: _digest(course.root / folder) for folder in ("solutions", "autograder_tests", "source")}
    before_csv = targets["TARGET_CSV"].read_bytes()
    env = dict(os.environ, GRADCAM_WEIGHTS=os.environ.get("GRADCAM_WEIGHTS", "random"))
    cache = tmp_path_factory.getbasetemp() / "gradcam-reference-cache"
    cache.mkdir(exist_ok=True)
    run = subprocess.run(
        [sys.executable, "-m", "autograder_tests", "--out", str(work / "results"), "--course", str(course.root),
         "--reference-cache", str(cache), *map(str, paths)],
        cwd=course.root, env=env, capture_output=True, text=True, timeout=1800,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = {p.stem: json.loads((work / "results" / f"{p.stem}.json").read_text()) for p in paths}
    return {"results": results, "targets": targets, "before_csv": before_csv, "protected": protected, "work": work}


@pytest.mark.parametrize("cheat", sorted(CHEATS))
def test_a_cheat_earns_nothing(graded, cheat):
    tests = graded["results"][cheat]["tests"]
    assert set(tests) == set(ALL_TESTS)
    earned = {name: result["points"] for name, result in tests.items() if result["points"]}
    assert earned == {}, {name: tests[name]["feedback"] for name in earned}


def test_the_grades_a_cheat_wrote_went_nowhere(graded, course):
    targets = graded["targets"]
    assert not targets["TARGET_GRADEBOOK"].exists()
    assert targets["TARGET_CSV"].read_bytes() == graded["before_csv"]
    # The judge wrote its own results for the notebook, not the cheat's forged ones.
    assert json.loads(targets["TARGET_RESULTS"].read_text())["tests"]["test_grad_cam"]["points"] == 0
    assert not (course.root / "results.json").exists() and not (course.root / "stolen.txt").exists()
    for folder, digest in graded["protected"].items():
        assert _digest(course.root / folder) == digest, f"{folder}/ changed during grading"
