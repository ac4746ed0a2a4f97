"""Science figures of the report (matplotlib Agg, PNG bytes).

Each function takes the :class:`~.products.MorphoPhot` tables and returns a
:class:`Figure` record (file name, title, caption, PNG bytes), or a
:class:`Skipped` record saying why the figure cannot be drawn (no DJA
catalog, no redshifts, no model of the needed kind, no good rows). Figures
are built with :class:`matplotlib.figure.Figure`, never pyplot, so the
caller's backend is left alone.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from .flags import FAINT, GOOD, float_column
from .inputs import dja_mag

__all__ = ["Figure", "Skipped", "png", "mag_comparison", "morphology_hexbins",
           "bt_distributions", "size_redshift", "uvj", "ormerod_re", "reference_band"]

#: Ormerod et al. (2023): median r_e of galaxies, 4.5 (1 + z)^-0.71 kpc.
ORMEROD_A, ORMEROD_B = 4.5, -0.71
#: Williams et al. (2009) quiescent box: U-V > 1.3, V-J < 1.6, U-V > 0.88 (V-J) + 0.69.
_WILLIAMS09 = ([-0.5, (1.3 - 0.69) / 0.88, 1.6, 1.6], [1.3, 1.3, 0.88 * 1.6 + 0.69, 2.5])


@dataclass
class Figure:
    """A figure of the report: ``name`` (PNG file), ``title``, ``caption``, ``data``."""

    name: str
    title: str
    caption: str
    data: bytes


@dataclass
class Skipped:
    """A figure left out, and why."""

    title: str
    reason: str


def png(fig, dpi: int = 90) -> bytes:
    """PNG bytes of a matplotlib figure."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _new(w: float, h: float, rows: int = 1, cols: int = 1):
    from matplotlib.figure import Figure as MplFigure
    fig = MplFigure(figsize=(w, h), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, axes


def reference_band(bands, preferred: str) -> str | None:
    """``preferred`` (the limit band, F277W) when the run has it, else the reddest band."""
    bands = [b.upper() for b in bands]
    if preferred.upper() in bands:
        return preferred.upper()
    return bands[-1] if bands else None


def mag_comparison(mp, bands, mag_max: float) -> Figure | Skipped:
    """Our model magnitude minus DJA's total magnitude against DJA's, per band
    (matched rows flagged good or faint, DJA mag < ``mag_max``), the median
    offset annotated."""
    title = "Magnitudes against DJA"
    if mp.base_kind != "dja":
        return Skipped(title, "no DJA catalog given (--dja-catalog)")
    table = mp.models[next(iter(mp.models))]
    usable = [b for b in bands if f"{b.lower()}_tot_1" in mp.base.colnames]
    if not usable:
        return Skipped(title, f"the DJA catalog has no {{band}}_tot_1 column for the run's bands "
                              f"({', '.join(bands)})")
    cols = min(len(usable), 3)
    rows = int(np.ceil(len(usable) / cols))
    fig, axes = _new(4.2 * cols, 3.4 * rows, rows, cols)
    flag = np.asarray(table["flag"])
    for ax in axes.ravel()[len(usable):]:
        ax.set_visible(False)
    notes = []
    for ax, band in zip(axes.ravel(), usable):
        ref = dja_mag(mp.base, band)
        ours = float_column(table, f"MAG_MODEL_{band}")
        sel = np.isin(flag, (GOOD, FAINT)) & np.isfinite(ref) & np.isfinite(ours) & (ref < mag_max)
        diff = ours[sel] - ref[sel]
        ax.scatter(ref[sel], diff, s=6, alpha=0.6, color="tab:blue", lw=0)
        ax.axhline(0, color="k", lw=0.8)
        if sel.any():
            med = float(np.median(diff))
            ax.axhline(med, color="tab:red", lw=1, ls="--")
            ax.text(0.03, 0.95, f"median {med:+.3f} mag (N={sel.sum()})", transform=ax.transAxes,
                    va="top", color="tab:red")
            lim = max(0.5, float(np.percentile(np.abs(diff), 95)) * 1.3)
            ax.set_ylim(-lim, lim)
            notes.append(f"{band} {med:+.3f}")
        ax.set_xlabel(f"DJA {band} total mag")
        ax.set_ylabel(f"ours - DJA ({band})")
    caption = (f"MAG_MODEL of the primary model minus DJA's {{band}}_tot_1 (micro-Jansky, AB zero "
               f"point 23.9), matched sources with flag 2 or 3, DJA mag < {mag_max:g}. Median "
               f"offsets: {', '.join(notes) or 'none'}.")
    return Figure("mag_vs_dja.png", title, caption, png(fig))


def _morph_columns(table, kind: str, band: str):
    if kind == "sersic":
        return [("RADIUS", "r_e (arcsec)", True), ("AXRATIO", "q", False), ("SERSIC", "n", False)]
    return [("DISK_RADIUS_deg", "disk r_e (arcsec)", True), ("DISK_AXRATIO", "disk q", False),
            (f"B/T_{band}", f"B/T ({band})", False)]


def morphology_hexbins(mp, model: str, band: str) -> Figure | Skipped:
    """Hexbins of the model magnitude in ``band`` against r_e, q and n (or the
    disk's r_e and q and B/T for bulge + disk models), good rows."""
    from .flags import model_kind
    title = f"Morphology against magnitude ({model})"
    table = mp.models[model]
    kind = model_kind(table)
    if kind == "other":
        return Skipped(title, "the model has neither a Sersic index nor a disk")
    good = np.asarray(table["flag"]) == GOOD
    mag = float_column(table, f"MAG_MODEL_{band}")
    if not (good & np.isfinite(mag)).any():
        return Skipped(title, "no row flagged good")
    fig, axes = _new(12, 3.6, 1, 3)
    for ax, (col, label, log) in zip(axes[0], _morph_columns(table, kind, band)):
        y = float_column(table, col) * (3600.0 if col.endswith("_deg") else 1.0)
        sel = good & np.isfinite(mag) & np.isfinite(y) & ((y > 0) if log else True)
        if sel.sum() >= 1:
            ax.hexbin(mag[sel], np.log10(y[sel]) if log else y[sel], gridsize=25, mincnt=1,
                      cmap="viridis", bins="log")
        ax.set_xlabel(f"MAG_MODEL_{band}")
        ax.set_ylabel(f"log10 {label}" if log else label)
    caption = f"{model}: rows flagged good (2); colour = number of sources (log)."
    return Figure(f"morphology_{_slug(model)}.png", title, caption, png(fig))


def bt_distributions(mp, model: str, bands) -> Figure | Skipped:
    """Histograms of B/T per band (good rows of a bulge + disk model)."""
    title = f"B/T distributions ({model})"
    table = mp.models[model]
    cols = [b for b in bands if f"B/T_{b}" in table.colnames]
    if not cols:
        return Skipped(title, "not a bulge + disk model")
    good = np.asarray(table["flag"]) == GOOD
    if not good.any():
        return Skipped(title, "no row flagged good")
    fig, axes = _new(6, 4)
    ax = axes[0, 0]
    edges = np.linspace(0, 1, 21)
    for band in cols:
        bt = float_column(table, f"B/T_{band}")[good]
        ax.hist(bt[np.isfinite(bt)], bins=edges, histtype="step", lw=1.5, label=band)
    ax.set_xlabel("B/T")
    ax.set_ylabel("sources")
    ax.legend(fontsize=8)
    return Figure(f"bt_{_slug(model)}.png", title, f"{model}: rows flagged good (2), per band.",
                  png(fig))


def ormerod_re(z) -> np.ndarray:
    """Ormerod et al. (2023) median effective radius (kpc) at redshift ``z``."""
    return ORMEROD_A * (1.0 + np.asarray(z, float)) ** ORMEROD_B


def redshift(base) -> np.ndarray:
    """``z_spec`` where positive, else ``z_phot``; NaN without either."""
    z = float_column(base, "z_phot")
    zs = float_column(base, "z_spec")
    return np.where(np.isfinite(zs) & (zs > 0), zs, z)


def _sersic_model(mp) -> str | None:
    from .flags import model_kind
    return next((m for m, t in mp.models.items() if model_kind(t) == "sersic"), None)


def size_redshift(mp) -> Figure | Skipped:
    """r_e (kpc, Planck18) against z with sigma-clipped medians per bin and
    the Ormerod et al. (2023) relation."""
    title = "Size against redshift"
    if mp.base_kind != "dja":
        return Skipped(title, "no DJA catalog given: no redshifts (--dja-catalog, --zout)")
    z = redshift(mp.base)
    if not np.isfinite(z).any():
        return Skipped(title, "the DJA catalog has no z_phot / z_spec (give --zout)")
    model = _sersic_model(mp)
    if model is None:
        return Skipped(title, "no single-Sersic model in the run")
    from astropy.cosmology import Planck18
    from astropy.stats import sigma_clipped_stats
    table = mp.models[model]
    good = (np.asarray(table["flag"]) == GOOD) & np.isfinite(z) & (z > 0)
    re_arcsec = float_column(table, "RADIUS")
    sel = good & np.isfinite(re_arcsec) & (re_arcsec > 0)
    if not sel.any():
        return Skipped(title, "no good row with a redshift")
    kpc = re_arcsec[sel] * Planck18.kpc_proper_per_arcmin(z[sel]).value / 60.0
    fig, axes = _new(6.5, 4.5)
    ax = axes[0, 0]
    ax.scatter(z[sel], kpc, s=5, alpha=0.4, color="0.4", lw=0, label="good rows")
    edges = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6, 10])
    zc, med, lo, hi = [], [], [], []
    for a, b in zip(edges[:-1], edges[1:]):
        inbin = (z[sel] >= a) & (z[sel] < b)
        if inbin.sum() >= 3:
            mean, median, std = sigma_clipped_stats(np.log10(kpc[inbin]), sigma=3)
            zc.append(float(np.median(z[sel][inbin])))
            med.append(10 ** median)
            lo.append(10 ** median - 10 ** (median - std))
            hi.append(10 ** (median + std) - 10 ** median)
    if zc:
        ax.errorbar(zc, med, yerr=[lo, hi], fmt="o", color="tab:red", label="sigma-clipped median")
    zz = np.linspace(0, max(float(np.nanmax(z[sel])), 1.0), 100)
    ax.plot(zz, ormerod_re(zz), color="tab:blue", label=r"Ormerod+23: $4.5(1+z)^{-0.71}$ kpc")
    ax.set_yscale("log")
    ax.set_xlabel("z (spec where available, else phot)")
    ax.set_ylabel("r_e (kpc, semi-major)")
    ax.legend(fontsize=8)
    caption = (f"{model}: RADIUS (semi-major half-light radius) in proper kpc with Planck18, rows "
               f"flagged good; red: 3-sigma clipped median of log r_e per redshift bin; blue: "
               f"Ormerod et al. (2023), r_e = 4.5 (1 + z)^-0.71 kpc.")
    return Figure("size_redshift.png", title, caption, png(fig))


