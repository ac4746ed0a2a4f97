"""Science products (issue 15): DJA cross-match, flags, morpho-phot table, figures, HTML."""
from __future__ import annotations

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
import astropy.units as u
from astropy.io import fits
from astropy.table import Table

import dja_sepp
from dja_sepp.cli import main
from dja_sepp.io.cache import InputError
from dja_sepp.reporting.crossmatch import match_one_to_one
from dja_sepp.reporting.flags import field_limit
from dja_sepp.settings import ConfigError, load_config
from reportdata import make_run


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("report"))


@pytest.fixture(scope="module")
def with_dja(made):
    result = dja_sepp.report(str(made["run"]), str(made["phot"]), str(made["zout"]))
    return result, fits.open(result.morpho_phot)


@pytest.fixture(scope="module")
def without_dja(made, tmp_path_factory):
    out = tmp_path_factory.mktemp("report_alone")
    result = dja_sepp.report(str(made["run"]), out=str(out))
    return result, fits.open(result.morpho_phot)


# --- one-to-one matching -------------------------------------------------------------------

def test_match_is_one_to_one_and_closest_first():
    # two of ours 0.05" and 0.1" from one DJA source; a nearest-neighbour match gives both to it
    dja_ra, dja_dec = np.array([10.0, 10.0 + 0.2 / 3600]), np.zeros(2)
    our_ra, our_dec = np.array([10.0 + 0.05 / 3600, 10.0 - 0.1 / 3600]), np.zeros(2)
    nearest = SkyCoord(our_ra * u.deg, our_dec * u.deg).match_to_catalog_sky(
        SkyCoord(dja_ra * u.deg, dja_dec * u.deg))[0]
    assert list(nearest) == [0, 0]                     # the predecessor's many-to-one
    m = match_one_to_one(dja_ra, dja_dec, our_ra, our_dec, 0.3)
    pairs = sorted(zip(m.left.tolist(), m.right.tolist()))
    assert pairs == [(0, 1), (1, 0)] or pairs == [(0, 0), (1, 1)]
    # shortest first: (DJA 0, ours 0) at 0.05" is taken, ours 1 is 0.3" from DJA 1 -> no
    m = match_one_to_one(dja_ra, dja_dec, our_ra, our_dec, 0.25)
    assert sorted(zip(m.left.tolist(), m.right.tolist())) == [(0, 0)]


def test_match_random_fields_properties():
    rng = np.random.default_rng(3)
    for _ in range(5):
        a = rng.uniform(0, 10, (2, 300)) / 3600
        b = rng.uniform(0, 10, (2, 280)) / 3600
        b[:, :5] = np.nan                              # non-finite positions never match
        m = match_one_to_one(a[0], a[1], b[0], b[1], 0.4)
        assert len(set(m.left)) == m.n and len(set(m.right)) == m.n
        assert (m.sep <= 0.4 + 1e-9).all() and not set(m.right) & set(range(5))
        # maximal: no pair within the radius with both sides left over
        left = np.setdiff1d(np.arange(300), m.left)
        right = np.setdiff1d(np.arange(5, 280), m.right)
        ca = SkyCoord(a[0][left] * u.deg, a[1][left] * u.deg)
        cb = SkyCoord(b[0][right] * u.deg, b[1][right] * u.deg)
        if len(left) and len(right):
            assert ca.match_to_catalog_sky(cb)[1].arcsec.min() > 0.4


# --- the morpho-phot table with DJA ---------------------------------------------------------

def test_morpho_phot_layout(with_dja, made):
    result, hdul = with_dja
    assert result.morpho_phot.endswith("report/gds_morpho-phot.fits")
    assert [h.name for h in hdul] == ["PRIMARY", "DJA", "SERSIC_RG4", "B+D"]
    n = made["n_dja"]
    assert all(len(h.data) == n for h in hdul[1:])
    base = Table(hdul["DJA"].data)
    for col in ("id", "ra", "dec", "f277w_tot_1", "flux_auto", "z_phot", "mass", "restU",
                "restV", "restJ", "z_spec"):
        assert col in base.colnames, col
    assert hdul[0].header["MATCHRAD"] == pytest.approx(0.3)
    assert hdul[0].header["MAGLIM"] == pytest.approx(29.93)   # GDS


