"""The grader's own helpers, and how the judge uses them to charge a bug once.

* each substitute (``autograder_tests/_substitutes.py``), compiled as the worker compiles it, agrees
  with the answer key (``solutions/answer_key.py``) on random inputs and on DenseNet-121;
* every helper that a graded function calls (``contract.CALLS``, the one place for that fact) has a
  substitute, and ``helpers_of`` follows the calls;
* the error of a call made with substitutes never leaves ``Judge.call``: the student's code could
  have read the grader's code during that call.
"""

from __future__ import annotations

import builtins
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from autograder_tests import _judge, _substitutes
from autograder_tests._inputs import CATS, CONTRAST, DENSENET, RESNET, WOMAN_DOG
from autograder_tests._reference import References
from gradcam_kit import contract
from gradcam_kit.grading.feedback import CheckFailure
from gradcam_kit.host.outcomes import Outcome


def compiled(name: str):
    """The substitute for ``name``, compiled in a private namespace as the worker does."""
    namespace = {"__builtins__": builtins, "__name__": "_grader_substitutes", "torch": torch, "F": F}
    exec(compile(_substitutes.SOURCES[name], f"<grader's {name}>", "exec"), namespace)
    return namespace[name]


@pytest.fixture(scope="module")
def refs(course, tmp_path_factory, one_thread) -> References:
    cache = tmp_path_factory.getbasetemp() / "gradcam-reference-cache"
    cache.mkdir(exist_ok=True)
    return References(course, cache)


def test_every_helper_called_has_a_substitute_and_nothing_else_does():
    called = {helper for helpers in contract.CALLS.values() for helper in helpers}
    assert called == set(_substitutes.SOURCES)
    assert set(contract.CALLS) | called <= set(contract.GRADED_FUNCTIONS)
    assert contract.helpers_of("show_grad_cam") == ("top_and_least", "grad_cam", "register_gradcam_hooks",
                                                  "channel_weights", "weighted_cam", "upsample_normalize")
    assert contract.helpers_of("channel_weights") == ()


def test_pure_substitutes_agree_with_the_answer_key(refs):
    key = refs.key
    rng = np.random.default_rng(7)
    gradients = torch.from_numpy(rng.standard_normal((2, 5, 3, 4)).astype(np.float32))
    activations = torch.from_numpy(rng.uniform(0, 2, (2, 5, 3, 4)).astype(np.float32))
    weights = torch.from_numpy(rng.standard_normal((2, 5)).astype(np.float32))
    torch.testing.assert_close(compiled("channel_weights")(gradients), key.channel_weights(gradients))
    torch.testing.assert_close(compiled("weighted_cam")(activations, weights), key.weighted_cam(activations, weights))
    cam = torch.from_numpy(rng.uniform(0, 3, (3, 7, 5)).astype(np.float32))
    cam[2] = 1.5  # a constant map
    for size in ((224, 224), (37, 23), 16):
        torch.testing.assert_close(compiled("upsample_normalize")(cam, size), key.upsample_normalize(cam, size),
                                   atol=1e-6, rtol=0)
    scores = torch.from_numpy(rng.permutation(1000).astype(np.float32))
    for k in (1, 3, 5):
        assert compiled("top_and_least")(scores, k) == key.top_and_least(scores, k)
        assert compiled("top_and_least")(scores[None], k) == key.top_and_least(scores, k)


@pytest.mark.parametrize("layer", ["features", "features.denseblock3"])
def test_substitute_hooks_record_the_pre_relu_pair(refs, layer):
    case = refs.distinct_class(DENSENET, CATS if layer == "features" else WOMAN_DOG, layer)
    model = refs.model(DENSENET)
    store, handles = compiled("register_gradcam_hooks")(model.get_submodule(layer))
    model(torch.from_numpy(refs.image(case.image)))[:, case.class_idx].sum().backward()
    for handle in handles:
        handle.remove()
    model.zero_grad(set_to_none=True)
    activations, gradients = refs.capture(case).pair("pre_relu")
    np.testing.assert_array_equal(store["activations"].numpy(), activations)
    np.testing.assert_array_equal(store["gradients"].numpy(), gradients)
    assert not model.get_submodule(layer)._forward_hooks


@pytest.mark.parametrize("spec, layer", [(DENSENET, "features"), (RESNET, "layer4"), (CONTRAST, "features")])
def test_substitute_grad_cam_gives_the_reference_map(refs, spec, layer):
    case = refs.contrast_case() if spec == CONTRAST else refs.distinct_class(spec, CATS, layer)
    model = refs.model(spec)
    heatmap = compiled("grad_cam")(model, torch.from_numpy(refs.image(case.image)), case.class_idx,
                                   model.get_submodule(layer))
    assert heatmap.shape == (224, 224) and not heatmap.requires_grad and heatmap.device.type == "cpu"
    error = np.abs(heatmap.numpy() - refs.maps(case)["pre_relu"]).max()
    assert error <= refs.map_tolerance(case), error
    assert not model.training and not model.get_submodule(layer)._forward_hooks


def test_the_error_of_a_call_with_substitutes_stays_in_the_judge(refs):
    """Whatever the student's code raised while the grader's helpers were in place (it may quote
    them), ``Judge.call`` keeps only that it failed."""

    class Session:
        def __init__(self) -> None:
            self.requests = []

        def call(self, name, *args, substitutes=None, **kwargs):
            self.requests.append((name, substitutes))
            secret = "def register_gradcam_hooks(layer): ... store" if substitutes else "their own error"
            return Outcome(False, None, f"RuntimeError: {secret}", {}, "exception")

    session = Session()
    judge = _judge.Judge(session, refs, {})
    plain = judge.call("grad_cam", 1, 2)
    replaced = judge.call("grad_cam", 1, 2, substitutes={"register_gradcam_hooks": _substitutes.SOURCES[
        "register_gradcam_hooks"]})
    assert plain.error == "RuntimeError: their own error"
    assert replaced.error == _judge.SUBSTITUTED_ERROR and "register_gradcam_hooks" not in replaced.error
    assert session.requests[1][1] == {"register_gradcam_hooks": _substitutes.SOURCES["register_gradcam_hooks"]}


def test_broken_follows_the_calls(refs):
    """A helper is broken when its own test fails or a helper it calls is broken; the substitutes
    of a function are exactly its broken helpers."""
    verdicts = {name: True for name in contract.GRADED_FUNCTIONS}
    verdicts["register_gradcam_hooks"] = False
    def check(ok: bool):
        def run(judge) -> str:
            if not ok:
                raise CheckFailure("wrong")
            return ""
        return run

    checks = {name: check(ok) for name, ok in verdicts.items()}
    judge = _judge.Judge(None, refs, checks)
    assert judge.broken("register_gradcam_hooks") and judge.broken("grad_cam") and judge.broken("show_grad_cam")
    assert not judge.broken("top_and_least") and not judge.broken("channel_weights")
    assert set(judge.substitutes("grad_cam")) == {"register_gradcam_hooks"}
    assert set(judge.substitutes("show_grad_cam")) == {"grad_cam", "register_gradcam_hooks"}
    assert judge.substitutes("channel_weights") == {}
