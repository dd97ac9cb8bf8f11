import numpy as np
import pytest
from scipy import ndimage
from scipy.stats import spearmanr

from nanoedx_dataset import ConfigError
from nanoedx_models import EDXMaps
from nanoedx_models.denoisers.classical import gaussian
from nanoedx_models.denoisers import Denoiser
from nanoedx_models.evaluation.holdout import evaluate_holdout, evaluate_methods, fit_score, split_counts
from nanoedx_models.evaluation.metrics import nmae

N = 64
YY, XX = np.mgrid[:N, :N]
# A known expected map: a particle-like blob on a uniform background, 1e5 counts in all.
LAM = 2.0 + 150.0 * np.exp(-((YY - 30.0) ** 2 + (XX - 35.0) ** 2) / 150.0)
LAM *= 1e5 / LAM.sum()


def test_split_keeps_every_count_and_gives_independent_poisson_halves():
    rng = np.random.default_rng(0)
    x = rng.poisson(50.0, (4, N, N))
    y, r, q = split_counts(x, counts=2000, seed=1)
    np.testing.assert_array_equal(y + r, x)
    np.testing.assert_allclose(q, 2000 / x.sum(axis=(1, 2)))
    assert y.sum(axis=(1, 2)) == pytest.approx([2000] * 4, rel=0.1)
    # Poisson thinning: the halves are uncorrelated with variance = mean (a fixed x would give
    # corr = -1 pixel by pixel: y and r would share the same total)
    corr = np.corrcoef(y.ravel(), r.ravel())[0, 1]
    assert abs(corr) < 4 / np.sqrt(y.size)
    assert r.var() == pytest.approx(r.mean(), rel=0.05)
    same, _, _ = split_counts(x, counts=2000, seed=1)
    np.testing.assert_array_equal(same, y)


def _scores(denoised, n_maps=40):
    """Per-map fit_score of a fixed output against remainders of fresh Poisson maps."""
    rng = np.random.default_rng(2)
    x = rng.poisson(LAM, (n_maps, N, N))
    _, r, q = split_counts(x, counts=1000, seed=3)
    return [fit_score(denoised, ri) for ri in r], q


def _check_unbiased(values, target):
    values = np.asarray(values)
    assert abs(values.mean() - target) < 4 * values.std() / np.sqrt(len(values)) + 1e-9


def test_perfect_denoiser_scores_zero_within_noise():
    fits, _ = _scores(LAM / 100)  # any scale: the fit takes it out
    _check_unbiased([f["mse_net"] for f in fits], 0.0)
    # without the Poisson correction the error would be far from zero
    raw = np.array([f["mse_net"] + f["noise"] for f in fits])
    assert raw.mean() > 20 * np.std([f["mse_net"] for f in fits])
    assert np.median([f["score"] for f in fits]) < 3.0


def test_bad_denoiser_score_matches_its_true_error():
    blurred = ndimage.gaussian_filter(LAM, 4)
    fits, q = _scores(blurred)
    mu = (1 - q.mean()) * LAM.ravel()
    design = np.stack([blurred.ravel(), np.ones(N * N)], axis=1)
    resid = mu - design @ np.linalg.lstsq(design, mu, rcond=None)[0]
    truth = float(resid @ resid / mu.size)
    assert truth > 1.0  # the blur is clearly wrong
    _check_unbiased([f["mse_net"] for f in fits], truth)


