"""The reference leaves the model as it found it, and fails clearly on bad input.

No hook left behind (also after an exception raised midway), every training flag and batch-norm
buffer unchanged, parameters' ``.grad`` and ``requires_grad`` untouched, autograd's mode restored.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.testing import assert_close


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def images(tp2_utils, image_paths):
    return tp2_utils.load_batch(image_paths[:2])


@pytest.fixture
def densenet(tp2_utils):
    """A fresh model for each test, since the tests change its state on purpose."""
    return tp2_utils.load_model("densenet121", weights="random")


HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def hooked_modules(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if any(getattr(module, d) for d in HOOK_DICTS)]


def state_snapshot(model: nn.Module) -> dict:
    return {
        "training": {name: module.training for name, module in model.named_modules()},
        "requires_grad": {name: p.requires_grad for name, p in model.named_parameters()},
        "grad": {name: p.grad for name, p in model.named_parameters()},
        "buffers": {name: b.clone() for name, b in model.named_buffers()},
        "parameters": {name: p.detach().clone() for name, p in model.named_parameters()},
    }


def assert_state_unchanged(model: nn.Module, before: dict) -> None:
    after = state_snapshot(model)
    assert hooked_modules(model) == []
    assert after["training"] == before["training"]
    assert after["requires_grad"] == before["requires_grad"]
    for name, grad in after["grad"].items():
        assert grad is before["grad"][name], f"the .grad of {name} changed"
    for name, buffer in after["buffers"].items():
        assert torch.equal(buffer, before["buffers"][name]), f"the buffer {name} changed"
    for name, value in after["parameters"].items():
        assert torch.equal(value, before["parameters"][name]), f"the parameter {name} changed"


@pytest.mark.parametrize("convention", ["post_relu", "pre_relu", "mixed"])
def test_the_model_is_left_as_found(ref, densenet, images, convention):
    # A sentinel .grad on one parameter, None on the others.
    densenet.classifier.weight.grad = torch.full_like(densenet.classifier.weight, 7.0)
    before = state_snapshot(densenet)
    maps = ref.grad_cam(densenet, images, torch.tensor([[1, 2], [3, 4]]), "features", convention=convention)
    assert_state_unchanged(densenet, before)
    assert torch.all(densenet.classifier.weight.grad == 7.0)
    assert not maps.requires_grad and maps.grad_fn is None
    assert torch.is_grad_enabled()


def test_training_flags_are_restored_and_the_maps_are_the_eval_maps(ref, densenet, images):
    expected = ref.grad_cam(densenet, images, 3, "features.denseblock3")
    densenet.train()
    densenet.features.denseblock4.eval()  # a mixture of flags must come back as it was
    before = state_snapshot(densenet)
    in_training_mode = ref.grad_cam(densenet, images, 3, "features.denseblock3")
    assert_state_unchanged(densenet, before)  # includes the batch-norm running statistics
    assert_close(in_training_mode, expected, atol=0, rtol=0)


@pytest.mark.parametrize("requires_grad", [False, True])
def test_works_whether_or_not_parameters_require_grad(ref, densenet, images, requires_grad):
    expected = ref.grad_cam(densenet, images, 7, "features")
    densenet.requires_grad_(requires_grad)
    before = state_snapshot(densenet)
    assert_close(ref.grad_cam(densenet, images, 7, "features"), expected, atol=0, rtol=0)
    assert_state_unchanged(densenet, before)


def test_autograd_mode_and_input_are_untouched(ref, densenet, images):
    leaf = images.clone().requires_grad_(True)
    with torch.no_grad():
        maps = ref.grad_cam(densenet, leaf, 7, "features")
        assert not torch.is_grad_enabled()
    assert leaf.grad is None and maps.abs().amax() > 0
    with torch.inference_mode():
        inside = ref.grad_cam(densenet, images, 7, "features")
    assert_close(inside, maps, atol=0, rtol=0)


def test_layer_as_module_or_name_is_the_same(ref, densenet, images):
    by_name = ref.grad_cam(densenet, images, 7, "features.denseblock3")
    by_module = ref.grad_cam(densenet, images, 7, densenet.features.denseblock3)
    assert_close(by_name, by_module, atol=0, rtol=0)


# ----------------------------------------------------------------------------------------------
# Exceptions midway leave no trace
# ----------------------------------------------------------------------------------------------
class Explodes(nn.Module):
    """Raises when called: put after the Grad-CAM layer, it fails the forward pass midway."""

    def forward(self, x):
        raise RuntimeError("boom")


def test_an_exception_after_the_layer_leaves_no_trace(ref, densenet, images):
    densenet.train()
    before = state_snapshot(densenet)
    original = densenet.classifier
    densenet.classifier = Explodes()
    try:
        with pytest.raises(RuntimeError, match="boom"):
            ref.grad_cam(densenet, images, 7, "features")
    finally:
        densenet.classifier = original
    assert torch.is_grad_enabled()
    assert_state_unchanged(densenet, before)
    with torch.no_grad():
        with pytest.raises(RuntimeError, match="boom"):
            densenet.classifier = Explodes()
            try:
                ref.grad_cam(densenet, images, 7, "features")
            finally:
                densenet.classifier = original
        assert not torch.is_grad_enabled()


def test_out_of_range_targets_fail_after_the_forward_pass_and_leave_no_trace(ref, densenet, images):
    before = state_snapshot(densenet)
    with pytest.raises(ValueError, match="targets"):
        ref.grad_cam(densenet, images, torch.tensor([[1], [1000]]), "features")
    assert_state_unchanged(densenet, before)


@pytest.mark.parametrize(
    "targets",
    [torch.tensor([1, 2]), torch.tensor([[1, 2]]), torch.tensor([[1.0], [2.0]]), True, torch.zeros(2, 0)],
)
def test_malformed_targets_are_refused(ref, densenet, images, targets):
    with pytest.raises((ValueError, TypeError)):
        ref.grad_cam(densenet, images, targets, "features")
    assert hooked_modules(densenet) == []


def test_unknown_layers_are_refused(ref, densenet, images):
    with pytest.raises(ValueError, match="no submodule"):
        ref.grad_cam(densenet, images, 1, "features.denseblock5")
    with pytest.raises(ValueError, match="not a submodule"):
        ref.grad_cam(densenet, images, 1, nn.ReLU())
    with pytest.raises(ValueError, match="convention"):
        ref.grad_cam(densenet, images, 1, "features", convention="post-relu")


class SharedActivation(nn.Module):
    """A model that calls one module twice and has one that never runs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.unused = nn.Conv2d(4, 4, 1)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        x = self.act(self.conv2(self.act(self.conv1(x))))
        return self.head(x.mean(dim=(-2, -1)))


