"""The built-in PSF builder: stack the selected stars of each band into an ePSF.

Stars of the reference-band list are cut out on each band's own grid (other
sources in a cutout masked) and combined by photutils' ``EPSFBuilder``
(sub-pixel registration, sigma-clipped combine, no smoothing kernel); with
oversampling > 1 the native-pixel effective PSF is that model sampled at
whole-pixel offsets (an ePSF already contains the pixel response, so it is
decimated, not binned). The stamp holds only part of a star's light (its
wings reach arcseconds): the encircled energy measured to large radius on the
same stars (:mod:`dja_sepp.psf.energy`) gives the fraction inside the stamp,
written as ``EEFRAC`` next to the unit-sum image and its ``PIXSCALE``/
``OVERSAMP``, so models made with it have total fluxes; the light beyond
the stars' reach is shared between bands in units of wavelength and the
written stamp is widened with the measured azimuthal wing. ``psf/summary.json``
and ``psf/summary.png`` record EE(r) and that correction per band.
"""
from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
from astropy.io import fits
from astropy.table import Table

from ..progress import bar
from ..settings import default_config
from .base import ImagePSF
from .energy import DEFAULTS as ENERGY
from .energy import EnergyCurve, match_profile, measure_energy, stamp_fraction
from .wings import share_tails
from .stars import DEFAULTS as STAR_DEFAULTS
from .stars import detect_reference, point_sources, select_stars

__all__ = ["build_psfs", "build_band_psf", "encircled_energy", "DEFAULTS"]

log = logging.getLogger(__name__)

# config/defaults.yaml psf.builder. Measured on a GalSim field (tests/test_psf.py):
# 1x with 35 px stamps gives EE within 0.003 (F200W) / 0.016 (F444W) of the
# truth; 2x oversampling or 51 px stamps broadened the F444W core.
DEFAULTS: dict[str, Any] = default_config()["psf"]["builder"]


def _star_cutouts(image, stars: Table, size: int):
    """NDData cutouts (and positions in them) of ``stars`` on ``image``'s grid."""
    from astropy.nddata import NDData
    x, y = image.wcs.world_to_pixel_values(np.asarray(stars["RA"], float), np.asarray(stars["DEC"], float))
    half = size // 2 + 3
    data, tables = [], []
    for xi, yi in zip(np.atleast_1d(x), np.atleast_1d(y)):
        ix, iy = int(round(float(xi))), int(round(float(yi)))
        if ix - half < 0 or iy - half < 0 or ix + half >= image.shape[1] or iy + half >= image.shape[0]:
            continue
        window = (slice(iy - half, iy + half + 1), slice(ix - half, ix + half + 1))
        sci, wht = image.read(window)
        if np.count_nonzero(wht > 0) < 0.95 * wht.size or not np.any(sci != 0):
            continue  # star off this band's footprint or on a gap
        mask = _neighbour_mask(sci, wht)
        cx, cy = float(xi) - (ix - half), float(yi) - (iy - half)
        data.append(NDData(sci.astype(float), mask=mask))
        tables.append(Table({"x": [cx], "y": [cy], "flux": [_ring_filled_flux(sci, mask, cx, cy, size)]}))
    return data, tables


def _ring_filled_flux(sci: np.ndarray, mask: np.ndarray, x: float, y: float, size: int) -> float:
    """A star's flux in the ``size`` box photutils cuts around it, its masked
    pixels (neighbours) filled with the median of the unmasked ones at the
    same radius: the star's first flux estimate. (photutils fills them by 2-d
    cubic interpolation, 0.3 s per star, half of a band's PSF time.)"""
    from astropy.nddata.utils import overlap_slices
    box, _ = overlap_slices(sci.shape, (size, size), (y, x), mode="strict")
    data, bad = np.asarray(sci[box], float), mask[box]
    if not bad.any():
        return float(data.sum())
    yy, xx = np.indices(data.shape)
    ring = np.hypot(xx - (x - box[1].start), yy - (y - box[0].start)).astype(int)
    good = ~bad
    fill = np.zeros(ring.max() + 1)
    for r in np.unique(ring[bad]):
        values = data[good & (ring == r)]
        fill[r] = np.median(values) if values.size else 0.0
    return float(data[good].sum() + fill[ring[bad]].sum())


