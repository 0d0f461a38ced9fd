"""Benchmark of the reference Grad-CAM (solutions/gradcam_reference.py), on the CPU.

The work: 8 course images, 4 target classes each (the top 3 and the least probable), DenseNet-121
with the seeded random weights (``GRADCAM_WEIGHTS=random``), maps upsampled to 224 x 224 and
normalised to [0, 1]. Measured side by side in one run, each as the median of several timed
repetitions after a warm-up, the repetitions interleaved so that a change of machine load hits
every row alike:

* a plain forward pass of the 8 images under ``torch.no_grad()``: the floor, since Grad-CAM needs
  at least that;
* the reference at ``features`` (target: at most 1.15 x the forward pass) and at
  ``features.denseblock3`` (target: at most 1.6 x);
* the same reference with all targets in one vectorised backward pass
  (``torch.autograd.grad(..., is_grads_batched=True)``), the alternative it does not use;
* pytorch-grad-cam's ``GradCAM`` at ``features[-1]``, one call per target rank (4 calls), which
  gives the same normalised 224 x 224 maps (target: the reference at least 10 x faster).
  pytorch-grad-cam (``grad-cam==1.5.7``, the ``bench`` extra) is needed for this row only.

Run from the repository root::

    python benchmarks/reference.py [--threads 1] [--repeats 7] [--gradcam-repeats 3]

It prints a markdown table (for the README) and the setting it ran in.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

os.environ.setdefault("GRADCAM_WEIGHTS", "random")

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from gradcam_kit.course import Course

N_IMAGES = 8
SIZE = (224, 224)


def batched_target_gradients(scores: torch.Tensor, wrt: torch.Tensor, target_table: torch.Tensor) -> torch.Tensor:
    """The alternative to the reference's per-target loop: one vmapped backward pass.

    Same contract as ``gradcam_reference._target_gradients``: (N, C), (N, K, h, w), (N, T) ->
    (T, N, K, h, w), with one-hot seeds ``seeds[t, n, c] = [c == target_table[n, t]]``.
    """
    seeds = torch.zeros((target_table.shape[1], *scores.shape), dtype=scores.dtype, device=scores.device)
    seeds.scatter_(2, target_table.t().unsqueeze(-1), 1.0)
    (gradients,) = torch.autograd.grad(scores, wrt, grad_outputs=seeds, is_grads_batched=True)
    return gradients


def time_once(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default: 1)")
    parser.add_argument("--repeats", type=int, default=7, help="timed repetitions of the fast rows")
    parser.add_argument("--gradcam-repeats", type=int, default=3, help="timed repetitions of pytorch-grad-cam")
    parser.add_argument("--no-gradcam", action="store_true", help="skip the pytorch-grad-cam row")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    course = Course.locate(REPO_ROOT)
    tp2_utils, ref = course.tp2_utils, course.reference
    model = tp2_utils.load_model("densenet121", weights="random")
    images = tp2_utils.load_batch(tp2_utils.list_images(course.images_dir)[:N_IMAGES])
    with torch.no_grad():
        ranking = model(images).argsort(dim=1, descending=True)
    targets = torch.cat([ranking[:, :3], ranking[:, -1:]], dim=1)  # (8, 4): top 3, least probable

    def forward() -> None:
        with torch.no_grad():
            model(images)

    def reference(layer: str) -> Callable[[], object]:
        return lambda: ref.normalize_maps(ref.grad_cam(model, images, targets, layer, size=SIZE))

    def reference_batched(layer: str) -> Callable[[], object]:
        def work() -> object:
            looped = ref._target_gradients
            ref._target_gradients = batched_target_gradients
            try:
                return reference(layer)()
            finally:
                ref._target_gradients = looped

        return work

    rows: dict[str, Callable[[], object]] = {
        "plain forward, `torch.no_grad()` (floor)": forward,
        "reference at `features`": reference("features"),
        "reference at `features.denseblock3`": reference("features.denseblock3"),
        "reference at `features`, vmapped backward": reference_batched("features"),
        "reference at `features.denseblock3`, vmapped backward": reference_batched("features.denseblock3"),
    }
    targets_note = {
        "reference at `features`": "≤ 1.15×",
        "reference at `features.denseblock3`": "≤ 1.6×",
    }

    # The maps of the batched variant must be the reference's before its time means anything.
    for layer in ("features", "features.denseblock3"):
        difference = (reference(layer)() - reference_batched(layer)()).abs().max().item()
        assert difference < 1e-5, f"the vmapped variant differs at {layer} by {difference}"

    timings: dict[str, list[float]] = {name: [] for name in rows}
    for work in rows.values():  # warm-up
        work()
    for _ in range(args.repeats):
        for name, work in rows.items():
            timings[name].append(time_once(work))

    gradcam_name = "pytorch-grad-cam `GradCAM` at `features[-1]`, 4 calls"
    if not args.no_gradcam:
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        def pytorch_grad_cam() -> object:
            with GradCAM(model=model, target_layers=[model.features[-1]]) as extractor:
                return [
                    extractor(input_tensor=images, targets=[ClassifierOutputTarget(int(c)) for c in targets[:, rank]])
                    for rank in range(targets.shape[1])
                ]

        pytorch_grad_cam()  # warm-up
        timings[gradcam_name] = []
        for _ in range(args.gradcam_repeats):
            timings[gradcam_name].append(time_once(pytorch_grad_cam))
        model.zero_grad(set_to_none=True)

    floor = statistics.median(timings["plain forward, `torch.no_grad()` (floor)"])
    reference_features = statistics.median(timings["reference at `features`"])
    print(
        f"DenseNet-121 (seeded random weights), {N_IMAGES} images x {targets.shape[1]} targets "
        f"(top 3 + least probable), maps 224 x 224 normalised; CPU, torch {torch.__version__}, "
        f"torch.set_num_threads({args.threads}), {os.cpu_count()} logical CPUs "
        f"({platform.processor() or platform.machine()}); median of {args.repeats} runs "
        f"({args.gradcam_repeats} for pytorch-grad-cam) after a warm-up.\n"
    )
    print("| work | median (s) | min (s) | × forward | target |")
    print("| --- | ---: | ---: | ---: | --- |")
    for name, values in timings.items():
        median = statistics.median(values)
        target = targets_note.get(name, "")
        if name == gradcam_name:
            target = f"reference ≥ 10× faster: {median / reference_features:.1f}×"
        print(f"| {name} | {median:.3f} | {min(values):.3f} | {median / floor:.2f} | {target} |")


if __name__ == "__main__":
    main()
