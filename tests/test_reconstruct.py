import numpy as np
import pytest

from nanoedx_dataset import ConfigError, draw_spec, project, voxelize
from nanoedx_dataset.simulate.project import DEFAULT_ANGLES, system_matrix
from nanoedx_models.evaluation.metrics import nmae
from nanoedx_models.reconstruction.em import reconstruct


@pytest.fixture(scope="module")
def phantom():
    vol = voxelize(draw_spec(4, 0, family="cube", kind="core_shell"), 48)
    return vol, project(vol, DEFAULT_ANGLES)


FULL = np.linspace(-87, 87, 59)  # no missing wedge: the phantom is fully determined


def test_em_reconstructs_a_known_phantom_from_clean_data(phantom):
    vol, _ = phantom
    proj = project(vol, FULL)
    for e in range(2):
        rec = reconstruct(proj[e], FULL, iterations=100)
        assert rec.shape == vol[e].shape and rec.dtype == np.float32
        assert nmae(rec, vol[e]) < 10.0
        assert rec.min() >= 0
        assert rec.sum() == pytest.approx(vol[e].sum(), rel=0.01)


def test_em_lowers_the_data_misfit_monotonically(phantom):
    vol, proj = phantom
    noisy = np.random.default_rng(0).poisson(proj[0] * 3.0).astype(float)
    w = system_matrix(48, DEFAULT_ANGLES)
    b = noisy.transpose(0, 2, 1).reshape(16 * 48, 48)

    def kl(rec):  # Poisson negative log-likelihood up to a constant: what MLEM decreases
        est = w @ rec.transpose(0, 2, 1).reshape(48 * 48, 48).astype(np.float64)
        return float((est - b * np.log(np.maximum(est, 1e-12))).sum())

    values = [kl(reconstruct(noisy, DEFAULT_ANGLES, iterations=k)) for k in (1, 2, 4, 8, 15)]
    assert all(a > b for a, b in zip(values, values[1:]))


def test_sirt_runs_and_keeps_positivity(phantom):
    vol, _ = phantom
    rec = reconstruct(project(vol[0], FULL), FULL, iterations=100, method="sirt")
    assert rec.min() >= 0 and nmae(rec, vol[0]) < 10


def test_limited_tilt_em_of_15_iterations_is_close(phantom):
    vol, proj = phantom
    first = nmae(reconstruct(proj[0], DEFAULT_ANGLES, iterations=1), vol[0])
    paper = nmae(reconstruct(proj[0], DEFAULT_ANGLES), vol[0])  # 15 iterations, +-75 deg
    assert paper < 25 and paper < first / 3


@pytest.mark.parametrize("series,angles,match", [
    (np.ones((16, 8)), DEFAULT_ANGLES, r"\(angle, row, col\)"),
    (np.ones((15, 8, 8)), DEFAULT_ANGLES, "16 angles for 15 projections"),
    (-np.ones((16, 8, 8)), DEFAULT_ANGLES, "non-negative"),
    (np.full((16, 8, 8), np.nan), DEFAULT_ANGLES, "NaN"),
])
def test_bad_tilt_series_are_refused(series, angles, match):
    with pytest.raises(ConfigError, match=match):
        reconstruct(series, angles)
    with pytest.raises(ConfigError, match="unknown method 'art'"):
        reconstruct(np.ones((16, 8, 8)), DEFAULT_ANGLES, method="art")


@pytest.mark.filterwarnings("ignore:Sparse")
@pytest.mark.parametrize("method", ["em", "sirt"])
def test_torch_path_matches_scipy(phantom, method):
    _, proj = phantom
    ref = reconstruct(proj[0], DEFAULT_ANGLES, method=method)
    rec = reconstruct(proj[0], DEFAULT_ANGLES, method=method, device="cpu")
    assert rec.dtype == np.float32 and rec.shape == ref.shape
    np.testing.assert_allclose(rec, ref, rtol=1e-3, atol=1e-4 * ref.max())


def test_em_gives_the_same_volume_in_any_number_of_threads_and_blocks(monkeypatch):
    from nanoedx_models.reconstruction import em

    series = np.random.default_rng(3).poisson(2.0, (5, 70, 24)).astype(float)
    angles = [-60, -30, 0, 30, 60]
    one = reconstruct(series, angles, 4, threads=1)
    monkeypatch.setattr(em, "BLOCK_SLICES", 16)  # 5 blocks of 14 slices on 3 threads
    np.testing.assert_array_equal(reconstruct(series, angles, 4, threads=3), one)
