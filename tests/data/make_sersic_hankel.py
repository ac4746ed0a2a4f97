"""Write sersic_hankel.txt: GalSim's transforms of unit Sersic profiles.

tests/test_render.py compares the renderer with the exact transform of the
profile on a grid of shapes; these transforms come from GalSim and take
seconds to minutes, hence this stored table. Up to n = 6.2 they are
``galsim.Sersic.kValue``; GalSim's Sersic stops there, so n = 8 comes from
GalSim's general Hankel integrator (Ogata's method, which agrees with
``Sersic.kValue`` to 1e-7 where both exist; tests/test_render.py checks it).

Columns: kappa (radians per half-light radius), then F(kappa) for each n in
``NS``, the transform of the circular profile of unit flux and unit
half-light radius.

Usage: python tests/data/make_sersic_hankel.py
"""
from pathlib import Path

import galsim
import numpy as np
from scipy import special

NS = (4.0, 6.2, 8.0)
KAPPA = np.concatenate([[0.0], np.geomspace(1e-3, 150.0, 400)])


def unit_sersic(n: float):
    """Intensity times 2 pi of the unit Sersic: ``F = int f(r) J0(k r) r dr``."""
    b = special.gammaincinv(2 * n, 0.5)
    log_norm = np.log(2 * np.pi * n) + b - 2 * n * np.log(b) + special.gammaln(2 * n)
    return lambda r: 2 * np.pi * np.exp(-b * (np.asarray(r) ** (1 / n) - 1) - log_norm)


def transform(n: float) -> np.ndarray:
    if n <= 6.2:
        prof = galsim.Sersic(n=n, half_light_radius=1.0, gsparams=galsim.GSParams(kvalue_accuracy=1e-8))
        return np.array([prof.kValue(k, 0.0).real for k in KAPPA])
    return galsim.integ.hankel(unit_sersic(n), KAPPA, rel_err=1e-8, abs_err=1e-11)


if __name__ == "__main__":
    cols = [KAPPA] + [transform(n) for n in NS]
    np.savetxt(Path(__file__).with_name("sersic_hankel.txt"), np.column_stack(cols), fmt="%.17g",
               header="kappa " + " ".join(f"F(n={n:g})" for n in NS) + "  (GalSim, unit Sersic)")
