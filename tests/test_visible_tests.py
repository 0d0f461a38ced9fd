"""The release's visible tests of Part 1 against the ways students write the seven functions.

* Never stricter than the judge: the solution, every correct submission of
  ``sample_corpus.VARIANTS`` and every correct style of ``styles.CORRECT`` pass the visible tests of
  the functions they write, and the judge gives each of them full marks.
* Catching the typical bugs before submission: each bug of ``typical_bugs.BUGS`` is run through the
  visible test of its function; the share reported must reach 80% (the rate is printed, bug by
  bug). The judge rejects every one of them (they are bugs).
* Bugs and misunderstandings that used to pass, or to fail for the wrong reason, on the release
  of main: each is checked by name.

The visible tests come from the committed release (``release/TP2_GradCAM``), extracted cell by
cell, and run in one namespace built from its setup cells and the source's solution, as the
student's kernel would run them (tests/visible.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from gradcam_kit.contract import CALLS, GRADED_FUNCTIONS, helpers_of, test_name
from gradcam_kit.course import NOTEBOOK
from gradcam_kit.grading import sample_corpus, samples, styles, typical_bugs
from visible import notebook_namespace, run_visible, visible_tests

pytestmark = pytest.mark.usefixtures("one_thread")

CATCH_TARGET = 0.8


@pytest.fixture(scope="module")
def release(course):
    return nbformat.read(course.release_dir / NOTEBOOK, as_version=4)


@pytest.fixture(scope="module")
def tests(release):
    found = visible_tests(release)
    assert sorted(found) == sorted(test_name(name) for name in GRADED_FUNCTIONS)
    return found


@pytest.fixture(scope="module")
def namespace(course, tp2_utils, release):
    return notebook_namespace(course, tp2_utils, release)


def correct_styles() -> dict[str, dict[str, str]]:
    """Every correct style: name -> the function cells it writes."""
    found = {"solution": {}}
    found.update({variant.name: dict(variant.cells) for variant in sample_corpus.VARIANTS})
    found.update({style.name: dict(style.cells) for style in styles.CORRECT})
    return found


def check_style(namespace, tests, cells: dict[str, str]) -> dict[str, str]:
    """The failures of the visible tests of the functions in ``cells`` (all seven for the solution)."""
    functions = [name for name in GRADED_FUNCTIONS if name in cells] or list(GRADED_FUNCTIONS)
    failures = {}
    for name in functions:
        result = run_visible(namespace, tests[test_name(name)], cells)
        if not result.passed:
            failures[name] = result.error
    return failures


# ----------------------------------------------------------------------------------------------
# never stricter than the judge
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("style", sorted(correct_styles()))
def test_every_correct_style_passes_the_visible_tests(namespace, tests, style):
    assert check_style(namespace, tests, correct_styles()[style]) == {}


def test_every_function_has_several_correct_styles():
    written = [name for cells in correct_styles().values() for name in cells]
    counts = {name: written.count(name) for name in GRADED_FUNCTIONS}
    assert all(count >= 2 for count in counts.values()), counts
    assert len(styles.CORRECT) >= 12


# ----------------------------------------------------------------------------------------------
# catching the typical bugs
# ----------------------------------------------------------------------------------------------
def test_typical_bugs_are_reported_by_a_visible_test(namespace, tests, capsys):
    """The rate of typical bugs that the visible test of their function reports (target 80%)."""
    results = {bug.name: run_visible(namespace, tests[test_name(bug.function)], {bug.function: bug.source})
               for bug in typical_bugs.BUGS}
    caught = [name for name, result in results.items() if not result.passed]
    asserted = [name for name, result in results.items() if result.asserted]
    lines = [f"{'caught' if not results[b.name].passed else 'MISSED':<7} {b.function:<23} {b.family:<14} "
             f"{b.name:<32} {results[b.name].error[:90]}" for b in typical_bugs.BUGS]
    rate = len(caught) / len(typical_bugs.BUGS)
    families = sorted({b.family for b in typical_bugs.BUGS})
    with capsys.disabled():
        print(f"\ntypical bugs reported by a visible test: {len(caught)}/{len(typical_bugs.BUGS)} = {rate:.0%} "
              f"({len(asserted)} by an assertion of the test, the others by an error), "
              f"{len(families)} families\n" + "\n".join(lines))
    assert set(families) == set(typical_bugs.FAMILIES), "every family of typical mistakes has a bug"
    assert rate >= CATCH_TARGET, [name for name in results if name not in caught]


@pytest.mark.parametrize("bug, words", [
    # a tensor hook put on a clone: the message says why the gradient never came (not KeyError)
    ("hooks_tensor_hook_on_a_clone", "register it on `output` itself"),
    # a module backward hook before the in-place ReLU
    ("hooks_full_backward_hook", "use a tensor hook"),
    # normalising before upsampling: the order is named, not "scale each map"
    ("upsample_normalised_first", "normalised before upsampling"),
    ("upsample_whole_batch", "each map with its own minimum and maximum"),
    ("upsample_align_corners", "align_corners=True"),
    ("upsample_nearest", "mode='nearest'"),
    ("upsample_nan_for_constant_maps", "NaN"),
    # the softmax and the predicted class, told apart from the raw score on the known model
    ("grad_cam_softmax", "softmax probability"),
    ("grad_cam_log_softmax", "softmax probability"),
    ("grad_cam_argmax", "most likely class"),
    ("grad_cam_train_mode", "eval mode"),
    ("grad_cam_hooks_kept_on_error", "finally"),
    ("top_tensors", "plain Python ints"),
    ("show_same_map_everywhere", "does not show the Grad-CAM map"),
    ("show_reversed", "should name, in this order"),
])
def test_the_message_names_the_mistake(namespace, tests, bug, words):
    (found,) = [b for b in typical_bugs.BUGS if b.name == bug]
    result = run_visible(namespace, tests[test_name(found.function)], {found.function: found.source})
    assert result.asserted and words in result.error, result.error


def test_the_deprecated_backward_hook_passes_with_a_note(namespace, tests):
    """Accepted by the judge, so not a failure; but the text discourages it, and the test says so."""
    (style,) = [s for s in styles.CORRECT if s.name == "hooks_deprecated_backward_hook"]
    result = run_visible(namespace, tests["test_register_gradcam_hooks"], style.cells)
    assert result.passed and "register_backward_hook is deprecated" in result.output


@pytest.mark.parametrize("convention, style", [("pre_relu", "solution"), ("mixed", "style_tensor_hook")])
def test_the_hooks_test_names_the_convention_it_saw(namespace, tests, convention, style):
    """(``post_relu`` needs the gradient of the tensor's final value, which no hook inside
    ``register_gradcam_hooks`` receives: ``style_autograd_grad`` asks for it in ``grad_cam``.)"""
    result = run_visible(namespace, tests["test_register_gradcam_hooks"], correct_styles()[style])
    assert result.passed and f"convention '{convention}'" in result.output, result


# ----------------------------------------------------------------------------------------------
# the judge agrees: every correct style earns full marks, every bug loses its function's points
# ----------------------------------------------------------------------------------------------
HOOKS = "register_gradcam_hooks"
HOOK_USERS = tuple(name for name in GRADED_FUNCTIONS if HOOKS in helpers_of(name))
"""``grad_cam`` and ``show_grad_cam``: they call the student's hooks, directly or not."""
LEAVES = tuple(name for name in GRADED_FUNCTIONS if name not in CALLS and name != HOOKS)
"""The graded functions that call no other (``contract.CALLS``), but the hooks: :func:`pack_bugs` places
the bugs of the hooks and of the callers first, then these in the free slots."""


