"""Model and residual mosaics of a run: the merged catalog rendered per band.

``mosaic.zarr`` (zarr v3) holds one group per band with two float32 arrays,
``model`` and ``residual`` (data - model), on the band's own grid, dims
``(y, x)`` (0-based pixels of the band mosaic; sky coordinates through the
FITS WCS header stored in the group attributes under ``wcs``). A chunk is
one tile core on that grid and is written by exactly one task, which renders
every merged-catalog source whose light reaches the core (sources owned by
neighbouring tiles included), so the mosaic has no trace of the tiling: it
equals a render of the whole catalog onto the whole field.

Open a band with ``xarray.open_zarr(url, group="F444W")``; export FITS with
:func:`export_fits` (chunk row by chunk row, bounded memory).
"""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from astropy.io import fits
from astropy.table import Table

from .deploy.env import tune_allocator
from .fit.base import BandCutout, get_engine
from .io.field import Field, Image
from .psf import load_psf
from .tiling import Tile, TileGrid

__all__ = ["build_mosaics", "render_core", "export_fits", "open_band", "quicklook"]

#: Reach of a source's light beyond its position (band pixels): the renderer's
#: largest stamp half-width plus the PSF kernel reach.
REACH = 250 + 150


def _open_group(url: str, mode: str, storage_options: dict | None):
    import zarr
    return zarr.open_group(url, mode=mode, storage_options=storage_options or None) \
        if "://" in url else zarr.open_group(url, mode=mode)


def create_store(url: str, field: Field, grid: TileGrid, storage_options: dict | None = None):
    """Empty ``model`` / ``residual`` arrays per band, one chunk per core."""
    root = _open_group(url, "w", storage_options)
    for band, image in field.bands.items():
        group = root.create_group(band)
        group.attrs.update({"band": band, "pixel_scale": image.pixel_scale,
                            "zeropoint": image.zeropoint, "unit": image.unit or "",
                            "wcs": dict(image.wcs.to_header(relax=True))})
        for name in ("model", "residual"):
            group.create_array(name, shape=image.shape, chunks=grid.chunks_on(image.factor),
                               dtype="float32", fill_value=np.nan, dimension_names=("y", "x"))
    return root


def _sources_near(catalog: Table, image: Image, window: tuple[slice, slice]) -> Table:
    """Catalog rows whose model light can reach ``window`` of ``image``."""
    if "RA_MODEL" not in catalog.colnames:  # a field without sources merges to a bare table
        return catalog[:0]
    ra, dec = np.asarray(catalog["RA_MODEL"], float), np.asarray(catalog["DEC_MODEL"], float)
    ok = np.isfinite(ra) & np.isfinite(dec)
    x = np.full(len(catalog), np.nan)
    y = np.full(len(catalog), np.nan)
    x[ok], y[ok] = image.wcs.world_to_pixel_values(ra[ok], dec[ok])
    near = ok & (x > window[1].start - REACH) & (x < window[1].stop + REACH) \
        & (y > window[0].start - REACH) & (y < window[0].stop + REACH)
    return catalog[near]


def render_core(url: str, tile: Tile, image: Image, catalog: Table, psf_path: str, model: str,
                engine: str = "builtin", storage_options: dict | None = None,
                model_dirs: tuple[str, ...] = ()) -> dict:
    """Render one tile core of one band and write its chunk of both arrays
    (``model_dirs``: the run's ``fit.model_dirs``, searched for ``model``)."""
    from .settings import use_model_dirs
    use_model_dirs(model_dirs)
    tune_allocator()
    window = tile.core_on(image.factor)
    psf = load_psf(psf_path, band=image.band, pixel_scale=image.pixel_scale,
                   storage_options=image.storage_options)
    cut: BandCutout = image.cutout(window, psf=psf)
    rows = _sources_near(catalog, image, window)
    model_img = get_engine(engine).render(rows, cut, model) if len(rows) else \
        np.zeros(cut.sci.shape, np.float32)
    residual = np.where(cut.wht > 0, cut.sci - model_img, np.nan).astype(np.float32)
    group = _open_group(url, "r+", storage_options)[image.band]
    group["model"][window] = model_img.astype(np.float32)
    group["residual"][window] = residual
    return {"tile": tile.id, "band": image.band, "n_sources": len(rows)}


def build_mosaics(root: str, field: Field, grid: TileGrid, catalog: Table,
                  psf_paths: Mapping[str, str], model: str, engine: str = "builtin",
                  client: Any = None, storage_options: dict | None = None,
                  model_dirs: tuple[str, ...] = ()) -> str:
    """Render ``catalog`` into ``{root}/mosaic.zarr``; one task per (tile, band).

    With a ``distributed`` client the tasks run on the cluster (the catalog is
    scattered once); without, in this process. Returns the store URL.
    """
    url = f"{str(root).rstrip('/')}/mosaic.zarr"
    create_store(url, field, grid, storage_options)
    jobs = [(tile, image) for tile in grid.tiles for image in field.bands.values()]
    if client is None:
        for tile, image in jobs:
            render_core(url, tile, image, catalog, psf_paths[image.band], model, engine,
                        storage_options, model_dirs)
        return url
    from distributed import as_completed
    from .progress import bar
    cat = client.scatter(catalog, broadcast=True, hash=False)
    token = uuid.uuid4().hex[:8]   # never reuse a key an earlier run may still hold
    futures = [client.submit(render_core, url, tile, image, cat, psf_paths[image.band], model,
                             engine, storage_options, tuple(model_dirs),
                             key=f"mosaic-{tile.id}-{image.band}-{token}",
                             pure=False)
               for tile, image in jobs]
    # one chunk = one tile core of one band (shown when dja_sepp.progress.shown is on)
    with bar(total=len(futures), desc="mosaic", unit="chunk") as chunks:
        for _ in as_completed(futures):
            chunks.update(1)
    errors = [f for f in futures if f.status != "finished"]
    if errors:
        raise RuntimeError(f"{url}: {len(errors)} mosaic chunk(s) failed, first: {errors[0].exception()!r}")
    return url