def _neighbour_mask(sci: np.ndarray, wht: np.ndarray) -> np.ndarray:
    """Pixels of other sources in a star cutout (their light would bias the
    wings of the stack), grown by 2 pixels."""
    import sep
    from scipy.ndimage import binary_dilation
    err = np.where(wht > 0, 1 / np.sqrt(np.where(wht > 0, wht, 1)), 0).astype(np.float32)
    data = np.ascontiguousarray(sci, dtype=np.float32)
    _, seg = sep.extract(data, 2.0, err=err, minarea=5, segmentation_map=True, deblend_cont=0.005)
    centre = seg[seg.shape[0] // 2, seg.shape[1] // 2]
    other = (seg > 0) & (seg != centre)
    return binary_dilation(other, iterations=2) | (wht <= 0)


def build_band_psf(image, stars: Table, settings: Mapping[str, Any] | None = None,
                   energy: Mapping[str, Any] | bool | None = None,
                   min_stars: int | None = None, neighbours: Table | None = None) -> ImagePSF:
    """ePSF of one band from the reference ``stars`` (RA/DEC).

    Parameters
    ----------
    image : dja_sepp.io.field.Image
    stars : Table
    settings : mapping, optional
        Overrides of ``psf.builder``.
    energy : mapping or bool, optional
        Overrides of ``psf.energy``; False keeps the stamp at unit sum (no
        encircled-energy measurement).
    min_stars : int, optional
        Fewer usable star cutouts in this band: an error (default
        ``psf.stars.min_stars``).
    neighbours : Table, optional
        Point sources whose light is removed before the encircled energy is
        measured (:func:`~dja_sepp.psf.energy.measure_energy`).

    Returns
    -------
    ImagePSF
        With ``ee_fraction`` (the share of the total light in the stamp),
        ``n_stars`` and ``energy`` (the :class:`EnergyCurve`, or None).
    """
    s = {**DEFAULTS, **(settings or {})}
    size = _stamp_size(s, image.pixel_scale)
    core = min(int(s.get("norm_size") or size) | 1, size)
    s["min_stars"] = int(STAR_DEFAULTS["min_stars"] if min_stars is None else min_stars)
    native, n_stars = _epsf(image, stars, core, s)
    psf = ImagePSF(native, image.pixel_scale, 1, band=image.band)
    psf.n_stars = n_stars
    curve = None
    if energy is not False:
        e = {**ENERGY, **(energy if isinstance(energy, Mapping) else {})}
        curve = measure_energy(image, stars, e, norm_radius=float(core // 2), neighbours=neighbours)
        if e.get("match_from") is not None:
            psf = _rebuilt(psf, match_profile(psf.data, curve, float(e["match_from"])))
        else:
            psf.ee_fraction = stamp_fraction(curve, psf.data.shape)
    if size > core:
        # the core from a small stack (a wide stack's registration blurs it by
        # ~1-2 %), the spikes and rings around it from a wide one
        psf = _with_wings(psf, _epsf(image, stars, size, s, wings=True)[0], curve)
    psf.n_stars, psf.energy = n_stars, curve
    return psf


def _epsf(image, stars: Table, size: int, s: Mapping[str, Any],
          wings: bool = False) -> tuple[np.ndarray, int]:
    """photutils ePSF of ``size`` band pixels (unit sum) and the stars stacked;
    ``wings``: a wide stack used only outside the core (sky pedestal removed)."""
    from photutils.psf import EPSFBuilder, extract_stars
    # photutils leaves one edge row and column of the ePSF grid empty (zeros):
    # build 2 px wider and keep the centre
    data, tables = _star_cutouts(image, stars, size + 2)
    if len(data) < s["min_stars"]:
        raise ValueError(f"{image.sci_path}: only {len(data)} PSF star(s) usable in band {image.band}")
    cutouts = extract_stars(data, tables, size=size + 2)
    os = int(s["oversampling"])
    # no smoothing kernel: photutils' default (quartic, meant for 4x oversampling)
    # broadens the core (peak -13 %, EE -8 % in F444W at 2x)
    builder = EPSFBuilder(oversampling=os, maxiters=int(s["maxiters"]), progress_bar=False,
                          smoothing_kernel=None)
    epsf, _ = builder(cutouts)
    native = _decimate(np.asarray(epsf.data, float), os)[1:-1, 1:-1]
    if not wings:
        native = np.clip(native, 0, None)
        return native / native.sum(), len(cutouts)
    # a wide stack's outermost ring is sky: its median is the pedestal of the
    # noise; the noise stays signed (clipping it at zero would add light there)
    yy, xx = np.indices(native.shape)
    r = np.hypot(yy - native.shape[0] // 2, xx - native.shape[1] // 2)
    native = native - np.median(native[r >= 0.9 * (native.shape[0] // 2)])
    return native / native.sum(), len(cutouts)


def _with_wings(core: ImagePSF, wide: np.ndarray, curve) -> ImagePSF:
    """``core``'s stamp inside its box, ``wide`` outside it, scaled so the
    stamp holds the measured share of the total light in its footprint
    (without a measurement: the wide stack's own share outside the core)."""
    n, m = wide.shape[0], core.data.shape[0]
    c, h = n // 2, m // 2
    box = (slice(c - h, c + h + 1), slice(c - h, c + h + 1))
    outside = wide.copy()
    outside[box] = 0.0
    if curve is not None:
        target = max(stamp_fraction(curve, wide.shape) - core.ee_fraction, 0.0)
        stamp = outside * (target / max(outside.sum(), 1e-30))
        stamp[box] = core.stamp()
    else:
        stamp = outside
        stamp[box] = core.data * float(wide[box].sum())
    return ImagePSF(stamp, core.pixel_scale, 1, band=core.band, ee_fraction=min(float(stamp.sum()), 1.0))


def _stamp_size(settings: Mapping[str, Any], pixel_scale: float) -> int:
    """Odd stamp side in band pixels: ``size_arcsec`` on the band's grid when
    set (one sky footprint for 0.02" and 0.04" bands), else ``size`` pixels."""
    if settings.get("size_arcsec"):
        return int(round(float(settings["size_arcsec"]) / pixel_scale)) | 1
    return int(settings["size"]) | 1


def _rebuilt(psf: ImagePSF, stamp: np.ndarray) -> ImagePSF:
    """The same PSF with a stamp whose sum is its share of the total light."""
    out = ImagePSF(stamp, psf.pixel_scale, psf.oversampling, psf.band, ee_fraction=float(stamp.sum()))
    out.n_stars = psf.n_stars
    return out


def _decimate(model: np.ndarray, os: int) -> np.ndarray:
    """Samples of an oversampled ePSF at whole-pixel offsets from its centre."""
    cy, cx = model.shape[0] // 2, model.shape[1] // 2
    hy, hx = cy // os, cx // os
    return model[cy - hy * os:cy + hy * os + 1:os, cx - hx * os:cx + hx * os + 1:os]


def encircled_energy(psf: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Fraction of the stamp's flux within each radius (pixels) of its centre."""
    yy, xx = np.indices(psf.shape)
    r = np.hypot(yy - psf.shape[0] // 2, xx - psf.shape[1] // 2)
    total = psf.sum()
    return np.array([psf[r <= rad].sum() / total for rad in radii])


def build_psfs(field, grid, store, config: Mapping[str, Any], bands: Sequence[str],
               client: Any = None) -> dict[str, str]:
    """Build the PSF of ``bands``; write ``psf/{band}.fits`` (or ``.psf``),
    ``psf/stars.fits``, ``psf/summary.json`` and ``psf/summary.png``.

    With a distributed ``client``, star detection runs as one Dask task per
    tile and each band's PSF as one task, on the cluster's workers (the
    driver only selects the stars and writes the files); without one, here.
    Once every band is built, each band's light beyond its stars' reach is
    taken from the band measured furthest in units of wavelength
    (``psf.energy.shared_tail``, :mod:`dja_sepp.psf.wings`) and built stamps
    are widened with their measured wing (``psf.builder.wing_arcsec``).

    Returns band -> URL of the PSF file.
    """
    pcfg = config["psf"]
    ref = str(pcfg.get("reference_band", "F200W")).upper()
    if ref not in field.bands:
        ref = min(field.bands, key=lambda b: abs((field.bands[b].wavelength or 2.0) - 2.0))
        log.warning("PSF reference band not in the field; using %s", ref)
    sources = detect_reference(field, grid, ref, pcfg.get("stars"), client)
    stars = select_stars(sources, pcfg.get("stars"))
    neighbours = point_sources(sources, pcfg.get("stars"))
    log.info("PSF: %d stars selected in %s (%d point sources)", len(stars), ref, len(neighbours))
    built = dict(_band_psfs(field, stars, pcfg, bands, client, neighbours))
    if (pcfg.get("energy") or {}).get("shared_tail", ENERGY["shared_tail"]):
        _share_tails(built, {band: field.bands[band].wavelength for band in built})
    out, psfs = {}, {}
    for band in bands:
        psf = _extended(built[band], (pcfg.get("builder") or {}).get("wing_arcsec", DEFAULTS["wing_arcsec"]))
        out[band], psfs[band] = _write_band(psf, store)
    store.write_bytes("psf/summary.json", json.dumps(_summary(psfs, ref, len(stars)), indent=1).encode())
    store.write_bytes("psf/summary.png", _summary_png(psfs, stars))
    stars.write(buf := io.BytesIO(), format="fits")
    store.write_bytes("psf/stars.fits", buf.getvalue())
    return out


def _band_psfs(field, stars: Table, pcfg: Mapping[str, Any], bands: Sequence[str], client,
               neighbours: Table | None = None):
    """(band, built PSF) for every band, in band order, each built here or
    as a Dask task, with a progress bar over the bands."""
    desc = f"PSF ({len(stars)} stars)"
    args = [(field.bands[band], stars, pcfg, neighbours) for band in bands]
    if client is None:
        return [(band, _one_band(*a)) for band, a in zip(bar(bands, desc=desc, unit="band"), args)]
    from distributed import as_completed
    futures = [client.submit(_one_band, *a, key=f"psf-{band}", pure=False) for band, a in zip(bands, args)]
    with bar(total=len(futures), desc=desc, unit="band") as progress:
        for _ in as_completed(futures):
            progress.update(1)
    return list(zip(bands, client.gather(futures)))


def _one_band(image, stars: Table, pcfg: Mapping[str, Any], neighbours: Table | None = None):
    """One band's PSF: an :class:`ImagePSF`, or a :class:`_PSFExFile`."""
    min_stars = int({**STAR_DEFAULTS, **(pcfg.get("stars") or {})}["min_stars"])
    if pcfg.get("method") == "psfex":
        return _psfex_band(image, stars, pcfg.get("psfex"), pcfg.get("energy"), min_stars, neighbours)
    return build_band_psf(image, stars, pcfg.get("builder"), pcfg.get("energy"), min_stars, neighbours)


def _share_tails(built: dict, wavelengths: Mapping[str, float | None]) -> None:
    """Give every band the light beyond its reach measured by the band that
    reached furthest in units of wavelength (:mod:`dja_sepp.psf.wings`);
    the stamps' ``EEFRAC`` follow."""
    curves = {band: psf.energy for band, psf in built.items() if psf.energy is not None}
    for band, curve in share_tails(curves, wavelengths).items():
        psf = built[band]
        if curve is not psf.energy:
            shape = psf.shape if isinstance(psf, _PSFExFile) else psf.data.shape
            psf.energy, psf.ee_fraction = curve, min(stamp_fraction(curve, shape), 1.0)


def _extended(psf, wing_arcsec: float | None):
    """A built stamp widened to ``wing_arcsec`` with the azimuthal wing of
    its band's curve of growth (measured annuli, then the wing model), so
    that a bright source's model reaches its neighbours' windows with the
    light the stars' stack could not map: with 3" stamps the long-wave
    fluxes of galaxies near bright neighbours came out ~1 % bright. The fit
    kernel stays ``fit.fit_psf_radius``; subtraction and mosaics use the
    whole stamp. PSFEx models and PSFs without a curve stay as they are."""
    curve = getattr(psf, "energy", None)
    if isinstance(psf, _PSFExFile) or curve is None or not wing_arcsec:
        return psf
    n = int(round(float(wing_arcsec) / psf.pixel_scale)) | 1
    if n <= psf.data.shape[0]:
        return psf
    yy, xx = np.indices((n, n))
    wide = curve.surface_at(np.hypot(xx - n // 2, yy - n // 2))
    out = _with_wings(psf, wide, curve)
    out.n_stars, out.energy = psf.n_stars, curve
    return out


def _write_band(psf, store):
    """Write one band's PSF file into the run's ``psf/``: (URL, PSF)."""
    if isinstance(psf, _PSFExFile):
        return psf.write(store)
    return store.write_bytes(f"psf/{psf.band}.fits", _fits_bytes(psf)), psf


def _summary(psfs: Mapping[str, Any], ref: str, n_selected: int) -> dict[str, Any]:
    """Per band: stamp size, FWHM, stars, the stamp's share of the total
    light (``ee_fraction``), the flux correction it implies against a
    unit-sum stamp, and the measured EE(r)."""
    bands = {}
    for band, psf in psfs.items():
        curve: EnergyCurve | None = getattr(psf, "energy", None)
        frac = float(getattr(psf, "ee_fraction", 1.0))
        bands[band] = {"stamp_pixels": int(psf.data.shape[0]), "pixel_scale": psf.pixel_scale,
                       "fwhm_arcsec": round(psf.fwhm_arcsec, 4), "n_stars": getattr(psf, "n_stars", None),
                       "ee_fraction": round(frac, 5),
                       "flux_correction": round(1.0 / frac, 5),
                       "mag_correction": round(-2.5 * np.log10(frac), 5),
                       "encircled_energy": curve.to_dict() if curve is not None else None}
    return {"reference_band": ref, "n_stars_selected": n_selected, "bands": bands,
            "note": "ee_fraction: share of a point source's total light inside the stamp (its sum); "
                    "flux_correction: total / flux a unit-sum stamp would give; mag_correction: "
                    "unit-sum magnitude minus total magnitude"}


@dataclass
class _PSFExFile:
    """A PSFEx model built by a band task, written by the driver once every
    band's curve of growth is known."""
    band: str
    pixel_scale: float
    content: bytes
    energy: EnergyCurve | None
    ee_fraction: float
    shape: tuple[int, int]

    def write(self, store):
        """Write ``psf/{band}.psf`` (``EEFRAC`` updated): (URL, PSFExPSF)."""
        from .psfex import PSFExPSF, with_ee_fraction
        url = store.write_bytes(f"psf/{self.band}.psf", with_ee_fraction(self.content, self.ee_fraction))
        psf = PSFExPSF(url, band=self.band, pixel_scale=self.pixel_scale,
                       storage_options=store.storage_options)
        psf.data, psf.energy = psf.stamp() / psf.ee_fraction, self.energy   # unit-sum shape for the figure
        return url, psf


def _psfex_band(image, stars: Table, settings, energy=None, min_stars: int | None = None,
                neighbours: Table | None = None) -> _PSFExFile:
    """Run PSFEx for one band: the ``.psf`` content and, from the stars'
    encircled energy, its stamp's share of the total light."""
    import tempfile
    from pathlib import Path
    from .psfex import PSFExPSF, reweight_basis, run_psfex
    with tempfile.TemporaryDirectory(prefix="dja_sepp_psf_") as tmp:
        path = run_psfex(image, stars, tmp, settings, min_stars)
        psf = PSFExPSF(path, band=image.band, pixel_scale=image.pixel_scale)
        shape = tuple(psf.basis.shape[-2:])
        curve, fraction = None, psf.ee_fraction
        if energy is not False:
            e = {**ENERGY, **(energy if isinstance(energy, Mapping) else {})}
            curve = measure_energy(image, stars, e, norm_radius=float(shape[-1] // 2), neighbours=neighbours)
            if e.get("match_from") is not None:
                # the stamp's annuli follow the stars' curve of growth, as for
                # the built-in stack: one radial factor map for every term
                reweight_basis(path, _match_factor(psf.stamp(), curve, float(e["match_from"])))
            fraction = stamp_fraction(curve, shape)
        return _PSFExFile(image.band, image.pixel_scale, Path(path).read_bytes(), curve, fraction, shape)


def _match_factor(stamp: np.ndarray, curve: EnergyCurve, r_min: float) -> np.ndarray:
    """Pixel factors taking a stamp's radial light distribution to the
    curve of growth (:func:`match_profile`), 1 where the stamp is empty."""
    unit = stamp / stamp.sum()
    matched = match_profile(unit, curve, r_min)
    matched = matched / matched.sum()
    return np.where(unit > 0, matched / np.where(unit > 0, unit, 1.0), 1.0)


def _fits_bytes(psf: ImagePSF) -> bytes:
    hdu = fits.PrimaryHDU(psf.data.astype(np.float32), header=psf.header())
    hdu.header["NSTARS"] = (getattr(psf, "n_stars", 0), "stars stacked")
    hdu.header["FWHM"] = (psf.fwhm_arcsec, "arcsec, from the half-maximum area")
    hdu.header["PSFTYPE"] = ("ePSF", "effective PSF: pixel response included")
    curve = getattr(psf, "energy", None)
    if curve is not None:
        hdu.header["EEREACH"] = (round(curve.reach * curve.pixel_scale, 3), "arcsec, EE measured to here")
        hdu.header["EETAIL"] = (round(curve.tail, 5), "light beyond EEREACH (wing model)")
    buf = io.BytesIO()
    hdu.writeto(buf)
    return buf.getvalue()


def _summary_png(psfs: Mapping[str, ImagePSF], stars: Table) -> bytes:
    """PSF images, per-band encircled energy (measured curve of growth,
    wing model, the stamp's share) and the stellar locus."""
    from matplotlib.figure import Figure  # no pyplot: the caller's backend is left alone
    n = len(psfs)
    fig = Figure(figsize=(3 * (n + 1), 6))
    axes = fig.subplots(2, n + 1, squeeze=False)
    radii = np.arange(1, 25)
    for k, (band, psf) in enumerate(psfs.items()):
        axes[0, k].imshow(np.log10(np.clip(psf.data, 1e-6, None)), origin="lower", cmap="magma")
        axes[0, k].set_title(f"{band} FWHM {psf.fwhm_arcsec:.3f}\"")
        frac = float(getattr(psf, "ee_fraction", 1.0))
        axes[1, n].plot(radii * psf.pixel_scale, frac * encircled_energy(psf.data, radii), label=band)
        _energy_panel(axes[1, k], psf, band)
    axes[1, n].set_xlabel("radius (arcsec)")
    axes[1, n].set_ylabel("EE of the stamp (x its share)")
    axes[1, n].legend(fontsize=7)
    mag = np.asarray(stars["MAG_AUTO"], float)
    axes[0, n].plot(mag, np.asarray(stars["MU_MAX"], float) - mag, "o", ms=3)
    axes[0, n].set_xlabel("MAG_AUTO")
    axes[0, n].set_ylabel("MU_MAX - MAG_AUTO")
    axes[0, n].set_title("selected stars")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return buf.getvalue()


def _energy_panel(ax, psf, band: str) -> None:
    """EE(r) of the stars as a fraction of the total light, the wing model
    beyond the measured reach, and the stamp's share (its sum)."""
    curve: EnergyCurve | None = getattr(psf, "energy", None)
    if curve is None:
        ax.axis("off")
        return
    scale = curve.pixel_scale
    ax.semilogx(curve.radius * scale, curve.ee, "-", label="stars (measured)")
    far = np.geomspace(curve.reach, 3 * curve.reach, 20)
    ax.semilogx(far * scale, [curve.at(r) for r in far], "--", label="wing model")
    frac = float(getattr(psf, "ee_fraction", 1.0))
    half = psf.data.shape[0] // 2
    ax.axhline(frac, color="k", lw=0.8, ls=":")
    ax.axvline((half + 0.5) * scale, color="k", lw=0.8, ls=":")
    ax.set_title(f"{band}: stamp holds {frac:.3f} (x{1 / frac:.3f})", fontsize=9)
    ax.set_xlabel("radius (arcsec)")
    ax.set_ylabel("encircled energy (of total)")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7)