def pack_bugs() -> list[dict[str, typical_bugs.Bug]]:
    """The bugs, a few per notebook, so that each bugged function fails for its own bug alone.

    A notebook holds at most one bug per function. The judge never replaces the student's hooks,
    so a hooks bug goes with no bug of ``grad_cam`` or ``show_grad_cam`` (they could not be
    verified); a ``show_grad_cam`` bug goes with no ``top_and_least`` bug (its titles may follow the
    student's own order) and with a ``grad_cam`` bug only if that one returns a map that draws.
    """
    by_function = {name: [b for b in typical_bugs.BUGS if b.function == name] for name in GRADED_FUNCTIONS}
    notebooks: list[dict[str, typical_bugs.Bug]] = [{HOOKS: b} for b in by_function[HOOKS]]
    drawable = [b for b in by_function["grad_cam"] if b.name != "grad_cam_batch_dimension_kept"]
    others = [b for b in by_function["grad_cam"] if b not in drawable]
    shows = list(by_function["show_grad_cam"])
    for bug in drawable:
        notebooks.append({"grad_cam": bug, **({"show_grad_cam": shows.pop()} if shows else {})})
    notebooks += [{"grad_cam": bug} for bug in others] + [{"show_grad_cam": bug} for bug in shows]
    for name in LEAVES:
        slots = [nb for nb in notebooks if not (name == "top_and_least" and "show_grad_cam" in nb)]
        for bug in by_function[name]:
            free = next((nb for nb in slots if name not in nb), None)
            if free is None:
                free = {}
                notebooks.append(free)
                slots.append(free)
            free[name] = bug
    return notebooks


