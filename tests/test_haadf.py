"""The HAADF-STEM images of format 1.1: physics, file layout, old files, the command line."""

import json

import h5py
import numpy as np
import pytest

from nanoedx_dataset import generate, load_dataset
from nanoedx_dataset.errors import ConfigError, SchemaError
from nanoedx_dataset.generation.config import GenerationConfig
from nanoedx_dataset.inspect.verify import problems
from nanoedx_dataset.simulate import haadf
from nanoedx_dataset.store import schema
from nanoedx_dataset.store.reader import Database, open_database
from nanoedx_models.cli import main

SMALL = dict(n=6, size=32, seed=3, progress=False)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """The same config written with and without HAADF images."""
    d = tmp_path_factory.mktemp("haadf")
    return (generate(d / "with.h5", None, haadf=True, **SMALL),
            generate(d / "without.h5", None, **SMALL))


def params(**kw):
    base = {"z": [79, 47], "gamma": 1.7, "peak": 1000.0, "support": 0.0, "blur": 0.0,
            "read_noise": 0.0}
    return base | kw


def test_contrast_grows_as_z_to_the_gamma():
    p = np.zeros((2, 1, 8, 8))
    p[0, 0, :, :4] = 2.0  # element A (Au) on the left, B (Ag) on the right, same thickness
    p[1, 0, :, 4:] = 2.0
    lam = haadf.expected_image(p, [0.0], params())
    ratio = lam[0, 0, 0] / lam[0, 0, 7]
    assert ratio == pytest.approx((79 / 47) ** 1.7)
    assert lam.max() == pytest.approx(1000.0)  # the brightest pixel holds the peak dose


def test_support_film_thickens_with_tilt_and_blur_keeps_the_total():
    p = np.zeros((2, 2, 16, 16))
    p[0, :, 6:10, 6:10] = 1.0
    lam = haadf.expected_image(p, [0.0, 60.0], params(support=0.1))
    assert lam[0, 0, 0] == pytest.approx(100.0)  # 10 % of the peak away from the particle
    assert lam[1, 0, 0] == pytest.approx(200.0)  # 1 / cos(60 deg) thicker
    blurred = haadf.expected_image(p, [0.0, 60.0], params(support=0.1, blur=1.0))
    np.testing.assert_allclose(blurred.sum(axis=(1, 2)), lam.sum(axis=(1, 2)), rtol=1e-9)
    assert blurred.max() < lam.max()


def test_recorded_images_are_poisson_at_the_peak_dose():
    p = np.ones((2, 1, 64, 64))
    rng = np.random.default_rng(0)
    for peak in (100.0, 2000.0):
        img = haadf.record(p, [0.0], params(peak=peak, z=[30, 16]), rng).astype(float)
        assert img.mean() == pytest.approx(peak, rel=0.02)
        assert img.var() == pytest.approx(peak, rel=0.1)  # Poisson: variance = mean


def test_options_are_checked():
    with pytest.raises(ConfigError, match="peak"):
        haadf.HaadfOptions(peak=(10.0, 1e6)).validate()
    with pytest.raises(ConfigError, match="gamma"):
        haadf.HaadfOptions(gamma=-1).validate()
    with pytest.raises(ConfigError, match="blur"):
        haadf.HaadfOptions(blur=(2.0, 1.0)).validate()


def test_the_config_keeps_its_haadf_options_and_old_configs_their_json():
    cfg = GenerationConfig(n=4, size=32, haadf=haadf.HaadfOptions(peak=(10.0, 20.0))).validate()
    assert GenerationConfig.from_json(cfg.to_json()).validate() == cfg
    assert "haadf" not in GenerationConfig(n=4, size=32).validate().to_json()


def test_a_file_with_haadf_holds_the_same_edx_arrays(pair):
    with_, without = Database(pair[0]), Database(pair[1])
    assert with_.has_haadf and not without.has_haadf
    assert with_.attrs[schema.ATTR_FORMAT_VERSION] == "1.1"
    assert without.attrs[schema.ATTR_FORMAT_VERSION] == "1.0"
    tag = with_.level()
    for s in range(with_.n):
        np.testing.assert_array_equal(with_.counts(tag, s), without.counts(tag, s))
        np.testing.assert_array_equal(with_.projection(s), without.projection(s))
    img = with_.haadf(0)
    assert img.shape == (16, 32, 32) and img.dtype == np.uint16
    p = with_.haadf_params(0)
    assert len(set(p["z"])) == 2 and p["gamma"] == 1.7
    # the particle is brighter than the support film around it
    mass = with_.projection(0).sum(axis=0)
    assert img[mass > 0.5 * mass.max()].mean() > 2 * img[mass == 0].mean()


def test_haadf_images_are_reproducible(pair, tmp_path):
    again = generate(tmp_path / "again.h5", None, haadf=True, **SMALL)
    a, b = Database(pair[0]), Database(again)
    for s in range(a.n):
        np.testing.assert_array_equal(a.haadf(s), b.haadf(s))
        assert a.haadf_params(s) == b.haadf_params(s)


def test_verify_load_and_xarray_see_the_images(pair):
    with open_database(pair[0]) as f:
        assert problems(f) == []
    ds = load_dataset(pair[0])
    assert ds["haadf"].dims == ("sample", "angle", "row", "col")
    assert "haadf_params" in ds


def test_old_files_load_and_say_they_have_no_images(pair):
    db = Database(pair[1])
    with pytest.raises(ConfigError, match="--haadf"):
        db.haadf(0)
    assert "haadf" not in load_dataset("mini", version="0.1.1")


def test_a_file_missing_one_haadf_variable_is_damaged(pair, tmp_path):
    broken = tmp_path / "broken.h5"
    broken.write_bytes(pair[0].read_bytes())
    with h5py.File(broken, "r+") as f:
        del f[schema.HAADF_PARAMS]
    with pytest.raises(SchemaError, match="haadf_params"):
        open_database(broken)


def test_verify_finds_empty_images(pair, tmp_path):
    broken = tmp_path / "empty.h5"
    broken.write_bytes(pair[0].read_bytes())
    with h5py.File(broken, "r+") as f:
        f[schema.HAADF][2] = 0
        assert any("sample 2" in p and "HAADF" in p for p in problems(f))


def test_cli_generates_haadf_images(tmp_path, capsys):
    out = tmp_path / "cli.h5"
    assert main(["generate", "--n", "3", "--size", "24", "--haadf", "-o", str(out)]) == 0
    with h5py.File(out) as f:
        assert f[schema.HAADF].shape == (3, 16, 24, 24)
        assert json.loads(f.attrs[schema.ATTR_CONFIG])["haadf"]["gamma"] == 1.7
