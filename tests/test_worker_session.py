"""A worker round trip: a correct submission's functions, called through the session, give the
same results as the same code run here; what crosses the boundary is plain data that says what the
student's code returned and did."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hostile import cases, notebooks

from gradcam_kit.grading.notebook import read_submission
from gradcam_kit.host.session import LayerRef, ModelSpec, WorkerSession
from gradcam_kit.worker.models import build_model

EXTRAS = '''
def arg_types(*args, **kwargs):
    described = [(str(a.dtype), a.device.type, tuple(a.shape)) if torch.is_tensor(a) else type(a).__name__
                 for a in args]
    return described, sorted(kwargs)


def leaves_hooks(model, layer):
    layer.register_forward_hook(lambda module, inputs, output: None)
    layer.register_full_backward_hook(lambda module, grad_in, grad_out: None)
    model.train()
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    return 0


def model_state(model, layer):
    return type(model).__name__, model.training, type(layer).__name__


def sees_class_names():
    return len(class_names)


def talks():
    print("hello from the student")
    return 1


def global_grad_off():
    torch.set_grad_enabled(False)
    torch.set_default_dtype(torch.float64)
    return 1


def nested_failure(values):
    def inner(v):
        return v.reshape(5, 5)
    return inner(values)


def full_backward_hooks(layer):
    store = {}
    handles = [
        layer.register_forward_hook(lambda m, i, o: store.__setitem__("activations", o)),
        layer.register_full_backward_hook(lambda m, gi, go: store.__setitem__("gradients", go[0])),
    ]
    return store, handles


def forgets_to_return(layer):
    layer.register_forward_hook(lambda m, i, o: None)


def monkeypatches():
    import builtins
    torch.allclose = lambda *a, **k: True
    torch.Tensor.__eq__ = lambda self, other: True
    np.allclose = lambda *a, **k: True
    np.testing.assert_allclose = lambda *a, **k: None
    builtins.print = lambda *a, **k: None
    tp2_utils.load_model = lambda *a, **k: torch.nn.Identity()
    return "patched"
'''


@pytest.fixture(scope="module")
def session(course, tmp_path_factory):
    folder = tmp_path_factory.mktemp("round_trip")
    source = notebooks.write(notebooks.source_notebook(), folder / "source" / "TP2_GradCAM.ipynb")
    top = notebooks.SOLUTIONS["top_and_least"] + EXTRAS + "".join(case.code for case in cases.RETURNS)
    student = notebooks.write(notebooks.submission(replace={"top_and_least": top,
                                                            "setup_data": "class_names = ['hacked']\n"}),
                              folder / "alice" / "TP2_GradCAM.ipynb")
    program = read_submission(student, source)
    with WorkerSession(program, course.images_dir, course.helper_module) as worker:
        yield worker


@pytest.fixture(scope="module")
def local(tp2_utils):
    """The correct solution, run here in the judge's process."""
    namespace = {"torch": torch, "F": torch.nn.functional, "np": np, "tp2_utils": tp2_utils}
    for code in notebooks.SOLUTIONS.values():
        exec(code, namespace)
    return namespace


@pytest.fixture(scope="module")
def image(tp2_utils, image_paths) -> np.ndarray:
    return tp2_utils.load_batch(image_paths[:1]).numpy()


@pytest.fixture(scope="module")
def small_image(image) -> np.ndarray:
    """A 128-pixel image: the comparisons run here too, on a shared CPU."""
    return torch.nn.functional.interpolate(torch.from_numpy(image), size=(128, 128), mode="bilinear").numpy()


@pytest.fixture(scope="module")
def local_model(tp2_utils):
    return build_model(ModelSpec("densenet121", "random"), tp2_utils)


def test_load(session):
    load = session.load()
    assert load.ok and load.fatal is None and load.errors == {}
    assert load.defined == {name: True for name in notebooks.FUNCTIONS}
    assert load.isolation == session.isolation_level
    assert any("`setup_data` was changed" in note for note in load.notes)
    assert session.load() is load  # loaded once


def test_the_locked_original_was_run(session):
    assert session.call("sees_class_names").value == 1000


def test_arguments_arrive_as_cpu_tensors(session):
    outcome = session.call("arg_types", np.zeros((2, 3)), np.arange(4), np.array([True]), 5, "text",
                           flag=np.float32(1))
    assert outcome.ok, outcome.error
    described, keywords = outcome.value
    assert described == [("torch.float32", "cpu", (2, 3)), ("torch.int64", "cpu", (4,)),
                         ("torch.bool", "cpu", (1,)), "int", "str"]
    assert keywords == ["flag"]


