"""Engine output columns (the predecessor's names) and rendering from them.

Fit results are kept on the detection frame while fitting; :func:`finalize`
turns them into catalog columns with units: world centre, radii in arcsec
(``RADIUS``) or pixels and degrees (``*_RADIUS_pix/_deg``), ``ANGLE`` (deg,
CCW from +x of the detection image), ``ANGLE_WORLD`` (deg, E of N), fluxes and
AB magnitudes per band. :func:`render_catalog` draws models back from those
columns alone, on any band window, so the mosaic step does not need the fit.
"""
from __future__ import annotations

import numpy as np
import astropy.units as u
from astropy.table import Table

from ..models.definition import ModelDefinition
from ..settings import default_config
from .base import BandCutout
from .flags import FitFlag
from .render import BandGrid, psf_reach, render_point, render_profile

__all__ = ["empty_results", "fill_row", "fill_point_row", "finalize", "render_catalog",
           "PARAM_COLUMNS", "POINT"]

#: ``MODEL`` of a row fitted as a point source (whatever the catalog's model).
POINT = "point"

#: parameter name -> catalog column (radii get _pix/_deg or arcsec below)
PARAM_COLUMNS = {"re": "RADIUS", "n": "SERSIC", "e1": "E1", "e2": "E2", "r_b": "BULGE_RADIUS",
                 "r_d": "DISK_RADIUS", "q_b": "BULGE_AXRATIO", "q_d": "DISK_AXRATIO",
                 "n_b": "BULGE_SERSIC", "angle": "ANGLE"}
_RADII = {"r_b", "r_d"}


def _flux_names(mdef: ModelDefinition, band: str) -> list[str]:
    if len(mdef.components) == 1:
        return [f"FLUX_MODEL_{band}"]
    return [f"FLUX_MODEL_{c.name.upper()}_{band}" for c in mdef.components]


def empty_results(n: int, mdef: ModelDefinition, bands) -> dict[str, np.ndarray]:
    """NaN-filled working columns for ``n`` sources."""
    out = {"x": np.full(n, np.nan), "y": np.full(n, np.nan), "x_err": np.full(n, np.nan),
           "y_err": np.full(n, np.nan), "CHI2_REDUCED": np.full(n, np.nan),
           "N_ITER": np.zeros(n, np.int32), "STOP_REASON": np.full(n, "not_fitted", dtype="U32"),
           "FLAGS": np.zeros(n, np.int32), "FIT_DURATION": np.zeros(n), "N_BANDS": np.zeros(n, np.int16),
           "MODEL": np.full(n, mdef.name, dtype="U24"), "BOUND_PARAMS": np.full(n, "", dtype="U64")}
    for p in mdef.parameter_names:
        if p not in ("x", "y"):
            out[f"p_{p}"] = np.full(n, np.nan)
            out[f"p_{p}_err"] = np.full(n, np.nan)
    for b in bands:
        for name in _flux_names(mdef, b) + [f"pt_{b}"]:
            out[name] = np.full(n, np.nan)
            out[name + "_err"] = np.full(n, np.nan)
        if len(mdef.components) > 1:  # the total's error and cov(first component, total)
            out[f"tot_{b}_err"] = np.full(n, np.nan)
            out[f"first_tot_{b}_cov"] = np.full(n, np.nan)
    return out


def _fill_diagnostics(out, row: int, fit, bands) -> None:
    out["CHI2_REDUCED"][row] = fit.chi2_reduced
    out["N_ITER"][row] = fit.n_iter
    out["STOP_REASON"][row] = fit.stop_reason
    out["N_BANDS"][row] = len(bands)


def fill_point_row(out, row: int, fit, bands) -> None:
    """Copy a single point-source fit into result row ``row`` of a galaxy
    model's results (``MODEL = point``; shape parameters NaN)."""
    for key in list(out):
        if key.startswith(("p_", "tot_", "first_tot_")):
            out[key][row] = np.nan
    for j, key in enumerate(("x", "y")):
        out[key][row] = fit.theta[0, j]
        out[key + "_err"][row] = fit.theta_err[0, j]
    for b in bands:
        out[f"pt_{b}"][row] = fit.fluxes[b][0, 0]
        out[f"pt_{b}_err"][row] = fit.flux_err[b][0, 0]
    _fill_diagnostics(out, row, fit, bands)
    out["MODEL"][row] = POINT
    out["BOUND_PARAMS"][row] = ""
    if fit.stop_reason == "max_iterations":
        out["FLAGS"][row] |= int(FitFlag.PARTIAL_FIT)


