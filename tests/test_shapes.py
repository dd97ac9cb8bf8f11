import numpy as np
import pytest
from scipy.optimize import minimize

from nanoedx_dataset.simulate import shapes
from nanoedx_dataset.errors import ConfigError
from nanoedx_dataset.simulate.voxelizers.analytic import cube_fraction, occupancy

NAMES = [
    "sphere", "cube", "capped_rod", "octahedron", "truncated_octahedron", "icosahedron",
    "truncated_icosahedron", "triangular_platelet", "hexagonal_platelet", "square_platelet",
    "oblate_bipyramid", "prolate_bipyramid",
]


def test_catalogue_has_every_family_of_the_paper():
    assert list(shapes.FAMILIES) == NAMES
    assert set(shapes.COMPACT_FAMILIES) == set(NAMES) - {n for n in NAMES if "platelet" in n}


@pytest.mark.parametrize("name", NAMES)
def test_family_builds_a_body_around_the_origin(name):
    rng = np.random.default_rng(3)
    for _ in range(5):
        body = shapes.family(name).build(shapes.family(name).draw(rng))
        assert body.sdf(np.zeros((1, 3)))[0] < 0
        assert body.diameter() > 0
        pts, r = body.hull()
        # the hull points are on or inside the body's surface, each within r of it
        assert np.all(body.sdf(pts) <= 1e-9 - r + r)


def test_unknown_family_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="unknown shape family 'blob'.*sphere, cube"):
        shapes.family("blob")


def rounded_box_sdf(p, half, r):
    q = np.abs(p) - (half - r)
    return np.linalg.norm(np.maximum(q, 0), axis=1) + np.minimum(q.max(1), 0) - r


def test_rounded_cube_distance_is_exact():
    half, r = np.array([1.0, 1.0, 1.3]), 0.2
    normals = np.vstack([np.eye(3), -np.eye(3)])
    body = shapes.Polytope(normals, np.concatenate([half, half]), rounding=r)
    p = np.random.default_rng(0).uniform(-2.5, 2.5, (5000, 3))
    np.testing.assert_allclose(body.sdf(p), rounded_box_sdf(p, half, r), atol=1e-9)


def test_rounded_polytope_distance_matches_a_numerical_projection():
    body = shapes.family("truncated_octahedron").build(
        {"aspect": 1.2, "truncation": 0.8, "rounding": 0.08})
    shrunk, _, _, _, _ = body._core
    rng = np.random.default_rng(1)
    pts = rng.normal(size=(200, 3))
    pts *= (rng.uniform(0.5, 1.3, 200) / np.linalg.norm(pts, axis=1))[:, None]
    outside = pts[(pts @ body.normals.T - shrunk).max(1) > 0][:30]  # outside the shrunk body
    assert len(outside) == 30
    for p in outside:
        cons = {"type": "ineq", "fun": lambda x: shrunk - body.normals @ x}
        res = minimize(lambda x: np.sum((x - p) ** 2), np.zeros(3), constraints=[cons],
                       method="SLSQP", options={"ftol": 1e-14, "maxiter": 500})
        expected = np.sqrt(res.fun) - body.rounding
        assert body.sdf(p[None])[0] == pytest.approx(expected, abs=1e-5)


def test_cube_fraction_matches_monte_carlo():
    rng = np.random.default_rng(2)
    normal = rng.normal(size=(6, 3))
    normal /= np.linalg.norm(normal, axis=1)[:, None]
    normal[0] = [0, 0, 1]  # axis-aligned: the fraction is linear in the distance
    dist = rng.uniform(-0.8, 0.8, 6)
    u = rng.uniform(-0.5, 0.5, (400_000, 3))
    mc = np.array([(u @ n <= -d).mean() for n, d in zip(normal, dist)])
    np.testing.assert_allclose(cube_fraction(dist, normal), mc, atol=3e-3)
    assert cube_fraction(np.array([0.3]), np.array([[0, 0, 1.0]]))[0] == pytest.approx(0.2)


@pytest.mark.parametrize("size", [32, 64])
def test_sphere_occupancy_has_the_exact_volume(size):
    radius = 0.37
    occ = occupancy(lambda p: np.linalg.norm(p - [0.01, -0.02, 0.03], axis=1) - radius, size)
    assert occ.min() >= 0 and occ.max() <= 1
    assert 0 < ((occ > 0) & (occ < 1)).mean() < 0.2  # partial volume only at the surface
    exact = 4 / 3 * np.pi * (radius * size) ** 3
    assert occ.sum() == pytest.approx(exact, rel=2e-3)


def _every_voxel(sdf, size: int) -> np.ndarray:
    """occupancy() without its coarse-to-fine shortcuts: every voxel's own distance decides it
    (inside, outside, or its partial volume when the surface passes through it)."""
    from nanoedx_dataset.simulate.voxelizers import analytic

    idx = np.stack(np.meshgrid(*[np.arange(size)] * 3, indexing="ij"), -1).reshape(-1, 3)
    dist = sdf(analytic._grid(idx, size)) * size
    frac = (dist < 0).astype(np.float32)
    edge = np.abs(dist) <= analytic._HALF_DIAG
    frac[edge] = analytic._partial(sdf, idx[edge], dist[edge], size)
    return frac.reshape((size,) * 3)


@pytest.mark.parametrize("index", range(12))
def test_occupancy_skips_only_voxels_its_own_distance_would_fill_or_leave_empty(index):
    # every family and kind of the catalogue (draw_spec cycles through them), at a size that
    # is not a multiple of the block: the shortcuts change no value, to the bit
    from nanoedx_dataset.simulate.specs import draw_spec

    for name, sdf in draw_spec(3, index).sdfs().items():
        np.testing.assert_array_equal(occupancy(sdf, 45), _every_voxel(sdf, 45), err_msg=name)
