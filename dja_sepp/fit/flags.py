"""Fit flag bits (SE++'s model-fitting bits where they apply)."""
from enum import IntFlag

__all__ = ["FitFlag"]


class FitFlag(IntFlag):
    """Bits of the ``FLAGS`` column."""

    BLENDED = 2                 # fitted jointly with other sources of one detection
    PARTIAL_FIT = 64            # stopped at the iteration limit
    INSUFFICIENT_DATA = 128     # fewer valid pixels than free parameters
    ERROR = 256                 # the fit raised; values are NaN
    AT_BOUND = 512              # a parameter ended at the edge of its range
    NOT_FITTED = 1024           # a neighbour outside this tile's core, not fitted here
    DEGENERATE = 2048           # shape at a known artefact (n at a bound, q >= 0.99)
    EXPLAINED = 4096            # light explained by brighter neighbours' models: not fitted, rejected
    REFIT_FAILED = 8192         # the second pass failed; the first pass's values are kept
    BULGE_LARGER = 16384        # bulge + disk: the bulge's r_e exceeds the disk's (B/T is the outer share)
    PARTIAL_COVERAGE = 32768    # a band has data under only part of the source's light (COVERAGE_{BAND} < 1)