def test_layers_that_run_twice_or_never_are_refused(ref):
    model = SharedActivation().eval()
    images = torch.randn(2, 3, 8, 8)
    with pytest.raises(ValueError, match="ran 2 times"):
        ref.grad_cam(model, images, 1, "act")
    with pytest.raises(ValueError, match="did not run"):
        ref.grad_cam(model, images, 1, "unused")
    with pytest.raises(ValueError, match=r"\(N, K, h, w\)"):
        ref.grad_cam(model, images, 1, "head")
    assert hooked_modules(model) == [] and torch.is_grad_enabled()
    assert ref.grad_cam(model, images, 1, "conv2").shape == (2, 1, 8, 8)


@pytest.fixture
def exact_cuda_float32():
    """Turn TF32 off, so that CUDA convolutions and products round like the CPU's (to ~1e-6)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(ref, tp2_utils, images, exact_cuda_float32):
    model = tp2_utils.load_model("densenet121", weights="random")
    targets = torch.tensor([[1, 281], [285, 999]])
    layers = ("features", "features.denseblock3")
    on_cpu = {
        (layer, c): ref.grad_cam(model, images, targets, layer, convention=c, size=(224, 224))
        for layer in layers
        for c in ref.CONVENTIONS
    }
    model.cuda()
    for (layer, convention), expected in on_cpu.items():
        on_gpu = ref.grad_cam(model, images.cuda(), targets.cuda(), layer, convention=convention, size=(224, 224))
        assert on_gpu.device.type == "cuda"
        scale = expected.abs().amax()
        assert_close(on_gpu.cpu() / scale, expected / scale, atol=1e-4, rtol=0)
    assert hooked_modules(model) == []