def test_matched_fraction_and_one_to_one(with_dja, made):
    _, hdul = with_dja
    base = Table(hdul["DJA"].data)
    detected = made["detected"]
    for name in ("SERSIC_RG4", "B+D"):
        t = Table(hdul[name].data)
        ids = np.asarray(t["ID"])
        matched = np.isfinite(ids)
        # no source of ours claimed twice, no DJA row twice (one row each by construction)
        assert len(np.unique(ids[matched])) == matched.sum()
        # every matched pair within the radius, measured independently
        sep = SkyCoord(base["ra"][matched] * u.deg, base["dec"][matched] * u.deg).separation(
            SkyCoord(t["RA"][matched] * u.deg, t["DEC"][matched] * u.deg)).arcsec
        assert sep.max() <= 0.3 and np.allclose(sep, t["MATCH_SEP"][matched], atol=1e-6)
        # detected true sources are matched to their own row of ours (DJA row k = truth row k)
        expect = set(detected.tolist())
        if name == "B+D":   # rows 30-32 of our catalog are missing from B+D
            expect -= set(detected[[30, 31, 32]].tolist())
        assert set(np.flatnonzero(matched).tolist()) == expect
        ours = {int(i) - 1 for i in ids[matched]}
        assert all(int(ids[k]) - 1 == list(detected).index(k) for k in expect)
        # twins (ours) and splits (DJA) left out, not matched twice
        twins = set(range(len(detected), len(detected) + len(made["twins_of"])))
        assert not ours & twins
        assert not matched[made["split_rows"]].any()
    frac = len(detected) / made["n_dja"]
    assert frac == pytest.approx(np.isfinite(hdul["SERSIC_RG4"].data["ID"]).mean())


def test_models_are_matched_to_each_other_one_to_one(with_dja, without_dja, made):
    n = len(made["catalog"])
    for result, _ in (with_dja, without_dja):
        # B+D lacks three rows of the primary catalog; every other row pairs with its own
        assert result.between == {"B+D": n - 3}
        assert "matched to sersic_rg4" in open(result.index).read()


def test_dja_catalogs_as_urls(made, tmp_path):
    import gzip
    gz = tmp_path / "gds_zout.fits.gz"            # compressed, as DJA ships some catalogs
    gz.write_bytes(gzip.compress(made["zout"].read_bytes()))
    result = dja_sepp.report(str(made["run"]), made["phot"].as_uri(), gz.as_uri(),
                             out=str(tmp_path))
    assert result.matched["sersic_rg4"] == len(made["detected"])
    assert "z_phot" in Table.read(result.morpho_phot, hdu="DJA").colnames


def _independent_flags(t: Table, flux, err, limit, kind):
    """The flag rules written out row by row, apart from the package's code."""
    out = []
    for k in range(len(t)):
        if not np.isfinite(t["ID"][k]):
            out.append(0)
            continue
        faint = flux[k] < 3 * err[k] or (limit is not None and t["MAG_MODEL_F277W"][k] > limit)
        if faint:
            out.append(3)
            continue
        fl = int(t["FLAGS"][k]) if np.isfinite(t["FLAGS"][k]) else 0
        bad = fl & (256 | 512 | 2048 | 16384 | 128)
        if kind == "sersic":
            q, n = t["AXRATIO"][k], t["SERSIC"][k]
            good = q < 0.99 and abs(n - 0.36) > 1e-4 and 0.301 < n < 8.35
        else:
            q = t["DISK_AXRATIO"][k]
            good = 0.1001 < q < 0.9999 and abs(q - 0.5) > 1e-5
        out.append(1 if bad or not good else 2)
    return np.array(out)