def fill_row(out, row: int, k: int, fit, mdef: ModelDefinition, bands, blended: bool) -> None:
    """Copy member ``k`` of a group fit into result row ``row``."""
    names = mdef.parameter_names
    for j, p in enumerate(names):
        key = p if p in ("x", "y") else f"p_{p}"
        out[key][row] = fit.theta[k, j]
        out[key + "_err"][row] = fit.theta_err[k, j]
    for b in bands:
        for c, name in enumerate(_flux_names(mdef, b)):
            out[name][row] = fit.fluxes[b][k, c]
            out[name + "_err"][row] = fit.flux_err[b][k, c]
        out[f"pt_{b}"][row] = out[f"pt_{b}_err"][row] = np.nan
        if len(mdef.components) > 1 and b in fit.flux_cov:
            cov = np.asarray(fit.flux_cov[b][k])
            if np.isfinite(np.diag(cov)).any():  # a component held at zero flux has none: it adds none
                out[f"tot_{b}_err"][row] = np.sqrt(max(float(np.nansum(cov)), 0.0))
                out[f"first_tot_{b}_cov"][row] = float(np.nansum(cov[0]))
    _fill_diagnostics(out, row, fit, bands)
    out["MODEL"][row] = mdef.name
    flags = 0
    if fit.stop_reason == "max_iterations":
        flags |= FitFlag.PARTIAL_FIT
    shape_bounds = bound_names(names, fit.at_bound[k])
    if shape_bounds:
        flags |= FitFlag.AT_BOUND
    if len(mdef.components) > 1:  # a component's flux at the non-negativity bound (B/T 0 or 1)
        for b in bands:
            for c, comp in enumerate(mdef.components):
                if fit.fluxes[b][k, c] == 0:
                    shape_bounds.append(f"{comp.name}_{b}=0")
    out["BOUND_PARAMS"][row] = ",".join(shape_bounds)[:64]
    if blended:
        flags |= FitFlag.BLENDED
    out["FLAGS"][row] |= int(flags)


def bound_names(names, sides) -> list[str]:
    """``name=min`` / ``name=max`` for each shape parameter (not the centre)
    at an end of its range (``sides``: -1, 0, +1 per parameter)."""
    return [f"{p}={'min' if s < 0 else 'max'}" for p, s in zip(names, sides)
            if s and p not in ("x", "y")]


def finalize(out, sources: Table, det: BandCutout, mdef: ModelDefinition, bands) -> Table:
    """Catalog columns with units from the working columns."""
    scale = det.pixel_scale
    y0, x0 = det.origin
    t = Table()
    t["X_MODEL"] = (out["x"] + x0 + 1.0) * u.pix
    t["X_MODEL_err"] = out["x_err"] * u.pix
    t["Y_MODEL"] = (out["y"] + y0 + 1.0) * u.pix
    t["Y_MODEL_err"] = out["y_err"] * u.pix
    ok = np.isfinite(out["x"])
    ra, dec = np.full(len(ok), np.nan), np.full(len(ok), np.nan)
    if ok.any():
        ra[ok], dec[ok] = det.wcs.pixel_to_world_values(out["x"][ok], out["y"][ok])
    t["RA_MODEL"] = ra * u.deg
    t["DEC_MODEL"] = dec * u.deg
    pos_err = np.hypot(out["x_err"], out["y_err"]) / np.sqrt(2) * scale
    t["RA_MODEL_err"] = pos_err / 3600.0 * u.deg
    t["DEC_MODEL_err"] = pos_err / 3600.0 * u.deg
    phi = None
    for p in mdef.parameter_names:
        if p in ("x", "y"):
            continue
        val, err = out[f"p_{p}"], out[f"p_{p}_err"]
        col = PARAM_COLUMNS.get(p, p.upper())
        if p == "re":
            t["RADIUS"], t["RADIUS_err"] = val * scale * u.arcsec, err * scale * u.arcsec
        elif p in _RADII:
            t[f"{col}_pix"], t[f"{col}_pix_err"] = val * u.pix, err * u.pix
            t[f"{col}_deg"], t[f"{col}_deg_err"] = val * scale / 3600 * u.deg, err * scale / 3600 * u.deg
        elif p == "angle":
            phi = val
            t["ANGLE"], t["ANGLE_err"] = np.degrees(val) % 180.0 * u.deg, np.degrees(err) * u.deg
        else:
            t[col], t[col + "_err"] = val, err
    if mdef.uses_e1e2:
        phi = _add_axratio_angle(t, out)
    t["ANGLE_WORLD"] = _angle_world(det, out["x"], out["y"], phi) * u.deg
    _point_fluxes_in(out, mdef, bands)
    _add_fluxes(t, out, mdef, bands, det.zeropoint)
    _point_components_out(t, out, mdef, bands)
    for name in ("MODEL", "CHI2_REDUCED", "N_ITER", "STOP_REASON", "FIT_DURATION", "N_BANDS",
                 "BOUND_PARAMS"):
        t[name] = out[name]
    t["FIT_DURATION"].unit = u.s
    t["FLAGS"] = out["FLAGS"] | _artefacts(t) | _bulge_larger(out, mdef)
    return t


