"""Voxelization: a particle spec to per-element occupancy fractions on a cubic grid.

The default ``analytic`` backend needs no mesh library. It evaluates the spec's exact signed
distances coarse-to-fine: blocks of 8^3 voxels whose centre lies farther from the surface than
the block's half-diagonal are filled (or left empty) at once; the remaining voxels are classified
by their centre distance, and the voxels the surface passes through get their partial volume
from the distance and the surface normal (the exact fraction of a unit cube below a plane).
That fraction is exact wherever the surface is flat at the scale of a voxel, and close to it
on curved surfaces and rounded edges; only voxels cut by a sharp edge or corner are approximate.

Backends are registered by name in :data:`BACKENDS` with :func:`register_backend` and chosen with
``voxelize(..., backend=name)``: ``blender`` is the paper's path (Blender meshes voxelized with
VTK, :mod:`nanoedx_dataset.blender`, an optional extra). Every backend turns the occupancies of
a particle's parts into elements with the same :func:`compose`, so the core-shell interface is
blurred identically.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import ndimage

from .errors import ConfigError
from .specs import ELEMENTS, SDF, ParticleSpec

BLOCK = 4
_HALF_DIAG = 3**0.5 / 2
_CHUNK = 1 << 17

Backend = Callable[..., np.ndarray]  # fn(spec, size, mesh_dir=None) -> (element, z, y, x)
BACKENDS: dict[str, Backend] = {}
MESH_BACKENDS: set[str] = set()  # backends that build meshes (and can save them)
_CHECKS: dict[str, Callable[[], None]] = {}


def register_backend(name: str, check: Callable[[], None] | None = None,
                     meshes: bool = False) -> Callable[[Backend], Backend]:
    """Register ``fn(spec, size, mesh_dir=None) -> occupancy (element, z, y, x)`` as a backend.

    ``check()``, if given, raises (e.g. :class:`~nanoedx_dataset.errors.MissingExtraError`)
    when the backend cannot run here; it is called before any work starts. ``meshes``: the
    backend builds meshes and saves them in ``mesh_dir`` when given one.
    """

    def deco(fn: Backend) -> Backend:
        BACKENDS[name] = fn
        if check is not None:
            _CHECKS[name] = check
        if meshes:
            MESH_BACKENDS.add(name)
        return fn

    return deco


def check_backend(name: str) -> None:
    """Raise :class:`ConfigError` for an unknown backend, or the backend's own error if it
    cannot run here (a missing optional extra)."""
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}")
    _CHECKS.get(name, lambda: None)()


def check_mesh_backend(name: str) -> None:
    """Refuse to save meshes with a backend that builds none."""
    check_backend(name)
    if name not in MESH_BACKENDS:
        raise ConfigError(f"the {name} backend builds no meshes to save; a mesh folder needs "
                          f"one of: {', '.join(sorted(MESH_BACKENDS))} (--backend blender)")


def voxelize(spec: ParticleSpec, size: int, backend: str = "analytic",
             mesh_dir=None) -> np.ndarray:
    """Occupancy of each element of a particle on a ``size``^3 grid.

    Parameters
    ----------
    spec : ParticleSpec
        The particle (see :func:`nanoedx_dataset.specs.draw_spec`).
    size : int
        Voxels along each axis; the grid spans the field of view.
    backend : str
        A name of :data:`BACKENDS`: ``"analytic"`` (the default, exact signed distances) or
        ``"blender"`` (the paper's Blender meshes voxelized with VTK; needs
        ``pip install "nanoedx[blender]"``).
    mesh_dir : path-like, optional
        With a mesh backend, also save the particle's meshes there (see
        :func:`nanoedx_dataset.blender.save_meshes`).

    Returns
    -------
    ndarray, shape (2, size, size, size), float32
        Occupancy fraction in [0, 1] of elements :data:`~nanoedx_dataset.specs.ELEMENTS`, axes
        (element, z, y, x). The two elements never sum to more than 1 in a voxel.
    """
    if mesh_dir is None:
        check_backend(backend)
    else:
        check_mesh_backend(backend)
    return BACKENDS[backend](spec, size, mesh_dir=mesh_dir)


def agreement(ref: np.ndarray, other: np.ndarray) -> list[dict]:
    """How two voxelizations of one particle agree, element by element.

    Parameters
    ----------
    ref, other : ndarray, shape (element, z, y, x)
        Occupancies in [0, 1] (e.g. the analytic and the blender backend's).

    Returns
    -------
    list of dict
        One per element present in either: ``element`` (index), ``iou`` (intersection over
        union of the voxels with occupancy > 0.5) and ``sum_diff`` (relative difference of the
        occupancy sums, ``other / ref - 1``).
    """
    out = []
    for e in range(ref.shape[0]):
        a, b = ref[e] > 0.5, other[e] > 0.5
        total_a, total_b = (float(v[e].sum(dtype=np.float64)) for v in (ref, other))
        if total_a == 0 and total_b == 0:
            continue
        union = int((a | b).sum())
        out.append({"element": e, "iou": int((a & b).sum()) / union if union else 1.0,
                    "sum_diff": total_b / total_a - 1 if total_a else np.inf})
    return out


def sampled_volume(sdf: SDF, size: int, supersample: int = 8) -> float:
    """Volume (voxels) of ``sdf < 0`` by point sampling ``supersample``^3 points per voxel.

    A slow, rule-free reference for checking voxelizers (no partial-volume model).
    """
    fine = (np.arange(size * supersample) + 0.5) / (size * supersample) - 0.5
    plane = np.stack(np.meshgrid(fine, fine, indexing="ij"), -1).reshape(-1, 2)
    inside = 0
    for z in fine:
        inside += int((sdf(np.column_stack([np.full(len(plane), z), plane])) < 0).sum())
    return inside / supersample**3


def _grid(idx: np.ndarray, size: int) -> np.ndarray:
    """World coordinates (field units) of voxel indices ``idx`` (M, 3)."""
    return (idx - (size - 1) / 2) / size


def _evaluate(sdf: SDF, points: np.ndarray) -> np.ndarray:
    out = np.empty(len(points))
    for s in range(0, len(points), _CHUNK):
        out[s : s + _CHUNK] = sdf(points[s : s + _CHUNK])
    return out


def cube_fraction(dist: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """Fraction of a unit cube centred at distance ``dist`` (voxels) inside a planar surface.

    Parameters
    ----------
    dist : ndarray, shape (M,)
        Signed distance of the cube's centre from the plane (negative inside).
    normal : ndarray, shape (M, 3)
        Unit outward normals of the plane.

    Returns
    -------
    ndarray, shape (M,)
        The volume of ``{u in [-1/2, 1/2]^3 : normal . u <= -dist}``, in [0, 1].
    """
    a = np.maximum(np.abs(normal), 1e-3)
    s = -dist + a.sum(1) / 2
    total = np.zeros_like(s)
    for k0 in (0, 1):
        for k1 in (0, 1):
            for k2 in (0, 1):
                shift = k0 * a[:, 0] + k1 * a[:, 1] + k2 * a[:, 2]
                total += (-1) ** (k0 + k1 + k2) * np.maximum(s - shift, 0.0) ** 3
    return np.clip(total / (6 * a.prod(1)), 0.0, 1.0)


def occupancy(sdf: SDF, size: int) -> np.ndarray:
    """Partial-volume occupancy of the region ``sdf < 0`` on a ``size``^3 grid.

    Parameters
    ----------
    sdf : callable
        Signed distance (world units, field = 1) of points (M, 3) in (z, y, x); it must never
        overstate the distance to the surface (exact or a conservative bound with correct sign).
    size : int
        Voxels per axis.

    Returns
    -------
    ndarray, shape (size, size, size), float32
    """
    nb = -(-size // BLOCK)
    out = np.zeros((nb * BLOCK,) * 3, dtype=np.float32)
    blocks = np.stack(np.meshgrid(*[np.arange(nb)] * 3, indexing="ij"), -1).reshape(-1, 3)
    centre = _evaluate(sdf, _grid(blocks * BLOCK + (BLOCK - 1) / 2, size)) * size
    reach = _HALF_DIAG * BLOCK
    by_block = out.reshape(nb, BLOCK, nb, BLOCK, nb, BLOCK).transpose(0, 2, 4, 1, 3, 5)
    by_block[(centre < -reach).reshape(nb, nb, nb)] = 1.0
    todo = blocks[np.abs(centre) <= reach]
    if len(todo):
        offs = np.stack(np.meshgrid(*[np.arange(BLOCK)] * 3, indexing="ij"), -1).reshape(-1, 3)
        idx = (todo[:, None, :] * BLOCK + offs[None]).reshape(-1, 3)
        idx = idx[(idx < size).all(1)]
        dist = _evaluate(sdf, _grid(idx, size)) * size
        frac = (dist < 0).astype(np.float32)
        edge = np.abs(dist) <= _HALF_DIAG
        if edge.any():
            frac[edge] = _partial(sdf, idx[edge], dist[edge], size)
        out[idx[:, 0], idx[:, 1], idx[:, 2]] = frac
    return out[:size, :size, :size]


def _partial(sdf: SDF, idx: np.ndarray, dist: np.ndarray, size: int) -> np.ndarray:
    """Partial volume of boundary voxels from the distance and a finite-difference normal."""
    h = 0.25
    p = _grid(idx, size)
    # Tetrahedral stencil: four evaluations give the gradient to second order.
    stencil = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=float)
    f = _evaluate(sdf, (p[None] + stencil[:, None] * (h / size)).reshape(-1, 3)) * size
    grad = np.einsum("km,kd->md", f.reshape(4, -1), stencil) / (4 * h)
    norm = np.linalg.norm(grad, axis=1)
    ok = norm > 1e-6
    normal = np.where(ok[:, None], grad / np.where(ok, norm, 1.0)[:, None], [1.0, 0.0, 0.0])
    return cube_fraction(dist, normal).astype(np.float32)


def compose(spec: ParticleSpec, size: int, part: Callable[[str], np.ndarray]) -> np.ndarray:
    """Per-element occupancy of a particle from the occupancies of its parts.

    Parameters
    ----------
    spec : ParticleSpec
    size : int
    part : callable
        ``part(name) -> (size, size, size)`` occupancy in [0, 1] of the part ``name`` of
        :meth:`ParticleSpec.sdfs`: ``"outer"``, ``"core"`` (core-shell) or ``"wall"`` (hollow).

    Returns
    -------
    ndarray, shape (2, size, size, size), float32
        As :func:`voxelize`: the core of a core-shell particle is Gaussian-blurred with the
        spec's ``blur`` (mimicking partial alloying) and kept inside the particle.
    """
    out = np.zeros((len(ELEMENTS), size, size, size), dtype=np.float32)
    if spec.kind == "solid":
        out[0] = part("outer")
    elif spec.kind == "hollow":
        out[0] = part("wall")
    else:  # core_shell: blur the core's interface, keep it inside the particle
        total = part("outer")
        core = part("core")
        sigma = spec.inner["blur"] * size
        if sigma > 0:
            core = ndimage.gaussian_filter(core, sigma, mode="constant", truncate=3.0)
        core = np.minimum(core, total)
        out[0] = total - core
        out[1] = core
    return out


@register_backend("analytic")
def _analytic(spec: ParticleSpec, size: int, mesh_dir=None) -> np.ndarray:
    parts = spec.sdfs()
    return compose(spec, size, lambda name: occupancy(parts[name], size))


# The paper's mesh path registers itself here; bpy and vtk are imported only when it runs.
from . import blender  # noqa: E402,F401
