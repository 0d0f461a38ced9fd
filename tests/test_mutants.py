"""Mutation testing of the judge: the mutator, and a sample of its mutants graded by the real judge.

The whole set is graded by ``./kit bench mutants`` (``benchmarks/mutants.py``; its figures are in
the README). Here:

* the mutator makes what it says on a toy function, and on the answer key makes every kind of
  mutant the README lists, each one a parseable cell that differs from the solution;
* every mutant listed as equivalent is still produced (the list is not stale);
* one mutant of each graded function (and one listed equivalent) is graded by the judge: each loses
  exactly the points of the function it edits, the equivalent one keeps every point.
"""

from __future__ import annotations

import ast

import nbformat
import pytest

from gradcam_kit.grading import mutator
from gradcam_kit.grading.mutant_verdicts import EQUIVALENT, judged
from gradcam_kit.grading.mutation_operators import OPERATORS
from gradcam_kit.grading.judge_runs import failed_tests, run_judges
from gradcam_kit.contract import GRADED_FUNCTIONS
from gradcam_kit.grading.samples import release_notebook, solution_notebook, solution_sources, with_cells

SAMPLE_OPERATORS = {"register_gradcam_hooks": "hook", "channel_weights": "reduction", "weighted_cam": "relu_moved",
                    "upsample_normalize": "normalise_first", "grad_cam": "target", "top_and_least": "order",
                    "show_grad_cam": "off_by_one"}
"""The operator whose first mutant of each function is graded in the sample."""


@pytest.fixture(scope="module")
def sources(course) -> dict[str, str]:
    return solution_sources(nbformat.read(course.source_notebook, as_version=4))


@pytest.fixture(scope="module")
def mutants(sources) -> list[mutator.Mutant]:
    return mutator.mutants(sources, GRADED_FUNCTIONS)


def test_the_mutator_on_a_toy_function():
    source = "def f(x, w):\n    return F.relu((w * x).sum(dim=1))\n"
    keys = {m.key for m in mutator.mutants_of("f", source)}
    assert "f: (w * x).sum(dim=1) -> (w * x).mean(dim=1) in `return F.relu((w * x).sum(dim=1))`" in keys
    assert "f: dim=1 -> dim=0 in `return F.relu((w * x).sum(dim=1))`" in keys
    assert "f: F.relu((w * x).sum(dim=1)) -> (w * x).sum(dim=1) in `return F.relu((w * x).sum(dim=1))`" in keys
    assert "f: F.relu((w * x).sum(dim=1)) -> -F.relu((w * x).sum(dim=1)) in `return F.relu((w * x).sum(dim=1))`" in keys
    assert "f: (w * x).sum(dim=1) -> (w * x).sum() in `return F.relu((w * x).sum(dim=1))`" in keys
    moved = [m for m in mutator.mutants_of("f", source) if m.operator == "relu_moved"]
    assert sorted(m.after for m in moved) == ["return (F.relu(w) * x).sum(dim=1)", "return (w * F.relu(x)).sum(dim=1)"]
    for mutant in mutator.mutants_of("f", source):
        namespace: dict = {}
        exec(compile(mutant.source, "<mutant>", "exec"), namespace)
        assert callable(namespace["f"])


def test_every_operator_applies_to_the_answer_key(mutants):
    assert {m.operator for m in mutants} == {operator.name for operator in OPERATORS}
    assert {m.function for m in mutants} == set(GRADED_FUNCTIONS)
    assert len(mutants) >= 100