@pytest.fixture(scope="module")
def high_dose():
    """6 test maps of the mini release at 1e5 + 1e4 counts, and their expected signal."""
    ds = EDXMaps("mini", "test", counts=1e5, background=1e4, seed=0)
    pairs = [ds.raw(i) for i in range(6)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def test_holdout_ranking_agrees_with_ground_truth_nmae(high_dose):
    x, truth = high_dose
    methods = ["noisy", Denoiser("gauss-0.7", gaussian, "fixed", default=0.7), "gaussian-val",
               "tv-val", "unet"]
    held, true = [], []
    for m in methods:
        res = evaluate_holdout(x, m, counts=1000, seed=3, background=1e4)
        held.append(res.score_mean)
        # the ground truth of the same inputs: the expected signal at the input's dose
        true.append(np.mean([nmae(o, g * q) for o, g, q in zip(res.outputs, truth, res.q)]))
    assert spearmanr(held, true).statistic >= 0.8
    assert np.argmin(held) == np.argmin(true) and np.argmax(held) == np.argmax(true) == 0


def test_fitted_method_selects_its_parameter_on_half_the_remainder(high_dose):
    x, _ = high_dose
    res = evaluate_holdout(x, "gaussian-val", counts=1000, seed=3)
    assert 0.5 < res.parameter < 5  # a sensible smoothing width at 1000 counts on 64^2
    full = x.sum(axis=(1, 2)) - res.input_counts
    assert res.remainder_counts == pytest.approx(full / 2, rel=0.05)
    given = evaluate_holdout(x, "gaussian-val", counts=1000, seed=3, parameter=1.5)
    assert given.parameter == 1.5 and given.remainder_counts.tolist() == full.tolist()


def test_methods_share_one_split_and_failures_stay_in_their_row(high_dose):
    x, _ = high_dose

    def broken(counts):
        raise RuntimeError("boom")

    rows = evaluate_methods(x, ["noisy", "gaussian-val", broken], counts=1000, seed=5,
                            progress=False)
    assert [r["method"] for r in rows] == ["gaussian-val", "noisy", "broken"]
    assert rows[2]["status"].startswith("failed: RuntimeError: boom")
    assert rows[0]["input_counts"] == rows[1]["input_counts"]
    assert rows[0]["score_mean"] < rows[1]["score_mean"]


def test_bad_input_gets_clear_errors():
    good = np.full((8, 8), 100)
    with pytest.raises(ConfigError, match="whole numbers"):
        evaluate_holdout(good + 0.5, "noisy")
    with pytest.raises(ConfigError, match="non-negative"):
        evaluate_holdout(good - 200, "noisy")
    with pytest.raises(ConfigError, match="NaN"):
        evaluate_holdout(np.where(good > 0, np.nan, 0.0), "noisy")
    with pytest.raises(ConfigError, match="holds 6400 counts.*lower counts="):
        evaluate_holdout(good, "noisy", counts=5000)
    with pytest.raises(ConfigError, match="oracle.*'gaussian-val'"):
        evaluate_holdout(good, "gaussian-oracle", counts=100)
    with pytest.raises(ConfigError, match="background must be"):
        evaluate_holdout(good, "noisy", counts=100, background=[1.0, 2.0])
    with pytest.raises(ConfigError, match="registered name"):
        evaluate_holdout(good, 3.0, counts=100)


def test_method_names_are_checked_before_any_work():
    from nanoedx_models.evaluation.holdout import resolve_methods

    maps = np.random.default_rng(0).poisson(LAM[None] / 10, (2, N, N))
    with pytest.raises(ConfigError, match="unknown denoiser 'gausian'.*gaussian-val"):
        evaluate_methods(maps, ["noisy", "gausian"], counts=1000, progress=False)
    with pytest.raises(ConfigError, match="listed twice: noisy"):
        resolve_methods(["noisy", "noisy"])
    with pytest.raises(ConfigError, match="oracle"):
        resolve_methods(["gaussian-oracle"])
    assert [d.name for d in resolve_methods(["gaussian-oracle"], oracles=True)] == \
        ["gaussian-oracle"]
    with pytest.raises(FileNotFoundError, match="no model file at nowhere.pt"):
        resolve_methods(["unet:nowhere.pt"])


def test_folds_are_independent_poisson_parts_that_sum_to_the_maps():
    from nanoedx_models.evaluation.holdout import split_folds

    lam = np.full((2, 80, 80), 4.0)
    maps = np.random.default_rng(1).poisson(lam)
    parts = split_folds(maps, folds=4, seed=2)
    assert parts.shape == (4, 2, 80, 80) and parts.dtype == np.int64
    np.testing.assert_array_equal(parts.sum(axis=0), maps)
    for p in parts:  # each part: Poisson with mean lam / 4 (variance = mean)
        assert p.mean() == pytest.approx(1.0, rel=0.03) and p.var() == pytest.approx(1.0, rel=0.1)
    c = np.corrcoef(parts[0].ravel() - 1.0, parts[1].ravel() - 1.0)[0, 1]
    assert abs(c) < 0.03  # thinning a Poisson map leaves the parts uncorrelated
    with pytest.raises(ConfigError, match="folds"):
        split_folds(maps, folds=1)


def test_select_parameter_refuses_a_method_without_parameter():
    from nanoedx_models.evaluation.holdout import select_parameter

    maps = np.random.default_rng(0).poisson(np.full((2, 32, 32), 1.0))
    with pytest.raises(ConfigError, match="no parameter to choose"):
        select_parameter(maps, "noisy")
    with pytest.raises(ConfigError, match="leave nothing"):
        select_parameter(maps, "gaussian-val", bounds=(1e3, 1e4))