def test_flags_equal_an_independent_computation(with_dja):
    result, hdul = with_dja
    base = Table(hdul["DJA"].data)
    for name, kind in (("SERSIC_RG4", "sersic"), ("B+D", "bd")):
        t = Table(hdul[name].data)
        expect = _independent_flags(t, base["flux_auto"], base["fluxerr_auto"], 29.93, kind)
        assert (np.asarray(t["flag"]) == expect).all(), name
        counts = {f: int((expect == f).sum()) for f in range(4)}
        assert result.flag_counts["sersic_rg4" if kind == "sersic" else "B+D"] == counts
        assert all(counts[f] > 0 for f in range(4)), counts     # every rule is exercised
        assert hdul[name].header["NFLAG1"] == counts[1]


def test_unmatched_rows_are_nan_with_flag_0(with_dja):
    _, hdul = with_dja
    t = Table(hdul["SERSIC_RG4"].data)
    unmatched = ~np.isfinite(np.asarray(t["ID"]))
    assert unmatched.sum() > 0 and (np.asarray(t["flag"])[unmatched] == 0).all()
    for col in ("RA", "MAG_MODEL_F444W", "SERSIC", "RADIUS", "FLAGS", "N_ITER", "MATCH_SEP"):
        assert np.isnan(np.asarray(t[col], float)[unmatched]).all(), col
    assert set(np.asarray(t["MODEL"])[unmatched]) == {""}


def test_field_limit_lookup():
    limits = load_config()["report"]["field_limits"]
    assert field_limit("gds", limits)[0] == pytest.approx(29.93)
    assert field_limit("ceers-full", limits)[0] == pytest.approx(29.16)
    assert field_limit("primer-uds-north", limits) == (pytest.approx(28.51), "uds")
    assert field_limit("primer-cosmos-west", limits)[0] == pytest.approx(28.62)
    assert field_limit("abell2744", limits) == (None, None)
    assert field_limit("abell2744", limits, 29.0)[0] == 29.0


def test_a_fainter_limit_changes_flag_3(made, with_dja, tmp_path):
    result = dja_sepp.report(str(made["run"]), str(made["phot"]), out=str(tmp_path),
                             report__mag_limit=31.0)
    t = Table.read(result.morpho_phot, hdu="SERSIC_RG4")
    base = Table.read(result.morpho_phot, hdu="DJA")
    expect = _independent_flags(t, base["flux_auto"], base["fluxerr_auto"], 31.0, "sersic")
    assert (np.asarray(t["flag"]) == expect).all()
    # our rows at 30.2 mag in F277W (IDs 16-18) are faint under GDS's 29.93, not under 31
    rows = np.isin(np.asarray(t["ID"]), [16, 17, 18])
    bright = np.asarray(base["flux_auto"]) >= 3 * np.asarray(base["fluxerr_auto"])
    assert (rows & bright).sum() >= 1
    assert not (np.asarray(t["flag"])[rows & bright] == 3).any()
    gds = Table.read(made["run"] / "report" / "gds_morpho-phot.fits", hdu="SERSIC_RG4")
    assert (np.asarray(gds["flag"])[rows & bright] == 3).all()


# --- without DJA ---------------------------------------------------------------------------

def test_without_dja_the_table_is_ours(without_dja, made):
    result, hdul = without_dja
    assert [h.name for h in hdul] == ["PRIMARY", "DETECTION", "SERSIC_RG4", "B+D"]
    n = len(made["catalog"])
    assert all(len(h.data) == n for h in hdul[1:])
    sersic, bd = Table(hdul["SERSIC_RG4"].data), Table(hdul["B+D"].data)
    assert (np.asarray(sersic["ID"]) == np.arange(1, n + 1)).all()
    # the three rows missing from B+D: NaN, flag 0; all others matched to their own detection
    missing = ~np.isfinite(np.asarray(bd["ID"]))
    assert np.flatnonzero(missing).tolist() == [30, 31, 32]
    assert (np.asarray(bd["flag"])[missing] == 0).all()
    assert (np.asarray(bd["ID"])[~missing] == np.asarray(sersic["ID"])[~missing]).all()
    cat = made["catalog"]
    expect = _independent_flags(sersic, cat["FLUX_AUTO"], cat["FLUXERR_AUTO"], 29.93, "sersic")
    assert (np.asarray(sersic["flag"]) == expect).all()
    html = open(result.index).read()
    for why in ("Magnitudes against DJA: left out, no DJA catalog given",
                "Size against redshift: left out", "UVJ diagram coloured by Sersic index: left out"):
        assert why in html
    assert "mag_vs_dja.png" not in html