def _point_fluxes_in(out, mdef: ModelDefinition, bands) -> None:
    """Point rows: their flux goes into the model's (first) flux column, so
    totals and magnitudes are computed as for every row."""
    pt = out["MODEL"] == POINT
    if not pt.any() or mdef.name == POINT:   # a point catalog has its fluxes in place
        return
    for b in bands:
        names = _flux_names(mdef, b)
        for k, n in enumerate(names):
            out[n][pt] = out[f"pt_{b}"][pt] if k == 0 else 0.0
            out[n + "_err"][pt] = out[f"pt_{b}_err"][pt] if k == 0 else 0.0


def _point_components_out(t: Table, out, mdef: ModelDefinition, bands) -> None:
    """Point rows have no bulge / disk split: those columns are NaN."""
    pt = out["MODEL"] == POINT
    if not pt.any() or len(mdef.components) == 1:
        return
    for b in bands:
        for n in _flux_names(mdef, b) + [f"B/T_{b}"]:
            for col in (n, n + "_err", n.replace("FLUX_", "MAG_", 1), n.replace("FLUX_", "MAG_", 1) + "_err"):
                if col in t.colnames:
                    t[col][pt] = np.nan


def _add_axratio_angle(t: Table, out) -> np.ndarray:
    e1, e2 = out["p_e1"], out["p_e2"]
    e = np.hypot(e1, e2)
    q = np.abs(1 - e) / (1 + e)
    phi = 0.5 * np.arctan2(e1, e2)
    de = np.hypot(e1 * out["p_e1_err"], e2 * out["p_e2_err"]) / np.maximum(e, 1e-9)
    t["AXRATIO"] = q
    t["AXRATIO_err"] = 2.0 / (1 + e) ** 2 * de
    t["ANGLE"] = np.degrees(phi) % 180.0 * u.deg
    dphi = 0.5 * np.hypot(e2 * out["p_e1_err"], e1 * out["p_e2_err"]) / np.maximum(e * e, 1e-12)
    t["ANGLE_err"] = np.degrees(dphi) * u.deg
    return phi


def _angle_world(det: BandCutout, x, y, phi) -> np.ndarray:
    """Position angle (deg E of N) of the major axis at angle ``phi`` (detection frame)."""
    out = np.full(len(x), np.nan)
    if phi is None:
        return out
    ok = np.isfinite(x) & np.isfinite(phi)
    if not ok.any():
        return out
    ra0, dec0 = det.wcs.pixel_to_world_values(x[ok], y[ok])
    ra1, dec1 = det.wcs.pixel_to_world_values(x[ok] + np.cos(phi[ok]), y[ok] + np.sin(phi[ok]))
    east = (ra1 - ra0) * np.cos(np.radians(dec0))
    north = dec1 - dec0
    out[ok] = np.degrees(np.arctan2(east, north)) % 180.0
    return out


def _add_fluxes(t: Table, out, mdef: ModelDefinition, bands, zp: float) -> None:
    multi = len(mdef.components) > 1
    for b in bands:
        names = _flux_names(mdef, b)
        if multi:
            total = sum(out[n] for n in names)
            # with the components' covariance where the engine gave it (the
            # bulge and disk fluxes anticorrelate: their errors alone overstate the total's)
            naive = np.sqrt(sum(out[n + "_err"] ** 2 for n in names))
            tot_err = out.get(f"tot_{b}_err", np.full(len(total), np.nan))
            tot_err = np.where(np.isfinite(tot_err), tot_err, naive)
            t[f"FLUX_MODEL_{b}"], t[f"FLUX_MODEL_{b}_err"] = total, tot_err
        for n in names:
            t[n], t[n + "_err"] = out[n], out[n + "_err"]
        for n in ([f"FLUX_MODEL_{b}"] + (names if multi else [])):
            _magnitude(t, n, zp)
        if multi:
            bulge, e_b = out[names[0]], out[names[0] + "_err"]
            with np.errstate(invalid="ignore", divide="ignore"):
                bt = bulge / total
                naive = np.sqrt(((1 - bt) * e_b) ** 2 + (bt * out[names[1] + "_err"]) ** 2) / np.abs(total)
                # B/T = b / T: var = (var_b - 2 bt cov(b, T) + bt^2 var_T) / T^2
                cov_bt = out.get(f"first_tot_{b}_cov", np.full(len(total), np.nan))
                var = (e_b ** 2 - 2 * bt * cov_bt + bt ** 2 * tot_err ** 2) / total ** 2
                bt_err = np.where(np.isfinite(cov_bt), np.sqrt(np.clip(var, 0, None)), naive)
            t[f"B/T_{b}"], t[f"B/T_{b}_err"] = bt, bt_err


