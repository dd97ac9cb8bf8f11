import numpy as np
import pytest

from nanoedx_dataset import add_noise, downsample_counts, expected_signal
from nanoedx_dataset.errors import ConfigError


@pytest.fixture
def clean():
    p = np.zeros((24, 24), np.float32)
    p[6:18, 8:20] = np.linspace(1, 5, 12)[None, :]
    return p


def test_expected_signal_holds_the_requested_counts(clean):
    s = expected_signal(np.stack([clean, 3 * clean, 0 * clean]), 1000.0)
    np.testing.assert_allclose(s.sum(axis=(1, 2)), [1000, 1000, 0], rtol=1e-5)


def test_noise_statistics_match_the_model(clean):
    counts, background = 1000.0, 100.0
    rng = np.random.default_rng(0)
    draws = add_noise(np.broadcast_to(clean, (4000,) + clean.shape), counts, background, rng)
    assert draws.dtype == np.uint16
    totals = draws.reshape(4000, -1).sum(1).astype(float)
    assert totals.mean() == pytest.approx(counts + background, abs=3 * np.sqrt(1100 / 4000) + 1)
    assert totals.var() == pytest.approx(counts + background, rel=0.1)
    lam = expected_signal(clean, counts) + background / clean.size
    mean, var = draws.mean(0), draws.var(0)
    np.testing.assert_allclose(mean, lam, atol=5 * np.sqrt(lam.max() / 4000))
    np.testing.assert_allclose(var[lam > 1], mean[lam > 1], rtol=0.15)  # Poisson: var = mean


def test_empty_map_holds_background_only(clean):
    draws = add_noise(np.zeros((2000, 24, 24), np.float32), 1000, 50, np.random.default_rng(1))
    assert draws.reshape(2000, -1).sum(1).mean() == pytest.approx(50, rel=0.02)


def test_same_seed_same_counts(clean):
    a = add_noise(clean, 1000, 100, np.random.default_rng(5))
    b = add_noise(clean, 1000, 100, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("counts,background,match", [
    (0, 100, "counts must be a positive"), (-5, 100, "counts must be a positive"),
    (1000, -1, "background must be >= 0"), (np.nan, 0, "counts must be"),
])
def test_bad_noise_levels_are_refused(clean, counts, background, match):
    with pytest.raises(ConfigError, match=match):
        add_noise(clean, counts, background, np.random.default_rng(0))


def test_too_many_counts_for_uint16_is_refused(clean):
    with pytest.raises(ConfigError, match="uint16"):
        add_noise(clean, 1e9, 0, np.random.default_rng(0))


def test_downsample_counts_thins_a_measured_map():
    x = np.random.default_rng(0).poisson(50.0, (200, 32, 32)).astype(float)
    low = downsample_counts(x, 1000, seed=1)
    assert low.reshape(200, -1).sum(1).mean() == pytest.approx(1000, rel=0.01)
    with pytest.raises(ConfigError, match="non-negative"):
        downsample_counts(-x, 1000, seed=1)


def test_downsample_counts_is_seeded():
    x = np.random.default_rng(0).poisson(50.0, (3, 16, 16))
    a, b = downsample_counts(x, 100, seed=5), downsample_counts(x, 100, seed=5)
    assert a.dtype == np.uint16 and np.array_equal(a, b)
    assert not np.array_equal(a, downsample_counts(x, 100, seed=6))
