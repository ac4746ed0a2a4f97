"""Figures about the run itself: tiling, PSFs, quick-look mosaics, cutouts.

The run's own PNGs (``tiles.png``, ``psf/summary.png``, ``mosaic_*.png``)
are copied into the report folder so ``index.html`` works wherever it is
moved. The gallery cuts data / model / residual stamps out of ``mosaic.zarr``
(data = model + residual, as the quick looks do), so it needs no access to
the input images; without mosaics it is left out with the reason.
"""
from __future__ import annotations

import numpy as np

from .figures import Figure, Skipped, _new, png
from .flags import float_column
from .flags import GOOD

__all__ = ["run_images", "psf_figure", "gallery", "pick_gallery_rows"]


def run_images(run) -> list[Figure]:
    """The run's tiling, PSF summary and quick-look PNGs, as report figures."""
    out = []
    wanted = [("tiles.png", "tiles.png", "Tiling",
               "Tile cores (solid) and halos (dashed) over the detection image.")]
    if run.store.exists("psf/summary.png"):
        wanted.append(("psf/summary.png", "psf_summary.png", "PSFs built by the run",
                       "PSF images, encircled energy to large radius and the stellar locus with "
                       "the stars used."))
    for band in run.bands:
        wanted.append((f"mosaic_{band}.png", f"mosaic_{band}.png", f"Quick look {band}",
                       "Data / model / residual, one stretch."))
    wanted.append(("mosaic_rgb.png", "mosaic_rgb.png", "Colour composite",
                   "Reddest / middle / bluest band."))
    for rel, name, title, caption in wanted:
        if run.store.exists(rel):
            out.append(Figure(name, title, caption, run.store.read_bytes(rel)))
    return out


def _read_psf(path: str) -> np.ndarray | None:
    import fsspec
    from astropy.io import fits
    if not str(path).endswith((".fits", ".fits.gz", ".fit")):
        return None   # PSFEx .psf files: no plain image
    try:
        with fsspec.open(str(path), "rb") as fh, fits.open(fh) as hdul:
            for hdu in hdul:
                if hdu.data is not None and np.ndim(hdu.data) == 2:
                    return np.asarray(hdu.data, float)
    except Exception:   # a PSF that moved since the run: the figure shows what it can
        return None
    return None


