"""The judge's side: reference values, computed once, on the judge's own copy of each model.

Everything here runs in the judge's process, on the judge's own copy of each model
(:func:`gradcam_kit.worker.models.build_model`, the same function the worker uses, so the same
weights). Nothing here is sent to the worker.

Reference values depend only on the course, the weights policy and the case (model, image, class,
layer; ``_inputs``), never on the submission. :class:`References` keeps them in a module-level
cache, so that a process grading several submissions (``python -m autograder_tests``) computes each
of them once, and, when given a folder (``--reference-cache`` or ``$GRADCAM_REFERENCE_CACHE``),
also on disk (``_disk_cache``), so that separate judge processes share them. The tolerances that
compare a student's values with these are derived in ``_tolerances``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn

from gradcam_kit.contract import CONVENTIONS, REFERENCE_CACHE_ENV, weights_policy
from gradcam_kit.course import Course, load_module_from
from gradcam_kit.grading.reference_cache import wait_for_preparation
from gradcam_kit.wire.frames import ModelSpec
from gradcam_kit.worker.models import CONTRAST_DOMINANT_CLASS, build_model

from ._disk_cache import DiskCache, fingerprint
from ._inputs import CATS, CONTRAST, Case, ImageRef
from ._tolerances import FORWARD_RELATIVE, MAP_MARGIN, U32, min_distance

__all__ = ["CANDIDATE_RANKS", "CaptureArrays", "References", "use_judge_threads"]

CANDIDATE_RANKS = (2, 1, 3, 4, 5, 6)
"""Ranks of the classes tried, in order, when a case needs a class that is not the argmax."""

_CACHE: dict[tuple, dict] = {}
"""In-memory reference values by (course root, weights policy); see :class:`References`."""
_MODELS: dict[tuple, nn.Module] = {}
"""One model per (course root, weights policy, spec); see :meth:`References.model`."""


@dataclass(frozen=True)
class CaptureArrays:
    """What a layer produced and received for one case (float32 arrays of shape (1, K, h, w)).

    ``returned``: the output as the layer returned it; ``consumed``: the same tensor at the end
    of the forward pass (rectified in place after DenseNet's ``features``); ``grad_*``: the
    gradient of the raw score with respect to each. ``scores``: the raw scores (1, C).
    """

    returned: np.ndarray
    consumed: np.ndarray
    grad_returned: np.ndarray
    grad_consumed: np.ndarray
    scores: np.ndarray

    def pair(self, convention: str) -> tuple[np.ndarray, np.ndarray]:
        """``(activations, gradients)`` under ``convention`` (``gradcam_kit.contract.CONVENTIONS``)."""
        chosen = CONVENTIONS[convention]
        return getattr(self, chosen.activations), getattr(self, f"grad_{chosen.gradient}")

    @property
    def modified_in_place(self) -> bool:
        """Whether the model changed the layer's output after the layer (the conventions differ)."""
        return not (np.array_equal(self.returned, self.consumed)
                    and np.array_equal(self.grad_returned, self.grad_consumed))


def use_judge_threads() -> None:
    """Run torch on one thread, as the worker does: both then sum in the same order, and the same
    model gives bitwise the same activations and gradients in both processes."""
    torch.set_num_threads(1)


# ------------------------------------------------------------------------------------------------
# references
# ------------------------------------------------------------------------------------------------
class References:
    """Reference computations for one course, cached for the life of the process (and on disk).

    Parameters
    ----------
    course : Course
    cache_dir : Path, optional
        Where to keep reference arrays between processes; default ``$GRADCAM_REFERENCE_CACHE``,
        else nowhere.
    """

    def __init__(self, course: Course, cache_dir: Path | None = None) -> None:
        self.course = course
        self._memory = _CACHE.setdefault((str(course.root), weights_policy()), {})
        folder = cache_dir or (Path(os.environ[REFERENCE_CACHE_ENV]) if os.environ.get(REFERENCE_CACHE_ENV) else None)
        self._disk = DiskCache(Path(folder), fingerprint(course)) if folder else None
        self._waited = False
        self.computed: list[tuple] = []
        """The keys this object had to compute (found neither in memory nor on disk)."""

    # -- modules ---------------------------------------------------------------------------
    @cached_property
    def tp2_utils(self):
        """The course's helper module, imported only when a value must be computed: it imports
        torchvision, which a judge whose values are all in the cache does without."""
        return self.course.tp2_utils

    @cached_property
    def key(self):
        """``solutions/answer_key.py``."""
        return load_module_from(self.course.solutions_dir / "answer_key.py", "answer_key")

    def model(self, spec: ModelSpec) -> nn.Module:
        """The judge's model for ``spec``, built as the worker builds it, once per process.

        The reference computations share it: they leave a model as they found it (eval mode, no
        hook, no change to weights or buffers; ``tests/test_reference_invariants.py``).
        """
        key = (str(self.course.root), weights_policy(), spec)
        if key not in _MODELS:
            _MODELS[key] = build_model(spec, helpers=self.tp2_utils)
        return _MODELS[key]

    def class_names(self) -> list[str]:
        """The 1000 ImageNet class names, by output index."""
        arrays = self._arrays(("class-names",), lambda: {"names": np.array(self.tp2_utils.class_names())})
        return [str(name) for name in arrays["names"]]

    # -- caching ---------------------------------------------------------------------------
    def _lookup(self, key: tuple) -> dict[str, np.ndarray] | None:
        """The arrays kept under ``key`` in memory or on disk, or ``None``.

        On the first miss, wait for a process that is filling the disk cache
        (``python -m autograder_tests --prepare``, started by ``gradcam-kit grade``) to finish.
        """
        if key not in self._memory and self._disk is not None:
            value = self._disk.get(key)
            if value is None and not self._waited:
                self._waited = True
                wait_for_preparation(self._disk.folder)
                value = self._disk.get(key)
            if value is not None:
                self._memory[key] = value
        return self._memory.get(key)

    def _arrays(self, key: tuple, compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """``compute()``, a dict of arrays, cached in memory and on disk under ``key``."""
        value = self._lookup(key)
        if value is None:
            self.computed.append(key)
            value = {name: np.ascontiguousarray(array) for name, array in compute().items()}
            if self._disk:
                self._disk.put(key, value)
            self._memory[key] = value
        return value

    # -- inputs ----------------------------------------------------------------------------
    def image(self, image: ImageRef) -> np.ndarray:
        """The course image ``image.name``, preprocessed: float32 (1, 3, 224, 224); with an
        ``image.size`` (H, W), that image resized (bilinear, antialiased) to (1, 3, H, W)."""
        def compute() -> dict[str, np.ndarray]:
            if image.size is not None:
                batch = torch.nn.functional.interpolate(torch.from_numpy(self.image(image.original)), size=image.size,
                                                        mode="bilinear", align_corners=False, antialias=True)
            else:
                batch = self.tp2_utils.load_batch([self.course.images_dir / image.name])
            return {"image": batch.numpy().astype(np.float32)}

        return self._arrays(("image", image), compute)["image"]

    def picture(self, image: ImageRef) -> np.ndarray:
        """The course ``image`` as shown: float32 (H, W, 3) in [0, 1] (``tp2_utils.denormalize``
        of :meth:`image`), for the heatmap the judge draws."""
        def compute() -> dict[str, np.ndarray]:
            shown = self.tp2_utils.denormalize(torch.from_numpy(self.image(image))[0])
            return {"picture": shown.permute(1, 2, 0).numpy().astype(np.float32)}

        return self._arrays(("picture", image), compute)["picture"]

    # -- reference values ------------------------------------------------------------------
    def scores(self, spec: ModelSpec, image: ImageRef) -> np.ndarray:
        """Raw class scores (C,) of ``image``."""
        def compute() -> dict[str, np.ndarray]:
            with torch.no_grad():
                return {"scores": self.model(spec)(torch.from_numpy(self.image(image)))[0].numpy()}

        return self._arrays(("scores", spec, image), compute)["scores"]

    def ranked_classes(self, spec: ModelSpec, image: ImageRef) -> list[int]:
        """Class indices by decreasing score (no ties in practice: scores are float32 sums)."""
        return [int(i) for i in np.argsort(-self.scores(spec, image), kind="stable")]

    def capture(self, case: Case) -> CaptureArrays:
        """Activations and gradients of the case's layer, under every convention."""
        def compute() -> dict[str, np.ndarray]:
            image = torch.from_numpy(self.image(case.image))
            cap = self.key.capture(self.model(case.spec), image, case.class_idx, case.layer)
            return {name: tensor.detach().numpy() for name, tensor in cap._asdict().items()}

        arrays = self._arrays(("capture", case), compute)
        return CaptureArrays(**arrays)

    def in_place(self, spec: ModelSpec, image: ImageRef, layer: str) -> bool:
        """Whether the model modifies ``layer``'s output in place (then the conventions differ)."""
        top = self.ranked_classes(spec, image)[0]
        return self.capture(Case(spec, image, top, layer)).modified_in_place

    def class_maps(self, spec: ModelSpec, image: ImageRef, layer: str,
                   classes: Iterable[int]) -> dict[int, dict[str, np.ndarray]]:
        """Normalised reference maps (H, W) of several classes, under each convention.

        One call of ``gradcam_reference.grad_cam`` per convention serves all the classes (one
        forward pass). Where the layer's output is not modified in place, the three conventions
        are the same map and one pass is made.
        """
        classes = [int(c) for c in classes]
        conventions = CONVENTIONS if self.in_place(spec, image, layer) else ("pre_relu",)
        missing = [c for c in classes if self._lookup(("maps", spec, image, c, layer)) is None]
        if missing:
            model = self.model(spec)
            batch = torch.from_numpy(self.image(image))
            per_convention = {}
            for convention in conventions:
                raw = self.key.reference.grad_cam(model, batch, [missing], layer, convention=convention,
                                                  size=tuple(batch.shape[-2:]))
                per_convention[convention] = self.key.reference.normalize_maps(raw[0]).numpy()
            for index, class_idx in enumerate(missing):
                maps = {conv: per_convention[conv][index] for conv in conventions}
                self._arrays(("maps", spec, image, class_idx, layer), partial(dict, maps))
        result = {}
        for class_idx in classes:
            maps = dict(self._arrays(("maps", spec, image, class_idx, layer), _unreachable))
            for convention in CONVENTIONS:
                maps.setdefault(convention, maps["pre_relu"])
            result[class_idx] = maps
        return result

    def maps(self, case: Case) -> dict[str, np.ndarray]:
        """The normalised reference map (H, W) of ``case`` under each convention."""
        return self.class_maps(case.spec, case.image, case.layer, [case.class_idx])[case.class_idx]

    def softmax_maps(self, spec: ModelSpec, image: ImageRef, layer: str,
                     classes: Iterable[int]) -> dict[int, np.ndarray]:
        """The maps a program gets by explaining the softmax probability instead of the raw score."""
        classes = [int(c) for c in classes]

        def compute() -> dict[str, np.ndarray]:
            model = self.model(spec)
            wrapped = nn.Sequential(model, nn.Softmax(dim=1)).eval()
            batch = torch.from_numpy(self.image(image))
            raw = self.key.reference.grad_cam(wrapped, batch, [classes], model.get_submodule(layer),
                                              convention="pre_relu", size=tuple(batch.shape[-2:]))
            return {str(c): m for c, m in zip(classes, self.key.reference.normalize_maps(raw[0]).numpy(), strict=True)}

        arrays = self._arrays(("softmax", spec, image, layer, tuple(classes)), compute)
        return {c: arrays[str(c)] for c in classes}

    def kappa(self, case: Case) -> float:
        """``max_pixel(sum_k |alpha_k A_k|) / range(L)`` at the layer's resolution (``_tolerances``).

        The largest over the three conventions, and at least 1: how much an error relative to the
        terms of the weighted sum grows once the map is normalised.
        """
        key = ("kappa", case)
        if key not in self._memory:
            capture = self.capture(case)
            worst = 1.0
            for convention in CONVENTIONS:
                activations, gradients = (a.astype(np.float64) for a in capture.pair(convention))
                terms = gradients.mean(axis=(2, 3))[:, :, None, None] * activations
                cam = np.maximum(terms.sum(axis=1), 0.0)
                span = cam.max() - cam.min()
                if span > 0:
                    worst = max(worst, float(np.abs(terms).sum(axis=1).max() / span))
            self._memory[key] = worst
        return self._memory[key]

    def map_tolerance(self, case: Case) -> float:
        """Largest accepted error on a normalised map of ``case`` (values in [0, 1]).

        The raw map sums ``K`` channels of ``alpha_k A_k``, each ``alpha_k`` a mean of ``n = hw``
        gradients: two orders of summation differ by at most ``(K + n) u`` of the terms' absolute
        sum, for each of the two programs, and the two processes' passes add
        :data:`FORWARD_RELATIVE`. Upsampling is a convex combination (no growth); the
        normalisation multiplies by ``kappa``. For DenseNet's ``features`` (K = 1024, n = 49) and
        kappa about 10, this is about 1.5e-3.
        """
        _, k, h, w = self.capture(case).returned.shape
        return (2 * (k + h * w + 2) * U32 + FORWARD_RELATIVE) * self.kappa(case)

    # -- choosing the cases -----------------------------------------------------------------
    def distinct_class(self, spec: ModelSpec, image: ImageRef, layer: str, exclude: Iterable[int] = ()) -> Case:
        """A case whose class is not the argmax and whose map clearly differs from the argmax's.

        Every accepted map of the chosen class (any convention) differs by at least
        :data:`MAP_MARGIN` from every accepted map of the argmax, so that a program explaining
        the predicted class instead of ``class_idx`` fails.
        """
        key = ("distinct", spec, image, layer, tuple(exclude))
        if key not in self._memory:
            order = [c for c in self.ranked_classes(spec, image)]
            candidates = [order[r] for r in CANDIDATE_RANKS if order[r] not in set(exclude)]
            maps = self.class_maps(spec, image, layer, [order[0], *candidates])
            chosen = next((c for c in candidates if min_distance(maps[c], maps[order[0]]) >= MAP_MARGIN), None)
            if chosen is None:
                raise RuntimeError(f"no class of {spec} on {image} has a map clearly unlike the argmax's at {layer}")
            self._memory[key] = Case(spec, image, chosen, layer)
        return self._memory[key]

    def contrast_case(self) -> Case:
        """The contrast head's case: a class other than the dominant one (the argmax), whose raw-score
        map is clearly unlike its softmax map (the other classes of this head read the same
        channels, so their maps resemble each other: the argmax is tested by the other cases)."""
        key = ("contrast-case",)
        if key not in self._memory:
            order = [c for c in self.ranked_classes(CONTRAST, CATS) if c != CONTRAST_DOMINANT_CLASS]
            candidates = order[:4]
            maps = self.class_maps(CONTRAST, CATS, "features", candidates)
            softmax = self.softmax_maps(CONTRAST, CATS, "features", candidates)
            chosen = next((c for c in candidates
                           if min_distance(maps[c], {"softmax": softmax[c]}) >= MAP_MARGIN), None)
            if chosen is None:
                raise RuntimeError("the contrast head gives no class whose softmax map differs")
            self._memory[key] = Case(CONTRAST, CATS, chosen, "features")
        return self._memory[key]


def _unreachable() -> dict[str, np.ndarray]:
    raise AssertionError("reference maps should have been computed already")
