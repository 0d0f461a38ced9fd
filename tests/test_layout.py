"""The kit's layout, as docs/design.md draws it: layers that import only downwards, no import circle,
modules of a few hundred lines.

The layers, from the bottom: the facts and types every part shares; the kit's plugins of nbgrader
(the course's ``nbgrader_config.py`` names them, the grader runs them too); the wire; the worker
(inside the sandbox); the host (the judge's side of a worker; it imports only the worker's
system-call filter, to hand it to bubblewrap); the grading engine; the instructor's commands; the
answer key (``solutions/``); the judge (``autograder_tests/``). A module imports its own layer or
those below, never above: the grader starts the judge as a program and never imports it. Imports
written as ``import x``, ``from x import y`` and ``from .x import y`` are seen, at the top of a
module or in a function; an import by a computed name (``importlib``) is not.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("gradcam_kit", "autograder_tests", "solutions")
KIT = REPO / "gradcam_kit"

SHARED = {"errors", "contract", "fsutil", "safe_text", "hidden_regions", "program", "judge_results", "course",
          "efficientnet", "progress", "lms"}
PLUGINS = {"autograde_plugins", "stubs"}
KIT_LAYERS = ("wire", "worker", "host", "grading")
LAYERS = ("shared", "plugins", *KIT_LAYERS, "commands", "solutions", "autograder_tests")
MAX_LINES = 420
""""About 400 lines" (the developers' guide), with room for a docstring's growth."""


def module_name(path: Path) -> str:
    """``REPO/gradcam_kit/host/session.py`` -> ``gradcam_kit.host.session`` (a package: its folder's name)."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> str:
    """The layer of a module of the three packages."""
    top, *rest = module.split(".")
    if top != "gradcam_kit":
        return top
    if rest and rest[0] in KIT_LAYERS:
        return rest[0]
    if not rest or (len(rest) == 1 and rest[0] in SHARED):  # the package itself holds no logic
        return "shared"
    if len(rest) == 1 and rest[0] in PLUGINS:
        return "plugins"
    return "commands"


def python_files() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (REPO / package).rglob("*.py") if "__pycache__" not in p.parts)


KNOWN = {module_name(p) for p in python_files()}


def imports_of(path: Path, *, top_level_only: bool = False) -> set[str]:
    """The modules of the three packages that ``path`` imports (in functions too, unless
    ``top_level_only``), relative imports resolved against ``path``'s own package."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    own = module_name(path).split(".") if path.name == "__init__.py" else module_name(path).split(".")[:-1]
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            base = own[:len(own) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name for name in names if name in KNOWN and name != module_name(path)}


def import_graph(*, top_level_only: bool = False) -> dict[str, set[str]]:
    return {module_name(p): imports_of(p, top_level_only=top_level_only) for p in python_files()}


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Each import of ``graph`` (module -> modules it imports) that goes to a higher layer."""
    return [f"{module} ({layer_of(module)}) imports {imported} ({layer_of(imported)})"
            for module, imported_modules in sorted(graph.items()) for imported in sorted(imported_modules)
            if LAYERS.index(layer_of(imported)) > LAYERS.index(layer_of(module))]


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` (module -> modules it imports), as a path, or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = 1
        for imported in sorted(graph.get(module, ())):
            if imported.startswith(module + "."):
                continue  # a package importing its own submodule
            if state.get(imported) == 1:
                return path[path.index(imported):] + [imported]
            if imported not in state and (found := visit(imported, path + [imported])):
                return found
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module, [module])):
            return found
    return None


# ---------------------------------------------------------------------------------------------
def test_the_layers_are_all_named():
    """Every subpackage of the kit is a layer, every shared or plugin module exists (a new package
    must be placed deliberately)."""
    packages = {p.parent.name for p in KIT.glob("*/__init__.py")}
    assert packages == set(KIT_LAYERS), packages ^ set(KIT_LAYERS)
    modules = {p.stem for p in KIT.glob("*.py")}
    assert SHARED | PLUGINS <= modules, (SHARED | PLUGINS) - modules


def test_each_layer_imports_only_downwards():
    upward = upward_imports(import_graph())
    assert not upward, "\n".join(upward)


def test_no_import_circle():
    """No circle among the modules' top-level imports (a function-level import is there to be lazy)."""
    circle = find_circle(import_graph(top_level_only=True))
    assert circle is None, "import circle: " + " -> ".join(circle or [])


def test_modules_are_a_few_hundred_lines():
    long = [f"{path.relative_to(REPO)}: {n} lines" for path in python_files()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES]
    assert not long, "\n".join(long)


def test_the_checks_can_fail(tmp_path, monkeypatch):
    """Each check finds what it looks for, in made-up modules and graphs."""
    folder = tmp_path / "gradcam_kit" / "host"
    folder.mkdir(parents=True)
    sample = folder / "sample.py"
    sample.write_text("import gradcam_kit.contract\nfrom . import session\n"
                      "def f():\n    from ..grading import batch\n    from gradcam_kit.grading.notebook import x\n")
    monkeypatch.setitem(globals(), "REPO", tmp_path)
    assert imports_of(sample) == {"gradcam_kit.contract", "gradcam_kit.host", "gradcam_kit.host.session",
                                  "gradcam_kit.grading", "gradcam_kit.grading.batch", "gradcam_kit.grading.notebook"}
    assert imports_of(sample, top_level_only=True) == {"gradcam_kit.contract", "gradcam_kit.host",
                                                       "gradcam_kit.host.session"}
    assert layer_of("gradcam_kit.program") == "shared" and layer_of("gradcam_kit.worker") == "worker"
    assert layer_of("gradcam_kit.cli") == "commands" and layer_of("autograder_tests._judge") == "autograder_tests"

    assert upward_imports({"gradcam_kit.host.session": {"gradcam_kit.grading.notebook"}}) == [
        "gradcam_kit.host.session (host) imports gradcam_kit.grading.notebook (grading)"]
    assert upward_imports({"gradcam_kit.grading.batch": {"autograder_tests._judge"}})
    assert not upward_imports({"gradcam_kit.grading.batch": {"gradcam_kit.host.session", "gradcam_kit.contract"}})

    circle = {"gradcam_kit.a": {"gradcam_kit.b"}, "gradcam_kit.b": {"gradcam_kit.a"}}
    assert find_circle(circle) == ["gradcam_kit.a", "gradcam_kit.b", "gradcam_kit.a"]
    assert find_circle({"gradcam_kit.a": {"gradcam_kit.b"}, "gradcam_kit.b": set()}) is None