def psf_figure(run) -> Figure | Skipped:
    """The PSF stamp of each band (log stretch, the stamp's central 2")."""
    title = "PSF stamps"
    files = run.record.get("psf_files") or {}
    stamps = {}
    for band in run.bands:
        path = files.get(band)
        if path and not ("://" in str(path) or str(path).startswith("/")):
            path = run.store.url(path)
        image = _read_psf(path) if path else None
        if image is not None:
            stamps[band] = image
    if not stamps:
        return Skipped(title, "no PSF image file recorded in run.yaml could be read")
    fig, axes = _new(2.4 * len(stamps), 2.6, 1, len(stamps))
    for ax, (band, image) in zip(axes[0], stamps.items()):
        peak = float(np.nanmax(image)) or 1.0
        ax.imshow(np.log10(np.clip(image / peak, 1e-5, None)), origin="lower", cmap="magma",
                  vmin=-5, vmax=0)
        ax.set_title(f"{band} ({image.shape[1]} px)", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    return Figure("psf_stamps.png", title,
                  "log10 of each band's PSF stamp relative to its peak (5 decades).", png(fig))


def pick_gallery_rows(table, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the primary catalog for the gallery: ``n`` random rows flagged
    good, and the ``n`` rows with the worst reduced chi2."""
    flag = np.asarray(table["flag"])
    good = np.flatnonzero(flag == GOOD)
    rng = np.random.default_rng(seed)
    random_good = np.sort(rng.choice(good, size=min(n, len(good)), replace=False)) \
        if len(good) else good
    chi2 = float_column(table, "CHI2_REDUCED")
    fitted = np.flatnonzero(np.isfinite(chi2) & (flag > 0))
    worst = fitted[np.argsort(-chi2[fitted], kind="stable")][:n]
    return random_good, worst


def _band_arrays(run, band: str):
    import zarr
    from astropy.io import fits
    from astropy.wcs import WCS
    url = run.store.url("mosaic.zarr")
    group = zarr.open_group(url, mode="r", storage_options=run.store.storage_options or None) \
        if "://" in url else zarr.open_group(url, mode="r")
    g = group[band]
    header = fits.Header()
    for k, v in dict(g.attrs["wcs"]).items():
        header[k] = v
    return g["model"], g["residual"], WCS(header), float(g.attrs.get("pixel_scale", 0.04))


def _stamp(model, resid, x: float, y: float, half: int):
    ny, nx = model.shape
    xi, yi = int(round(x)), int(round(y))
    y0, y1, x0, x1 = yi - half, yi + half + 1, xi - half, xi + half + 1
    out_m = np.full((2 * half + 1, 2 * half + 1), np.nan, np.float32)
    out_r = out_m.copy()
    sy0, sy1, sx0, sx1 = max(y0, 0), min(y1, ny), max(x0, 0), min(x1, nx)
    if sy0 < sy1 and sx0 < sx1:
        out_m[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = model[sy0:sy1, sx0:sx1]
        out_r[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = resid[sy0:sy1, sx0:sx1]
    return out_m + out_r, out_m, out_r


def gallery(run, table, rows, band: str, title: str, name: str, size: float) -> Figure | Skipped:
    """Data / model / residual cutouts (``size`` arcsec) of ``rows`` of ``table``
    (one of our catalogs, or a morpho-phot table aligned to DJA) in ``band``."""
    if not run.store.exists("mosaic.zarr"):
        return Skipped(title, "the run has no mosaic.zarr (run dja-sepp mosaic RUN_DIR)")
    if not len(rows):
        return Skipped(title, "no source to show")
    try:
        model, resid, wcs, scale = _band_arrays(run, band)
    except Exception as exc:
        return Skipped(title, f"mosaic.zarr has no readable band {band} ({exc})")
    from .crossmatch import position_columns
    ra, dec = position_columns(table)
    half = max(2, int(round(size / scale / 2)))
    fig, axes = _new(6.3, 2.1 * len(rows), len(rows), 3)
    for k, row in enumerate(rows):
        x, y = wcs.world_to_pixel_values(ra[row], dec[row])
        data, mod, res = _stamp(model, resid, float(x), float(y), half)
        finite = data[np.isfinite(data)]
        sigma = 1.4826 * np.nanmedian(np.abs(res - np.nanmedian(res))) if np.isfinite(res).any() \
            else 1.0
        top = float(np.percentile(finite, 99.5)) if finite.size else 1.0
        soft = 3 * (sigma or 1.0)
        vmin, vmax = -soft, max(top, soft)
        label = _label(table, row, band)
        for ax, img, what in zip(axes[k], (data, mod, res), ("data", "model", "residual")):
            ax.imshow(np.arcsinh(img / soft), origin="lower", cmap="gray_r",
                      vmin=np.arcsinh(vmin / soft), vmax=np.arcsinh(vmax / soft),
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{what}" if k else f"{band} {what}", fontsize=8)
        axes[k][0].set_ylabel(label, fontsize=7)
    caption = (f"{size:g}\" cutouts of mosaic.zarr in {band} (data = model + residual), one "
               f"arcsinh stretch per source scaled to its residual noise.")
    return Figure(name, title, caption, png(fig, dpi=72))


def _label(table, row: int, band: str) -> str:
    parts = []
    if "ID" in table.colnames and np.isfinite(float_column(table, "ID")[row]):
        parts.append(f"ID {int(float_column(table, 'ID')[row])}")
    mag = float_column(table, f"MAG_MODEL_{band}")[row]
    if np.isfinite(mag):
        parts.append(f"{mag:.1f} mag")
    chi2 = float_column(table, "CHI2_REDUCED")[row]
    if np.isfinite(chi2):
        parts.append(f"chi2 {chi2:.2f}")
    return "\n".join(parts)