def test_channel_weights_weighted_cam_upsample(session, local):
    rng = np.random.default_rng(0)
    gradients = rng.standard_normal((2, 16, 7, 7)).astype(np.float32)
    outcome = session.call("channel_weights", gradients)
    assert outcome.ok and outcome.observations == {}
    value = outcome.value
    assert value["kind"] == "tensor" and value["dtype"] == "torch.float32" and value["device"] == "cpu"
    assert value["shape"] == [2, 16] and value["requires_grad"] is False
    np.testing.assert_allclose(value["array"], gradients.mean(axis=(2, 3)), rtol=1e-5, atol=1e-6)

    weights = rng.standard_normal((2, 16)).astype(np.float32)
    cam = session.call("weighted_cam", gradients, weights).value["array"]
    expected = local["weighted_cam"](torch.from_numpy(gradients), torch.from_numpy(weights)).numpy()
    np.testing.assert_allclose(cam, expected, rtol=1e-5, atol=1e-6)

    up = session.call("upsample_normalize", cam, size=(32, 48)).value
    assert up["shape"] == [2, 32, 48]
    np.testing.assert_allclose(up["array"], local["upsample_normalize"](torch.from_numpy(cam), size=(32, 48)).numpy(),
                               rtol=1e-5, atol=1e-6)


def test_grad_cam_on_a_fresh_model_matches_the_same_code_run_here(session, local, small_image, local_model):
    spec = ModelSpec("densenet121", "random")
    outcome = session.call("grad_cam", spec, small_image, 5, LayerRef("features.denseblock4"))
    assert outcome.ok, outcome.error
    assert outcome.value["shape"] == [128, 128] and outcome.value["requires_grad"] is False
    assert outcome.observations == {"hooks_left": [], "training": False, "weights_changed": False,
                                    "buffers_changed": False}
    expected = local["grad_cam"](local_model, torch.from_numpy(small_image), 5, local_model.features.denseblock4)
    np.testing.assert_allclose(outcome.value["array"], expected.numpy(), atol=1e-5)
    assert 0 < outcome.seconds < 60


def test_model_weights_none_means_the_sessions_policy(session, small_image):
    first = session.call("grad_cam", ModelSpec("densenet121"), small_image, 7, LayerRef("features"))
    second = session.call("grad_cam", ModelSpec("densenet121", session.weights), small_image, 7, LayerRef("features"))
    np.testing.assert_array_equal(first.value["array"], second.value["array"])


def test_top_and_least_returns_plain_ints(session):
    scores = np.array([[0.1, 5.0, -3.0, 2.0, 4.0]], np.float32)
    outcome = session.call("top_and_least", scores)
    assert outcome.value == [1, 4, 3, 2] and all(type(item) is int for item in outcome.value)


def test_a_figure_is_described(session, image):
    names = [f"class {index}" for index in range(1000)]
    outcome = session.call("show_grad_cam", image, ModelSpec("resnet18", "random"), LayerRef("layer4"), names)
    assert outcome.ok, outcome.error
    figure = outcome.value
    assert figure["kind"] == "figure" and len(figure["axes"]) == 4
    assert all(axis["n_images"] == 2 and axis["title"].startswith("class ") for axis in figure["axes"])


def test_probe_hooks_reports_every_step(session, image):
    outcome = session.probe_hooks(ModelSpec("densenet121", "random"), "features.denseblock3", image, class_idx=5)
    assert outcome.ok, outcome.error
    value = outcome.value
    assert value["step"] is None and value["removed"] is True
    assert value["hooks_added"] == {"features.denseblock3": ["forward"]}
    store, handles = value["returned"]
    assert store == {} and handles == [{"kind": "object", "type": "torch.utils.hooks.RemovableHandle"}]
    for key in ("activations", "gradients"):
        assert value[key]["kind"] == "tensor" and value[key]["shape"] == [1, 1024, 14, 14]
    assert np.abs(value["gradients"]["array"]).sum() > 0
    assert outcome.observations["hooks_left"] == []


def test_probe_hooks_names_the_failing_step(session, small_image):
    full = session.probe_hooks(ModelSpec("densenet121", "random"), "features", small_image, 5,
                               function="full_backward_hooks")
    assert not full.ok and full.value["step"] == "forward"
    assert full.value["hooks_added"] == {"features": ["forward", "full_backward"]}
    assert "BackwardHookFunction" in full.error and "output.register_hook" in full.error
    assert full.observations["hooks_left"] == ["features"]  # never removed: the step failed before

    nothing = session.probe_hooks(ModelSpec("densenet121", "random"), "features.denseblock3", small_image, 5,
                                  function="forgets_to_return")
    assert not nothing.ok and nothing.value["step"] == "returned" and nothing.failure == "wrong_return"
    assert "should return (store, handles)" in nothing.error
    assert nothing.observations["hooks_left"] == ["features.denseblock3"]


