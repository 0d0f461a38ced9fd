"""The source notebook: its cell contract, its solutions, its visible tests, and nbgrader.

* the cell contract of docs/design.md (grade ids, flags, order, points, hidden regions);
* the solution of each graded function, checked against independent computations;
* the visible asserts of each test cell pass with the solution (``test_visible_tests.py`` runs them
  against every correct style and the typical bugs);
* the bonus is extra credit: 0 points in the maximum, extra credit in the gradebook;
* in a real kernel: a figure returned by ``show_grad_cam`` is shown once; offline with the default
  weights, the setup stops with one short message; a notebook whose seven functions are written and
  whose optional parts are skipped runs top to bottom without an error;
* ``nbgrader validate`` on the source notebook (runs the real hidden tests, offline);
* the course's ``IgnorePattern``: warnings and the weights notice cost no points at autograde.
"""

from __future__ import annotations

import ast
import contextlib
import io
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("agg")

import matplotlib.figure
import matplotlib.pyplot as plt
import nbformat
import numpy as np
import pytest
import torch
import torch.nn.functional as F

FUNCTIONS = {
    # name: the parameters of its signature, with their defaults
    "register_gradcam_hooks": "layer",
    "channel_weights": "gradients",
    "weighted_cam": "activations, weights",
    "upsample_normalize": "cam, size=(224, 224)",
    "grad_cam": "model, image, class_idx, layer",
    "top_and_least": "scores, k=3",
    "show_grad_cam": "image, model, layer, class_names",
}
EXPLORATION = ["part2_code", "part3_code", "part4_code", "bonus_code"]
ANSWERS = ["part2_answer", "part3_answer", "part4_answer", "part5_answer", "bonus_answer"]
EXTRA_CREDIT = ["bonus_answer"]
"""Graded by hand as nbgrader's extra credit: 0 points in the maximum, the grader's extra credit on top."""
SETUP_STATEMENTS = [
    "import numpy as np",
    "import matplotlib.pyplot as plt",
    "import torch",
    "import torch.nn.functional as F",
    "import tp2_utils",
    "device = tp2_utils.default_device()",
    "model = tp2_utils.load_model('densenet121', device=device)",
    "class_names = tp2_utils.class_names()",
    "image_paths = tp2_utils.list_images()",
]
SETUP_IDS = ["setup_imports", "setup_images", "setup_model"]
HIDDEN_REGION = (
    "### BEGIN HIDDEN TESTS\n"
    "from gradcam_kit.nbgrader_bridge import run_hidden_test\n"
    'run_hidden_test("{}")\n'
    "### END HIDDEN TESTS"
)


pytestmark = pytest.mark.usefixtures("one_thread")  # this module runs DenseNet


# --------------------------------------------------------------------------------------------
# Reading the notebook
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def notebook(course):
    return nbformat.read(course.source_notebook, as_version=4)


