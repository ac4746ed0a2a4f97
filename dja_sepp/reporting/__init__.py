"""Science products of a run: DJA cross-match, morpho-phot table, figures, HTML.

``dja-sepp report RUN_DIR [--dja-catalog PHOT] [--zout ZOUT] [--out DIR]``
and :func:`report` read a finished run directory and write, into
``RUN_DIR/report`` by default:

- ``{field}_morpho-phot.fits``: [primary, DJA phot + zout (or our detection
  columns), one HDU per model], every model HDU with one row per DJA source,
  matched one-to-one within ``report.match_radius`` and flagged 0-3
  (:mod:`.flags`);
- PNG figures (:mod:`.figures`, :mod:`.gallery`) and ``index.html``
  (:mod:`.html`), a static page that opens from disk.

The stages follow the data: :mod:`.inputs` (run and DJA catalogs, checked),
:mod:`.crossmatch` (one-to-one matching), :mod:`.flags`, :mod:`.products`
(the morpho-phot table), then the figures and the page.
"""
from __future__ import annotations

from dataclasses import dataclass, field as dc_field
from typing import Any, Mapping

__all__ = ["report", "ReportResult"]


@dataclass
class ReportResult:
    """What a report wrote.

    Attributes
    ----------
    out : str
        Report folder (path or URL).
    index : str
        ``index.html``.
    morpho_phot : str
        ``{field}_morpho-phot.fits``.
    figures : list of str
        PNG files written.
    skipped : dict
        Figure title -> why it was left out.
    flag_counts : dict
        model -> {flag: rows}.
    matched : dict
        model -> matched rows.
    between : dict
        secondary model -> rows matched one-to-one to the primary catalog.
    """

    out: str
    index: str
    morpho_phot: str
    figures: list[str] = dc_field(default_factory=list)
    skipped: dict[str, str] = dc_field(default_factory=dict)
    flag_counts: dict[str, dict[int, int]] = dc_field(default_factory=dict)
    matched: dict[str, int] = dc_field(default_factory=dict)
    between: dict[str, int] = dc_field(default_factory=dict)

    def summary(self) -> str:
        """A few lines: where the page and table are, flags per model."""
        lines = [f"report {self.index}", f"morpho-phot {self.morpho_phot}"]
        for model, counts in self.flag_counts.items():
            lines.append(f"  {model}: {self.matched.get(model, 0)} matched; flags "
                         + ", ".join(f"{f}: {n}" for f, n in counts.items()))
        lines += [f"  left out {t}: {r}" for t, r in self.skipped.items()]
        return "\n".join(lines)


def report(run_dir: str, dja_catalog: str | None = None, zout: str | None = None,
           out: str | None = None, config: str | Mapping | None = None,
           storage_options: dict | None = None, **overrides: Any) -> ReportResult:
    """Cross-match, flag, plot and write the HTML report of a run.

    Parameters
    ----------
    run_dir : str
        A run directory (path or URL) with ``run.yaml`` and merged catalogs.
    dja_catalog : str, optional
        DJA photometric catalog (``{field}-fix_phot_apcorr.fits``; path or
        fsspec URL). Without it the morpho-phot table holds our catalogs
        alone, flagged with our ``FLUX_AUTO`` / ``FLUXERR_AUTO``, and the
        figures that need DJA columns say why they are left out.
    zout : str, optional
        The DJA photo-z table of the field (``z_phot, mass, restU, restV,
        restJ``), joined to ``dja_catalog`` on ``id``.
    out : str, optional
        Report folder (default ``RUN_DIR/report``).
    config : str or mapping, optional
        A configuration whose ``report:`` section replaces the run's.
    storage_options : dict, optional
        fsspec options for remote run directories and catalogs.
    **overrides
        ``report__key=value`` settings (``report__match_radius=0.5``).

    Returns
    -------
    ReportResult

    Raises
    ------
    InputError
        A DJA catalog that is missing, unreadable, lacks columns or has no
        source in the field (the message names the file).
    """
    from ..io.store import RunStore
    from . import figures as F
    from .gallery import gallery, pick_gallery_rows, psf_figure, run_images
    from .html import render_page
    from .inputs import read_dja, read_run
    from .products import build_morpho_phot, write_morpho_phot
    from .crossmatch import position_columns

    run = read_run(run_dir, storage_options, config, **overrides)
    rs = run.config["report"]
    dja = None
    if zout is not None and dja_catalog is None:
        raise ValueError(f"--zout {zout} needs the photometric catalog too (--dja-catalog)")
    if dja_catalog is not None:
        footprint = position_columns(run.catalogs[run.primary])
        dja = read_dja(dja_catalog, zout, storage_options, footprint, float(rs["match_radius"]))
    mp = build_morpho_phot(run, dja, rs)
    store = RunStore(out if out is not None else run.store.url("report"), storage_options)
    store.check_writable()
    table_name = f"{run.field}_morpho-phot.fits"
    table_url = write_morpho_phot(mp, store, table_name, run)

    bands = run.bands
    ref = F.reference_band(bands, str(rs["limit_band"])) or "F444W"
    primary = mp.models[run.primary]
    reddest = bands[-1] if bands else ref
    good, worst = pick_gallery_rows(primary, int(rs["gallery"]), int(rs["seed"]))
    catalog_items = [F.mag_comparison(mp, bands, float(rs["compare_mag_max"]))]
    for model in mp.models:
        catalog_items.append(F.morphology_hexbins(mp, model, ref))
        if any(f"B/T_{b}" in mp.models[model].colnames for b in bands):
            catalog_items.append(F.bt_distributions(mp, model, bands))
    sections = [
        ("Tiling, PSFs and quick looks", [*run_images(run), psf_figure(run)]),
        ("Photometry and morphology", catalog_items),
        ("Redshift and rest-frame colours", [F.size_redshift(mp), F.uvj(mp)]),
        ("Gallery", [gallery(run, primary, good, reddest, f"Random good sources ({run.primary})",
                             "gallery_good.png", float(rs["cutout_size"])),
                     gallery(run, primary, worst, reddest,
                             f"Worst reduced chi2 ({run.primary})", "gallery_worst_chi2.png",
                             float(rs["cutout_size"]))]),
    ]
    result = ReportResult(store.root, "", table_url)
    for _, items in sections:
        for item in items:
            if isinstance(item, F.Figure):
                result.figures.append(store.write_bytes(item.name, item.data))
            else:
                result.skipped[item.title] = item.reason
    page = render_page(run, mp, sections, {table_name: table_name})
    result.index = store.write_text("index.html", page)
    result.flag_counts = {m: mp.flag_counts(m) for m in mp.models}
    result.matched = {m: x.n for m, x in mp.matches.items()}
    result.between = {m: x.n for m, x in mp.between.items()}
    return result
