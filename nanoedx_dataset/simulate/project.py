"""Projections: parallel-beam line integrals of occupancy around one tilt axis, with ASTRA.

Axis convention (DESIGN.md): a volume is (z, y, x); at 0 deg the beam runs along z, so the 0 deg
projection is the sum over z; the tilt axis is y; a projection is (row = y, col). With
c = (n - 1) / 2 a voxel at (z, x) lands at detector column
``u = (x - c) cos(theta) - (z - c) sin(theta) + c``, which is ASTRA's 2D ``parallel`` geometry
applied to every y-slice ``v[:, y, :]`` (z as ASTRA's row axis, detector width 1, n pixels).

On the CPU, ASTRA's 2D ``strip`` projector is turned into its sparse system matrix once per
(size, angles) and applied to all y-slices at once as one sparse x dense product: many times
faster than ASTRA slice by slice, and it never enters ASTRA's CUDA code, which kills the process
(SIGFPE) on a machine without a GPU. The strip projector spreads each voxel's area over the
detector, so every projection conserves the volume's mass (to float32 rounding).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import scipy.sparse

from ..errors import ConfigError

DEFAULT_ANGLES = tuple(float(a) for a in np.arange(-75.0, 76.0, 10.0))  # 16 angles, degrees


def check_angles(angles) -> np.ndarray:
    """Validate tilt angles in degrees: a non-empty 1-D list inside the open interval (-90, 90)."""
    a = np.asarray(angles, dtype=float)
    if a.ndim != 1 or a.size == 0 or not np.all(np.isfinite(a)):
        raise ConfigError(f"angles must be a non-empty list of finite degrees, got {angles!r}")
    bad = a[(a <= -90) | (a >= 90)]
    if bad.size:
        raise ConfigError(
            f"tilt angles must lie strictly between -90 and 90 degrees; got {bad.tolist()}"
        )
    return a


@lru_cache(maxsize=8)
def system_matrix(size: int, angles: tuple[float, ...]) -> scipy.sparse.csr_matrix:
    """ASTRA's strip-projector matrix for ``size``^2 slices and ``angles`` (degrees).

    Returns
    -------
    scipy.sparse.csr_matrix, shape (len(angles) * size, size * size), float32
        Row ``a * size + u`` holds the weights of detector pixel u at angle a; column
        ``z * size + x`` the voxel (z, x) of a slice.
    """
    import astra

    vol = astra.create_vol_geom(size, size)
    geom = astra.create_proj_geom("parallel", 1.0, size, np.deg2rad(np.asarray(angles)))
    proj = astra.create_projector("strip", geom, vol)
    mat = astra.projector.matrix(proj)
    try:
        return astra.matrix.get(mat).tocsr().astype(np.float32)
    finally:
        astra.matrix.delete(mat)
        astra.projector.delete(proj)


@lru_cache(maxsize=8)
def forward_matrix(size: int, angles: tuple[float, ...]) -> scipy.sparse.csc_matrix:
    """:func:`system_matrix` in CSC form, for products with many volume columns: a product
    walks the volume's rows in order and adds into the (small) projections, which stay in the
    cache; it gives the CSR product's sums, in the same order, bit for bit."""
    w = system_matrix(size, angles).tocsc()
    w.sort_indices()
    return w


def project(volume: np.ndarray, angles=DEFAULT_ANGLES, scale: float | None = None) -> np.ndarray:
    """Tilt series of a volume.

    Parameters
    ----------
    volume : ndarray, shape (..., n, n, n)
        Occupancy (or any density) on axes (z, y, x); leading axes (e.g. element) are kept.
    angles : sequence of float
        Tilt angles in degrees, each in (-90, 90).
    scale : float, optional
        Project ``volume * scale`` (in float32), e.g. a quantized volume and its scale factor
        (the volume is reordered in its own dtype first, which is cheaper for integers).

    Returns
    -------
    ndarray, shape (..., len(angles), n, n), float32
        Line integrals in voxel units, axes (angle, row = y, col).
    """
    vol = np.asarray(volume)
    if vol.dtype.kind not in "biuf":
        vol = vol.astype(np.float32)
    if vol.ndim < 3 or not (vol.shape[-1] == vol.shape[-2] == vol.shape[-3]):
        raise ConfigError(f"volume must be (..., n, n, n) with equal sides, got {vol.shape}")
    ang = tuple(check_angles(angles).tolist())
    n = vol.shape[-1]
    lead = vol.shape[:-3]
    # (..., z, y, x) -> (z, x, ..., y) -> (z*x, rest): one column per y-slice of each leading item
    cols = np.moveaxis(vol.reshape((-1, n, n, n)), (1, 3), (0, 1)).reshape(n * n, -1)
    cols = cols.astype(np.float32, copy=False)
    if scale is not None:
        cols *= np.float32(scale)
    sino = forward_matrix(n, ang) @ cols  # (angle * u, m * y)
    sino = sino.reshape(len(ang), n, -1, n)  # (angle, u, m, y)
    return np.ascontiguousarray(sino.transpose(2, 0, 3, 1)).reshape(lead + (len(ang), n, n))
