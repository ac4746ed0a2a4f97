"""What a run produced: :class:`RunResult`, its summary and closing list of outputs."""
from __future__ import annotations

from dataclasses import dataclass, field as dc_field
from typing import Any

import numpy as np
from astropy.table import Table

from ..io.cache import is_remote
from ..io.store import RunStore
from ..merge import MergeStats

__all__ = ["RunResult", "flag_counts", "summary_dict", "outputs_of"]


@dataclass
class RunResult:
    """What a run produced.

    Attributes
    ----------
    run_dir : str
        The run directory (path or URL).
    catalog_path : str or None
        Merged catalog (FITS) of the primary model; None if nothing merged.
    n_tiles, n_ok, n_skipped : int
        Tiles in the grid, tiles ok (computed now or earlier), tiles reused
        from an earlier run.
    failed : dict
        tile id -> reason, for tiles that failed after all retries.
    merge : MergeStats or None
    timings : dict
        Wall-clock seconds of the driver's stages and summed tile stages.
    mosaic_path : str or None
        ``mosaic.zarr`` of the run, when the mosaic step ran.
    catalog : astropy.table.Table
        The merged catalog of the primary model, read on first access
        (an empty Table when nothing merged).
    flag_counts : dict
        Rows of the primary catalog with ``FLAGS == 0`` (key ``clean``) and
        with each fit flag bit set (by name).
    dropped_bands : dict
        band -> ``[n_tiles, reason]``: ok tiles over which the band was blank.
    outputs : dict
        What the run wrote (description -> path or URL).
    """

    run_dir: str
    catalog_path: str | None
    n_tiles: int
    n_ok: int
    n_skipped: int
    failed: dict[str, str]
    merge: MergeStats | None = None
    timings: dict[str, float] = dc_field(default_factory=dict)
    catalogs: dict[str, str] = dc_field(default_factory=dict)
    mosaic_path: str | None = None
    noise_correlation: dict[str, float] = dc_field(default_factory=dict)
    kept_previous: str | None = None
    unusable_bands: dict[str, str] = dc_field(default_factory=dict)
    flag_counts: dict[str, int] = dc_field(default_factory=dict)
    dropped_bands: dict[str, list] = dc_field(default_factory=dict)
    outputs: dict[str, str] = dc_field(default_factory=dict)
    storage_options: dict | None = dc_field(default=None, repr=False, compare=False)
    usage: dict = dc_field(default_factory=dict)
    _catalog: Table | None = dc_field(default=None, repr=False, compare=False)

    @property
    def catalog(self) -> Table:
        """The merged catalog (primary model), read once when first used."""
        if self._catalog is None:
            self._catalog = read_catalog(self.catalog_path, self.storage_options)
        return self._catalog

    @property
    def degraded(self) -> bool:
        """True when some band could not be measured anywhere in the field."""
        return bool(self.unusable_bands)

    def relocate(self, old: str, new: str) -> None:
        """Paths of the result moved from root ``old`` to ``new``."""
        def move(p):
            return new + p[len(old):] if isinstance(p, str) and p.startswith(old) else p
        self.run_dir, self.catalog_path, self.mosaic_path = map(
            move, (self.run_dir, self.catalog_path, self.mosaic_path))
        self.catalogs = {k: move(v) for k, v in self.catalogs.items()}
        self.outputs = {k: move(v) for k, v in self.outputs.items()}

    @property
    def complete(self) -> bool:
        """True when every tile is ok (the catalog covers the whole field)."""
        return not self.failed and self.n_ok == self.n_tiles

    def summary(self) -> str:
        """A few lines: tiles, catalog, mosaics, failures, timings."""
        state = "complete" if self.complete else f"INCOMPLETE: {len(self.failed)} tile(s) failed"
        lines = [f"run {self.run_dir}: {self.n_ok}/{self.n_tiles} tiles ok "
                 f"({self.n_skipped} reused), {state}"]
        if self.merge:
            lines.append(f"catalog {self.catalog_path}: {self.merge.n_output} sources "
                         f"({self.merge.n_duplicates} duplicates removed)")
        if self.flag_counts:
            flags = {k: v for k, v in self.flag_counts.items() if k != "clean"}
            lines.append(f"  FLAGS == 0: {self.flag_counts.get('clean', 0)} rows"
                         + ("; flagged: " + ", ".join(f"{k} {v}" for k, v in flags.items())
                            if flags else "") + " (bits: README, Flag bits)")
        if self.mosaic_path:
            lines.append(f"mosaics {self.mosaic_path}")
        lines += [f"  failed {t}: {r}" for t, r in self.failed.items()]
        lines += [f"WARNING: band {b} is unusable over the whole field ({r}): it has no "
                  f"measurements" for b, r in self.unusable_bands.items()]
        partly = {b: v for b, v in self.dropped_bands.items() if b not in self.unusable_bands}
        if partly:
            lines.append("bands blank over part of the field (no fluxes there): " + ", ".join(
                f"{b} over {n} of {self.n_tiles} tiles ({r})" for b, (n, r) in partly.items()))
        stages = [(k, self.timings[k]) for k in ("setup", "psf", "tiles", "merge", "mosaic", "total")
                  if k in self.timings]
        if stages:
            lines.append("times: " + ", ".join(f"{k} {v:.0f} s" for k, v in stages))
        if self.usage:
            from ..sizing.usage import format_usage
            lines.append(format_usage(self.usage))
        if self.kept_previous:
            lines.append(f"the earlier run in {self.kept_previous} was better and is kept as it was; "
                         f"this attempt is in {self.run_dir} (--resume {self.run_dir} finishes it)")
        if self.outputs:
            lines.append("outputs:")
            width = max(len(k) for k in self.outputs)
            lines += [f"  {k:<{width}}  {v}" for k, v in self.outputs.items()]
        return "\n".join(lines)