def pack_styles() -> list[dict[str, str]]:
    """The correct styles, as few notebooks as possible, none writing a function twice."""
    notebooks: list[dict[str, str]] = []
    for style in styles.CORRECT:
        home = next((nb for nb in notebooks if not set(nb) & set(style.cells)), None)
        if home is None:
            home = {}
            notebooks.append(home)
        home.update(style.cells)
    return notebooks


def test_the_packing_keeps_each_bug_alone_in_its_function():
    packed = pack_bugs()
    assert sorted(b.name for nb in packed for b in nb.values()) == sorted(b.name for b in typical_bugs.BUGS)
    for notebook in packed:
        if HOOKS in notebook:
            assert not set(HOOK_USERS) & set(notebook)
        if "show_grad_cam" in notebook:
            assert "top_and_least" not in notebook
    assert sorted(n for nb in pack_styles() for n in nb) == sorted(n for s in styles.CORRECT for n in s.cells)


@pytest.fixture(scope="module")
def judged(course, tmp_path_factory):
    """Every packed notebook graded by the judge: ``name -> (results, what it holds)``."""
    work = tmp_path_factory.mktemp("styles-judged")
    release = nbformat.read(course.release_dir / NOTEBOOK, as_version=4)
    solution = samples.solution_notebook(release, nbformat.read(course.source_notebook, as_version=4))
    plan: dict[str, tuple[str, dict]] = {}
    for index, cells in enumerate(pack_styles()):
        plan[f"correct_{index}"] = ("correct", cells)
    for index, bugs in enumerate(pack_bugs()):
        plan[f"bugs_{index}"] = ("bugs", bugs)
    # a helper's bug alone: the judge's remark on grad_cam, true of its five cases, is said once
    (alone,) = [bug for bug in typical_bugs.BUGS if bug.name == "upsample_align_corners"]
    plan["helper_bug_alone"] = ("bugs", {alone.function: alone})
    paths = []
    for name, (kind, content) in plan.items():
        cells = content if kind == "correct" else {function: bug.source for function, bug in content.items()}
        path = work / "submissions" / f"{name}.ipynb"
        path.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(samples.with_cells(solution, cells), path)
        paths.append(path)
    results = grade_with_the_judge(course, paths, work)
    return {name: (results[name], plan[name]) for name in plan}


