"""Package layout rules that keep the data flow one-way."""
import ast
from pathlib import Path

import dja_sepp

PKG = Path(dja_sepp.__file__).parent


def _imports(path: Path) -> set[str]:
    """Modules imported by ``path`` (relative imports resolved to dja_sepp.*)."""
    tree = ast.parse(path.read_text())
    here = ".".join(path.relative_to(PKG.parent).with_suffix("").parts[:-1])
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = here.split(".")[:len(here.split(".")) - node.level + 1] if node.level else []
            out.add(".".join(base + ([node.module] if node.module else [])))
    return out


def test_reading_and_detection_never_import_the_fitting_code():
    for sub in ("io", "detect"):
        for path in (PKG / sub).glob("*.py"):
            fit = {m for m in _imports(path) if m.startswith("dja_sepp.fit")}
            assert not fit, f"{path.name} imports {fit}"


def test_band_cutouts_are_defined_where_they_are_made():
    from dja_sepp.fit.base import BandCutout
    assert BandCutout.__module__ == "dja_sepp.io.cutout"


def test_library_code_never_switches_the_matplotlib_backend():
    offenders = [p.name for p in PKG.rglob("*.py")
                 if "matplotlib.use(" in p.read_text() or "import matplotlib.pyplot" in p.read_text()]
    assert offenders == []


def test_the_psf_figure_leaves_the_callers_backend_alone():
    import matplotlib
    import numpy as np
    from astropy.table import Table

    from dja_sepp.psf.base import ImagePSF
    from dja_sepp.psf.builder import _summary_png
    before = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        psf = ImagePSF(np.outer(np.hanning(15), np.hanning(15)), 0.04, 1, "F200W")
        png = _summary_png({"F200W": psf}, Table({"MAG_AUTO": [20.0, 21.0], "MU_MAX": [17.0, 18.0]}))
        assert png[:4] == b"\x89PNG"
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)
