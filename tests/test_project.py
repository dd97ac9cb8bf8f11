import numpy as np
import pytest
from skimage.transform import radon

from nanoedx_dataset import draw_spec, project, voxelize
from nanoedx_dataset.errors import ConfigError
from nanoedx_dataset.simulate.project import DEFAULT_ANGLES


@pytest.fixture(scope="module")
def volume():
    return voxelize(draw_spec(0, 2, family="truncated_octahedron", kind="core_shell"), 33)


def test_default_tilt_series_is_minus75_to_75_in_10_degree_steps():
    assert DEFAULT_ANGLES == tuple(float(a) for a in range(-75, 76, 10))
    assert len(DEFAULT_ANGLES) == 16 and 0.0 not in DEFAULT_ANGLES


def test_every_projection_conserves_the_mass(volume):
    p = project(volume)
    assert p.shape == (2, 16, 33, 33) and p.dtype == np.float32
    sums = p.astype(np.float64).sum(axis=(-2, -1))
    np.testing.assert_allclose(sums, volume.sum(axis=(1, 2, 3))[:, None].repeat(16, 1),
                               rtol=5e-3)


def test_zero_degree_projection_is_the_sum_along_z(volume):
    p = project(volume, [0.0, 30.0])
    np.testing.assert_allclose(p[:, 0], volume.sum(axis=1), atol=1e-4)  # (element, y, x)


def test_rows_are_the_tilt_axis_y(volume):
    # rotating about y never moves mass between rows
    p = project(volume[0], [-60.0, 20.0, 70.0])
    np.testing.assert_allclose(p.sum(axis=2), volume[0].sum(axis=(0, 2))[None].repeat(3, 0),
                               rtol=1e-4, atol=1e-3)


def test_45_degree_slice_agrees_with_skimage_radon(volume):
    p = project(volume[0], [45.0])[0]
    rows = np.argsort(volume[0].sum(axis=(0, 2)))[-3:]  # the three fullest y-slices
    for y in rows:
        expected = radon(volume[0][:, y, :], theta=[45.0], circle=True)[:, 0]
        assert np.abs(p[y] - expected).max() < 0.02 * expected.max()
        assert np.abs(p[y] - expected).mean() < 0.003 * expected.max()


def test_a_single_voxel_lands_where_design_says():
    n, c = 33, 16
    v = np.zeros((n, n, n), np.float32)
    z, y, x = 10, 5, 21
    v[z, y, x] = 1
    theta = np.deg2rad(35.0)
    p = project(v, [35.0])[0]
    u = (p[y] * np.arange(n)).sum() / p[y].sum()
    assert u == pytest.approx((x - c) * np.cos(theta) - (z - c) * np.sin(theta) + c, abs=0.05)
    assert p[y].sum() == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize("angles", [[90.0], [-91.0, 0.0], [], [np.nan]])
def test_bad_angles_are_refused(angles):
    with pytest.raises(ConfigError, match="angles|degrees"):
        project(np.zeros((16, 16, 16)), angles)


def test_non_cubic_volume_is_refused():
    with pytest.raises(ConfigError, match="equal sides"):
        project(np.zeros((16, 16, 8)))