def uvj(mp) -> Figure | Skipped:
    """Rest-frame U-V against V-J in redshift bins, coloured by the median
    Sersic index of each cell; the Williams et al. (2009) quiescent box."""
    title = "UVJ diagram coloured by Sersic index"
    if mp.base_kind != "dja":
        return Skipped(title, "no DJA catalog given: no rest-frame colours (--dja-catalog, --zout)")
    need = [c for c in ("restU", "restV", "restJ") if c not in mp.base.colnames]
    if need:
        return Skipped(title, f"no {', '.join(need)} column (give the zout table with --zout)")
    model = _sersic_model(mp)
    if model is None:
        return Skipped(title, "no single-Sersic model in the run")
    table = mp.models[model]
    u_, v_, j_ = (float_column(mp.base, c) for c in ("restU", "restV", "restJ"))
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = -2.5 * np.log10(u_ / v_)
        vj = -2.5 * np.log10(v_ / j_)
    z = redshift(mp.base)
    n = float_column(table, "SERSIC")
    sel = (np.asarray(table["flag"]) == GOOD) & np.isfinite(uv) & np.isfinite(vj) & \
        np.isfinite(n) & np.isfinite(z)
    if not sel.any():
        return Skipped(title, "no good row with rest-frame colours")
    edges = [0.0, 1.0, 2.0, 3.0, 6.0]
    bins = [(a, b) for a, b in zip(edges[:-1], edges[1:])]
    fig, axes = _new(3.6 * len(bins), 3.8, 1, len(bins))
    hb = None
    for ax, (a, b) in zip(axes[0], bins):
        inbin = sel & (z >= a) & (z < b)
        if inbin.any():
            hb = ax.hexbin(vj[inbin], uv[inbin], C=n[inbin], reduce_C_function=np.median,
                           gridsize=15, extent=(-0.5, 2.5, 0, 2.5), cmap="coolwarm", vmin=0.5,
                           vmax=4.0, mincnt=1)
        ax.plot(*_WILLIAMS09, color="k", lw=1)
        ax.set_xlim(-0.5, 2.5)
        ax.set_ylim(0, 2.5)
        ax.set_title(f"{a:g} <= z < {b:g} (N={int(inbin.sum())})", fontsize=9)
        ax.set_xlabel("V - J")
        ax.set_ylabel("U - V")
    if hb is not None:
        fig.colorbar(hb, ax=axes[0].tolist(), label="median Sersic n")
    caption = (f"{model}: rows flagged good; colours from restU/restV/restJ of the photo-z table; "
               f"black: quiescent selection of Williams et al. (2009).")
    return Figure("uvj.png", title, caption, png(fig))


def _slug(model: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in model)
