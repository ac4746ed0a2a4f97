"""Ranges of model parameters and the unbounded space the optimiser works in.

A linear range ``(lo, hi)`` maps ``z -> lo + (hi - lo) * sigmoid(z)``; an
exponential range maps ``z -> exp(log lo + (log hi - log lo) * sigmoid(z))``
(SE++'s ``Range(..., RangeType.EXPONENTIAL)``). An unbounded parameter maps
``z -> z``. Every map returns its derivative ``d value / d z`` for the chain
rule of the Jacobian.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Range", "sigmoid", "logit"]


def sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=float)))


def logit(p):
    p = np.asarray(p, dtype=float)
    return np.log(p) - np.log1p(-p)


@dataclass(frozen=True)
class Range:
    """A parameter's allowed interval.

    Attributes
    ----------
    kind : {"linear", "exponential", "free"}
    lo, hi : float
        Bounds (ignored for ``free``); ``0 < lo`` for exponential ranges.
    """

    kind: str
    lo: float = -np.inf
    hi: float = np.inf

    def __post_init__(self):
        if self.kind not in ("linear", "exponential", "free"):
            raise ValueError(f"range type must be linear, exponential or free, got {self.kind!r}")
        if self.kind != "free" and not (np.isfinite(self.lo) and np.isfinite(self.hi) and self.lo < self.hi):
            raise ValueError(f"range needs finite lo < hi, got ({self.lo}, {self.hi})")
        if self.kind == "exponential" and self.lo <= 0:
            raise ValueError(f"exponential range needs lo > 0, got {self.lo}")

    # Sigmoids saturate: keep the start inside the range by this fraction.
    _EDGE = 1e-6

    def to_unbounded(self, value: float) -> float:
        """The ``z`` of a value (clipped just inside the range)."""
        if self.kind == "free":
            return float(value)
        p = self._fraction(value)
        return float(logit(np.clip(p, self._EDGE, 1 - self._EDGE)))

    def _fraction(self, value: float) -> float:
        if self.kind == "linear":
            return (value - self.lo) / (self.hi - self.lo)
        return (np.log(max(value, 1e-300)) - np.log(self.lo)) / (np.log(self.hi) - np.log(self.lo))

    def to_value(self, z: float) -> tuple[float, float]:
        """``(value, d value / d z)``."""
        if self.kind == "free":
            return float(z), 1.0
        s = float(sigmoid(z))
        ds = s * (1.0 - s)
        if self.kind == "linear":
            return self.lo + (self.hi - self.lo) * s, (self.hi - self.lo) * ds
        span = np.log(self.hi) - np.log(self.lo)
        v = float(np.exp(np.log(self.lo) + span * s))
        return v, v * span * ds

    def at_bound(self, value: float, rtol: float = 1e-3) -> bool:
        """True when ``value`` sits at either end (the fit pushed it there)."""
        return self.bound_side(value, rtol) != 0

    def bound_side(self, value: float, rtol: float = 1e-3) -> int:
        """-1 at the lower end, +1 at the upper end (within ``rtol`` of the
        range, in the range's own linear or logarithmic scale), else 0."""
        if self.kind == "free":
            return 0
        p = self._fraction(value)
        return -1 if p < rtol else (1 if p > 1 - rtol else 0)
