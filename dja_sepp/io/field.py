"""A DJA field: the detection image and the measurement bands, read by window.

A :class:`Field` holds only paths, headers and WCS (light and picklable, so
Dask ships it to every worker); pixels are read per tile window by
:meth:`Image.read`, from a memory map of a local uncompressed copy.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field as dc_field
from pathlib import Path
from typing import Iterable

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from astropy.wcs.utils import proj_plane_pixel_scales

from .cutout import BandCutout
from .cache import InputError, is_remote, local_fits

__all__ = ["Image", "Field", "load_field", "InputError", "find_dja_files"]

DEFAULT_ZEROPOINT = 28.90

_BAND_RE = re.compile(
    r"^(?P<field>.+)-(?P<band>f\d{3,4}[a-z]{1,2}\d?)-clear_drc_(?P<kind>sci|wht)\.fits(\.gz)?$",
    re.IGNORECASE)
_DET_RE = r"^(?P<field>.+)-{det}_drc_(?P<kind>sci|wht)\.fits(\.gz)?$"


@dataclass
class Image:
    """One mosaic (science + inverse-variance weight), read by window.

    Attributes
    ----------
    band : str
        Upper-case band name, or ``"DETECTION"``.
    sci_path, wht_path : str
        Original paths or URLs.
    shape : tuple of int
        ``(ny, nx)`` of the mosaic.
    wcs : astropy.wcs.WCS
        Celestial WCS of the full mosaic.
    pixel_scale : float
        Arcsec per pixel.
    zeropoint : float
        AB zero point of the pixel unit.
    factor : int
        Detection pixel scale / this pixel scale (1 or 2 for DJA).
    wavelength : float or None
        Pivot wavelength in micron.
    cache_dir : str or None
        Where compressed / remote files are made local.
    unit : str or None
        Pixel unit, the science header's ``BUNIT`` (DJA: ``10*nJy``).
    """

    band: str
    sci_path: str
    wht_path: str
    shape: tuple[int, int]
    wcs: WCS
    pixel_scale: float
    zeropoint: float = DEFAULT_ZEROPOINT
    factor: int = 1
    wavelength: float | None = None
    cache_dir: str | None = None
    storage_options: dict = dc_field(default_factory=dict)
    unit: str | None = None

    @classmethod
    def open(cls, band: str | None, sci_path: str, wht_path: str | None,
             zeropoint: float | None = None, cache_dir: str | None = None,
             storage_options: dict | None = None) -> "Image":
        """Read headers, check WCS and weight, and describe the mosaic."""
        if wht_path is None:
            raise InputError(f"{sci_path}: no weight image found beside it "
                             f"(expected {_weight_name(sci_path)})")
        storage_options = storage_options or {}
        header = _read_header(sci_path, cache_dir, storage_options)
        wht_header = _read_header(wht_path, cache_dir, storage_options)
        wcs = _celestial_wcs(header, sci_path)
        shape = (int(header["NAXIS2"]), int(header["NAXIS1"]))
        wshape = (int(wht_header.get("NAXIS2", 0)), int(wht_header.get("NAXIS1", 0)))
        if wshape != shape:
            raise InputError(f"{wht_path}: weight shape {wshape} differs from science "
                             f"shape {shape} of {sci_path}")
        if band is None:
            band = str(header.get("FILTER", "")).strip().upper() or _band_from_name(sci_path)
        scale = float(np.mean(proj_plane_pixel_scales(wcs)) * 3600.0)
        zp = zeropoint if zeropoint is not None else DEFAULT_ZEROPOINT
        return cls(band=band.upper(), sci_path=str(sci_path), wht_path=str(wht_path),
                   shape=shape, wcs=wcs, pixel_scale=scale, zeropoint=float(zp),
                   wavelength=_pivot(band), cache_dir=cache_dir,
                   storage_options=dict(storage_options),
                   unit=str(header.get("BUNIT", "")).strip() or None)

    def read(self, window: tuple[slice, slice]) -> tuple[np.ndarray, np.ndarray]:
        """Science and weight pixels of ``window`` (float32, native byte order).

        Non-finite science pixels get zero weight so they never enter a fit.
        """
        sci = self._read_one(self.sci_path, window)
        wht = self._read_one(self.wht_path, window)
        bad = ~np.isfinite(sci) | ~np.isfinite(wht) | (wht < 0)
        if bad.any():
            sci = np.where(bad, 0.0, sci).astype(np.float32)
            wht = np.where(bad, 0.0, wht).astype(np.float32)
        return sci, wht

    def _read_one(self, path: str, window: tuple[slice, slice]) -> np.ndarray:
        local = local_fits(path, self.cache_dir, self.storage_options)
        try:
            with fits.open(local, memmap=True, lazy_load_hdus=True) as hdul:
                hdu = _image_hdu(hdul, path)
                pixels = _pixels(hdu)
                if pixels is not None:
                    return np.array(pixels[window], dtype=np.float32)
            # scaled (BSCALE/BZERO) or with BLANK: astropy maps none of it;
            # its section reads the window's rows from the file and scales them
            with fits.open(local, memmap=False, lazy_load_hdus=True) as hdul:
                data = np.array(_image_hdu(hdul, path).section[window], dtype=np.float32)
        except (OSError, ValueError, TypeError) as exc:
            raise InputError(f"{path}: cannot read pixels {window} ({exc})") from exc
        return data

    def cutout(self, window: tuple[slice, slice], psf=None) -> BandCutout:
        """A :class:`BandCutout` of ``window`` with its own WCS and origin."""
        sci, wht = self.read(window)
        return BandCutout(band=self.band, sci=sci, wht=wht, wcs=self.wcs.slice(window),
                          origin=(window[0].start or 0, window[1].start or 0),
                          pixel_scale=self.pixel_scale, zeropoint=self.zeropoint,
                          psf=psf, wavelength=self.wavelength)


@dataclass
class Field:
    """A detection image and measurement bands on aligned grids.

    Use :meth:`from_directory` to find DJA-named files, or build it from
    :class:`Image` objects and call :meth:`check`.
    """

    name: str
    detection: Image
    bands: dict[str, Image]

    def __post_init__(self) -> None:
        self.check()

    @classmethod
    def from_directory(cls, path: str | Path, field: str | None = None,
                       bands: Iterable[str] | None = None, detection: str = "ir",
                       zeropoint: float | None = None, cache_dir: str | None = None,
                       storage_options: dict | None = None) -> "Field":
        """Find ``{field}-{filter}-clear_drc_{sci,wht}`` and the detection
        ``{field}-{detection}_drc_{sci,wht}`` in a folder (local or URL)."""
        found = find_dja_files(path, field, detection, storage_options)
        name, det_files, band_files = found
        wanted = [b.upper() for b in bands] if bands else sorted(band_files, key=_pivot_key)
        missing = [b for b in wanted if b not in band_files]
        if missing:
            raise InputError(f"{path}: no files for band(s) {missing} of field {name!r}; "
                             f"found {sorted(band_files)}")
        opts = dict(zeropoint=zeropoint, cache_dir=cache_dir, storage_options=storage_options)
        det = Image.open("DETECTION", det_files.get("sci") or _missing(path, name, detection),
                         det_files.get("wht"), **opts)
        images = {b: Image.open(b, band_files[b].get("sci") or _missing(path, name, b),
                                band_files[b].get("wht"), **opts) for b in wanted}
        return cls(name=name, detection=det, bands=images)

    def check(self) -> None:
        """Check every band's grid is the detection grid refined by an integer
        factor with coinciding pixel edges (DJA's 0.02"/0.04" mosaics)."""
        det = self.detection
        for band, image in self.bands.items():
            ratio = det.pixel_scale / image.pixel_scale
            factor = int(round(ratio))
            if factor < 1 or abs(ratio - factor) > 1e-3 * factor:
                raise InputError(f"{image.sci_path}: pixel scale {image.pixel_scale:.4f}\" is not "
                                 f"the detection scale {det.pixel_scale:.4f}\" divided by an integer")
            expected = (det.shape[0] * factor, det.shape[1] * factor)
            if image.shape != expected:
                raise InputError(f"{image.sci_path}: footprint {image.shape} inconsistent with the "
                                 f"detection image {det.sci_path} {det.shape} x {factor}")
            corners = np.array([[-0.5, -0.5], [det.shape[1] - 0.5, det.shape[0] - 0.5]])
            world = det.wcs.pixel_to_world_values(corners[:, 0], corners[:, 1])
            bx, by = image.wcs.world_to_pixel_values(*world)
            want = (corners + 0.5) * factor - 0.5
            err = max(np.abs(bx - want[:, 0]).max(), np.abs(by - want[:, 1]).max())
            if not np.isfinite(err) or err > 0.05:
                raise InputError(f"{image.sci_path}: grid not aligned with the detection image "
                                 f"{det.sci_path} (corner offset {err:.3f} px)")
            image.factor = factor

    def describe(self) -> str:
        """One line per image: band, shape, pixel scale."""
        lines = [f"field {self.name}: detection {self.detection.shape} at "
                 f"{self.detection.pixel_scale:.3f}\""]
        lines += [f"  {b:>7s} {im.shape} at {im.pixel_scale:.3f}\" (x{im.factor})"
                  for b, im in self.bands.items()]
        return "\n".join(lines)


def load_field(path: str | Path, **kwargs) -> Field:
    """Alias of :meth:`Field.from_directory`."""
    return Field.from_directory(path, **kwargs)


def find_dja_files(path: str | Path, field: str | None = None, detection: str = "ir",
                   storage_options: dict | None = None):
    """Group DJA-named files of a folder: ``(field, {kind: path}, {band: {kind: path}})``."""
    names = _list_dir(str(path), storage_options)
    det_re = re.compile(_DET_RE.format(det=re.escape(detection)), re.IGNORECASE)
    det_files: dict[str, dict[str, str]] = {}
    band_files: dict[str, dict[str, dict[str, str]]] = {}
    for full in names:
        base = full.rstrip("/").rsplit("/", 1)[-1]
        m = det_re.match(base)
        if m:
            det_files.setdefault(m["field"], {})[m["kind"].lower()] = full
            continue
        m = _BAND_RE.match(base)
        if m:
            band_files.setdefault(m["field"], {}).setdefault(
                m["band"].upper(), {})[m["kind"].lower()] = full
    fields = sorted(set(det_files) | set(band_files))
    if field is None:
        if len(fields) != 1:
            raise InputError(f"{path}: found DJA files of {len(fields) or 'no'} fields "
                             f"{fields if fields else ''}; name one with field=".rstrip())
        field = fields[0]
    if field not in det_files:
        raise InputError(f"{path}: no detection image {field}-{detection}_drc_sci.fits[.gz]")
    return field, det_files[field], band_files.get(field, {})


def _list_dir(path: str, storage_options: dict | None) -> list[str]:
    if is_remote(path):
        import fsspec
        fs, root = fsspec.core.url_to_fs(path, **(storage_options or {}))
        protocol = path.split("://", 1)[0]
        return [f"{protocol}://{p}" for p in fs.ls(root, detail=False)]
    folder = Path(path)
    if not folder.is_dir():
        raise InputError(f"{path}: not a folder")
    return [str(p) for p in sorted(folder.iterdir())]


def _read_header(path: str, cache_dir, storage_options) -> fits.Header:
    local = local_fits(path, cache_dir, storage_options)
    try:
        with fits.open(local, memmap=True) as hdul:
            return _image_hdu(hdul, path).header.copy()
    except InputError:
        raise
    except Exception as exc:  # astropy raises many kinds on corrupt files
        raise InputError(f"{path}: not a readable FITS file ({exc})") from exc


def _pixels(hdu):
    """What to slice for a window: the memory map of an uncompressed image
    (one slice; ``section`` reads it row by row, 20 ms for a 150 px star
    window), the section of a tile-compressed one (``data`` would decode all
    of it), or None for a scaled one (BSCALE/BZERO/BLANK: not mappable)."""
    if isinstance(hdu, fits.CompImageHDU):
        return hdu.section
    try:
        return hdu.data
    except ValueError:
        return None


def _image_hdu(hdul, path: str):
    for hdu in hdul:
        if hdu.is_image and hdu.header.get("NAXIS", 0) == 2:
            return hdu
    raise InputError(f"{path}: no 2-D image HDU")


def _celestial_wcs(header: fits.Header, path: str) -> WCS:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            wcs = WCS(header).celestial
        except Exception as exc:
            raise InputError(f"{path}: invalid WCS ({exc})") from exc
    if not wcs.has_celestial or wcs.naxis != 2 or "" in wcs.wcs.ctype:
        raise InputError(f"{path}: no celestial WCS in the header (CTYPE1/2, CRVAL, CD/CDELT)")
    return wcs


def _weight_name(sci_path: str) -> str:
    return Path(str(sci_path)).name.replace("_sci.", "_wht.")


def _band_from_name(path: str) -> str:
    m = _BAND_RE.match(Path(str(path)).name)
    if not m:
        raise InputError(f"{path}: no FILTER keyword and no band in the file name")
    return m["band"].upper()


def _missing(path, field, what) -> str:
    raise InputError(f"{path}: no science image for {what} of field {field!r}")


def _pivot(band: str) -> float | None:
    try:
        from ..bands import pivot_wavelength
    except ImportError:  # band table not available: priors needing it will say so
        return None
    try:
        return float(pivot_wavelength(band))
    except (KeyError, ValueError):
        return None


def _pivot_key(band: str) -> tuple:
    wl = _pivot(band)
    return (wl if wl is not None else float(re.sub(r"\D", "", band) or 0) / 100.0, band)
