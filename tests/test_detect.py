"""Detection: agreement with SExtractor on a real image, and synthetic checks."""
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from dja_sepp.detect import DETECTION_COLUMNS, detect_sources
from dja_sepp.fit.base import BandCutout
from fieldfiles import tan_wcs

DATA = Path(__file__).parent / "data" / "ntt_field"
# image.cat columns (see its header)
X, Y, KRON, FAUTO, FAUTO_ERR, FR50 = 1, 2, 14, 15, 16, 18


@pytest.fixture(scope="module")
def ntt():
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        img = fits.getdata(DATA / "image.fits").astype(np.float32)
        rms = fits.getdata(DATA / "rms.fits").astype(np.float32)
    cat = np.loadtxt(DATA / "image.cat", comments="#")
    # the settings of tests/data/ntt_field/default.sex (default.conv = Gaussian FWHM 2 px)
    # SExtractor 2 has neither SE++'s core threshold nor its minimum-area cleaning
    cfg = dict(thresh=1.5, minarea=5, filter_fwhm=2.0, filter_size=3, deblend_nthresh=32,
               deblend_cont=1.0, back_size=64, back_filter_size=3, kron_min_radius=0.0,
               core_minarea=0, clean_minarea=0)
    cut = BandCutout("DET", img, 1.0 / rms ** 2, WCS(naxis=2), pixel_scale=1.0, zeropoint=0.0)
    table, seg = detect_sources(cut, cfg)
    d2 = (table["x"][None, :] - (cat[:, X] - 1)[:, None]) ** 2 \
        + (table["y"][None, :] - (cat[:, Y] - 1)[:, None]) ** 2
    return table, seg, cat, d2.argmin(1), np.sqrt(d2.min(1))


def test_recovers_sextractor_sources(ntt):
    table, seg, cat, j, dist = ntt
    matched = dist < 1.0
    assert matched.all(), f"{(~matched).sum()} SExtractor sources not found"   # measured: 65/65
    assert abs(len(table) - len(cat)) <= 3                                      # measured: 67 vs 65
    assert np.median(dist) < 0.01 and np.percentile(dist, 90) < 0.05            # measured: 2e-5, 0.016 px


def test_auto_photometry_matches_sextractor(ntt):
    table, seg, cat, j, dist = ntt
    with np.errstate(invalid="ignore"):  # one SExtractor row has FLUXERR_AUTO = 0
        bright = cat[:, FAUTO] / cat[:, FAUTO_ERR] > 20
    ratio = np.asarray(table["FLUX_AUTO"])[j[bright]] / cat[bright, FAUTO]
    assert np.median(ratio) == pytest.approx(1.0, abs=0.01)   # measured 1.0000
    # neighbours' pixels are masked here (SExtractor ran with MASK_TYPE NONE)
    assert np.percentile(np.abs(ratio - 1), 80) < 0.05
    kron = np.asarray(table["KRON_RADIUS"])[j[bright]] / cat[bright, KRON]
    fr = np.asarray(table["FLUX_RADIUS"])[j[bright]] / cat[bright, FR50]
    assert np.median(kron) == pytest.approx(1.0, abs=0.02)
    assert np.median(fr) == pytest.approx(1.0, abs=0.02)


def _blobs(positions, fluxes, sigma=1.5, shape=(96, 128), noise=1.0, seed=0):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    img = np.random.default_rng(seed).normal(0, noise, shape)
    for (x, y), f in zip(positions, fluxes):
        img += f / (2 * np.pi * sigma ** 2) * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2))
    return img.astype(np.float32)


# 0.8 sigma over 7 px (the predecessor's setting) also catches noise peaks; the
# synthetic checks want only the injected blobs.
STRICT = {"thresh": 3.0}


def _cut(img, wht=None, origin=(0, 0)):
    wht = np.ones_like(img) if wht is None else wht
    return BandCutout("DETECTION", img, wht.astype(np.float32), tan_wcs(img.shape, 0.04),
                      origin=origin, pixel_scale=0.04, zeropoint=28.9)


