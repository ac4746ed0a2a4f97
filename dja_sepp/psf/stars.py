"""Stars for PSF building: the stellar locus of a reference band.

As the predecessor did (shared/reference/seed_models.md): sources of the
reference band (F200W by default) detected at a high threshold; point sources
share one value of ``MU_MAX - MAG_AUTO`` (peak surface brightness minus total
magnitude), so the stellar locus is the densest narrow sequence at the
compact end of that plane among bright sources; a robust line is fitted to
it and a box around the line (-0.5 / +0.3 mag), magnitude and S/N cuts
select the stars. Stars with a bright neighbour or too close to an edge or to
invalid pixels are dropped (their cutouts would be contaminated).
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from astropy.table import Table, vstack

from ..settings import default_config

__all__ = ["detect_reference", "detect_tile", "stellar_locus", "select_stars", "point_sources", "DEFAULTS"]

DEFAULTS: dict[str, Any] = default_config()["psf"]["stars"]   # the predecessor's selection


def detect_reference(field, grid, band: str, settings: Mapping[str, Any] | None = None,
                     client: Any = None) -> Table:
    """Sources of ``band`` over the whole field, tile by tile (each tile's core
    owns its sources, so nothing is counted twice; memory stays one tile).

    With a distributed ``client`` the tiles are Dask tasks on its workers
    (:func:`detect_tile`), with a progress bar; without one they run here.
    """
    from ..progress import bar
    image = field.bands[band]
    desc = f"PSF stars ({band})"
    if client is None:
        tables = [detect_tile(image, tile, settings) for tile in bar(grid.tiles, desc=desc, unit="tile")]
    else:
        from distributed import as_completed
        futures = [client.submit(detect_tile, image, tile, settings, key=f"psf-stars-{tile.id}",
                                 pure=False) for tile in grid.tiles]
        with bar(total=len(futures), desc=desc, unit="tile") as progress:
            for _ in as_completed(futures):
                progress.update(1)
        tables = client.gather(futures)   # in tile order, whatever finished first
    tables = [t for t in tables if t is not None and len(t)]
    if not tables:
        raise ValueError(f"{image.sci_path}: no sources detected in band {band} for PSF stars")
    return vstack(tables, metadata_conflicts="silent")


def detect_tile(image, tile, settings: Mapping[str, Any] | None = None) -> Table | None:
    """Sources of one band in one tile whose core owns them (None when the
    band has no data there): positions on the band's grid (``X_BAND``,
    ``Y_BAND``) and the distance to the nearest invalid pixel."""
    from ..detect import detect_sources
    s = {**DEFAULTS, **(settings or {})}
    cut = image.cutout(tile.halo_on(image.factor))
    if not np.any(cut.wht > 0):
        return None
    found, _ = detect_sources(cut, {"thresh": s["thresh"], "deblend_cont": 0.005})
    if not len(found):
        return None
    ys, xs = tile.halo_on(image.factor)
    cy, cx = tile.core_on(image.factor)
    x = np.asarray(found["x"]) + xs.start
    y = np.asarray(found["y"]) + ys.start
    own = (x >= cx.start - 0.5) & (x < cx.stop - 0.5) & (y >= cy.start - 0.5) & (y < cy.stop - 0.5)
    found["X_BAND"], found["Y_BAND"] = x, y
    found["EDGE_DIST"] = _distance_to_invalid(cut.wht, np.asarray(found["x"]), np.asarray(found["y"]))
    return found[own]


def _distance_to_invalid(wht: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    from scipy.ndimage import distance_transform_edt
    valid = np.pad(wht > 0, 1, constant_values=False)   # cutout edges count as invalid
    dist = distance_transform_edt(valid)[1:-1, 1:-1]
    iy = np.clip(np.round(y).astype(int), 0, wht.shape[0] - 1)
    ix = np.clip(np.round(x).astype(int), 0, wht.shape[1] - 1)
    return dist[iy, ix]


def stellar_locus(mag: np.ndarray, concentration: np.ndarray, width: float = 0.15) -> tuple[float, float]:
    """Robust line ``concentration = a + b (mag - 22)`` of the point-source sequence.

    The sequence is the densest ``width``-wide band of ``concentration``
    (``MU_MAX - MAG_AUTO``) in the compact half of the sources; a Theil-Sen
    line is then fitted to its members.
    """
    from scipy.stats import theilslopes
    ok = np.isfinite(mag) & np.isfinite(concentration)
    mag, conc = mag[ok], concentration[ok]
    if len(conc) < 3:
        raise ValueError(f"only {len(conc)} bright source(s): too few to find the stellar locus of "
                         f"PSF stars; give PSF files instead")
    compact = np.sort(conc)[: max(3, len(conc) // 2)]
    counts = [np.count_nonzero(np.abs(compact - c) < width / 2) for c in compact]
    centre = float(np.median(compact[np.abs(compact - compact[int(np.argmax(counts))]) < width / 2]))
    near = np.abs(conc - centre) < width
    if near.sum() < 3:
        return centre, 0.0
    slope, intercept, _, _ = theilslopes(conc[near], mag[near] - 22.0)
    return float(intercept), float(slope)


def select_stars(sources: Table, settings: Mapping[str, Any] | None = None) -> Table:
    """Stars of a reference-band catalog (see the module docstring).

    Raises
    ------
    ValueError
        When fewer than ``min_stars`` stars pass: a PSF from fewer would be noise.
    """
    s = {**DEFAULTS, **(settings or {})}
    mag = np.asarray(sources["MAG_AUTO"], float)
    on_locus, in_range, (a, b) = _locus_members(sources, s)
    isolated = _isolated(sources, mag, s["isolation"])
    clear = np.asarray(sources["EDGE_DIST"], float) > s["edge"] if "EDGE_DIST" in sources.colnames \
        else np.ones(len(sources), bool)
    keep = on_locus & in_range & isolated & clear
    if keep.sum() < s["min_stars"]:
        raise ValueError(f"only {int(keep.sum())} PSF star(s) pass the selection "
                         f"(need {s['min_stars']}); give PSF files instead")
    stars = sources[keep]
    stars.meta.update(LOCUS_A=a, LOCUS_B=b)
    return stars


def point_sources(sources: Table, settings: Mapping[str, Any] | None = None) -> Table:
    """Every source of a reference-band catalog on the stellar locus above
    the selection's S/N, isolated or not, at any magnitude brighter than
    ``mag_max``: the stars whose wings and spikes lie over the PSF stars'
    outer annuli (:func:`dja_sepp.psf.energy.measure_energy` removes them)."""
    s = {**DEFAULTS, **(settings or {})}
    on_locus, _, _ = _locus_members(sources, s)
    return sources[on_locus]


def _locus_members(sources: Table, s: Mapping[str, Any]):
    """Sources within the box around the stellar locus at S/N > ``snr_min``
    and brighter than ``mag_max``, at any brighter magnitude (saturated
    stars fall off the locus anyway); the sources the locus is fitted to
    (S/N > ``snr_min``, ``mag_min`` < mag < ``mag_max``); the locus line."""
    mag = np.asarray(sources["MAG_AUTO"], float)
    conc = np.asarray(sources["MU_MAX"], float) - mag
    usable = (np.asarray(sources["SNR"], float) > s["snr_min"]) & (mag < s["mag_max"])
    bright = usable & (mag > s["mag_min"])
    a, b = stellar_locus(mag[bright], conc[bright])
    offset = conc - (a + b * (mag - 22.0))
    on_locus = usable & (offset > -s["box_below"]) & (offset < s["box_above"])
    return on_locus, bright, (a, b)


def _isolated(sources: Table, mag: np.ndarray, radius_arcsec: float) -> np.ndarray:
    """No other source within ``radius`` that is less than 3 mag fainter."""
    from astropy.coordinates import SkyCoord
    import astropy.units as u
    coords = SkyCoord(np.asarray(sources["RA"], float) * u.deg, np.asarray(sources["DEC"], float) * u.deg)
    i, j, _, _ = coords.search_around_sky(coords, radius_arcsec * u.arcsec)
    other = i != j
    spoil = other & (mag[j] < mag[i] + 3.0)
    bad = np.zeros(len(sources), bool)
    bad[i[spoil]] = True
    return ~bad
