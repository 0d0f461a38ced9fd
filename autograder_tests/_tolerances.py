"""How close two results must be to count as the same, and how far apart to count as different.

All arithmetic is float32, whose unit roundoff is ``u = 2**-24 ~ 6e-8``. Two correct programs that
compute the same sum of ``n`` terms in different orders differ by at most about ``n * u`` times the
sum of the terms' absolute values (the classical bound for recursive summation; blocked or
pairwise summation does better). Each tolerance in the checks is that bound for the operation at
hand, stated where it is used, with two more effects:

* the worker and the judge run the same model in different processes, possibly with another
  number of threads, hence another order of summation inside the convolutions. Over DenseNet-121
  this changes activations and gradients by about ``3e-7`` of their scale (measured);
  :data:`FORWARD_RELATIVE` allows ``1e-5``.
* a normalised map ``(m - min) / (max - min)`` divides errors by the map's range: an error bound on
  ``m`` relative to the size of its terms becomes, on the normalised map, that bound times
  ``kappa = max_pixel(sum_k |alpha_k A_k|) / (max m - min m)``, computed for each case
  (``References.kappa``).

Two maps count as clearly different when :func:`min_distance` between them is at least
:data:`MAP_MARGIN`.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

__all__ = ["FORWARD_RELATIVE", "MAP_MARGIN", "U32", "min_distance"]

U32 = 2.0**-24
"""float32 unit roundoff."""
FORWARD_RELATIVE = 1e-5
"""Allowed relative difference between two processes' forward/backward passes (measured: 3e-7)."""

MAP_MARGIN = 0.25
"""Two maps (in [0, 1]) count as clearly different when they differ by this much somewhere:
over 100 times the largest tolerance on a map (about 2e-3)."""


def min_distance(first: Mapping[str, np.ndarray], second: Mapping[str, np.ndarray]) -> float:
    """The smallest largest-absolute-difference between a map of ``first`` and one of ``second``.

    Parameters
    ----------
    first, second : mapping of str to ndarray
        Maps (H, W) by label (e.g. by convention). Pairs of different shapes are skipped.
    """
    return min(float(np.abs(a.astype(np.float64) - b).max())
               for a in first.values() for b in second.values() if a.shape == b.shape)