@pytest.mark.parametrize("function, edit", [
    ("channel_weights", "gradients.mean(dim=(2, 3)) -> gradients.sum(dim=(2, 3))"),
    ("channel_weights", "dim=(2, 3) -> dim=(1, 2)"),
    ("weighted_cam", "F.relu(combined) -> combined.clamp(min=0)"),
    ("weighted_cam", "F.relu(combined) -> combined "),
    ("upsample_normalize", "align_corners=False -> align_corners=True"),
    ("upsample_normalize", "'bilinear' -> 'nearest'"),
    ("upsample_normalize", "torch.where(varies, span, torch.ones_like(span)) -> span"),
    ("upsample_normalize", "cam.unsqueeze(1).flatten(start_dim=1).min("),
    ("grad_cam", "-> scores.softmax(dim=1)[0, int(class_idx)]"),
    ("grad_cam", "-> scores.log_softmax(dim=1)[0, int(class_idx)]"),
    ("grad_cam", "class_idx -> class_idx + 1"),
    ("grad_cam", "-> scores[0, int(scores.argmax())]"),
    ("grad_cam", "model.eval() -> model.train()"),
    ("grad_cam", "for handle in handles:; handle.remove() -> (deleted)"),
    ("grad_cam", "heatmap[0].detach().cpu() -> heatmap[0].detach()"),
    ("register_gradcam_hooks", "layer -> next(iter(layer.children()), layer)"),
    ("register_gradcam_hooks", "output -> inputs[0] in `output.register_hook(keep_gradient)`"),
    ("top_and_least", "torch.topk(scores, k) -> torch.topk(scores, k, largest=False)"),
    ("top_and_least", "[int(idx) for idx in best] + [least] -> [int(idx) for idx in best] in"),
    ("top_and_least", "-> [int(idx) for idx in best][::-1]"),
    ("show_grad_cam", "idx -> idx + 1 in `heatmap = grad_cam(model, image, idx, layer)`"),
])
def test_the_mutants_the_readme_names_exist(mutants, function, edit):
    assert any(m.function == function and edit in m.key + " " for m in mutants), (function, edit)


def test_mutants_are_distinct_parseable_edits_of_their_function(mutants, sources):
    assert len({m.key for m in mutants}) == len(mutants) == len({m.name for m in mutants})
    originals = {name: ast.dump(ast.parse(code)) for name, code in sources.items()}
    for mutant in mutants:
        tree = ast.parse(mutant.source)
        assert [node.name for node in tree.body if isinstance(node, ast.FunctionDef)][-1:] == [mutant.function]
        assert ast.dump(tree) != originals[mutant.function], mutant.key


def test_the_list_of_equivalent_mutants_is_not_stale(mutants):
    assert set(EQUIVALENT) <= {m.key for m in mutants}
    assert all(reason.strip() for reason in EQUIVALENT.values())


def test_verdicts():
    mutant = mutator.Mutant("grad_cam", "sign", "a", "-a", 1, "")
    assert judged(mutant, {"test_grad_cam"}) == "killed"
    assert judged(mutant, set()) == "survived"
    assert judged(mutant, {"test_grad_cam", "test_show_grad_cam"}) == "overcharged"
    assert judged(mutant, {"test_show_grad_cam"}) == "misplaced"


def sample(mutants: list[mutator.Mutant]) -> list[mutator.Mutant]:
    """One mutant per graded function (of :data:`SAMPLE_OPERATORS`), and the first listed equivalent."""
    chosen = []
    for function in GRADED_FUNCTIONS:
        own = [m for m in mutants if m.function == function and m.key not in EQUIVALENT]
        chosen.append(next((m for m in own if m.operator == SAMPLE_OPERATORS[function]), own[0]))
    chosen += [m for m in mutants if m.key in EQUIVALENT][:1]
    return chosen


def test_a_sample_of_mutants_is_charged_exactly_once(course, mutants, tmp_path_factory):
    chosen = sample(mutants)
    work = tmp_path_factory.mktemp("mutants")
    solution = solution_notebook(release_notebook(course), nbformat.read(course.source_notebook, as_version=4))
    paths = []
    for mutant in chosen:
        path = work / "submissions" / f"{mutant.name}.ipynb"
        path.parent.mkdir(exist_ok=True)
        nbformat.write(with_cells(solution, {mutant.function: mutant.source}), path)
        paths.append(path)
    cache = tmp_path_factory.getbasetemp() / "gradcam-reference-cache"
    run = run_judges(course, paths, work / "results", cache, processes=1)
    assert run.ok and len(run.results) == len(chosen), run.log[-5000:]
    verdicts = {m.key: judged(m, failed_tests(run.results[m.name])) for m in chosen}
    assert all(verdict in ("killed", "equivalent") for verdict in verdicts.values()), verdicts