def test_observations_and_a_fresh_model_per_call(session):
    spec = ModelSpec("densenet121", "random")
    outcome = session.call("leaves_hooks", spec, LayerRef("features.denseblock4"))
    assert outcome.observations == {"hooks_left": ["features.denseblock4"], "training": True,
                                    "weights_changed": True, "buffers_changed": False}
    again = session.call("model_state", spec, LayerRef("features.denseblock4"))
    assert again.value == ("DenseNet", False, "_DenseBlock")
    assert again.observations == {"hooks_left": [], "training": False, "weights_changed": False,
                                  "buffers_changed": False}


def test_errors_point_at_the_students_line_only(session):
    outcome = session.call("nested_failure", np.zeros(7))
    assert not outcome.ok and outcome.failure == "exception"
    assert outcome.error.startswith("RuntimeError: shape '[5, 5]' is invalid for input of size 7")
    assert outcome.error.endswith("(cell `top_and_least`, line " + _line_of("return v.reshape(5, 5)")
                                  + ": `return v.reshape(5, 5)`)")
    for harness in ("gradcam_kit", "worker.py", "Traceback", "site-packages"):
        assert harness not in outcome.error

    wrong_shape = session.call("channel_weights", np.zeros((3, 3), np.float32))
    assert "IndexError" in wrong_shape.error and "(cell `channel_weights`, line 2:" in wrong_shape.error

    missing = session.call("no_such_function")
    assert not missing.ok and "`no_such_function` is not defined" in missing.error


def test_errors_cross_as_fields_not_as_text(session, small_image):
    """The location of an error crosses as fields (``Outcome.student_error``), never to be parsed
    back from ``Outcome.error``, which is rendered from them."""
    outcome = session.call("nested_failure", np.zeros(7))
    error = outcome.student_error
    assert error is not None and outcome.error == str(error)
    assert error.message == "RuntimeError: shape '[5, 5]' is invalid for input of size 7"
    assert (error.cell, error.line, error.code) == ("top_and_least", int(_line_of("return v.reshape(5, 5)")),
                                                    "return v.reshape(5, 5)")
    assert error.step is None and error.hint == ""

    full = session.probe_hooks(ModelSpec("densenet121", "random"), "features", small_image, 5,
                               function="full_backward_hooks")
    assert full.student_error.step == full.value["step"] == "forward"
    assert full.student_error.hint.startswith(" — this happens with register_full_backward_hook")
    assert full.error.startswith("at step 'forward': ")


def _line_of(text: str) -> str:
    top = notebooks.SOLUTIONS["top_and_least"] + EXTRAS
    return str(next(number for number, line in enumerate(top.splitlines(), 1) if text in line))


def test_prints_go_to_the_log_not_the_protocol(session):
    assert session.call("talks").value == 1
    assert "hello from the student" in session.output_tail()


def test_global_state_is_reset_between_calls(session, small_image):
    assert session.call("global_grad_off").ok
    outcome = session.call("grad_cam", ModelSpec("densenet121", "random"), small_image, 5, LayerRef("features"))
    assert outcome.ok and outcome.value["dtype"] == "torch.float32", outcome.error


@pytest.mark.parametrize("case", cases.RETURNS, ids=lambda case: case.name)
def test_returned_objects_are_reduced_to_plain_data(session, case):
    outcome = session.call(f"hostile_{case.name}")
    assert outcome.ok, outcome.error
    assert case.check(outcome.value), (case.explanation, outcome.value)


def test_monkeypatching_inside_the_worker_cannot_reach_the_judge(session, local, small_image, local_model):
    original_allclose, original_eq = torch.allclose, torch.Tensor.__eq__
    assert session.call("monkeypatches").value == "patched"
    assert torch.allclose is original_allclose and torch.Tensor.__eq__ is original_eq
    assert not torch.allclose(torch.zeros(1), torch.ones(1))
    # the worker's models are still built by the grader's own copy of tp2_utils
    spec = ModelSpec("densenet121", "random")
    outcome = session.call("grad_cam", spec, small_image, 3, LayerRef("features.denseblock4"))
    assert outcome.ok, outcome.error
    expected = local["grad_cam"](local_model, torch.from_numpy(small_image), 3, local_model.features.denseblock4)
    np.testing.assert_allclose(outcome.value["array"], expected.numpy(), atol=1e-5)


