"""The engine's pass on the residual of its models (``fit.residual_detection``).

Mixed into the engine's tile state: after the first pass the residual of
every model is searched for sources (:mod:`dja_sepp.detect.residual`); the
core's new ones join the next pass, and those that stay significant once
fitted are kept.
"""
from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
from astropy.table import vstack

from ..detect.residual import detect_residual, residual_cutout
from ..tiling import in_slices
from .catalog import empty_results
from .windows import det_window, groups_holding, make_groups

__all__ = ["ResidualPass"]

log = logging.getLogger(__name__)


class ResidualPass:
    """Methods of the engine's tile state (``sources``, ``det``, ``bands``,
    ``work``, ``affines``, ``out``, ``opts``, ``modelled``, ...) that add the
    sources found on the residual and drop those too faint once fitted."""

    def add_residual_sources(self) -> list[np.ndarray]:
        """Detect on the residual of every model fitted so far; the new
        sources of the tile core join the sources (rows after the detected
        ones, ``FLAGS_DET`` with the ``RESIDUAL`` bit); returns their groups.
        The detection settings are ``det.meta["detection"]`` (the shipped
        ones when absent), the core ``det.meta["core"]`` (the whole cutout
        when absent)."""
        ignore = np.zeros(self.det.shape, bool)
        for r in np.flatnonzero(~self.modelled):  # not fitted here (halo): all its light is left
            ignore[det_window(self.sources, [r], self.det.shape, self.opts)] = True
        residual = residual_cutout(self.det, self.bands, self.work, self.affines,
                                   float(self.opts["residual_tolerance"]), ignore, self._point_models(),
                                   float(self.opts["residual_point_tolerance"]))
        if residual is None:
            return []
        points = self.modelled & (self.out["MODEL"] == "point")
        new, segmap = detect_residual(self.det, residual, self.sources, self.det.meta.get("detection"),
                                      float(self.opts["residual_min_separation"]), points)
        if len(new):
            new = new[in_slices(new["x"], new["y"], self.det.meta.get("core"))
                      & (np.nan_to_num(np.asarray(new["SNR"], float)) >= float(self.opts["residual_min_snr"]))]
        if not len(new):
            return []
        new["IN_CORE"] = np.ones(len(new), bool)
        for col in self.sources.colnames:  # columns the detection step added (PSF_STAR, ...)
            if col not in new.colnames:
                new[col] = np.zeros(len(new), dtype=self.sources[col].dtype)
        first = len(self.sources)
        self.sources = vstack([self.sources, new[self.sources.colnames]], metadata_conflicts="silent")
        self.detected_segmap = self.det.segmap if self.det.segmap is not None else np.zeros(segmap.shape, np.int32)
        self.det = replace(self.det, segmap=segmap)
        grow = empty_results(len(new), self.mdef, [b.band for b in self.bands])
        self.out = {k: np.concatenate([v, grow[k]]) for k, v in self.out.items()}
        extra = np.zeros(len(new), bool)
        self.modelled, self.explained = np.r_[self.modelled, extra], np.r_[self.explained, extra]
        self.in_core, self.duration = np.r_[self.in_core, ~extra], np.r_[self.duration, np.zeros(len(new))]
        self.dropped = np.r_[self.dropped, extra]
        log.debug("%d sources found on the residual", len(new))
        return [g + first for g in make_groups(new, int(self.opts["max_group_size"]),
                                               float(self.opts["solo_ratio"]))]

    def settle_residual_sources(self, groups: list[np.ndarray], first_new: int, npass: int) -> None:
        """Keep or drop the groups found on the residual (``groups[first_new:]``,
        fitted once), then fit their hosts (the groups whose windows hold one)
        and the kept ones once more as pass ``npass``: the hosts were refitted
        with the new sources masked, the new ones then fitted on what their
        hosts left; now each sees the other's model subtracted (or, for the
        dropped ones, gets their pixels back)."""
        kept = [gi for gi in range(first_new, len(groups)) if self.keep_residual(groups[gi])]
        hosts = groups_holding(groups[:first_new], self.sources, groups[first_new:], self.det.shape, self.opts)
        self.fit_pass(groups, hosts + kept, npass, 0.0)

    def _significant(self, row: int) -> bool:
        noise = self.det.meta.get("noise_correlation") or {}
        snr = np.array([v / float(noise.get(b, 1.0)) for b, v in self.fit_snr.get(row, {}).items()])
        snr = snr[np.isfinite(snr)]
        if not len(snr):
            return False
        total = float(np.sqrt(np.sum(np.clip(snr, 0, None) ** 2)))
        seen = np.count_nonzero(snr >= float(self.opts["residual_band_snr"]))
        return total >= float(self.opts["residual_min_snr"]) and seen >= np.ceil(2 * len(snr) / 3)

    def _point_models(self) -> dict[str, list]:
        """The subtracted point-source models: band -> [(slices, image), ...]."""
        out: dict[str, list] = {}
        for gi, models in self.models.items():
            rows = self.solutions[gi][1]
            if np.all(self.out["MODEL"][rows] == "point"):
                for name, (sl, img) in models.items():
                    out.setdefault(name, []).append((sl, img))
        return out

    def keep_residual(self, rows: np.ndarray) -> bool:
        """Whether a group found on the residual stays: each member fitted with
        S/N >= ``fit.residual_min_snr`` over all bands and >=
        ``fit.residual_band_snr`` in two thirds of them (flux errors times
        each band's noise correlation, ``det.meta["noise_correlation"]``).
        Otherwise its model is put back into the working images and its rows
        are dropped: what a galaxy model leaves of a real galaxy (arms,
        clumps, outer disks, a redder bulge under a shape shared by all
        bands) is found there too, faint or in one band only."""
        if all(self._significant(int(r)) for r in rows):
            return True
        gi = next((g for g, (_, r, _) in self.solutions.items() if np.array_equal(r, rows)), None)
        if gi is not None and gi in self.models:
            self._add(self.models.pop(gi), +1.0)
        self.dropped[rows] = True
        self.modelled[rows] = False
        seg = self.det.segmap  # the merged map (the caller's is untouched): their pixels go back
        gone = np.isin(seg, np.asarray(self.sources["SEGMENT_ID"])[rows])
        seg[gone] = self.detected_segmap[gone]
        return False