def _magnitude(t: Table, flux_col: str, zp: float) -> None:
    f, e = np.asarray(t[flux_col], float), np.asarray(t[flux_col + "_err"], float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mag = np.where(f > 0, -2.5 * np.log10(f) + zp, np.nan)
        err = np.where(f > 0, 2.5 / np.log(10) * e / f, np.nan)
    name = flux_col.replace("FLUX_", "MAG_", 1)
    t[name], t[name + "_err"] = mag * u.mag, err * u.mag


def _artefacts(t: Table) -> np.ndarray:
    """The predecessor's known artefacts: n stuck at a bound, q >= 0.99."""
    bad = np.zeros(len(t), bool)
    if "SERSIC" in t.colnames:
        n = np.asarray(t["SERSIC"], float)
        bad |= np.isclose(n, 0.3, atol=0.01) | np.isclose(n, 8.4, atol=0.05) | np.isclose(n, 0.36, atol=0.005)
    if "AXRATIO" in t.colnames:
        bad |= np.asarray(t["AXRATIO"], float) >= 0.99
    return np.where(bad, int(FitFlag.DEGENERATE), 0).astype(np.int32)


def _bulge_larger(out, mdef: ModelDefinition) -> np.ndarray:
    """``BULGE_LARGER`` where a bulge + disk fit's bulge has the larger r_e.

    The bulge is the inner, more concentrated component; with a bulge index
    near 1 nothing else tells the labels apart, and the swapped optimum may
    even fit better (SDSS VCC 1512): flag it rather than report its B/T as a
    bulge fraction. Point rows (NaN radii) are never flagged.
    """
    comps = {c.name: c for c in mdef.components}
    if not {"bulge", "disk"} <= set(comps):
        return np.zeros(len(out["FLAGS"]), np.int32)
    r_b, r_d = (_component_radius(out, comps[k]) for k in ("bulge", "disk"))
    with np.errstate(invalid="ignore"):
        larger = r_b > r_d
    return np.where(larger, int(FitFlag.BULGE_LARGER), 0).astype(np.int32)


def _component_radius(out, comp) -> np.ndarray:
    """A component's fitted r_e per row (its parameter, or the fixed number)."""
    ref = comp.geometry["re"]
    if isinstance(ref, (int, float)):
        return np.full(len(out["FLAGS"]), float(ref))
    return np.asarray(out[f"p_{ref}"], float)


# -- rendering from catalog columns -------------------------------------------

def _components(row, mdef: ModelDefinition, band: str):
    """``(profile, re_arcsec, q, pa_deg, n, flux)`` per component of one row."""
    pa = float(row["ANGLE_WORLD"])
    if "MODEL" in row.colnames and str(row["MODEL"]).strip() == POINT:
        return [(POINT, 0.0, 1.0, 0.0, 1.0, float(row[f"FLUX_MODEL_{band}"]))]
    if len(mdef.components) == 1:
        comp = mdef.components[0]
        n = comp.sersic_n or float(row["SERSIC"]) if comp.profile != "point" else 1.0
        re = float(row["RADIUS"]) if "RADIUS" in row.colnames else 0.0
        q = float(row["AXRATIO"]) if "AXRATIO" in row.colnames else 1.0
        return [(comp.profile, re, q, pa, n, float(row[f"FLUX_MODEL_{band}"]))]
    out = []
    for comp in mdef.components:
        key = comp.name.upper()
        n = comp.sersic_n if comp.sersic_n is not None else float(row[f"{key}_SERSIC"])
        out.append((comp.profile, float(row[f"{key}_RADIUS_deg"]) * 3600.0,
                    float(row[f"{key}_AXRATIO"]), pa, n, float(row[f"FLUX_MODEL_{key}_{band}"])))
    return out


def _nan_for_masked(catalog: Table) -> Table:
    """Masked float entries as NaN: a catalog read from FITS masks its NaN,
    and ``float()`` of a masked entry warns once per row."""
    if not catalog.has_masked_values:
        return catalog
    out = catalog.copy(copy_data=False)
    for name in out.colnames:
        if out[name].dtype.kind == "f" and hasattr(out[name], "filled"):
            out[name] = out[name].filled(np.nan)
    return out


_FIT_DEFAULTS = default_config()["fit"]


def render_catalog(catalog: Table, grid: BandCutout, mdef: ModelDefinition,
                   psf_radius: int | None = None, below: float | None = None) -> np.ndarray:
    """PSF-convolved models of all ``catalog`` rows on ``grid`` (float32).

    Each source is drawn on its own window (10 r_e or the PSF reach, 25..250 px) around its
    world position, through the band WCS's local affine map, and added in. The PSF reach
    of a source is where its PSF light falls below ``below`` x its flux error in the band
    (a property of the row, so every chunk draws a source alike), at most ``psf_radius``
    and the PSF stamp (defaults: ``fit.psf_radius``, ``fit.subtract_below``); rows without
    a flux error reach that limit.
    """
    image = np.zeros(grid.shape, dtype=np.float64)
    psf = grid.psf.stamp(oversampling=1)
    pad = int(min(_FIT_DEFAULTS["psf_radius"] if psf_radius is None else psf_radius, psf.shape[0] // 2))
    below = _FIT_DEFAULTS["subtract_below"] if below is None else below
    err_col = f"FLUX_MODEL_{grid.band}_err"
    ny, nx = grid.shape
    for row in _nan_for_masked(catalog):
        ra, dec = float(row["RA_MODEL"]), float(row["DEC_MODEL"])
        if not (np.isfinite(ra) and np.isfinite(dec)):
            continue
        # a galaxy component needs its whole shape (a row whose fit failed
        # part-way can keep a flux with NaN shape): nothing to draw otherwise
        comps = [c for c in _components(row, mdef, grid.band) if np.isfinite(c[5]) and c[5] != 0
                 and (c[0] == "point" or np.all(np.isfinite(c[1:5])))]
        if not comps:
            continue
        p0, a = _sky_affine(grid.wcs, ra, dec)
        re_pix = max(c[1] for c in comps) / grid.pixel_scale
        # the PSF wings (spikes) reach as far as their light shows whatever the
        # size: a smaller stamp leaves square-cut stars in the mosaics
        flux = sum(abs(c[5]) for c in comps)
        err = float(row[err_col]) if err_col in row.colnames else np.nan
        reach = min(psf_reach(psf, below * err / flux), pad) if np.isfinite(err) and err > 0 else pad
        half = int(np.clip(max(10 * re_pix, reach), 25, 250))
        xc, yc = int(round(p0[0])), int(round(p0[1]))
        x_lo, y_lo = xc - half, yc - half
        if x_lo >= nx or y_lo >= ny or xc + half < 0 or yc + half < 0:
            continue
        here = psf
        if grid.psf.variable:   # evaluated at the source (mosaic position: cutout origin + p0)
            here = grid.psf.stamp(x=grid.origin[1] + p0[0], y=grid.origin[0] + p0[1], oversampling=1)
        bg = BandGrid((2 * half + 1, 2 * half + 1), a, p0 - np.array([x_lo, y_lo]), here, min(pad, half))
        stamp = np.zeros(bg.shape)
        for profile, re, q, pa, n, flux in comps:
            phi = np.arctan2(np.cos(np.radians(pa)), -np.sin(np.radians(pa)))
            if profile == "point" or re <= 0:
                img, _ = render_point(bg, 0.0, 0.0, derivatives=False)
            else:
                img, _ = render_profile(bg, 0.0, 0.0, re, max(q, 1e-3), phi, n, derivatives=False)
            stamp += flux * img
        ys, xs = slice(max(y_lo, 0), min(y_lo + bg.shape[0], ny)), slice(max(x_lo, 0), min(x_lo + bg.shape[1], nx))
        image[ys, xs] += stamp[ys.start - y_lo:ys.stop - y_lo, xs.start - x_lo:xs.stop - x_lo]
    return image.astype(np.float32)


def _sky_affine(wcs, ra: float, dec: float):
    """Band pixel position of (ra, dec) and the affine map of local sky
    offsets (arcsec towards west, north) to band pixel offsets."""
    d = 1.0 / 3600.0
    cosd = np.cos(np.radians(dec))
    px, py = wcs.world_to_pixel_values([ra, ra - d / cosd, ra], [dec, dec, dec + d])
    p0 = np.array([px[0], py[0]])
    a = np.array([[px[1] - px[0], px[2] - px[0]], [py[1] - py[0], py[2] - py[0]]])
    return p0, a
