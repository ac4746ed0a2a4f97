"""NIRCam band facts: pivot wavelengths and the DJA pixel grid of each band."""
from __future__ import annotations

__all__ = ["PIVOT_MICRON", "pivot_wavelength", "native_pixel_scale", "is_short_wave"]

#: Pivot wavelengths (micron) of NIRCam filters (JWST user documentation values).
PIVOT_MICRON: dict[str, float] = {
    "F070W": 0.704, "F090W": 0.901, "F115W": 1.154, "F140M": 1.404, "F150W": 1.501,
    "F162M": 1.626, "F182M": 1.845, "F200W": 1.990, "F210M": 2.093, "F250M": 2.503,
    "F277W": 2.786, "F300M": 2.996, "F335M": 3.365, "F356W": 3.563, "F360M": 3.621,
    "F410M": 4.092, "F430M": 4.280, "F444W": 4.421, "F460M": 4.624, "F480M": 4.834,
}


def pivot_wavelength(band: str) -> float:
    """Pivot wavelength of ``band`` in micron.

    Raises
    ------
    KeyError
        For a band that is not in :data:`PIVOT_MICRON`.
    """
    try:
        return PIVOT_MICRON[band.upper()]
    except KeyError:
        raise KeyError(f"unknown band {band!r}; known: {sorted(PIVOT_MICRON)}") from None


def is_short_wave(band: str) -> bool:
    """NIRCam short-wave channel (below 2.4 micron)."""
    return pivot_wavelength(band) < 2.4


def native_pixel_scale(band: str) -> float:
    """DJA mosaic pixel scale (arcsec): 0.02 for short-wave, 0.04 for long-wave."""
    return 0.02 if is_short_wave(band) else 0.04
