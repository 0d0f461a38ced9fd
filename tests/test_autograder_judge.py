"""The judge's own pieces: the answer key against the reference, the test inputs, the results plugin.

These tests check that the hidden tests *can* tell right from wrong: that the answer key agrees
with ``solutions/gradcam_reference.py``, that the inputs chosen for each check separate the
correct answer from the usual mistakes by a margin far above the check's tolerance, and that the
results plugin reports only the judge's messages. The end-to-end behaviour on whole submissions
is in ``test_autograder_validity.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # the judge is a package at the course root
    sys.path.insert(0, str(REPO_ROOT))

from autograder_tests import _check_figure, _check_grad_cam, _check_hooks, _check_steps
from autograder_tests._inputs import CATS, DENSENET, WOMAN_DOG, Case
from autograder_tests._reference import References
from autograder_tests._tolerances import MAP_MARGIN, min_distance
from gradcam_kit.contract import CONVENTIONS


@pytest.fixture(scope="session")
def reference_cache(tmp_path_factory) -> Path:
    """One folder of reference arrays for the kit's tests and the judges they start (the same
    folder as ``test_autograder_validity.py``'s, so that the references are computed once)."""
    folder = tmp_path_factory.getbasetemp() / "gradcam-reference-cache"
    folder.mkdir(exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def refs(course, reference_cache, one_thread) -> References:
    return References(course, reference_cache)


# ------------------------------------------------------------------------------------------------
# the answer key and the reference agree
# ------------------------------------------------------------------------------------------------
def _maps_from_capture(capture, convention: str) -> np.ndarray:
    """Grad-CAM from captured activations and gradients, in float64: (224, 224) in [0, 1]."""
    activations, gradients = (a.astype(np.float64) for a in capture.pair(convention))
    cam = np.maximum((gradients.mean(axis=(2, 3))[:, :, None, None] * activations).sum(axis=1), 0.0)
    up = torch.nn.functional.interpolate(torch.from_numpy(cam)[:, None], size=(224, 224), mode="bilinear",
                                         align_corners=False)[0, 0].numpy()
    return (up - up.min()) / (up.max() - up.min())


def test_capture_of_the_answer_key_gives_the_reference_maps(refs):
    """The activations/gradients the hooks test compares with are those of each reference convention.

    Tolerance: the reference sums K = 1024 float32 terms, the float64 recomputation is exact to
    that order; ``map_tolerance`` is the bound for two float32 programs, so it bounds this too.
    """
    case = refs.distinct_class(DENSENET, CATS, "features")
    capture = refs.capture(case)
    maps = refs.maps(case)
    assert capture.modified_in_place, "DenseNet's in-place ReLU must make the conventions differ at features"
    for convention in CONVENTIONS:
        error = np.abs(_maps_from_capture(capture, convention) - maps[convention]).max()
        assert error <= refs.map_tolerance(case), (convention, error)
    # the three conventions really are three different maps here, far beyond the tolerance
    distances = [np.abs(maps[a] - maps[b]).max() for a, b in (("pre_relu", "post_relu"), ("pre_relu", "mixed"),
                                                              ("post_relu", "mixed"))]
    assert min(distances) > 20 * refs.map_tolerance(case), distances


def test_conventions_coincide_where_nothing_is_modified_in_place(refs):
    case = refs.distinct_class(DENSENET, WOMAN_DOG, "features.denseblock3")
    capture = refs.capture(case)
    assert not capture.modified_in_place
    error = np.abs(_maps_from_capture(capture, "pre_relu") - refs.maps(case)["pre_relu"]).max()
    assert error <= refs.map_tolerance(case)


def test_batched_reference_maps_equal_single_class_maps(refs, course):
    """``class_maps`` computes several classes in one reference call; each equals its own call.

    Same model, same input, same thread: the forward pass is identical and each class's gradient
    comes from its own backward pass, so the maps agree to float32 rounding of the last steps.
    """
    key = refs.key
    order = refs.ranked_classes(DENSENET, CATS)
    batched = refs.class_maps(DENSENET, CATS, "features", order[:3])
    image = torch.from_numpy(refs.image(CATS))
    for class_idx in order[:3]:
        single = key.grad_cam_maps(refs.model(DENSENET), image, class_idx, "features")
        for convention in CONVENTIONS:
            assert np.abs(batched[class_idx][convention] - single[convention].numpy()).max() <= 1e-5


def test_answer_key_building_blocks_match_the_notebook_contract(refs):
    key = refs.key
    gradients = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    assert torch.equal(key.channel_weights(gradients)[1, 2], torch.tensor(21.5))
    cam = key.weighted_cam(torch.ones(1, 2, 3, 3), torch.tensor([[1.0, -3.0]]))
    assert cam.shape == (1, 3, 3) and torch.equal(cam, torch.zeros(1, 3, 3))
    ramp = torch.tensor([[[0.0, 1.0], [0.0, 1.0]]])
    assert torch.allclose(key.upsample_normalize(ramp, (4, 4))[0, 0], torch.tensor([0.0, 0.25, 0.75, 1.0]))
    assert torch.equal(key.upsample_normalize(torch.full((1, 7, 7), 3.0), (10, 12)), torch.zeros(1, 10, 12))
    assert key.top_and_least(torch.tensor([0.5, 3.0, -2.0, 1.0, 2.0, -1.0])) == [1, 4, 3, 2]


def test_answer_key_hooks_record_the_pre_relu_pair(refs):
    """``answer_key.register_gradcam_hooks`` records what the capture calls the pre-ReLU pair."""
    case = refs.distinct_class(DENSENET, CATS, "features")
    model = refs.model(DENSENET)
    store, handles = refs.key.register_gradcam_hooks(model.features)
    model(torch.from_numpy(refs.image(CATS)))[:, case.class_idx].sum().backward()
    for handle in handles:
        handle.remove()
    activations, gradients = refs.capture(case).pair("pre_relu")
    assert np.array_equal(store["activations"].numpy(), activations)
    assert np.array_equal(store["gradients"].numpy(), gradients)
    assert not model.features._forward_hooks


# ------------------------------------------------------------------------------------------------
# the cases tell right from wrong by a wide margin
# ------------------------------------------------------------------------------------------------
def test_contrast_head_separates_softmax_from_raw_score(refs):
    """Explaining the softmax instead of the raw score must fail clearly, whatever the weights.

    The margin asked for (0.5 on maps in [0, 1]) is over 100 times the case's tolerance.
    """
    case = refs.contrast_case()
    softmax = refs.softmax_maps(case.spec, case.image, case.layer, [case.class_idx])[case.class_idx]
    distance = min_distance(refs.maps(case), {"softmax": softmax})
    assert distance >= 0.5, distance
    assert distance >= 100 * refs.map_tolerance(case)


@pytest.mark.parametrize("name", ["features", "block3"])
def test_chosen_class_is_not_the_argmax_and_its_map_differs(refs, name):
    case = {"features": lambda: refs.distinct_class(DENSENET, CATS, "features"),
            "block3": lambda: refs.distinct_class(DENSENET, WOMAN_DOG, "features.denseblock3")}[name]()
    top = refs.ranked_classes(case.spec, case.image)[0]
    assert case.class_idx != top
    distance = min_distance(refs.maps(case), refs.maps(Case(case.spec, case.image, top, case.layer)))
    assert distance >= MAP_MARGIN
    assert refs.map_tolerance(case) < MAP_MARGIN / 100


def test_upsample_inputs_separate_bilinear_from_other_resamplings():
    """Every wrong resampling, and the usual mistakes, miss the bilinear result, or the range
    [0, 1] of each map, by far more than the tolerance (40 times at least)."""
    cam, size = _check_steps.upsample_inputs()[0]
    expected = _check_steps.resample(cam, size, mode="bilinear", align_corners=False)
    wrong = {name: _check_steps.resample(cam, size, **how) for name, how in _check_steps.RESAMPLINGS.items()}
    # normalising before upsampling, and one min-max for the whole batch
    low, high = cam.min(axis=(1, 2), keepdims=True), cam.max(axis=(1, 2), keepdims=True)
    first = torch.nn.functional.interpolate(torch.from_numpy((cam - low) / (high - low))[:, None].double(),
                                            size=size, mode="bilinear", align_corners=False)[:, 0].numpy()
    wrong["normalise, then upsample"] = first
    raw = torch.nn.functional.interpolate(torch.from_numpy(cam)[:, None].double(), size=size, mode="bilinear",
                                          align_corners=False)[:, 0].numpy()
    wrong["one min-max for the batch"] = (raw - raw.min()) / (raw.max() - raw.min())
    for name, result in wrong.items():
        range_miss = max(np.abs(result.min(axis=(1, 2))).max(), np.abs(result.max(axis=(1, 2)) - 1).max())
        assert max(np.abs(result - expected).max(), range_miss) > 40 * _check_steps.UPSAMPLE_TOLERANCE, name
    # the non-square case tells align_corners apart too
    cam2, size2 = _check_steps.upsample_inputs()[1]
    bilinear = _check_steps.resample(cam2, size2, mode="bilinear", align_corners=False)
    corners = _check_steps.resample(cam2, size2, mode="bilinear", align_corners=True)
    assert np.abs(bilinear - corners).max() > 100 * _check_steps.UPSAMPLE_TOLERANCE


def test_top_and_least_inputs_have_no_ties():
    for scores, _ in _check_figure.top_and_least_inputs():
        flat = scores.reshape(-1)
        assert len(np.unique(flat)) == flat.size


def test_tolerances_are_far_below_the_differences_they_must_detect(refs):
    for case in (refs.distinct_class(DENSENET, CATS, "features"), refs.contrast_case()):
        assert 0 < refs.map_tolerance(case) < 5e-3, (case, refs.map_tolerance(case))
    assert _check_hooks.HOOK_RELATIVE <= 1e-4 and _check_hooks.HOOK_OUTLIERS <= 1e-3


# ------------------------------------------------------------------------------------------------
# pieces without models
# ------------------------------------------------------------------------------------------------
def test_map_error_accepts_a_small_eps_in_the_denominator_only():
    rng = np.random.default_rng(0)
    reference = rng.uniform(0, 1, (8, 8))
    reference = (reference - reference.min()) / (reference.max() - reference.min())
    assert _check_grad_cam.map_error(reference * (1 - 1e-4), reference) < 1e-12
    assert _check_grad_cam.map_error(reference * 0.9, reference) > 0.05
    assert _check_grad_cam.map_error(reference[:4], reference) == float("inf")


def test_results_plugin_records_only_the_judges_messages(tmp_path):
    """A CheckFailure becomes the feedback; any other error becomes the generic message, and its
    traceback goes to the log only. Every selected test of the seven appears in the JSON."""
    (tmp_path / "conftest.py").write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO_ROOT)!r})
        from pathlib import Path
        from autograder_tests._results import ResultsPlugin

        def pytest_configure(config):
            points = {{"test_register_gradcam_hooks": 2.0, "test_channel_weights": 1.0, "test_grad_cam": 3.0,
                       "test_weighted_cam": 1.0, "test_top_and_least": 1.0}}
            config.pluginmanager.register(
                ResultsPlugin(Path("sub.ipynb"), points, Path({str(tmp_path / "results.json")!r})), "rec")
    """))
    (tmp_path / "test_fake.py").write_text(textwrap.dedent("""
        import pytest
        from gradcam_kit.grading.feedback import CheckFailure
        from autograder_tests._results import FEEDBACK_PROPERTY

        def test_register_gradcam_hooks(record_property):
            record_property(FEEDBACK_PROPERTY, "matched 'mixed'")

        def test_channel_weights():
            raise CheckFailure("weights should have shape (2, 5)")

        def test_grad_cam():
            secret_hidden_variable = 1
            raise ValueError("judge bug in hidden code")

        @pytest.fixture
        def broken():
            raise RuntimeError("fixture bug")

        def test_weighted_cam(broken):
            pass

        def test_top_and_least():
            from autograder_tests._judge import GraderFault
            raise GraderFault("the worker could not be started (no such file)")
    """))
    completed = subprocess.run([sys.executable, "-m", "pytest", str(tmp_path), "-q", "-p", "no:cacheprovider"],
                               cwd=tmp_path, capture_output=True, text=True, timeout=300)
    results = json.loads((tmp_path / "results.json").read_text())
    tests = results["tests"]
    assert tests["test_register_gradcam_hooks"] == {"outcome": "passed", "points": 2.0, "max_points": 2.0,
                                                    "feedback": "matched 'mixed'"}
    assert tests["test_channel_weights"]["feedback"] == "weights should have shape (2, 5)"
    assert tests["test_channel_weights"]["points"] == 0.0
    for name in ("test_grad_cam", "test_weighted_cam", "test_top_and_least"):
        assert tests[name]["outcome"] == "error"
        assert tests[name]["feedback"] == "internal grading error — tell your instructor"
    # the reason is kept for the instructor (gradcam-kit grade then writes no score for the student)
    assert tests["test_top_and_least"]["grader_error"] == "the worker could not be started (no such file)"
    assert tests["test_grad_cam"]["grader_error"].startswith("internal error of the judge (call: ValueError")
    text = json.dumps(results)
    for secret in ("judge bug", "secret_hidden_variable", "Traceback", "fixture bug"):
        assert secret not in text
    assert "judge bug in hidden code" in completed.stdout + completed.stderr  # the instructor's log has it


def test_answer_key_figure_has_four_titled_panels(refs):
    key = refs.key
    model = refs.model(DENSENET)
    names = refs.class_names()
    figure = key.show_grad_cam(torch.from_numpy(refs.image(CATS)), model, model.features, names)
    panels = [ax for ax in figure.axes if ax.images]
    expected = key.top_and_least(torch.from_numpy(refs.scores(DENSENET, CATS)))
    assert len(panels) == 4
    assert all(names[idx] in ax.get_title() for ax, idx in zip(panels, expected))
    assert not model.features._forward_hooks and not model.training
