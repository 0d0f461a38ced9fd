"""The worker's own code: exactly the kit modules this process imported, staged for the sandbox.

The worker must run the same kit code as the judge that starts it, wherever that code lives (an
editable install of another checkout, ``pip install .`` into a virtual environment, a copy of the
kit inside the course, a path with spaces, a symlinked folder). Relying on the interpreter to find
``gradcam_kit`` again would not do: ``python -I`` in the sandbox imports it through the virtual
environment, which may name another copy than the one this process imported (the course folder on
``sys.path`` wins here, the editable finder wins there), and that copy may not be visible inside.

So the grader stages the modules the worker imports into a folder of its own
(:func:`staged_worker_code`), and every worker starts with that folder first on ``sys.path``
(:func:`worker_command`): at the ``bwrap`` level it is bound read-only at :data:`CODE_IN_SANDBOX`,
at the other levels it is used where it is. It is also the only part of the kit that the worker
may read (the tripwire allows it and nothing else of the kit).

Which modules: every module of the packages that run inside the sandbox (:data:`SANDBOX_PACKAGES`:
:mod:`gradcam_kit.worker` and :mod:`gradcam_kit.wire`), found by walking their folders, and every
module of the kit that they import, at the top of a file or inside a function, transitively
(:func:`worker_modules`), read from the files of the package this process imported. Nothing here is
a hand-kept list of modules: a module added to the worker package is staged, and so is what it imports.
"""

from __future__ import annotations

import ast
import atexit
import compileall
import os
import shutil
import sys
import tempfile
from functools import lru_cache
from pathlib import Path

__all__ = ["CODE_IN_SANDBOX", "SANDBOX_PACKAGES", "WORKER_ENTRY", "staged_worker_code", "worker_command",
           "worker_modules"]

SANDBOX_PACKAGES = ("gradcam_kit.worker", "gradcam_kit.wire")
"""The packages whose code runs inside the sandbox (the worker, and what crosses the boundary)."""
WORKER_ENTRY = "gradcam_kit.worker.entry"
"""The module the worker runs (its ``main``)."""
CODE_IN_SANDBOX = "/opt/gradcam-kit"
"""Where the staged code is bound inside the ``bwrap`` sandbox."""

_BOOT = ("import sys; sys.path.insert(0, {code!r}); "
         "from {entry} import main; sys.exit(main(sys.argv[1:]))")


def _package_root(name: str) -> Path:
    """The folder of the top-level package ``name`` as this process imported it."""
    module = sys.modules.get(name)
    if module is None:
        module = __import__(name)
    return Path(module.__file__).resolve().parent  # type: ignore[arg-type]


def _module_file(root: Path, name: str) -> Path | None:
    """The file of module ``name`` (``top.a.b``) under the package folder ``root``."""
    parts = name.split(".")[1:]
    base = root.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_names(path: Path, module: str, package: str) -> set[str]:
    """The modules of ``package`` that the file of ``module`` imports, anywhere in its code."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    here = module if is_package else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")
                base = base[:len(base) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            names.add(origin)
            names.update(f"{origin}.{alias.name}" for alias in node.names)  # ``from pkg import module``
    return {name for name in names if name == package or name.startswith(package + ".")}


def _package_modules(root: Path, package: str) -> list[str]:
    """Every module of ``package`` (``top.sub``), found in its folder under the package folder ``root``."""
    folder = root.joinpath(*package.split(".")[1:])
    return sorted(".".join((package, *path.relative_to(folder).with_suffix("").parts)).removesuffix(".__init__")
                  for path in folder.rglob("*.py"))


def worker_modules(packages: tuple[str, ...] = SANDBOX_PACKAGES) -> dict[str, Path]:
    """The modules of the kit the worker may import, by name, with their files in this process's kit.

    Parameters
    ----------
    packages : tuple of str
        The packages that run inside the sandbox (all of a top-level package: the kit's).

    Returns
    -------
    dict of str to Path
        Every module of ``packages``, and every module reachable from them by ``import`` statements
        (lazy ones included) that belongs to the same top-level package, with the packages that
        hold them (``gradcam_kit``, ``gradcam_kit.worker``, ...).
    """
    top = packages[0].split(".")[0]
    root = _package_root(top)
    found: dict[str, Path] = {}
    pending = [module for package in packages for module in _package_modules(root, package)]
    while pending:
        name = pending.pop()
        if name in found:
            continue
        path = _module_file(root, name)
        if path is None:
            continue  # ``from pkg import function``: a name, not a module
        found[name] = path
        parts = name.split(".")
        pending += [".".join(parts[:index]) for index in range(1, len(parts))]
        pending += sorted(_imported_names(path, name, top) - set(found))
    return found


@lru_cache(maxsize=1)
def staged_worker_code() -> Path:
    """A folder holding :func:`worker_modules` as a package tree (and their bytecode), for this process.

    Made once per process, readable by every user (the ``uid`` level runs the worker as another
    user), removed when the process ends. The worker puts it first on ``sys.path``.
    """
    modules = worker_modules()
    root = _package_root(WORKER_ENTRY.split(".")[0])
    folder = Path(tempfile.mkdtemp(prefix="gradcam-kit-code-"))
    atexit.register(shutil.rmtree, folder, True)
    for path in modules.values():
        target = folder / root.name / path.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)  # the modification time too: it validates the bytecode below
    compileall.compile_dir(str(folder), quiet=2, workers=1)
    for place, _, files in os.walk(folder):
        os.chmod(place, 0o755)
        for name in files:
            os.chmod(os.path.join(place, name), 0o644)
    return folder


def worker_command(code: str, arguments: list[str], entry: str = WORKER_ENTRY) -> list[str]:
    """``python -I -B -c BOOT ARGS``: run ``entry``'s ``main(ARGS)`` with the code at ``code`` first
    on ``sys.path`` (``-I``: no environment variables, no user site, no current folder)."""
    return [sys.executable, "-I", "-B", "-c", _BOOT.format(code=code, entry=entry), *arguments]