def test_synthetic_positions_fluxes_and_mosaic_coordinates():
    pos = [(20.3, 30.7), (70.0, 50.2), (100.6, 20.4)]
    img = _blobs(pos, [800.0, 1500.0, 1000.0])
    table, seg = detect_sources(_cut(img, origin=(100, 200)), STRICT)
    assert list(table.colnames[:len(DETECTION_COLUMNS)]) == list(DETECTION_COLUMNS)
    assert len(table) == 3
    order = np.argsort(table["x"])
    np.testing.assert_allclose(table["x"][order], [p[0] for p in pos], atol=0.15)
    np.testing.assert_allclose(table["X_IMAGE"] - table["x"], 201.0)  # 1-based mosaic pixels
    np.testing.assert_allclose(table["Y_IMAGE"] - table["y"], 101.0)
    np.testing.assert_allclose(table["FLUX_AUTO"][order], [800, 1500, 1000], rtol=0.06)
    assert (seg[np.round(table["y"]).astype(int), np.round(table["x"]).astype(int)]
            == table["SEGMENT_ID"]).all()
    assert np.isfinite(table["RA"]).all() and table["THETA_IMAGE"].unit == "deg"


def test_blend_is_split_and_shares_parent():
    img = _blobs([(60.0, 48.0), (66.0, 48.0), (20.0, 20.0)], [3000.0, 2000.0, 900.0])
    table, seg = detect_sources(_cut(img), STRICT)
    assert len(table) == 3
    pair = table[np.abs(table["y"] - 48) < 3]
    assert len(pair) == 2 and pair["PARENT_ID"][0] == pair["PARENT_ID"][1]
    single = table[np.abs(table["y"] - 20) < 3]
    assert single["PARENT_ID"][0] != pair["PARENT_ID"][0]


def test_zero_weight_and_nans():
    img = _blobs([(40.0, 40.0)], [1000.0])
    empty, seg = detect_sources(_cut(img, wht=np.zeros_like(img)), STRICT)
    assert len(empty) == 0 and seg.shape == img.shape and not seg.any()
    assert empty.colnames == list(DETECTION_COLUMNS)
    img[10:20, 60:90] = np.nan
    wht = np.ones_like(img)
    table, _ = detect_sources(_cut(img, wht), STRICT)
    assert len(table) == 1 and np.isfinite(table["FLUX_AUTO"]).all()


def test_big_endian_input():
    img = _blobs([(40.0, 40.0)], [1000.0]).astype(">f4")
    table, _ = detect_sources(_cut(img, np.ones(img.shape, ">f4")), STRICT)
    assert len(table) == 1


def test_core_threshold_rejects_noise_peaks_and_keeps_real_faint_sources():
    # pure noise at the predecessor's 0.8 sigma / 7 px threshold: many peaks, none with
    # 9 px above 1.5 sigma on the filtered image; a S/N ~ 15 blob keeps its row
    img = _blobs([(64.0, 48.0)], [60.0], sigma=1.5, shape=(192, 256), seed=3)
    bare, _ = detect_sources(_cut(img), {"core_minarea": 0, "clean_minarea": 0})
    table, seg, rejected = detect_sources(_cut(img), {}, return_rejected=True)
    assert len(bare) > 10                       # the noise peaks sep finds alone
    assert len(table) == 1 and abs(table["x"][0] - 64) < 1 and abs(table["y"][0] - 48) < 1
    assert len(rejected) == len(bare) - 1
    assert set(rejected["REJECT_REASON"]) == {"core_threshold"}
    assert (rejected["MERGED_INTO"] == 0).all()
    assert set(np.unique(seg)) == {0, 1}        # rejected segments are background again


def test_cleaning_merges_small_fragment_into_bright_sibling():
    # a lump on the wing of a bright source is deblended (contrast 1e-4); SE++'s
    # cleaning merges a child keeping fewer than clean_minarea pixels above its
    # sibling's Moffat wings (its 41 px segment: merged at 60, kept at 15)
    from dja_sepp.detect import DetectionFlag
    img = _blobs([(60.0, 48.0)], [40000.0], sigma=3.0, noise=0.2, seed=1)
    img += _blobs([(72.0, 48.0)], [1000.0], sigma=1.5, noise=0.0)
    cfg = {"thresh": 3.0}
    split, _ = detect_sources(_cut(img), {**cfg, "clean_minarea": 15})
    table, seg, rejected = detect_sources(_cut(img), {**cfg, "clean_minarea": 60}, return_rejected=True)
    assert len(split) == 2
    assert len(table) == 1 and list(rejected["REJECT_REASON"]) == ["cleaned"]
    assert abs(rejected["x"][0] - 72) < 1
    assert rejected["MERGED_INTO"][0] == table["SEGMENT_ID"][0]
    assert table["FLAGS_DET"][0] & DetectionFlag.ABSORBED_FRAGMENTS
    # the host's isophote holds the fragment's pixels now
    assert table["NPIX"][0] == np.count_nonzero(seg == 1) == sum(split["NPIX"])


