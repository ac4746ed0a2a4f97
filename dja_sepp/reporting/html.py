"""``report/index.html``: one static page, opened from disk with no server.

Plain HTML and inline CSS (no script, no external resource); every image is
a PNG beside the page, referenced by a relative path, so the folder can be
moved or copied as a whole.
"""
from __future__ import annotations

import html
from datetime import datetime, timezone
from typing import Iterable

from .figures import Skipped
from .flags import FLAG_NAMES

__all__ = ["render_page", "run_summary_rows", "psf_rows"]

_CSS = """
body { font-family: sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.5em 0; } td, th { border: 1px solid #ccc;
padding: 2px 8px; text-align: right; } th { background: #f3f3f3; } td.l, th.l { text-align: left; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #555; } p.skipped { color: #a60; }
.bad { color: #b00; font-weight: bold; }
"""


def _e(value) -> str:
    return html.escape(str(value))


def _table(header: list[str], rows: Iterable[list], left: int = 1) -> str:
    out = ["<table><tr>" + "".join(
        f"<th class='l'>{_e(h)}</th>" if i < left else f"<th>{_e(h)}</th>"
        for i, h in enumerate(header)) + "</tr>"]
    for row in rows:
        out.append("<tr>" + "".join(
            f"<td class='l'>{c}</td>" if i < left else f"<td>{c}</td>"
            for i, c in enumerate(row)) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def run_summary_rows(run) -> list[list[str]]:
    """(item, value) rows of the run summary: tiles, timings, sources,
    duplicates, dropped and unusable bands."""
    s = run.summary or {}
    rows = []
    n_tiles, n_ok = s.get("n_tiles"), s.get("n_ok")
    failed = s.get("failed") or {}
    state = "complete" if s.get("complete") else "<span class='bad'>INCOMPLETE</span>"
    rows.append(["tiles ok / total", f"{_e(n_ok)} / {_e(n_tiles)} ({state}); "
                                     f"{_e(s.get('n_reused', 0))} reused"])
    for tile, reason in failed.items():
        rows.append([f"failed tile {_e(tile)}", f"<span class='bad'>{_e(reason)}</span>"])
    merge = s.get("merge") or {}
    if merge:
        rows.append(["sources (primary catalog)", _e(merge.get("n_output"))])
        rows.append(["duplicates removed", _e(merge.get("n_duplicates"))])
    for model, cat in run.catalogs.items():
        rows.append([f"rows of {_e(model)}", _e(len(cat))])
    timings = s.get("timings") or {}
    for key in ("setup", "tiles", "merge", "mosaic", "total", "tile_fit", "tile_total"):
        if key in timings:
            rows.append([f"time {key} (s)", f"{float(timings[key]):.1f}"])
    dropped = {}
    for tile, status in sorted(run.tiles.items()):
        for band in (status.get("dropped_bands") or {}):
            dropped.setdefault(band, []).append(tile)
    for band, tiles in dropped.items():
        rows.append([f"band {_e(band)} dropped", f"in {len(tiles)} tile(s): {_e(', '.join(tiles))}"])
    for band, reason in (s.get("unusable_bands") or {}).items():
        rows.append([f"band {_e(band)} unusable", f"<span class='bad'>{_e(reason)}</span>"])
    noise = s.get("noise_correlation") or {}
    if noise:
        rows.append(["noise correlation factor", _e(", ".join(f"{b} {v}" for b, v in noise.items()))])
    return rows


def psf_rows(run) -> list[list[str]]:
    """Per band: PSF file, and from ``psf/summary.json`` (PSFs built by the
    run) the FWHM, stars used and the stamp's share of the light."""
    built = {}
    if run.store.exists("psf/summary.json"):
        try:
            built = run.store.read_json("psf/summary.json").get("bands") or {}
        except ValueError:
            built = {}
    files = run.record.get("psf_files") or {}
    rows = []
    for band in run.bands:
        info = built.get(band) or {}

        def num(key, fmt):
            value = info.get(key)
            return format(float(value), fmt) if isinstance(value, (int, float)) else ""
        rows.append([_e(band), _e(str(files.get(band, ""))[-60:]), num("fwhm_arcsec", ".3f"),
                     _e(info.get("n_stars", "")), num("ee_fraction", ".3f")])
    return rows


def _match_rows(mp) -> list[list[str]]:
    rows = []
    n_base = len(mp.base)
    for model, match in mp.matches.items():
        counts = mp.flag_counts(model)
        frac_ours = match.n / match.n_right if match.n_right else float("nan")
        frac_base = match.n / n_base if n_base else float("nan")
        rows.append([_e(model), match.n_right, n_base, match.n, f"{frac_ours:.3f}",
                     f"{frac_base:.3f}", match.n_candidates - match.n,
                     *[counts[f] for f in sorted(FLAG_NAMES)]])
    return rows


def _figure(item) -> str:
    if isinstance(item, Skipped):
        return f"<p class='skipped'>{_e(item.title)}: left out, {_e(item.reason)}.</p>"
    return (f"<figure><img src='{_e(item.name)}' alt='{_e(item.title)}'>"
            f"<figcaption><b>{_e(item.title)}.</b> {_e(item.caption)}</figcaption></figure>")


def render_page(run, mp, sections: list[tuple[str, list]], files: dict[str, str]) -> str:
    """The HTML text of ``index.html``.

    Parameters
    ----------
    run : RunInfo
    mp : MorphoPhot
    sections : list of (title, [Figure | Skipped])
        Figures in page order.
    files : dict
        label -> relative path of files written beside the page.
    """
    base = "the DJA catalog" if mp.base_kind == "dja" else "our primary catalog (no DJA catalog given)"
    band = str(mp.settings["limit_band"]).upper()
    if mp.limit is None:
        limit = f"; no {band} magnitude limit for field {_e(run.field)} (report.field_limits)"
    elif band not in run.bands:
        limit = f"; the run has no {band} band, so its limit {mp.limit:g} does not apply"
    else:
        limit = f", or MAG_MODEL_{band} fainter than {mp.limit:g} ({_e(mp.limit_key)})"
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>dja-sepp report: {_e(run.field)}</title><style>{_CSS}</style></head><body>",
        f"<h1>dja-sepp report: field {_e(run.field)}</h1>",
        f"<p>Run <code>{_e(run.store.root)}</code>; models {_e(', '.join(run.catalogs))}; bands "
        f"{_e(', '.join(run.bands))}. Made "
        f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M')} UTC.</p>",
        "<h2 id='summary'>Run summary</h2>",
        _table(["item", "value"], run_summary_rows(run), left=2),
        "<h2 id='matching'>Cross-match and flags</h2>",
        f"<p>Every model's catalog is matched one-to-one (no source claimed twice) to {base} "
        f"within {float(mp.settings['match_radius']):g}\". Flags: 0 not fitted (unmatched), "
        f"1 artefact, 2 good, 3 faint / low S/N (flux_auto &lt; {float(mp.settings['snr_min']):g} "
        f"fluxerr_auto{limit}).</p>",
        _table(["model", "our rows", "base rows", "matched", "of ours", "of base",
                "pairs not chosen", *[f"flag {f}" for f in sorted(FLAG_NAMES)]], _match_rows(mp)),
    ]
    if mp.between:
        primary = next(iter(mp.models))
        parts.append(_table(["model", f"matched to {primary}", "rows", f"rows of {primary}"],
                            [[_e(m), x.n, x.n_right, x.n_left] for m, x in mp.between.items()]))
    if files:
        parts.append("<p>Files: " + ", ".join(f"<a href='{_e(p)}'>{_e(label)}</a>"
                                              for label, p in files.items()) + "</p>")
    for title, items in sections:
        parts.append(f"<h2>{_e(title)}</h2>")
        if title.startswith("Tiling, PSFs"):
            parts.append(_table(["band", "PSF file", "FWHM (arcsec)", "stars", "EE in stamp"],
                                psf_rows(run), left=2))
        parts += [_figure(item) for item in items]
    parts.append("</body></html>")
    return "\n".join(parts)