def grade_with_the_judge(course, paths: list[Path], work: Path) -> dict[str, dict]:
    """``python -m autograder_tests`` on ``paths``, as ``gradcam-kit grade`` runs it (two processes)."""
    env = dict(os.environ)
    env.setdefault("GRADCAM_WEIGHTS", "random")
    cache, out = work / "reference-cache", work / "results"
    common = ["--reference-cache", str(cache), "--course", str(course.root)]
    prepared = subprocess.run([sys.executable, "-m", "autograder_tests", "--prepare", *common], cwd=course.root,
                              env=env, capture_output=True, text=True, timeout=3600)
    assert prepared.returncode == 0, prepared.stdout + prepared.stderr
    shards = [paths[0::2], paths[1::2]]
    processes = [subprocess.Popen([sys.executable, "-m", "autograder_tests", "--out", str(out), *common,
                                   *map(str, shard)], cwd=course.root, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True) for shard in shards if shard]
    logs = [process.communicate(timeout=3600)[0] for process in processes]
    assert all(process.returncode == 0 for process in processes), "\n".join(log[-3000:] for log in logs)
    return {path.stem: json.loads((out / f"{path.stem}.json").read_text()) for path in paths}


def test_the_judge_gives_every_correct_style_full_marks(judged):
    for name, (results, (kind, cells)) in judged.items():
        if kind == "correct":
            failed = {t: r["feedback"][:300] for t, r in results["tests"].items() if r["outcome"] != "passed"}
            assert failed == {}, (name, sorted(cells))


JUDGE_GAPS: dict[str, str] = {}
"""Typical bugs that the judge accepts although they break the function's docstring, each with the reason
(none today: a panel that shows another class's map fails since the judge reads what each panel draws)."""

CHARGED_TWICE: dict[str, str] = {}
"""Typical bugs that also cost the points of a function that calls the buggy one, each with the reason (none
today: the judge puts its own helpers in place of the student's failing ones)."""


def test_the_judge_rejects_every_typical_bug(judged):
    accepted, wrongly_charged = {}, {}
    for name, (results, (kind, bugs)) in judged.items():
        if kind != "bugs":
            continue
        for function, bug in bugs.items():
            outcome = results["tests"][test_name(function)]
            if outcome["outcome"] == "passed":
                accepted[bug.name] = outcome["feedback"][:200]
        others = {t for t, r in results["tests"].items() if r["outcome"] != "passed"} - {test_name(f) for f in bugs}
        if HOOKS in bugs:  # the judge never uses its own hooks: what needs the student's
            others -= {test_name(name) for name in HOOK_USERS}  # hooks may stay unverified, and earns nothing
        if others:
            wrongly_charged[name] = (sorted(others), [bug.name for bug in bugs.values()])
    assert set(accepted) <= set(JUDGE_GAPS), accepted
    unexplained = {name: found for name, found in wrongly_charged.items() if not set(found[1]) & set(CHARGED_TWICE)}
    assert unexplained == {}, unexplained


def test_the_judges_heatmap_says_what_it_shows(judged, course, tmp_path_factory):
    """The feedback page's caption: the judge's ``heatmap.npz`` names the model, layer, image, class and
    weights of its maps (read back as the page reads it)."""
    from gradcam_kit.grading import reports

    results, _ = judged["correct_0"]
    folder = Path(results["submission"]).parent.parent / "results" / "correct_0"
    case = reports.heatmap_case(folder / results["artifacts"]["heatmap"], course.tp2_utils.class_names())
    assert case is not None and (case.arch, case.layer, case.image) == ("densenet121", "features",
                                                                        "2637374064_fab14ec0b8.jpg")
    assert case.class_name == course.tp2_utils.class_names()[case.class_idx]
    assert case.weights == os.environ.get("GRADCAM_WEIGHTS", "random")


def test_a_remark_true_of_every_case_is_said_once(judged):
    """On main, the judge wrote "...: your map is what your `grad_cam` gives with your `upsample_normalize`,
    whose errors are counted in their own tests." five times, once per case of ``grad_cam``."""
    results, _ = judged["helper_bug_alone"]
    feedback = results["tests"]["test_grad_cam"]["feedback"]
    assert results["tests"]["test_grad_cam"]["outcome"] == "passed"
    assert feedback.count("counted in its own test") == 1, feedback
    assert "ResNet-18" in feedback and "an intermediate layer" in feedback