def test_the_real_instructor_notebook_runs_in_the_worker(course, image):
    if not course.source_notebook.is_file():
        pytest.skip("the instructor notebook is not written yet")
    program = read_submission(course.source_notebook, course.source_notebook)
    with WorkerSession(program, course.images_dir, course.helper_module) as worker:
        load = worker.load()
        assert load.ok, load.errors
        outcome = worker.call("grad_cam", ModelSpec("densenet121", "random"), image, 5, LayerRef("features"))
        assert outcome.ok, outcome.error
        heatmap = outcome.value["array"]
        assert heatmap.shape == (224, 224) and heatmap.min() >= 0 and heatmap.max() <= 1 + 1e-6
        probe = worker.probe_hooks(ModelSpec("densenet121", "random"), "features.denseblock3", image, 5)
        assert probe.ok, probe.error
        assert probe.observations["hooks_left"] == []


SUBSTITUTION_EXTRAS = '''
def weights_through_helper(gradients):
    return channel_weights(gradients)


def calls_a_missing_helper():
    return grader_only_helper()


def knows(name):
    return name in globals()
'''


def test_substitutes_replace_a_helper_for_one_call_only(course, tmp_path):
    """The grader's own helper is used during the call, the student's is back afterwards (a name the
    notebook never defined is removed again), and the worker was restarted in between."""
    source = notebooks.write(notebooks.source_notebook(), tmp_path / "source" / "TP2_GradCAM.ipynb")
    top = notebooks.SOLUTIONS["top_and_least"] + SUBSTITUTION_EXTRAS
    student = notebooks.write(notebooks.submission(replace={"top_and_least": top}),
                              tmp_path / "bob" / "TP2_GradCAM.ipynb")
    gradients = np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2)
    own = gradients.mean(axis=(2, 3))
    grader = {"channel_weights": "def channel_weights(g):\n    return torch.full((1,), 42.0)\n",
              "grader_only_helper": "def grader_only_helper():\n    return F.relu(torch.tensor([-1.0, 2.0]))\n"}
    with WorkerSession(read_submission(student, source), course.images_dir, course.helper_module) as worker:
        assert worker.load().ok
        before = worker.call("weights_through_helper", gradients)
        np.testing.assert_allclose(before.value["array"], own, atol=1e-6)
        starts = worker._starts

        during = worker.call("weights_through_helper", gradients, substitutes=grader)
        assert during.ok, during.error
        np.testing.assert_allclose(during.value["array"], [42.0])
        assert worker._process is None  # stopped right after the call with substitutes

        after = worker.call("weights_through_helper", gradients)
        assert after.ok, after.error
        np.testing.assert_allclose(after.value["array"], own, atol=1e-6)
        assert worker._starts == starts + 1 and worker.planned_restarts == 1 and worker.restarts == 0

        missing = worker.call("calls_a_missing_helper", substitutes=grader)
        assert missing.ok, missing.error
        np.testing.assert_allclose(missing.value["array"], [0.0, 2.0])
        assert worker.call("knows", "grader_only_helper").value is False
        assert worker.call("knows", "channel_weights").value is True
        failed = worker.call("calls_a_missing_helper")
        assert not failed.ok and "grader_only_helper" in failed.error
        assert worker.planned_restarts == 2 and worker.restarts == 0


@pytest.mark.parametrize("zygote", ["1", "0"])
def test_a_relative_submission_path_works(course, tmp_path, monkeypatch, zygote):
    """``pytest autograder_tests --submission submitted/.../TP2_GradCAM.ipynb`` from the course folder:
    the sandbox binds files from ``/``, so a relative path must not reach it as such."""
    monkeypatch.setenv("GRADCAM_WORKER_ZYGOTE", zygote)
    notebooks.write(notebooks.source_notebook(), tmp_path / "source" / "TP2_GradCAM.ipynb")
    notebooks.write(notebooks.submission(), tmp_path / "bob" / "TP2_GradCAM.ipynb")
    monkeypatch.chdir(tmp_path)
    program = read_submission(Path("bob/TP2_GradCAM.ipynb"), Path("source/TP2_GradCAM.ipynb"))
    with WorkerSession(program, course.images_dir, course.helper_module) as worker:
        load = worker.load()
        assert load.ok and load.fatal is None, (load.fatal, load.errors)
        assert worker.call("top_and_least", np.arange(10.0)).ok
