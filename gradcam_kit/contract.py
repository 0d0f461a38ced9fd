"""The facts every part of the kit agrees on, each stated once.

The notebook, the worker, the judge, the batch and the nbgrader bridge all rely on these names and
numbers; they import them from here and never spell them again.

Graded functions
----------------
:data:`GRADED_FUNCTIONS` are the seven functions of Part 1, in notebook order. Each lives in the
code cell whose ``grade_id`` is its name and is graded by the test cell ``test_<name>``
(:func:`test_name`). :data:`CALLS` says which graded functions each one calls; a bug is charged
once along these edges (see ``autograder_tests/_judge.py``).

Conventions
-----------
:data:`CONVENTIONS` are the three Grad-CAM maps that are all right at a layer whose output the
model changes in place afterwards (DenseNet's ``features``, rectified by an in-place ReLU): which
value of the layer's output is ``A`` and which one the gradient is taken with respect to, and how
the feedback words each. The reference (``solutions/gradcam_reference.py``), the answer key, the
judge and the feedback page all read them here.

Environment
-----------
The variables the kit reads, with their meaning and default:

``GRADCAM_WEIGHTS`` (:data:`WEIGHTS_ENV`)
    The weights policy: ``imagenet`` (default), ``random`` or a path. The policy itself is
    decided in the course's ``tp2_utils.py``; :func:`weights_policy` only reads the variable, the
    same way everywhere in the kit.
``GRADCAM_JUDGE_TIMEOUT`` (:data:`JUDGE_TIMEOUT_ENV`)
    Seconds a judge may spend on one notebook (:data:`DEFAULT_JUDGE_TIMEOUT`); :func:`judge_timeout`.
``GRADCAM_ISOLATION`` (:data:`ISOLATION_ENV`)
    The isolation level every worker session of a judge must use (set by ``gradcam-kit grade``).
``GRADCAM_BWRAP`` (:data:`BWRAP_ENV`)
    The bubblewrap program (default ``bwrap``); tests point it at one that fails.
``GRADCAM_WORKER_ZYGOTE`` (:data:`ZYGOTE_ENV`)
    ``0`` starts every worker afresh instead of forking it from the zygote.
``GRADCAM_REFERENCE_CACHE`` (:data:`REFERENCE_CACHE_ENV`)
    Where judges keep the reference values between processes.
``GRADCAM_HIDDEN_CACHE`` (:data:`HIDDEN_CACHE_ENV`)
    Where the nbgrader bridge keeps the judge's results of a notebook between its seven cells.
``GRADCAM_ALLOW_PLAIN_AUTOGRADE`` (:data:`ALLOW_PLAIN_AUTOGRADE_ENV`)
    ``1`` lets plain ``nbgrader autograde`` replace the grades that ``gradcam-kit grade`` wrote.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal, Mapping

from gradcam_kit.errors import KitError

__all__ = [
    "ALLOW_PLAIN_AUTOGRADE_ENV",
    "BWRAP_ENV",
    "CALLS",
    "CONVENTIONS",
    "Convention",
    "DEFAULT_JUDGE_TIMEOUT",
    "GRADED_FUNCTIONS",
    "HIDDEN_CACHE_ENV",
    "IMAGES_DIR_ENV",
    "ISOLATION_ENV",
    "JUDGE_TIMEOUT_ENV",
    "REFERENCE_CACHE_ENV",
    "SETUP_PREFIX",
    "TEST_PREFIX",
    "WEIGHTS_ENV",
    "ZYGOTE_ENV",
    "helpers_of",
    "judge_timeout",
    "test_name",
    "weights_policy",
]

# -- the notebook -------------------------------------------------------------------------------
GRADED_FUNCTIONS: tuple[str, ...] = (
    "register_gradcam_hooks",
    "channel_weights",
    "weighted_cam",
    "upsample_normalize",
    "grad_cam",
    "top_and_least",
    "show_grad_cam",
)
"""The seven graded functions, in notebook order (names and signatures are fixed)."""

CALLS: Mapping[str, tuple[str, ...]] = {
    "grad_cam": ("register_gradcam_hooks", "channel_weights", "weighted_cam", "upsample_normalize"),
    "show_grad_cam": ("top_and_least", "grad_cam"),
}
"""The graded functions that each graded function calls directly (the others call none)."""

TEST_PREFIX = "test_"
SETUP_PREFIX = "setup_"
"""``grade_id`` prefixes: the test cell of a function, and the locked setup cells."""


def test_name(function: str) -> str:
    """``grad_cam`` -> ``test_grad_cam``: the test cell (and the judge's test) of a graded function."""
    return f"{TEST_PREFIX}{function}"


test_name.__test__ = False  # type: ignore[attr-defined]  # pytest: not a test


def helpers_of(function: str) -> tuple[str, ...]:
    """The graded functions that ``function`` calls, directly or not, callers before their callees.

    ``helpers_of("show_grad_cam")`` is ``("top_and_least", "grad_cam", "register_gradcam_hooks",
    "channel_weights", "weighted_cam", "upsample_normalize")``.
    """
    found: list[str] = []
    for helper in CALLS.get(function, ()):
        for item in (helper, *helpers_of(helper)):
            if item not in found:
                found.append(item)
    return tuple(found)


# -- the conventions ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Convention:
    """One Grad-CAM convention at a layer whose output the model modifies in place afterwards.

    Attributes
    ----------
    name : str
        ``pre_relu``, ``post_relu`` or ``mixed``: the judge's feedback names it so.
    activations, gradient : {"returned", "consumed"}
        Which value ``A`` is, and with respect to which value the gradient is taken: the output
        as the layer returned it (``returned``), or as the rest of the network consumed it, once
        the in-place change is done (``consumed``).
    words : str
        What the hooks recorded under it, as the judge's remarks say it.
    glossary : str
        Its definition on the feedback page, as the notebook introduces it (Part 1, "Where to
        look inside DenseNet-121").
    """

    name: str
    activations: Literal["returned", "consumed"]
    gradient: Literal["returned", "consumed"]
    words: str
    glossary: str


CONVENTIONS: Mapping[str, Convention] = {convention.name: convention for convention in (
    Convention(
        "pre_relu", "returned", "returned",
        "the output of the layer as it returned it (a clone), with the gradient with respect to it",
        "the activations are the output of `features` as the layer returned it (a copy made in the forward "
        "hook, before DenseNet's in-place ReLU), and the gradient is taken with respect to them. A forward hook "
        "that stores `output.detach().clone()` and calls `output.register_hook(...)` gives it (captum's "
        "`LayerGradCam` too)."),
    Convention(
        "post_relu", "consumed", "consumed",
        "the output after DenseNet's in-place ReLU, with the gradient with respect to that",
        "the activations are the output of `features` after the in-place ReLU, what the classifier uses, and the "
        "gradient is taken with respect to that rectified value. `torch.autograd.grad(score, output)` on the "
        "output kept by the forward hook gives it (torchcam too). With it, Grad-CAM at `features` is exactly CAM."),
    Convention(
        "mixed", "consumed", "returned",
        "the output after DenseNet's in-place ReLU (no clone), with the gradient with respect to the output "
        "before it",
        "the activations are the output after the in-place ReLU, but the gradient is the one with respect to the "
        "output before it. A forward hook that stores `output` without a copy and calls "
        "`output.register_hook(...)` gives it."),
)}
"""The three conventions, by name, in the order the judge tries them (the first that matches is named)."""


# -- the environment ----------------------------------------------------------------------------
WEIGHTS_ENV = "GRADCAM_WEIGHTS"
JUDGE_TIMEOUT_ENV = "GRADCAM_JUDGE_TIMEOUT"
DEFAULT_JUDGE_TIMEOUT = 900.0
"""Seconds a judge may spend on one notebook, unless ``$GRADCAM_JUDGE_TIMEOUT`` says otherwise."""
ISOLATION_ENV = "GRADCAM_ISOLATION"
BWRAP_ENV = "GRADCAM_BWRAP"
ZYGOTE_ENV = "GRADCAM_WORKER_ZYGOTE"
REFERENCE_CACHE_ENV = "GRADCAM_REFERENCE_CACHE"
HIDDEN_CACHE_ENV = "GRADCAM_HIDDEN_CACHE"
ALLOW_PLAIN_AUTOGRADE_ENV = "GRADCAM_ALLOW_PLAIN_AUTOGRADE"
IMAGES_DIR_ENV = "TP2_IMAGES_DIR"
"""Where the course's helper module finds the images (``tp2_utils.IMAGES_DIR_ENV``: the helper is
shipped to students and imports nothing of the kit, so it spells the name too; a test checks both
agree)."""


def weights_policy(environ: Mapping[str, str] | None = None) -> str:
    """The weights policy named by ``$GRADCAM_WEIGHTS``: ``imagenet`` when unset or blank.

    The value is returned as written (a path is not resolved here); what it means is decided by
    ``tp2_utils.load_model``.
    """
    value = (environ if environ is not None else os.environ).get(WEIGHTS_ENV, "")
    return value.strip() or "imagenet"


def judge_timeout(environ: Mapping[str, str] | None = None) -> float:
    """Seconds a judge may spend on one notebook: ``$GRADCAM_JUDGE_TIMEOUT`` or the default.

    Raises
    ------
    KitError
        When the variable is set to something that is not a positive number.
    """
    value = (environ if environ is not None else os.environ).get(JUDGE_TIMEOUT_ENV, "").strip()
    if not value:
        return DEFAULT_JUDGE_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        raise KitError(f"${JUDGE_TIMEOUT_ENV}={value!r} is not a number of seconds") from None
    if not seconds > 0:
        raise KitError(f"${JUDGE_TIMEOUT_ENV}={value!r}: the timeout must be a positive number of seconds")
    return seconds