def test_low_snr_and_near_bright_flags():
    from dja_sepp.detect import DetectionFlag
    img = _blobs([(30.0, 48.0), (100.0, 70.0), (42.0, 48.0)], [60000.0, 100.0, 600.0], seed=2)
    table, _ = detect_sources(_cut(img), {"snr_doubtful": 12.0})
    assert len(table) == 3
    faint = table[np.argmin(np.abs(table["x"] - 100))]
    near = table[np.argmin(np.abs(table["x"] - 42))]
    bright = table[np.argmin(np.abs(table["x"] - 30))]
    assert faint["FLAGS_DET"] & DetectionFlag.LOW_SNR
    assert near["FLAGS_DET"] & DetectionFlag.NEAR_BRIGHT       # 12 px = 0.48" from a 4.4 mag brighter one
    assert not bright["FLAGS_DET"] & (DetectionFlag.NEAR_BRIGHT | DetectionFlag.LOW_SNR)


@pytest.mark.parametrize("width", [1.5, 2.0, 3.0])
def test_noise_correlation_factor_of_drizzle_like_noise(width):
    from dja_sepp.detect.noise import box_sum_ratio, noise_correlation
    from dja_sepp.sim.noise import correlated_normal, noise_correlation_factor
    rng = np.random.default_rng(4)
    img = correlated_normal(rng, (512, 512), width)
    wht = np.ones_like(img)
    expected = noise_correlation_factor(width)            # 2.0, 2.67, 3.0
    assert noise_correlation(img, wht) == pytest.approx(expected, rel=0.03)
    # the empty-aperture check of the same thing (15 px boxes; edge losses of a few %)
    assert box_sum_ratio(img, wht, 15) == pytest.approx(expected, rel=0.15)
    assert noise_correlation(rng.normal(size=(512, 512)), wht) < 1.03   # white noise


def test_detection_errors_include_correlated_noise():
    from dja_sepp.sim.noise import correlated_normal, noise_correlation_factor
    img = _blobs([(64.0, 64.0)], [3000.0], shape=(256, 256), noise=0.0)
    img += correlated_normal(np.random.default_rng(5), img.shape, 2.0).astype(np.float32)
    plain, _ = detect_sources(_cut(img), {"noise_correlation": False, "thresh": 3.0})
    table, _ = detect_sources(_cut(img), {"thresh": 3.0})
    factor = table.meta["NOISECOR"]
    assert factor == pytest.approx(noise_correlation_factor(2.0), rel=0.05)
    src = np.argmin(np.hypot(table["x"] - 64, table["y"] - 64))
    ref = np.argmin(np.hypot(plain["x"] - 64, plain["y"] - 64))
    assert table["FLUXERR_AUTO"][src] == pytest.approx(factor * plain["FLUXERR_AUTO"][ref], rel=1e-3)


def test_apertures_accept_what_sep_measured():
    """sep stores theta in float32; the float32 nearest pi/2 lies above pi/2
    and sep's own aperture functions refused it ("invalid aperture
    parameters": one tile of a benchmark field failed). Degenerate a, b too."""
    import sep
    from dja_sepp.detect.extract import _ellipse
    objects = np.zeros(3, dtype=[("a", "f4"), ("b", "f4"), ("theta", "f4")])
    objects["a"] = [2.0, 0.0, 3.0]
    objects["b"] = [0.3, np.nan, 4.0]
    objects["theta"] = [np.float32(np.pi / 2), 0.1, -np.float32(np.pi / 2)]
    data = np.ones((50, 50))
    x = y = np.full(3, 25.0)
    with pytest.raises(Exception, match="invalid aperture parameters"):
        sep.sum_ellipse(data, x, y, objects["a"].astype(float), objects["b"].astype(float),
                        objects["theta"].astype(float), np.full(3, 2.5))
    a, b, theta = _ellipse(objects)
    flux, _, _ = sep.sum_ellipse(data, x, y, a, b, theta, np.full(3, 2.5))
    assert np.all(flux > 0) and np.all(b <= a) and np.all(np.abs(theta) <= np.pi / 2)