# --- figures and the page ------------------------------------------------------------------

def test_figures_and_page(with_dja):
    result, _ = with_dja
    import os
    names = {os.path.basename(p) for p in result.figures}
    assert {"mag_vs_dja.png", "morphology_sersic_rg4.png", "morphology_B_D.png", "bt_B_D.png",
            "size_redshift.png", "uvj.png"} <= names
    html = open(result.index).read()
    folder = os.path.dirname(result.index)
    for name in names:
        assert f"src='{name}'" in html
        with open(os.path.join(folder, name), "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    assert "median" in html and "Ormerod" in html
    # run summary: tiles, duplicates, timings, dropped band
    for text in ("1 / 1 (complete)", "duplicates removed</td><td class='l'>2",
                 "band F200W dropped", "time total (s)"):
        assert text in html, text
    # the gallery needs mosaics: said, not silently missing
    assert "Worst reduced chi2 (sersic_rg4): left out, the run has no mosaic.zarr" in html


def test_magnitude_offsets_against_dja(with_dja):
    """Our fluxes are the truth's within 3 %, DJA's are the truth's in uJy: the
    annotated median offsets are ~0 (a unit or zero-point slip would be >= 0.1 mag)."""
    import re
    result, _ = with_dja
    html = open(result.index).read()
    offsets = dict(re.findall(r"(F\d+W) ([+-]\d\.\d+)", html.split("Median offsets:", 1)[1]
                              .split(".</figcaption>", 1)[0]))
    assert set(offsets) == {"F200W", "F277W", "F444W"}
    assert all(abs(float(v)) < 0.03 for v in offsets.values()), offsets


def test_ormerod_relation():
    from dja_sepp.reporting.figures import ormerod_re
    assert ormerod_re(0) == pytest.approx(4.5)
    assert ormerod_re(3) == pytest.approx(4.5 * 4 ** -0.71)


# --- bad DJA catalogs ------------------------------------------------------------------------

def _bad_cases(made, tmp_path):
    base = Table.read(made["phot"])
    wrong = base.copy()
    wrong.rename_column("ra", "RA_DJA")
    wrong.write(tmp_path / "wrong_columns.fits")
    far = base.copy()
    far["dec"] = far["dec"] + 1.0
    far.write(tmp_path / "other_field.fits")
    (tmp_path / "garbage.fits").write_bytes(b"not a fits file at all")
    z = Table.read(made["zout"])[:10]
    z.remove_column("id")
    z.write(tmp_path / "short_zout.fits")
    z2 = Table.read(made["zout"])
    z2.remove_column("restJ")
    z2.write(tmp_path / "no_restj.fits")
    phot = str(made["phot"])
    return [((str(tmp_path / "missing.fits"), None), "missing.fits", "not found"),
            ((str(tmp_path / "wrong_columns.fits"), None), "wrong_columns.fits", "lacks column(s) ra"),
            ((str(tmp_path / "other_field.fits"), None), "other_field.fits", "no DJA source within"),
            ((str(tmp_path / "garbage.fits"), None), "garbage.fits", "not a readable"),
            ((phot, str(tmp_path / "short_zout.fits")), "short_zout.fits", "no id column"),
            ((phot, str(tmp_path / "no_restj.fits")), "no_restj.fits", "lacks column(s) restJ")]


def test_bad_dja_catalogs_name_the_file(made, tmp_path, capsys):
    for (phot, zout), name, words in _bad_cases(made, tmp_path):
        with pytest.raises(InputError) as info:
            dja_sepp.report(str(made["run"]), phot, zout, out=str(tmp_path / "out"))
        assert name in str(info.value) and words in str(info.value), str(info.value)
    # on the command line: exit 2, one line naming the file, nothing written
    argv = ["report", str(made["run"]), "--dja-catalog", str(tmp_path / "other_field.fits"),
            "--out", str(tmp_path / "cli_out")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "other_field.fits" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "cli_out").exists()


def test_cli_report(made, tmp_path, capsys):
    argv = ["report", str(made["run"]), "--dja-catalog", str(made["phot"]), "--zout",
            str(made["zout"]), "--out", str(tmp_path / "rep"), "--match-radius", "0.5"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "index.html" in out and "gds_morpho-phot.fits" in out
    assert fits.getheader(tmp_path / "rep" / "gds_morpho-phot.fits")["MATCHRAD"] == 0.5
    # --config: its report: section replaces the run's
    (tmp_path / "cfg.yaml").write_text("report:\n  match_radius: 0.2\n  snr_min: 5\n")
    assert main(["report", str(made["run"]), "--config", str(tmp_path / "cfg.yaml"),
                 "--out", str(tmp_path / "rep2")]) == 0
    header = fits.getheader(tmp_path / "rep2" / "gds_morpho-phot.fits")
    assert header["MATCHRAD"] == 0.2 and header["SNRMIN"] == 5


def test_report_settings_are_checked(made, tmp_path):
    with pytest.raises(ConfigError, match="report.match_radius"):
        load_config(report__match_radius="abc")
    with pytest.raises(ConfigError, match="report.artefact_flags.*AT_BOUNDS"):
        dja_sepp.report(str(made["run"]), out=str(tmp_path), report__artefact_flags=["AT_BOUNDS"])
    with pytest.raises(SystemExit):
        main(["report", str(made["run"]), "--match-radius", "-1"])


def test_gallery_rows():
    from dja_sepp.reporting.gallery import pick_gallery_rows
    t = Table({"flag": [2, 1, 2, 0, 3, 2, 2], "CHI2_REDUCED": [1.0, 9.0, 1.1, np.nan, 5.0, 0.9, 2.0]})
    good, worst = pick_gallery_rows(t, 3, seed=1)
    assert len(good) == 3 and set(good) <= {0, 2, 5, 6}
    assert list(worst) == [1, 4, 6]                  # highest reduced chi2 of fitted rows first
    good, worst = pick_gallery_rows(t, 10, seed=1)
    assert sorted(good) == [0, 2, 5, 6] and 3 not in worst


def test_report_of_a_run_in_a_bucket(made, tmp_path):
    """Run directory, DJA catalogs and report on S3 (moto on 127.0.0.1)."""
    pytest.importorskip("s3fs")
    moto_server = pytest.importorskip("moto.server")
    import boto3
    import s3fs
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        options = {"key": "testing", "secret": "testing",
                   "client_kwargs": {"endpoint_url": url, "region_name": "us-east-1"}}
        boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
                     aws_secret_access_key="testing").create_bucket(Bucket="dja")
        fs = s3fs.S3FileSystem(**options)
        fs.put(str(made["run"]) + "/", "dja/run/", recursive=True)
        fs.put(str(made["phot"]), "dja/cat/phot.fits")
        fs.put(str(made["zout"]), "dja/cat/zout.fits")
        result = dja_sepp.report("s3://dja/run", "s3://dja/cat/phot.fits", "s3://dja/cat/zout.fits",
                                 out="s3://dja/run/report_s3", storage_options=options)
        assert result.index == "s3://dja/run/report_s3/index.html"
        names = {p.split("/")[-1] for p in fs.ls("dja/run/report_s3")}
        assert {"index.html", "gds_morpho-phot.fits", "mag_vs_dja.png", "uvj.png"} <= names
        fs.get("dja/run/report_s3/gds_morpho-phot.fits", str(tmp_path / "mp.fits"))
        assert np.isfinite(Table.read(tmp_path / "mp.fits", hdu="SERSIC_RG4")["ID"]).sum() == \
            len(made["detected"])
        with pytest.raises(InputError, match="s3://dja/cat/nothing.fits"):
            dja_sepp.report("s3://dja/run", "s3://dja/cat/nothing.fits",
                            out="s3://dja/run/report_s3", storage_options=options)
    finally:
        server.stop()
