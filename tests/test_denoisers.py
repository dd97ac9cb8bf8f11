import numpy as np
import pytest

from nanoedx_dataset import ConfigError, DatasetNotFoundError
from nanoedx_models import EDXMaps, TiltSeries
from nanoedx_models.denoisers import DENOISERS, anscombe, denoiser, inverse_anscombe, register
from nanoedx_models.evaluation.metrics import nmae


@pytest.fixture(scope="module")
def maps():
    """Val and test maps of the embedded mini release: (noisy, truth, background)."""
    out = {}
    for split in ("val", "test"):
        ds = EDXMaps("mini", split)
        pairs = [ds.raw(i) for i in range(4)]
        out[split] = (np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs]),
                      pairs[0][3])
    return out


def test_registry_holds_the_benchmark_methods():
    for name in ("noisy", "gaussian-oracle", "tv-oracle", "gaussian-val", "tv-val",
                 "anscombe-nlm-val", "anscombe-bm3d-val", "unet", "unet-multidose", "unet-small"):
        assert name in DENOISERS


UNTRAINED = {"unet-paper"}  # registered, weights not published (pretrained.json says why)
# one map at a time (series ones: test_context; volume ones: test_volume_methods)
MAPS = [n for n, d in DENOISERS.items() if d.scope == "map"]


@pytest.mark.parametrize("name", [n for n in MAPS if n not in {"noisy"} | UNTRAINED])
def test_every_denoiser_beats_the_noisy_floor(maps, name):
    d = denoiser(name)
    noisy, truth, b = maps["test"]
    param = d.fit(*maps["val"])
    if d.mode == "fitted":
        assert d.bounds[0] <= param <= d.bounds[1]
    out = [d(x, b, param, truth=g) for x, g in zip(noisy, truth)]
    assert all(o.shape == x.shape and o.min() >= 0 for o, x in zip(out, noisy))
    floor = np.mean([nmae(denoiser("noisy")(x, b), g) for x, g in zip(noisy, truth)])
    assert np.mean([nmae(o, g) for o, g in zip(out, truth)]) < floor / 2


@pytest.fixture(scope="module")
def element_maps():
    """Four maps of each element of the mini release's test series: {element: (x, truth, b)}."""
    ts, out = TiltSeries("mini", "test"), {}
    for i in range(len(ts)):
        item = ts[i]
        if item["element"] not in out:
            out[item["element"]] = (item["noisy"][::4].astype(np.float64),
                                    item["target"][::4], float(item["background"]))
    assert len(out) == 2  # core and shell
    return out


def _parameter(d):
    """A parameter inside a method's bounds (conservation does not depend on it)."""
    return float(np.sqrt(d.bounds[0] * d.bounds[1])) if d.bounds else d.default


@pytest.mark.parametrize("name", [n for n in MAPS if n not in UNTRAINED])
def test_outputs_conserve_the_expected_signal(element_maps, name):
    d = denoiser(name)
    p = _parameter(d) if d.mode == "fitted" else None
    for element, (noisy, truth, b) in element_maps.items():
        out = np.array([d(x, b, p, truth=g) for x, g in zip(noisy, truth)])
        expected = np.maximum(noisy.sum(axis=(1, 2)) - b, 0)
        np.testing.assert_allclose(out.sum(axis=(1, 2)), expected, rtol=0.02)  # per map
        assert out.sum() == pytest.approx(expected.sum(), rel=0.02), element  # per element
        # against the truth the totals are off by the Poisson noise of the counts only
        assert out.sum() == pytest.approx(truth.sum(), rel=0.05), element
        raw = np.array([d.fn(x, _parameter(d), b) for x in noisy])
        assert not np.any((out < 0) & (raw >= 0)), "negative values where there were none"
    zero = np.zeros((32, 32))
    np.testing.assert_array_equal(d(zero, 0.0, p, truth=zero), 0.0)
    x = noisy[0]
    np.testing.assert_array_equal(d(x, x.sum() + 1.0, p, truth=truth[0]), 0.0)  # B > counts


def test_conserve_rescales_and_keeps_zeros_and_signs():
    from nanoedx_models.denoisers.registry import conserve

    counts = np.array([[3.0, 1.0], [0.0, 6.0]])
    out = conserve(np.array([[1.0, 0.0], [0.0, 1.0]]), counts, background=2.0)
    np.testing.assert_allclose(out, [[4.0, 0.0], [0.0, 4.0]])  # 10 counts - 2 background
    np.testing.assert_array_equal(conserve(np.zeros((2, 2)), counts, 0.0), 0.0)
    np.testing.assert_array_equal(conserve(np.ones((2, 2)), counts, 20.0), 0.0)


def test_an_untrained_model_says_why(maps):
    with pytest.raises(DatasetNotFoundError, match="unet-paper.*not available.*GPU"):
        denoiser("unet-paper")(maps["test"][0][0], 100.0)


def test_a_model_file_is_a_denoiser(maps, tmp_path):
    from nanoedx_models.denoisers.pretrained import model_path

    noisy, truth, b = maps["test"]
    out = denoiser(f"unet:{model_path('default')}")(noisy[0], b)
    np.testing.assert_allclose(out, denoiser("unet")(noisy[0], b), rtol=1e-5)
    with pytest.raises(ConfigError, match="unknown denoiser 'unet-big'"):
        denoiser("unet-big")


def test_fitted_value_is_the_validation_minimum(maps):
    d = denoiser("gaussian-val")
    noisy, truth, b = maps["val"]
    sigma = d.fit(noisy, truth, b)
    grid = np.exp(np.linspace(np.log(0.3), np.log(8), 60))
    losses = [np.mean([np.abs(d(x, b, s) - g).mean() for x, g in zip(noisy, truth)])
              for s in grid]
    best = np.mean([np.abs(d(x, b, sigma) - g).mean() for x, g in zip(noisy, truth)])
    assert best <= min(losses) + 1e-3


def test_anscombe_round_trip_is_unbiased_for_poisson_means():
    rng = np.random.default_rng(0)
    for lam in (2.0, 10.0, 50.0):
        x = rng.poisson(lam, 200_000)
        assert inverse_anscombe(np.full(1, anscombe(x).mean()))[0] == pytest.approx(lam, rel=0.03)


def test_misuse_gets_clear_errors():
    with pytest.raises(ConfigError, match="unknown denoiser 'wiener'.*noisy"):
        denoiser("wiener")
    with pytest.raises(ConfigError, match="needs the ground truth"):
        denoiser("tv-oracle")(np.ones((8, 8)), 1.0)
    with pytest.raises(ConfigError, match="call .fit"):
        denoiser("tv-val")(np.ones((8, 8)), 1.0)
    with pytest.raises(ConfigError, match="mode must be"):
        register("x", mode="magic")
