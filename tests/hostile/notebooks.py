"""Synthetic notebooks that follow the cell contract of docs/design.md.

:func:`source_notebook` is a small instructor notebook (two setup cells, the seven function cells
with a correct solution, their test cells, written-answer and exploration cells);
:func:`submission` derives a student's notebook from it, with cells replaced, removed, added or
with changed metadata. They are built with nbformat so that they are real v4 notebooks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

SETUP = {
    "setup_imports": (
        "import numpy as np\n"
        "import torch\n"
        "import torch.nn.functional as F\n"
        "import matplotlib.pyplot as plt\n"
        "import tp2_utils\n"
    ),
    "setup_data": (
        "class_names = tp2_utils.class_names()\n"
        "image_paths = tp2_utils.list_images()\n"
    ),
}

SOLUTIONS = {
    "register_gradcam_hooks": '''\
def register_gradcam_hooks(layer):
    store = {}

    def keep_gradient(gradient):
        store["gradients"] = gradient

    def on_forward(module, inputs, output):
        store["activations"] = output
        output.register_hook(keep_gradient)

    return store, [layer.register_forward_hook(on_forward)]
''',
    "channel_weights": '''\
def channel_weights(gradients):
    return gradients.mean(dim=(2, 3))
''',
    "weighted_cam": '''\
def weighted_cam(activations, weights):
    return F.relu((weights[:, :, None, None] * activations).sum(dim=1))
''',
    "upsample_normalize": '''\
def upsample_normalize(cam, size=(224, 224)):
    up = F.interpolate(cam[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    low = up.flatten(1).min(dim=1).values[:, None, None]
    high = up.flatten(1).max(dim=1).values[:, None, None]
    return (up - low) / (high - low).clamp_min(1e-12)
''',
    "grad_cam": '''\
def grad_cam(model, image, class_idx, layer):
    store, handles = register_gradcam_hooks(layer)
    try:
        model.zero_grad()
        scores = model(image)
        scores[:, class_idx].sum().backward()
    finally:
        for handle in handles:
            handle.remove()
    weights = channel_weights(store["gradients"])
    cam = weighted_cam(store["activations"], weights)
    return upsample_normalize(cam, size=tuple(image.shape[-2:]))[0].detach()
''',
    "top_and_least": '''\
def top_and_least(scores, k=3):
    order = scores.flatten().argsort(descending=True)
    return order[:k].tolist() + [int(order[-1])]
''',
    "show_grad_cam": '''\
def show_grad_cam(image, model, layer, class_names):
    scores = model(image)
    chosen = top_and_least(scores.detach())
    figure, axes = plt.subplots(1, len(chosen), figsize=(4 * len(chosen), 4))
    for ax, index in zip(axes, chosen):
        tp2_utils.show_cam_on_image(ax, image[0], grad_cam(model, image, index, layer), class_names[index])
    return figure
''',
}

FUNCTIONS = tuple(SOLUTIONS)


def _nbgrader(grade_id: str, **flags: object) -> dict:
    meta = {"grade_id": grade_id, "schema_version": 3, "solution": False, "grade": False, "locked": False}
    meta.update(flags)
    return {"nbgrader": meta}


def source_notebook() -> nbformat.NotebookNode:
    """The synthetic instructor notebook (cells in the contract's order)."""
    cells = [new_markdown_cell("# TP2 Grad-CAM", metadata=_nbgrader("intro", locked=True))]
    for grade_id, code in SETUP.items():
        cells.append(new_code_cell(code, metadata=_nbgrader(grade_id, locked=True)))
    for name, code in SOLUTIONS.items():
        cells.append(new_code_cell(code, metadata=_nbgrader(name, solution=True)))
        test = ('### BEGIN HIDDEN TESTS\nfrom gradcam_kit.hidden import run_hidden_test\n'
                f'run_hidden_test("test_{name}")\n### END HIDDEN TESTS\n')
        cells.append(new_code_cell(test, metadata=_nbgrader(f"test_{name}", grade=True, locked=True, points=1)))
    cells.append(new_code_cell("raise RuntimeError('exploration cells are never run')",
                               metadata=_nbgrader("part2_code", solution=True)))
    cells.append(new_markdown_cell("YOUR ANSWER HERE", metadata=_nbgrader("part2_answer", solution=True,
                                                                          grade=True, points=2)))
    return new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                              "language": "python"}})


def submission(replace: dict[str, str] | None = None, remove: Iterable[str] = (),
               rename: dict[str, str] | None = None, duplicate: Iterable[str] = (),
               to_markdown: Iterable[str] = (), append: Iterable[tuple[str | None, str]] = (),
               base: nbformat.NotebookNode | None = None) -> nbformat.NotebookNode:
    """A student's notebook derived from the source notebook.

    Parameters
    ----------
    replace : dict
        grade_id -> new source of that cell.
    remove : iterable of str
        grade_ids of cells to delete.
    rename : dict
        grade_id -> new grade_id.
    duplicate : iterable of str
        grade_ids of cells to copy (right after the original, same metadata).
    to_markdown : iterable of str
        grade_ids of cells turned into markdown cells.
    append : iterable of (grade_id or None, source)
        Code cells added at the end (``None``: no nbgrader metadata).
    """
    notebook = nbformat.reads(nbformat.writes(base or source_notebook()), as_version=4)
    replace, rename = replace or {}, rename or {}
    removed, duplicated, markdown = set(remove), set(duplicate), set(to_markdown)
    cells = []
    for cell in notebook.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in removed:
            continue
        if grade_id in replace:
            cell.source = replace[grade_id]
        if grade_id in rename:
            cell.metadata.nbgrader.grade_id = rename[grade_id]
        if grade_id in markdown:
            cell = new_markdown_cell(cell.source, metadata=cell.metadata)
        cells.append(cell)
        if grade_id in duplicated:
            copy = nbformat.from_dict(dict(cell))
            copy["id"] = f"{cell.get('id', 'cell')}-copy"
            cells.append(copy)
    for grade_id, source in append:
        cells.append(new_code_cell(source, metadata=_nbgrader(grade_id, solution=True) if grade_id else {}))
    notebook.cells = cells
    return notebook


def write(notebook: nbformat.NotebookNode, path: Path) -> Path:
    """Write ``notebook`` to ``path`` (parents created) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, str(path))
    return path
