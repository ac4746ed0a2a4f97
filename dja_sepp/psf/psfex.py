"""The PSFEx path: SExtractor vignettes of the selected stars, PSFEx, ``.psf`` files.

Used when ``source-extractor`` and ``psfex`` are on PATH (Debian packages
``source-extractor`` and ``psfex``) and ``psf.method: psfex``. SExtractor
writes a FITS_LDAC catalog with vignettes of the band image; only the rows
matching our reference-band stars are kept; PSFEx then builds a pixel-basis
PSF with the predecessor's settings (constant over the field by default,
FWHM range 1-10 px), check plots off (Debian's PSFEx exits 1 when asked for
PNG plots). :class:`PSFExPSF` evaluates a ``.psf`` (polynomial variation
included) for the engine; its stamps sum to ``EEFRAC`` of the ``PSF_DATA``
header (the share of the total light inside them, measured on the stars'
curve of growth by the build step; 1 when absent).
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from astropy.io import fits
from astropy.table import Table

from ..io.cache import is_remote, local_fits
from ..settings import default_config
from .base import PSF

__all__ = ["PSFExPSF", "psfex_available", "run_psfex", "with_ee_fraction", "DEFAULTS"]

DEFAULTS: dict[str, Any] = default_config()["psf"]["psfex"]
STAR_MIN: int = int(default_config()["psf"]["stars"]["min_stars"])

_PARAMS = ("X_IMAGE", "Y_IMAGE", "ALPHA_J2000", "DELTA_J2000", "FLUX_APER(1)", "FLUXERR_APER(1)",
           "FLUX_RADIUS", "ELONGATION", "FLAGS", "SNR_WIN", "MAG_AUTO")


def psfex_available() -> bool:
    """Both tools on PATH."""
    return bool(shutil.which("source-extractor") or shutil.which("sex")) and bool(shutil.which("psfex"))


class PSFExPSF(PSF):
    """A PSF read from a PSFEx ``.psf`` file (pixel basis, polynomial in x, y)."""

    def __init__(self, path: str | Path, band: str = "", pixel_scale: float = 0.0,
                 storage_options: dict | None = None):
        remote = is_remote(str(path))
        with fits.open(path, use_fsspec=remote,
                       fsspec_kwargs=(storage_options or None) if remote else None) as hdul:
            hdu = hdul["PSF_DATA"]
            self.basis = np.asarray(hdu.data["PSF_MASK"][0], dtype=np.float64)  # (ncoef, ny, nx)
            h = hdu.header
        self.sampling = float(h["PSF_SAMP"])
        self.degree = int(h.get("POLDEG1", 0)) if int(h.get("POLNAXIS", 0)) else 0
        self.zero = (float(h.get("POLZERO1", 0.0)), float(h.get("POLZERO2", 0.0)))
        self.scale = (float(h.get("POLSCAL1", 1.0)), float(h.get("POLSCAL2", 1.0)))
        if abs(self.sampling - 1.0) > 1e-6:
            raise ValueError(f"{path}: PSF_SAMP = {self.sampling}; only native sampling (1.0) is supported")
        self.band, self.pixel_scale, self.oversampling = band, float(pixel_scale), 1
        self.variable = self.degree > 0
        self.ee_fraction = float(h.get("EEFRAC", 1.0))
        self.path = str(path)

    def stamp(self, x: float | None = None, y: float | None = None, oversampling: int = 1) -> np.ndarray:
        """The PSF at 0-based band position ``(x, y)`` (the field centre if None)."""
        if oversampling != 1:
            raise ValueError("a PSFEx PSF is stored at native sampling only")
        if self.degree == 0 or x is None or y is None:
            coeffs = np.zeros(len(self.basis))
            coeffs[0] = 1.0
        else:
            # PSFEx polynomials use 1-based FITS positions
            dx = (x + 1.0 - self.zero[0]) / self.scale[0]
            dy = (y + 1.0 - self.zero[1]) / self.scale[1]
            coeffs = np.array([dx ** i * dy ** j for j in range(self.degree + 1)
                               for i in range(self.degree + 1 - j)])
        img = np.tensordot(coeffs, self.basis, axes=1)
        img = np.clip(img, 0, None)
        return img * (self.ee_fraction / img.sum())


def reweight_basis(path: str | Path, factor: np.ndarray) -> None:
    """Multiply every basis image of a ``.psf`` file by ``factor`` (a map of
    the stamp's shape): a radial reweighting applied to all the polynomial
    terms changes the PSF the same way at every position."""
    with fits.open(path, mode="update") as hdul:
        data = hdul["PSF_DATA"].data
        data["PSF_MASK"][0] = (np.asarray(data["PSF_MASK"][0], np.float64) * factor).astype(
            data["PSF_MASK"].dtype)


def with_ee_fraction(content: bytes, fraction: float) -> bytes:
    """A ``.psf`` file's bytes with the share of the total light its stamp
    holds recorded (``EEFRAC``)."""
    import io
    with fits.open(io.BytesIO(content)) as hdul:
        hdul["PSF_DATA"].header["EEFRAC"] = (float(fraction), "fraction of total light in the stamp")
        hdul.writeto(buf := io.BytesIO())
    return buf.getvalue()


def _write_configs(work: Path, size: int) -> None:
    (work / "psf.param").write_text("\n".join(_PARAMS[:-1] + (f"VIGNET({size},{size})", _PARAMS[-1])) + "\n")
    (work / "psf.conv").write_text("CONV NORM\n1 2 1\n2 4 2\n1 2 1\n")


def _sextractor(image, work: Path, size: int) -> Path:
    exe = shutil.which("source-extractor") or shutil.which("sex")
    sci = local_fits(image.sci_path, image.cache_dir, image.storage_options)
    wht = local_fits(image.wht_path, image.cache_dir, image.storage_options)
    cat = work / f"{image.band}.ldac"
    args = [exe, sci, "-c", "/dev/null", "-CATALOG_NAME", str(cat), "-CATALOG_TYPE", "FITS_LDAC",
            "-PARAMETERS_NAME", str(work / "psf.param"), "-FILTER_NAME", str(work / "psf.conv"),
            "-DETECT_THRESH", "8", "-ANALYSIS_THRESH", "8", "-DETECT_MINAREA", "7",
            "-WEIGHT_TYPE", "MAP_WEIGHT", "-WEIGHT_IMAGE", wht, "-MAG_ZEROPOINT", str(image.zeropoint),
            "-PIXEL_SCALE", "0", "-SATUR_LEVEL", "1e20", "-PHOT_APERTURES", "10",
            # DJA mosaics are sky-subtracted: a local mesh would eat the stars' wings
            "-BACK_TYPE", "MANUAL", "-BACK_VALUE", "0", "-CHECKIMAGE_TYPE", "NONE", "-VERBOSE_TYPE", "QUIET"]
    _run(args, "source-extractor", image.sci_path)
    return cat


def _keep_stars(cat: Path, stars: Table, radius: float) -> int:
    """Keep only the LDAC rows within ``radius`` arcsec of a selected star."""
    from astropy.coordinates import SkyCoord
    import astropy.units as u
    with fits.open(cat) as hdul:
        objects = hdul["LDAC_OBJECTS"]
        c_cat = SkyCoord(objects.data["ALPHA_J2000"] * u.deg, objects.data["DELTA_J2000"] * u.deg)
        c_star = SkyCoord(np.asarray(stars["RA"], float) * u.deg, np.asarray(stars["DEC"], float) * u.deg)
        _, d, _ = c_cat.match_to_catalog_sky(c_star)
        keep = d.arcsec < radius
        hdul["LDAC_OBJECTS"] = fits.BinTableHDU(objects.data[keep], header=objects.header,
                                                name="LDAC_OBJECTS")
        hdul.writeto(cat, overwrite=True)
    return int(keep.sum())


def _run(args: list[str], tool: str, what: str) -> None:
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{what}: {tool} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")


def run_psfex(image, stars: Table, out_dir: str | Path, settings: Mapping[str, Any] | None = None,
              min_stars: int | None = None) -> Path:
    """Build ``{out_dir}/{band}.psf`` for one band from the selected ``stars``
    (at least ``min_stars`` of them in its SExtractor catalog, default
    ``psf.stars.min_stars``)."""
    if not psfex_available():
        raise RuntimeError("psf.method psfex needs source-extractor and psfex on PATH "
                           "(Debian: apt-get install source-extractor psfex)")
    s = {**DEFAULTS, **(settings or {})}
    size = int(s["size"]) | 1
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dja_sepp_psfex_") as tmp:
        work = Path(tmp)
        _write_configs(work, size)
        cat = _sextractor(image, work, size)
        n = _keep_stars(cat, stars, float(s["match_radius"]))
        if n < (STAR_MIN if min_stars is None else int(min_stars)):
            raise ValueError(f"{image.sci_path}: only {n} PSF star(s) in the SExtractor catalog of {image.band}")
        lo, hi = s["fwhm_range"]
        args = [shutil.which("psfex"), str(cat), "-c", "/dev/null", "-BASIS_TYPE", "PIXEL",
                "-PSF_SIZE", f"{size},{size}", "-PSF_SAMPLING", "1.0", "-PSFVAR_DEGREES", str(int(s["degrees"])),
                "-SAMPLE_AUTOSELECT", "N", "-SAMPLE_FWHMRANGE", f"{lo},{hi}", "-SAMPLE_MINSN", str(s["min_sn"]),
                "-SAMPLE_MAXELLIP", "0.5", "-CHECKPLOT_TYPE", "NONE", "-CHECKIMAGE_TYPE", "NONE",
                "-WRITE_XML", "N", "-PSF_DIR", str(out_dir), "-VERBOSE_TYPE", "QUIET"]
        _run(args, "psfex", image.sci_path)
    produced = out_dir / f"{image.band}.psf"
    if not produced.exists():
        raise RuntimeError(f"{image.sci_path}: psfex wrote no {produced.name}")
    return produced