def meta(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


def cells_by_id(notebook) -> dict:
    return {meta(c)["grade_id"]: c for c in notebook.cells if "grade_id" in meta(c)}


def strip_region(source: str, begin: str, end: str) -> str:
    """``source`` without the lines from ``begin`` to ``end`` (both included)."""
    return re.sub(rf"^[ \t]*{re.escape(begin)}.*?^[ \t]*{re.escape(end)}[^\n]*\n?", "", source,
                  flags=re.S | re.M)


def visible_part(test_cell) -> str:
    return strip_region(test_cell.source, "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")


# --------------------------------------------------------------------------------------------
# The cell contract
# --------------------------------------------------------------------------------------------
def test_kernelspec_is_python3(notebook):
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    assert notebook.metadata["kernelspec"]["language"] == "python"


def test_nbgrader_metadata_is_consistent(notebook):
    ids = [meta(c)["grade_id"] for c in notebook.cells if meta(c)]
    assert len(ids) == len(set(ids)), "duplicate grade ids"
    for cell in notebook.cells:
        m = meta(cell)
        if not m:
            continue
        assert m["schema_version"] == 3, m
        assert re.fullmatch(r"[A-Za-z0-9_-]+", m["grade_id"]), m["grade_id"]
        if m["grade"] and m["grade_id"] in EXTRA_CREDIT:
            assert m.get("points") == 0, f"{m['grade_id']}: extra credit is worth 0 points in the maximum"
        elif m["grade"]:
            assert m.get("points", 0) > 0, f"{m['grade_id']}: a graded cell needs points"
        if m["solution"]:
            assert not m["locked"], f"{m['grade_id']}: a solution cell cannot be locked"


def test_setup_cells(notebook):
    setup = [c for c in notebook.cells if meta(c).get("grade_id", "").startswith("setup_")]
    assert [meta(c)["grade_id"] for c in setup] == SETUP_IDS
    first_function = next(i for i, c in enumerate(notebook.cells) if meta(c).get("grade_id") in FUNCTIONS)
    for cell in setup:
        m = meta(cell)
        assert cell.cell_type == "code" and m["locked"] and not m["grade"] and not m["solution"], m
        assert notebook.cells.index(cell) < first_function, f"{m['grade_id']} comes after Part 1 starts"
    statements = {ast.unparse(node) for cell in setup for node in ast.parse(cell.source).body}
    missing = [s for s in SETUP_STATEMENTS if s not in statements]
    assert not missing, f"the setup cells do not define: {missing}"
    setup_code = "\n".join(c.source for c in setup)
    assert "load_batch" not in setup_code and "preprocess" not in setup_code, "keep the setup light"


def test_function_cells_follow_the_contract(notebook):
    cells = notebook.cells
    function_cells = [i for i, c in enumerate(cells) if meta(c).get("grade_id") in FUNCTIONS]
    assert [meta(cells[i])["grade_id"] for i in function_cells] == list(FUNCTIONS), "order of the functions"
    for index in function_cells:
        cell, name = cells[index], meta(cells[index])["grade_id"]
        m = meta(cell)
        assert cell.cell_type == "code" and m["solution"] and not m["grade"] and not m["locked"], m

        tree = ast.parse(cell.source)
        defined = [node for node in tree.body if isinstance(node, ast.FunctionDef)]
        assert [d.name for d in defined] == [name], f"{name}: the cell must define exactly {name}"
        assert ast.unparse(defined[0].args) == FUNCTIONS[name], f"{name}: signature"
        doc = ast.get_docstring(defined[0])
        assert doc and "Parameters\n----------" in doc and "Returns\n-------" in doc, f"{name}: NumPy docstring"
        assert "shape (" in doc, f"{name}: the docstring must state the shapes"
        assert re.search(r"^    ### BEGIN SOLUTION\n(?:.*\n)+?    ### END SOLUTION$", cell.source, re.M), \
            f"{name}: a solution region inside the function"

        test_cell = next(c for c in cells[index + 1:] if c.cell_type == "code")
        t = meta(test_cell)
        assert t.get("grade_id") == f"test_{name}", f"{name}: the next code cell must be its test"
        assert t["grade"] and t["locked"] and not t["solution"] and t["points"] > 0, t
        assert test_cell.source.endswith(HIDDEN_REGION.format(f"test_{name}")), \
            f"test_{name}: it must end with the hidden region of docs/design.md"
        assert test_cell.source.count("### BEGIN HIDDEN TESTS") == 1
        assert "assert" in visible_part(test_cell), f"test_{name}: no visible asserts"


def test_exploration_and_answer_cells(notebook, course):
    by_id = cells_by_id(notebook)
    for grade_id in EXPLORATION:
        cell, m = by_id[grade_id], meta(by_id[grade_id])
        assert cell.cell_type == "code" and m["solution"] and not m["grade"] and not m["locked"], m
        region = re.search(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", cell.source, re.S)
        assert region and region.group(1).strip(), f"{grade_id}: a working example in the solution region"
    rubric = (course.solutions_dir / "rubric.md").read_text(encoding="utf-8")
    for grade_id in ANSWERS:
        cell, m = by_id[grade_id], meta(by_id[grade_id])
        assert cell.cell_type == "markdown" and m["solution"] and m["grade"], m
        assert (m["points"] == 0) == (grade_id in EXTRA_CREDIT), m
        assert "solutions/rubric.md" in cell.source and len(cell.source) < 200, \
            f"{grade_id}: the model answer belongs in solutions/rubric.md"
        assert f"`{grade_id}`" in rubric, f"the rubric has no section for {grade_id}"


def test_text_explains_the_in_place_relu_and_cites_the_paper(notebook):
    text = "\n".join(c.source for c in notebook.cells if c.cell_type == "markdown")
    for needle in ["https://arxiv.org/abs/1610.02391", "Selvaraju", "register_full_backward_hook",
                   "Output 0 of BackwardHookFunction is a view and is being modified inplace",
                   "F.relu(features, inplace=True)", "clone", "register_hook", "9928031928.png",
                   'load_model("resnet18"']:
        assert needle in text, f"the instructions should mention {needle!r}"


def test_text_names_the_conventions_as_the_feedback_does(notebook):
    """The judge's feedback says "convention 'pre_relu'": the notebook introduces the three names, with
    what gives each, and ties post_relu to CAM (Part 5)."""
    from gradcam_kit.grading.feedback import CONVENTION_GLOSSARY

    text = "\n".join(c.source for c in notebook.cells if c.cell_type == "markdown")
    for name in CONVENTION_GLOSSARY:
        assert f"| `{name}` |" in text, f"the conventions' table should have a row for {name}"
    assert "\\alpha^c_k = \\frac{W_{ck}}{49}" in text, "Part 5 shows that alpha = W / 49 at `features`"
    experiments = [c for c in notebook.cells if c.cell_type == "code" and 'kept["clone"]' in c.source]
    assert len(experiments) == 1 and not meta(experiments[0]), "one ungraded experiment cell on the in-place ReLU"
    cam = [c for c in notebook.cells if c.cell_type == "code" and "alpha == W / 49" in c.source]
    assert len(cam) == 1 and not meta(cam[0]), "one ungraded cell that checks Grad-CAM against CAM"


def test_text_links_the_documentation_and_tells_how_to_set_up(notebook):
    text = "\n".join(c.source for c in notebook.cells if c.cell_type == "markdown")
    for needle in ["torch.nn.Module.register_forward_hook", "torch.Tensor.register_hook.html",
                   "autograd_tutorial", "torch.autograd.grad", "torch.nn.functional.interpolate",
                   # where the images come from and where they go
                   "TP2_images.zip", "unzip it next to this notebook",
                   # the weights, from inside the notebook, one file per model, and what random weights mean
                   "tp2_utils.choose_weights(\"random\")", "resnet18=", "mean nothing",
                   # the bonus is extra credit; what a right figure looks like; shown once
                   "extra credit", "What a correct figure looks like", "plt.close(fig)"]:
        assert needle in text, f"the instructions should mention {needle!r}"
    assert "no network is needed" not in text, "the bonus downloads ResNet-18's weights"


# --------------------------------------------------------------------------------------------
# The solutions, run the way the grader runs them: setup cells, then the seven function cells
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def solution(notebook, course, tp2_utils):
    """The namespace after the setup cells and the seven function cells of the source."""
    sys.modules["tp2_utils"] = tp2_utils
    namespace: dict = {}
    old = os.environ.get("TP2_IMAGES_DIR")
    os.environ["TP2_IMAGES_DIR"] = str(course.images_dir)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            for cell in notebook.cells:
                grade_id = meta(cell).get("grade_id", "")
                if grade_id.startswith("setup_") or grade_id in FUNCTIONS:
                    exec(compile(cell.source, grade_id, "exec"), namespace)
    finally:
        if old is None:
            del os.environ["TP2_IMAGES_DIR"]
        else:
            os.environ["TP2_IMAGES_DIR"] = old
    assert all(callable(namespace.get(name)) for name in FUNCTIONS)
    return namespace


@pytest.fixture(scope="module")
def small_densenet(tp2_utils):
    return tp2_utils.load_model("densenet121", weights="random")


def reference_cam(model, image, class_idx):
    """Grad-CAM at model.features of a torchvision DenseNet, written out without hooks."""
    features = model.features(image)
    scores = model.classifier(torch.flatten(F.adaptive_avg_pool2d(F.relu(features), 1), 1))
    (gradients,) = torch.autograd.grad(scores[0, class_idx], features)
    cam = F.relu((gradients.mean(dim=(2, 3))[:, :, None, None] * features).sum(dim=1))
    cam = F.interpolate(cam[:, None], size=image.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    cam = cam - cam.min()
    return (cam / cam.max() if cam.max() > 0 else cam).detach(), features.detach(), gradients


def test_hooks_see_the_output_of_features_despite_the_in_place_relu(solution, small_densenet):
    torch.manual_seed(1)
    image = torch.randn(1, 3, 64, 64)
    _, features, gradients = reference_cam(small_densenet, image, 7)
    store, handles = solution["register_gradcam_hooks"](small_densenet.features)
    try:
        small_densenet(image)[0, 7].backward()
    finally:
        for handle in handles:
            handle.remove()
    small_densenet.zero_grad(set_to_none=True)
    assert (features < 0).any(), "the check needs negative pre-ReLU values"
    torch.testing.assert_close(store["activations"], features)
    torch.testing.assert_close(store["gradients"], gradients)
    assert not small_densenet.features._forward_hooks


def test_grad_cam_matches_the_formula_on_densenet(solution, small_densenet):
    torch.manual_seed(2)
    image = torch.randn(1, 3, 96, 96)
    expected, _, _ = reference_cam(small_densenet, image, 281)
    small_densenet.train()
    with torch.no_grad():      # grad_cam must enable gradients itself
        heatmap = solution["grad_cam"](small_densenet, image, 281, small_densenet.features)
    assert not small_densenet.training
    assert heatmap.shape == (96, 96) and heatmap.device.type == "cpu" and not heatmap.requires_grad
    torch.testing.assert_close(heatmap, expected, atol=1e-5, rtol=1e-4)
    assert all(p.grad is None for p in small_densenet.parameters()), "grad_cam should not leave .grad behind"


def test_grad_cam_explains_the_raw_score_not_the_softmax(solution):
    # Map 0 is the image, map 1 is constant; class 0 reads map 0 and class 1 reads map 1.
    # The raw score of class 0 gives the map ReLU(image); the gradient of its softmax
    # probability would give ReLU(c * (image - 1)), which is zero for an image in [-1, 1].
    layer = torch.nn.Conv2d(1, 2, kernel_size=1)
    head = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([1.0, 0.0]).view(2, 1, 1, 1))
        layer.bias.copy_(torch.tensor([0.0, 1.0]))
        head.weight.copy_(torch.eye(2))
    model = torch.nn.Sequential(layer, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), head)
    image = torch.linspace(-1, 1, 16).view(1, 1, 4, 4)
    heatmap = solution["grad_cam"](model, image, 0, layer)
    expected = F.relu(image[0, 0])
    torch.testing.assert_close(heatmap, expected / expected.max())


def test_grad_cam_removes_its_hooks_when_it_fails(solution, small_densenet):
    with pytest.raises(IndexError):
        solution["grad_cam"](small_densenet, torch.randn(1, 3, 64, 64), 1000, small_densenet.features)
    assert not small_densenet.features._forward_hooks
    assert not small_densenet.training


def test_channel_weights_and_weighted_cam(solution):
    torch.manual_seed(3)
    gradients, activations = torch.randn(3, 5, 4, 6), torch.randn(3, 5, 4, 6)
    weights = solution["channel_weights"](gradients)
    torch.testing.assert_close(weights, gradients.mean(dim=(2, 3)))
    cam = solution["weighted_cam"](activations, weights)
    torch.testing.assert_close(cam, torch.einsum("nk,nkhw->nhw", weights, activations).clamp(min=0))


def test_upsample_normalize(solution):
    torch.manual_seed(4)
    cams = torch.stack([torch.rand(7, 7), torch.full((7, 7), 0.3), torch.zeros(7, 7)])
    out = solution["upsample_normalize"](cams, size=(50, 30))
    assert out.shape == (3, 50, 30) and torch.isfinite(out).all()
    up = F.interpolate(cams[:1, None], size=(50, 30), mode="bilinear", align_corners=False)[0, 0]
    torch.testing.assert_close(out[0], (up - up.min()) / (up.max() - up.min()))
    assert torch.equal(out[1:], torch.zeros(2, 50, 30)), "constant maps become zeros"


def test_top_and_least(solution):
    scores = np.array([[0.1, 5.0, -3.0, 2.0, 4.0]], dtype=np.float32)
    result = solution["top_and_least"](torch.from_numpy(scores))
    assert result == [1, 4, 3, 2] and all(type(i) is int for i in result)
    assert solution["top_and_least"](torch.from_numpy(scores[0]), k=1) == [1, 2]


def test_show_grad_cam(solution, tp2_utils, image_paths):
    model, names = solution["model"], solution["class_names"]
    image = tp2_utils.load_batch(image_paths[:1])
    with torch.no_grad():
        scores = model(image.to(solution["device"]))[0]
    expected = solution["top_and_least"](scores)
    figure = solution["show_grad_cam"](image, model, model.features, names)
    try:
        assert isinstance(figure, matplotlib.figure.Figure)
        panels = [ax for ax in figure.axes if ax.images]
        assert len(panels) == 4
        for ax, idx in zip(panels, expected):
            assert names[idx] in ax.get_title() and f"{scores[idx].item():.2f}" in ax.get_title()
            assert len(ax.images) == 2, "the image and the heatmap"
    finally:
        plt.close(figure)


# --------------------------------------------------------------------------------------------
# The visible asserts pass with the solution (tests/test_visible_tests.py: every style, every bug)
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_visible_checks_pass_with_the_solution(solution, notebook, name):
    from visible import run_visible, visible_tests

    result = run_visible(solution, visible_tests(notebook)[f"test_{name}"])
    assert result.passed, result.error


# --------------------------------------------------------------------------------------------
# The bonus is extra credit
# --------------------------------------------------------------------------------------------
def test_the_bonus_is_extra_credit_in_the_gradebook(course, tmp_path):
    """After ``gradcam-kit release``, nbgrader's gradebook holds 12 autograded and 8 manual points (20 in
    all) and the bonus as a graded cell of 0 points, on which formgrader's extra credit adds to the score
    and not to the maximum."""
    import shutil

    from nbgrader.api import Gradebook

    from gradcam_kit.release import generate_release

    root = tmp_path / "course"
    root.mkdir()
    shutil.copy(course.root / "nbgrader_config.py", root)
    shutil.copytree(course.source_dir, root / "source" / course.source_dir.name,
                    ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints", ".planted*"))
    from gradcam_kit.course import Course

    generate_release(Course.locate(root))
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
        assignment = gradebook.find_assignment("TP2_GradCAM")
        assert (assignment.max_score, assignment.max_code_score, assignment.max_written_score) == (20, 12, 8)
        bonus = gradebook.find_grade_cell("bonus_answer", "TP2_GradCAM", "TP2_GradCAM")
        assert bonus.max_score == 0
        gradebook.add_student("alice")
        gradebook.add_submission("TP2_GradCAM", "alice")
        grade = gradebook.find_grade("bonus_answer", "TP2_GradCAM", "TP2_GradCAM", "alice")
        grade.manual_score, grade.extra_credit = 0.0, 1.5       # what formgrader records
        gradebook.db.commit()
        submission = gradebook.find_submission("TP2_GradCAM", "alice")
        assert (submission.score, submission.max_score) == (1.5, 20)


# --------------------------------------------------------------------------------------------
# In a real kernel, as the student runs the release
# --------------------------------------------------------------------------------------------
def release_with_solutions(course, keep=lambda grade_id, cell: True):
    """The release notebook, its seven function cells filled with the source's solution."""
    from gradcam_kit.grading.samples import solution_notebook

    release = nbformat.read(course.release_dir / "TP2_GradCAM.ipynb", as_version=4)
    full = solution_notebook(release, nbformat.read(course.source_notebook, as_version=4))
    for cell, original in zip(full.cells, release.cells):
        if meta(cell).get("grade_id") not in FUNCTIONS:
            cell.source = original.source   # the exploration cells stay as the student received them
    full.cells = [c for c in full.cells if keep(meta(c).get("grade_id", ""), c)]
    return full


def execute(notebook, folder: Path, course, **env: str):
    """Run ``notebook`` in a fresh kernel in ``folder`` (which gets tp2_utils.py); errors stay in the outputs."""
    from nbclient import NotebookClient

    shutil.copy(course.helper_module, folder / "tp2_utils.py")
    saved = dict(os.environ)
    os.environ.update({"TP2_IMAGES_DIR": str(course.images_dir), "OMP_NUM_THREADS": "1", **env})
    try:
        NotebookClient(notebook, kernel_name="python3", timeout=600, allow_errors=True,
                       resources={"metadata": {"path": str(folder)}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return notebook


def errors_of(notebook) -> dict[str, list]:
    found = {}
    for index, cell in enumerate(notebook.cells):
        errors = [o for o in cell.get("outputs", []) if o.output_type == "error"]
        if errors:
            found[meta(cell).get("grade_id") or f"cell {index}"] = errors
    return found


def test_restart_and_run_all_passes_when_the_optional_parts_are_skipped(course, tmp_path):
    """An honest student who wrote the seven functions and skipped Parts 2-4 and the bonus: nothing fails
    (on main the untouched exploration stubs raised NotImplementedError, the bonus's at the end)."""
    notebook = execute(release_with_solutions(course), tmp_path, course, GRADCAM_WEIGHTS="random")
    assert errors_of(notebook) == {}
    printed = "".join(o.get("text", "") for c in notebook.cells for o in c.get("outputs", []) if o.output_type == "stream")
    for name in FUNCTIONS:
        assert f"{name}: the visible checks pass" in printed
    assert "alpha == W / 49:           True" in printed and "Grad-CAM == CAM / 49:      True" in printed
    assert "the tensor kept as it was == ReLU(copy):      True" in printed


def test_a_figure_returned_as_the_last_expression_is_shown_once(course, tmp_path):
    keep = lambda grade_id, cell: grade_id.startswith("setup_") or grade_id in FUNCTIONS
    notebook = release_with_solutions(course, keep)
    notebook.cells.append(nbformat.v4.new_code_cell(
        "show_grad_cam(tp2_utils.load_batch(image_paths[:1], device=device), model, model.features, class_names)"))
    notebook.cells.append(nbformat.v4.new_code_cell(
        "figure = show_grad_cam(tp2_utils.load_batch(image_paths[:1], device=device), model, model.features,"
        " class_names)\nfigure.suptitle('one image')\ndisplay(figure)"))
    notebook = execute(notebook, tmp_path, course, GRADCAM_WEIGHTS="random")
    assert errors_of(notebook) == {}
    for cell in notebook.cells[-2:]:
        images = [o for o in cell.outputs if "image/png" in o.get("data", {})]
        assert len(images) == 1, f"the figure was shown {len(images)} times"


def test_offline_with_the_default_weights_the_setup_stops_with_one_short_message(course, tmp_path):
    """No network and no cached ImageNet weights: the setup cell that builds the model says, in a few lines,
    what to do (choose_weights), instead of a long chained traceback; the images are defined before it."""
    keep = lambda grade_id, cell: grade_id.startswith("setup_")
    notebook = release_with_solutions(course, keep)
    notebook = execute(notebook, tmp_path, course, GRADCAM_WEIGHTS="imagenet", TORCH_HOME=str(tmp_path / "torch"),
                       https_proxy="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9")
    errors = errors_of(notebook)
    assert list(errors) == ["setup_model"], list(errors)
    (error,) = errors["setup_model"]
    text = "\n".join(error.traceback)
    assert error.ename == "WeightsError" and len(error.traceback) <= 8, text
    assert "During handling" not in text and "Traceback" not in text
    assert 'tp2_utils.choose_weights("random")' in text and "densenet121-a639ec97.pth" in text


# --------------------------------------------------------------------------------------------
# nbgrader validate, and what reaches stderr
# --------------------------------------------------------------------------------------------
def kit_environment(**extra: str) -> dict[str, str]:
    """The environment for nbgrader and kernels: this interpreter's scripts first on PATH."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["GRADCAM_WEIGHTS"] = "random"
    # Two OpenMP threads fighting over a loaded CI machine are much slower than one.
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(extra)
    return env


def nbgrader(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=cwd, env=kit_environment(**env),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1800)


def test_nbgrader_validate_passes_on_the_source_notebook(course, image_paths):
    """Runs the whole source notebook, hidden tests (gradcam_kit.nbgrader_bridge) included, offline."""
    result = nbgrader(["validate", str(course.source_notebook)], cwd=course.root)
    assert result.returncode == 0, result.stdout[-5000:]
    assert "Success! Your notebook passes all the tests." in result.stdout, result.stdout[-5000:]


def load_course_config(course):
    from traitlets.config.loader import PyFileConfigLoader

    return PyFileConfigLoader(course.root.joinpath("nbgrader_config.py").name, path=str(course.root)).load_config()


def stderr_cell(*texts: str):
    cell = nbformat.v4.new_code_cell("pass")
    cell.metadata["nbgrader"] = {"grade": True, "grade_id": "t", "locked": True, "points": 1,
                                 "schema_version": 3, "solution": False, "task": False}
    cell.outputs = [nbformat.v4.new_output("stream", name="stderr", text=t) for t in texts]
    return cell


def test_ignore_pattern_drops_warnings_and_the_weights_notice(course, tp2_utils):
    from nbgrader.preprocessors import IgnorePattern
    from nbgrader.utils import determine_grade

    config = load_course_config(course)
    assert config.Execute.kernel_name == "python3" and config.Execute.timeout >= 60
    assert config.CourseDirectory.course_id
    ignore = IgnorePattern(config=config)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        F.upsample(torch.zeros(1, 1, 2, 2), scale_factor=2)
        module = torch.nn.Linear(2, 2)
        module.register_backward_hook(lambda *args: None)
        module(torch.zeros(1, 2, requires_grad=True)).sum().backward()
    torch_warnings = [warnings.formatwarning(w.message, w.category, w.filename, w.lineno) for w in caught]
    assert len(torch_warnings) >= 2

    stderr = io.StringIO()
    tp2_utils._random_notice_given.discard("resnet18")
    with contextlib.redirect_stderr(stderr):
        tp2_utils.load_model("resnet18", weights="random")
    notice = stderr.getvalue()
    assert notice.startswith("NOTE:")

    def grade_after_ignore(text: str):
        notebook = nbformat.v4.new_notebook(cells=[stderr_cell(text)])
        notebook, _ = ignore(notebook, {})   # as nbgrader calls it: honours `enabled`
        return determine_grade(notebook.cells[0])

    noise = [*torch_warnings, notice, notice.rstrip("\n"), "\n", "", torch_warnings[0] + notice]
    for text in noise:
        assert grade_after_ignore(text) == (1, 1), f"this stderr output costs points: {text!r}"
    for text in ["a message that is not a warning\n", "Traceback (most recent call last):\n  ...\n"]:
        assert grade_after_ignore(text) == (0, 1), f"this stderr output should still count: {text!r}"


NOISY_SOURCE = [
    ("setup_noise", False, "import sys\nimport torch\nimport tp2_utils"),
    ("test_noise", True, (
        'model = tp2_utils.load_model("resnet18")   # prints the NOTE of GRADCAM_WEIGHTS=random\n'
        "sys.stderr.flush()\n"
        "torch.nn.functional.upsample(torch.zeros(1, 1, 2, 2), scale_factor=2)   # a torch warning\n"
        "sys.stderr.flush()\n"
        'print("", file=sys.stderr)\n'
        "assert model is not None"
    )),
    ("test_genuine", True, 'print("not a warning", file=sys.stderr)'),
]


def test_autograde_ignores_torch_warnings_and_the_weights_notice(course, tmp_path):
    """A real ``nbgrader autograde`` with the course's config, on a tiny assignment."""
    root = tmp_path / "course"
    source = root / "source" / "noise"
    source.mkdir(parents=True)
    shutil.copy(course.root / "nbgrader_config.py", root)
    shutil.copy(course.helper_module, source)
    cells = []
    for grade_id, graded, code in NOISY_SOURCE:
        cell = nbformat.v4.new_code_cell(code)
        cell.metadata["nbgrader"] = {"grade": graded, "grade_id": grade_id, "locked": True, "schema_version": 3,
                                     "solution": False, "task": False, **({"points": 1} if graded else {})}
        cells.append(cell)
    notebook = nbformat.v4.new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, source / "noise.ipynb")

    result = nbgrader(["generate_assignment", "noise", "--force"], cwd=root)
    assert result.returncode == 0, result.stdout
    submitted = root / "submitted" / "alice" / "noise"
    submitted.mkdir(parents=True)
    shutil.copy(root / "release" / "noise" / "noise.ipynb", submitted)

    from nbgrader.api import Gradebook

    def scores(*options: str) -> dict[str, float]:
        result = nbgrader(["autograde", "noise", "--force", *options], cwd=root)
        assert result.returncode == 0, result.stdout
        with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
            return {g: gradebook.find_grade(g, "noise", "noise", "alice").score for g in ("test_noise", "test_genuine")}

    assert scores() == {"test_noise": 1.0, "test_genuine": 0.0}
    # Without the pattern the same cell loses its point: the noise was really there.
    assert scores("--IgnorePattern.pattern=") == {"test_noise": 0.0, "test_genuine": 0.0}