def read_catalog(path: str | None, storage_options: dict | None) -> Table:
    if path is None:
        return Table()
    if is_remote(path):
        import fsspec
        with fsspec.open(path, "rb", **(storage_options or {})) as fh:
            return Table.read(fh, format="fits")
    return Table.read(path)


def summary_dict(result: RunResult) -> dict[str, Any]:
    return {"complete": result.complete, "n_tiles": result.n_tiles, "n_ok": result.n_ok,
            "n_reused": result.n_skipped, "failed": result.failed, "timings": result.timings,
            "merge": result.merge.as_dict() if result.merge else None, "catalogs": result.catalogs,
            "noise_correlation": result.noise_correlation, "unusable_bands": result.unusable_bands,
            "flag_counts": result.flag_counts, "dropped_bands": result.dropped_bands,
            "outputs": result.outputs,
            "usage": result.usage}


def flag_counts(cat: Table) -> dict[str, int]:
    """Rows with ``FLAGS == 0`` (``clean``) and rows with each fit flag bit."""
    from ..fit.flags import FitFlag
    if "FLAGS" not in cat.colnames:
        return {}
    flags = np.asarray(np.ma.filled(np.ma.asarray(cat["FLAGS"]), 0), dtype=np.int64)
    out = {"clean": int(np.count_nonzero(flags == 0))}
    for bit in FitFlag:
        n = int(np.count_nonzero(flags & int(bit)))
        if n:
            out[bit.name] = n
    return out


def outputs_of(store: RunStore, result: RunResult) -> dict[str, str]:
    """The files of a run that exist, described (the closing summary's list)."""
    out = {}
    for model, path in result.catalogs.items():
        out[f"catalog ({model})"] = f"{path} (+ .parquet)"
        rejected = path.replace(".fits", "_rejected.fits")
        if store.exists(rejected[len(store.root) + 1:]):
            out[f"rejected detections ({model})"] = rejected
    if result.mosaic_path:
        out["model / residual mosaics"] = result.mosaic_path
        pngs = [n for n in store.listdir() if n.startswith("mosaic_") and n.endswith(".png")]
        if pngs:
            out["quick looks (data / model / residual)"] = store.url(pngs[0]) + (
                f" and {len(pngs) - 1} more" if len(pngs) > 1 else "")
    if store.exists("psf/summary.png"):
        out["PSFs built"] = store.url("psf") + "/ (summary.png: PSFs, encircled energy, stars)"
    out["per-tile catalogs and status"] = store.url("tiles") + "/"
    out["tiling"] = store.url("tiles.png") + ", tiles.reg"
    out["configuration"] = store.url("run.yaml") + " (rerun with --config)"
    out["this summary"] = store.url("summary.json")
    return out