def open_band(url: str, band: str, storage_options: dict | None = None):
    """The ``model`` / ``residual`` arrays of ``band`` as an xarray Dataset."""
    import xarray as xr
    return xr.open_zarr(url, group=band, storage_options=storage_options, consolidated=False,
                        zarr_format=3)


def export_fits(url: str, band: str, out_dir: str | Path, storage_options: dict | None = None
                ) -> list[Path]:
    """Write ``{band}_model.fits`` and ``{band}_residual.fits`` with the band's
    WCS, streamed one chunk row at a time (memory: one row of chunks)."""
    group = _open_group(url, "r", storage_options)[band]
    wcs_cards = dict(group.attrs["wcs"])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in ("model", "residual"):
        arr = group[name]
        header = fits.Header()
        header["SIMPLE"], header["BITPIX"], header["NAXIS"] = True, -32, 2
        header["NAXIS1"], header["NAXIS2"] = arr.shape[1], arr.shape[0]
        header.update(wcs_cards)
        header["FILTER"], header["EXTNAME"] = band, name.upper()
        if group.attrs.get("unit"):
            header["BUNIT"] = (group.attrs["unit"], "pixel unit of the band mosaic")
        header["MAGZERO"] = (float(group.attrs["zeropoint"]), "AB zero point of the pixel unit")
        path = out_dir / f"{band}_{name}.fits"
        stream = fits.StreamingHDU(path, header)
        step = arr.chunks[0]
        for y0 in range(0, arr.shape[0], step):
            stream.write(np.ascontiguousarray(arr[y0:y0 + step, :], dtype=">f4"))
        stream.close()
        paths.append(path)
    return paths


def _strided(arr, step: int) -> np.ndarray:
    return np.asarray(arr[::step, ::step], dtype=np.float32)


def _steps(group, bands: list[str], max_side: int) -> dict[str, int]:
    """Strides giving every band the same coarse grid (0.02" bands twice the
    stride of 0.04" ones), at most ``max_side`` pixels on a side."""
    scales = {b: float(group[b].attrs["pixel_scale"]) for b in bands}
    coarse = max(scales.values())
    factors = {b: max(1, int(round(coarse / s))) for b, s in scales.items()}
    side = max(max(group[b]["model"].shape) / factors[b] for b in bands)
    base = max(1, int(np.ceil(side / max_side)))
    return {b: base * factors[b] for b in bands}


def quicklook(url: str, store, bands: list[str], storage_options: dict | None = None,
              max_side: int = 1500) -> list[str]:
    """``mosaic_{band}.png`` (data / model / residual, one stretch) per band and
    ``mosaic_rgb.png`` (data of the reddest, middle and bluest bands), read
    with strides so memory stays bounded on any field size."""
    import io

    # Figures of their own (no pyplot): never switches the caller's backend
    from matplotlib.figure import Figure
    from astropy.visualization import ImageNormalize, AsinhStretch, make_lupton_rgb
    group = _open_group(url, "r", storage_options)
    steps = _steps(group, bands, max_side)
    written, data_by_band = [], {}
    for band in bands:
        model = _strided(group[band]["model"], steps[band])
        resid = _strided(group[band]["residual"], steps[band])
        data = model + resid
        data_by_band[band] = data
        finite = data[np.isfinite(data)]
        sigma = 1.4826 * np.median(np.abs(resid[np.isfinite(resid)])) if finite.size else 1.0
        norm = ImageNormalize(vmin=-3 * sigma, vmax=max(np.percentile(finite, 99.5) if finite.size else 1, sigma),
                              stretch=AsinhStretch(0.02))
        fig = Figure(figsize=(15, 5.4))
        axes = fig.subplots(1, 3)
        for ax, img, title in zip(axes, (data, model, resid), ("data", "model", "residual")):
            ax.imshow(img, origin="lower", cmap="gray_r", norm=norm, interpolation="nearest")
            ax.set_title(f"{band} {title}")
            ax.set_xticks([])
            ax.set_yticks([])
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90)
        written.append(store.write_bytes(f"mosaic_{band}.png", buf.getvalue()))
    if len(bands) >= 3:
        picks = [bands[-1], bands[len(bands) // 2], bands[0]]   # red, green, blue (bands bluest first)
        side = min(min(data_by_band[b].shape) for b in picks)
        rgb = [np.nan_to_num(data_by_band[b][:side, :side]) for b in picks]
        scale = max(float(np.percentile(np.concatenate([c.ravel() for c in rgb]), 99.5)), 1e-6)
        image = make_lupton_rgb(*rgb, stretch=scale / 2, Q=8)
        fig = Figure(figsize=(7, 7))
        ax = fig.subplots()
        ax.imshow(image, origin="lower")
        ax.set_title(" / ".join(picks))
        ax.axis("off")
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        written.append(store.write_bytes("mosaic_rgb.png", buf.getvalue()))
    return written
