"""The kit's layout, as docs/design.md draws it: layers that import only downwards, no import circle,
modules of a few hundred lines.

The layers, from the bottom: the facts and types every part shares; the kit's plugins of nbgrader
(the course's ``nbgrader_config.py`` names them, the grader runs them too); the wire; the worker
(inside the sandbox); the host (the judge's side of a worker); the grading engine; the instructor's
commands.
A module imports its own layer or those below, never above (the worker is started as a program,
not imported, by the host).
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KIT = REPO / "gradcam_kit"

SHARED = {"errors", "contract", "fsutil", "safe_text", "hidden_regions", "program", "judge_results", "course",
          "efficientnet", "progress", "lms"}
PLUGINS = {"autograde_plugins", "stubs"}
LAYERS = ("shared", "plugins", "wire", "worker", "host", "grading", "commands")
MAX_LINES = 420
""""About 400 lines" (the developers' guide), with room for a docstring's growth."""
CHECKED = ("gradcam_kit", "autograder_tests", "solutions")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) >= 3 and parts[1] in LAYERS:
        return parts[1]
    if len(parts) == 2 and parts[1] in SHARED:
        return "shared"
    if len(parts) == 2 and parts[1] in PLUGINS:
        return "plugins"
    if len(parts) == 2 and parts[1] in LAYERS:  # a package's __init__
        return parts[1]
    return "commands"


def kit_imports(path: Path, *, top_level_only: bool = False) -> set[str]:
    """The ``gradcam_kit`` modules that ``path`` imports (in functions too, unless ``top_level_only``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    known = {module_name(p) for p in KIT.rglob("*.py")}
    return {name for name in names if name in known and name.startswith("gradcam_kit.")}


def kit_modules() -> list[Path]:
    return sorted(p for p in KIT.rglob("*.py") if "__pycache__" not in p.parts)


def test_the_layers_are_all_named():
    """Every subpackage is a layer, every top-level module shared or a command (a new package must
    be placed deliberately)."""
    packages = {p.parent.name for p in KIT.glob("*/__init__.py")}
    assert packages <= set(LAYERS), packages - set(LAYERS)
    modules = {p.stem for p in KIT.glob("*.py")}
    assert SHARED | PLUGINS <= modules, (SHARED | PLUGINS) - modules


def test_each_layer_imports_only_downwards():
    upward = []
    for path in kit_modules():
        mine = LAYERS.index(layer_of(module_name(path)))
        for imported in kit_imports(path):
            if LAYERS.index(layer_of(imported)) > mine:
                upward.append(f"{module_name(path)} ({LAYERS[mine]}) imports {imported}")
    assert not upward, "\n".join(upward)


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` (module -> modules it imports), as a path, or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = 1
        for imported in sorted(graph.get(module, ())):
            if imported == module or imported.startswith(module + "."):
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


def test_no_import_circle():
    """No circle among the modules' top-level imports (a function-level import is there to be lazy)."""
    circle = find_circle({module_name(p): kit_imports(p, top_level_only=True) for p in kit_modules()})
    assert circle is None, "import circle: " + " -> ".join(circle or [])


def test_modules_are_a_few_hundred_lines():
    long = [f"{path.relative_to(REPO)}: {n} lines" for folder in CHECKED
            for path in sorted((REPO / folder).rglob("*.py"))
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES]
    assert not long, "\n".join(long)


def test_the_checks_can_fail(tmp_path):
    """The import scan sees both import forms and lazy imports; the circle finder finds a circle."""
    sample = tmp_path / "sample.py"
    sample.write_text("import gradcam_kit.contract\ndef f():\n    from gradcam_kit.grading import batch\n")
    assert kit_imports(sample) == {"gradcam_kit.contract", "gradcam_kit.grading", "gradcam_kit.grading.batch"}
    assert kit_imports(sample, top_level_only=True) == {"gradcam_kit.contract"}
    assert layer_of("gradcam_kit.grading.batch") == "grading" and layer_of("gradcam_kit.cli") == "commands"
    assert layer_of("gradcam_kit.program") == "shared" and layer_of("gradcam_kit.worker") == "worker"
    circle = {"gradcam_kit.a": {"gradcam_kit.b"}, "gradcam_kit.b": {"gradcam_kit.a"}}
    assert find_circle(circle) == ["gradcam_kit.a", "gradcam_kit.b", "gradcam_kit.a"]
    assert find_circle({"gradcam_kit.a": {"gradcam_kit.b"}, "gradcam_kit.b": set()}) is None
