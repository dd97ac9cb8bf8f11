"""The shape catalogue: every nanoparticle family of the paper as an exact signed distance.

Each family is registered by name with two functions: ``draw(rng) -> params`` picks its random
geometric parameters (aspect ratio, truncation, edge rounding) and ``build(params) -> Body``
turns them into a convex body in a local frame centred on the origin. Bodies are exact:

* :class:`Polytope` -- an intersection of half-spaces, optionally with every edge and corner
  rounded with radius ``r`` (the Minkowski sum of the polytope shrunk by ``r`` and a ball of
  radius ``r``, what a Blender bevel approximates).
* :class:`Capsule` -- a segment swept by a ball (a sphere when the segment has length 0).

Distances are signed (negative inside) and in the units of the local frame. Sizes, rotation and
position are not chosen here (see :mod:`nanoedx_dataset.simulate.specs`); a family only fixes the shape.

Parameter ranges follow the paper's Methods and the ranges its first author uses for such shapes:
edge rounding 0--0.1 of the size, rod diameter 0.25--1 of its length, platelet thickness
0.1--0.3 of its size, truncation from none to the rectified solid, a ~30 deg tip angle for the
prolate (Au) bipyramid and the {111}-bounded Ino decahedron for the oblate one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy.spatial import ConvexHull, HalfspaceIntersection

from ..errors import ConfigError

PHI = (1 + 5**0.5) / 2


# --------------------------------------------------------------------------------------------
# Bodies
# --------------------------------------------------------------------------------------------
class Body:
    """A convex body with an exact signed distance, in its local frame."""

    def sdf(self, q: np.ndarray, band: float = np.inf) -> np.ndarray:  # pragma: no cover
        """Signed distance of points ``q`` (M, 3); negative inside.

        Values farther than ``band`` outside the surface may be replaced by a lower bound
        (still positive), which is all a voxelizer needs there and much cheaper.
        """
        raise NotImplementedError

    def hull(self) -> tuple[np.ndarray, float]:  # pragma: no cover - interface
        """Points (K, 3) and a radius whose sphere-swept hull is exactly this body."""
        raise NotImplementedError

    def diameter(self) -> float:
        """Largest distance between two points of the body."""
        pts, r = self.hull()
        d = pts[:, None, :] - pts[None, :, :]
        return float(np.sqrt((d**2).sum(-1)).max() + 2 * r)


@dataclass
class Capsule(Body):
    """Points within ``radius`` of the segment from (0, 0, -half_length) to (0, 0, half_length)."""

    half_length: float
    radius: float

    def sdf(self, q: np.ndarray, band: float = np.inf) -> np.ndarray:
        t = np.clip(q[:, 2], -self.half_length, self.half_length)
        d2 = q[:, 0] ** 2 + q[:, 1] ** 2 + (q[:, 2] - t) ** 2
        return np.sqrt(d2) - self.radius

    def hull(self) -> tuple[np.ndarray, float]:
        h = self.half_length
        return np.array([[0.0, 0.0, -h], [0.0, 0.0, h]]), self.radius


@dataclass
class Polytope(Body):
    """The intersection of half-spaces ``normals @ q <= offsets``, edges rounded with ``rounding``.

    Parameters
    ----------
    normals : ndarray, shape (F, 3)
        Outward face normals (normalized here).
    offsets : ndarray, shape (F,)
        Distances of the faces from the origin, which must lie inside.
    rounding : float
        Radius of the rounded edges and corners; faces stay where they are.
    """

    normals: np.ndarray
    offsets: np.ndarray
    rounding: float = 0.0
    _core: tuple = field(init=False, repr=False, default=())
    _gram: np.ndarray = field(init=False, repr=False, default=None)
    _ab2: np.ndarray = field(init=False, repr=False, default=None)
    _edges_a: np.ndarray = field(init=False, repr=False, default=None)  # (3, E) edge starts
    _edges_ab: np.ndarray = field(init=False, repr=False, default=None)  # (3, E) edge vectors

    def __post_init__(self) -> None:
        n = np.asarray(self.normals, dtype=float)
        norm = np.linalg.norm(n, axis=1)
        self.normals = n / norm[:, None]
        self.offsets = np.asarray(self.offsets, dtype=float) / 1.0
        if np.any(self.offsets <= 0):
            raise ConfigError("a polytope's faces must all lie outside the origin (offsets > 0)")
        # At most a third of the inradius: sharper tips would lose much of their length.
        self.rounding = float(min(self.rounding, self.offsets.min() / 3))
        shrunk = self.offsets - self.rounding
        verts = _vertices(self.normals, shrunk)
        edges = _edges(verts)
        on_face = np.abs(verts @ self.normals.T - shrunk) < 1e-9 * np.abs(verts).max()  # (V, F)
        adjacent = (on_face[edges[:, 0]] & on_face[edges[:, 1]]).T.astype(np.float32)  # (F, E)
        a, ab = verts[edges[:, 0]], verts[edges[:, 1]] - verts[edges[:, 0]]
        self._core = (shrunk, verts, a, ab, adjacent)
        self._gram = self.normals @ self.normals.T
        self._ab2 = (ab**2).sum(-1)
        self._edges_a, self._edges_ab = np.ascontiguousarray(a.T), np.ascontiguousarray(ab.T)

    def sdf(self, q: np.ndarray, band: float = np.inf) -> np.ndarray:
        plane = q @ self.normals.T  # (M, F)
        plane -= self._core[0]
        m = plane.max(axis=1)
        dist = m.copy()  # exact inside the shrunk polytope (distance to nearest face)
        if self.rounding > 0:
            out = np.flatnonzero((m > 0) & (m < self.rounding + band))
            if out.size:
                dist[out] = self._outside_distance(q[out], plane[out], m[out])
        return dist - self.rounding

    def _outside_distance(self, q: np.ndarray, plane: np.ndarray, m: np.ndarray) -> np.ndarray:
        """Exact distance to the shrunk polytope of points outside it."""
        adjacent, a, ab = self._core[4], self._edges_a, self._edges_ab
        # The nearest point is on face i iff q's projection onto that plane stays inside.
        proj = self._gram.take(plane.argmax(axis=1), axis=0)
        proj *= m[:, None]
        np.subtract(plane, proj, out=proj)
        on_face = proj.max(axis=1) <= 1e-9
        dist = m.copy()
        rest = np.flatnonzero(~on_face)
        if rest.size:
            # Otherwise it is on an edge (or a corner, an edge's end) of a face the point is
            # outside of: only those edges are candidates, each point's in a run of pairs.
            cand = (plane[rest] > 0).astype(np.float32) @ adjacent > 0  # (K, E)
            k, e = np.nonzero(cand)
            # per coordinate, in the order of a sum over the last axis ((x + y) + z)
            qq = [q[rest, c].take(k) - a[c].take(e) for c in range(3)]
            abe = [ab[c].take(e) for c in range(3)]
            dot = qq[0] * abe[0]
            dot += qq[1] * abe[1]
            dot += qq[2] * abe[2]
            t = np.clip(dot / self._ab2.take(e), 0.0, 1.0)
            d2 = None
            for c in range(3):
                d = qq[c] - t * abe[c]
                d *= d
                d2 = d if d2 is None else np.add(d2, d, out=d2)
            starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
            dist[rest] = np.sqrt(np.minimum.reduceat(d2, starts))
        return dist

    def hull(self) -> tuple[np.ndarray, float]:
        return self._core[1], self.rounding


def _vertices(normals: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Vertices of the polytope ``normals @ q <= offsets`` (origin inside), duplicates merged."""
    hs = HalfspaceIntersection(np.hstack([normals, -offsets[:, None]]), np.zeros(3))
    pts = hs.intersections
    scale = np.abs(pts).max()
    _, keep = np.unique(np.round(pts / scale, 9), axis=0, return_index=True)
    return pts[np.sort(keep)]


def _edges(verts: np.ndarray) -> np.ndarray:
    """Index pairs (E, 2) of the polytope's edges: hull triangle edges between two faces."""
    hull = ConvexHull(verts)
    eq = hull.equations
    pairs = set()
    for s, simplex in enumerate(hull.simplices):
        for k in range(3):
            nb = hull.neighbors[s, k]
            if np.abs(eq[s] - eq[nb]).max() > 1e-7:
                e = tuple(sorted(int(v) for j, v in enumerate(simplex) if j != k))
                pairs.add(e)
    return np.array(sorted(pairs), dtype=int)


# --------------------------------------------------------------------------------------------
# Helpers that build the polytopes of the catalogue
# --------------------------------------------------------------------------------------------
def _cyclic(v: tuple[float, float, float]) -> list[tuple[float, float, float]]:
    a, b, c = v
    return [(a, b, c), (b, c, a), (c, a, b)]


def _signs(vectors: list) -> np.ndarray:
    """All sign combinations of the nonzero components of each vector, duplicates removed."""
    out = set()
    for v in vectors:
        for sx in (1, -1):
            for sy in (1, -1):
                for sz in (1, -1):
                    out.add((sx * v[0] + 0.0, sy * v[1] + 0.0, sz * v[2] + 0.0))
    return np.array(sorted(out), dtype=float)


def _stretch(normals: np.ndarray, offsets: np.ndarray, factor: float) -> tuple:
    """Half-spaces of the body stretched by ``factor`` along local axis 2."""
    n = np.asarray(normals, float) / np.linalg.norm(normals, axis=1)[:, None]
    n = n * np.array([1.0, 1.0, 1.0 / factor])
    norm = np.linalg.norm(n, axis=1)
    return n / norm[:, None], np.asarray(offsets, float) / norm


def _truncate(vertex_dirs: np.ndarray, circumradius: float, neighbour_cos: float, t: float):
    """Offsets of planes cutting the vertices along ``vertex_dirs``.

    ``t = 1`` cuts a third of each edge (the Archimedean truncation), ``t = 1.5`` half of it (the
    rectified solid); ``neighbour_cos`` is the cosine of the angle between adjacent vertices.
    """
    h = circumradius - t * circumradius * (1 - neighbour_cos) / 3
    return np.full(len(vertex_dirs), h)


def _rounded(normals, offsets, rho: float) -> Polytope:
    """A polytope whose rounding radius is ``rho`` times its diameter."""
    sharp = Polytope(normals, offsets)
    return Polytope(sharp.normals, sharp.offsets, rounding=rho * sharp.diameter())


OCTA_DIRS = _signs([(1, 1, 1)])
CUBE_DIRS = np.vstack([np.eye(3), -np.eye(3)])
ICOSA_FACE_DIRS = np.vstack(
    [_signs([(1, 1, 1)])] + [_signs(_cyclic((0, 1 / PHI, PHI)))]
)
ICOSA_VERTEX_DIRS = _signs(_cyclic((0, 1, PHI)))


def _regular_polygon_normals(k: int, phase: float = 0.0) -> np.ndarray:
    ang = 2 * np.pi * np.arange(k) / k + phase
    return np.stack([np.cos(ang), np.sin(ang), np.zeros(k)], axis=1)


# --------------------------------------------------------------------------------------------
# Families
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Family:
    """A registered shape family: random parameters and the body they describe."""

    name: str
    draw: Callable[[np.random.Generator], dict]
    build: Callable[[dict], Body]
    compact: bool  # may be a core or the outer shape of a core-shell / hollow particle


FAMILIES: dict[str, Family] = {}


def register(name: str, *, compact: bool = True):
    """Register a family: decorate a ``build(params)`` and pass its ``draw``."""

    def wrap(draw: Callable[[np.random.Generator], dict]):
        def deco(build: Callable[[dict], Body]) -> Callable[[dict], Body]:
            FAMILIES[name] = Family(name, draw, build, compact)
            return build

        return deco

    return wrap


def _rho(rng: np.random.Generator) -> float:
    return float(rng.uniform(0.0, 0.1))


def _aspect(rng: np.random.Generator, high: float = 1.3) -> float:
    return float(rng.uniform(1.0, high))


@register("sphere")(lambda rng: {})
def _sphere(p: dict) -> Body:
    return Capsule(0.0, 0.5)


@register("cube")(lambda rng: {"aspect": _aspect(rng, 1.25), "rounding": _rho(rng)})
def _cube(p: dict) -> Body:
    n, d = _stretch(CUBE_DIRS, np.ones(6), p["aspect"])
    return _rounded(n, d, p["rounding"])


@register("capped_rod")(lambda rng: {"diameter_ratio": float(rng.uniform(0.25, 1.0))})
def _capped_rod(p: dict) -> Body:
    r = p["diameter_ratio"] / 2
    return Capsule(max(0.5 - r, 0.0), r)


@register("octahedron")(lambda rng: {"aspect": _aspect(rng), "rounding": _rho(rng)})
def _octahedron(p: dict) -> Body:
    n, d = _stretch(OCTA_DIRS, np.full(8, 1 / 3**0.5), p["aspect"])
    return _rounded(n, d, p["rounding"])


@register("truncated_octahedron")(
    lambda rng: {"aspect": _aspect(rng), "truncation": float(rng.uniform(0.3, 1.5)),
                 "rounding": _rho(rng)}
)
def _truncated_octahedron(p: dict) -> Body:
    # Octahedron with vertices at distance 1 on the axes; adjacent vertices are orthogonal.
    cut = _truncate(CUBE_DIRS, 1.0, 0.0, p["truncation"])
    normals = np.vstack([OCTA_DIRS, CUBE_DIRS])
    offsets = np.concatenate([np.full(8, 1 / 3**0.5), cut])
    n, d = _stretch(normals, offsets, p["aspect"])
    return _rounded(n, d, p["rounding"])


@register("icosahedron")(lambda rng: {"aspect": _aspect(rng, 1.15), "rounding": _rho(rng)})
def _icosahedron(p: dict) -> Body:
    n, d = _stretch(ICOSA_FACE_DIRS, np.ones(20), p["aspect"])
    return _rounded(n, d, p["rounding"])


def _icosa_circumradius() -> float:
    return float(np.linalg.norm(Polytope(ICOSA_FACE_DIRS, np.ones(20)).hull()[0], axis=1).max())


@register("truncated_icosahedron")(
    lambda rng: {"aspect": _aspect(rng, 1.15), "truncation": float(rng.uniform(0.3, 1.5)),
                 "rounding": _rho(rng)}
)
def _truncated_icosahedron(p: dict) -> Body:
    cut = _truncate(ICOSA_VERTEX_DIRS, _icosa_circumradius(), 1 / 5**0.5, p["truncation"])
    normals = np.vstack([ICOSA_FACE_DIRS, ICOSA_VERTEX_DIRS])
    n, d = _stretch(normals, np.concatenate([np.ones(20), cut]), p["aspect"])
    return _rounded(n, d, p["rounding"])


def _draw_platelet(rng: np.random.Generator) -> dict:
    truncated = bool(rng.random() < 0.5)
    return {
        "thickness": float(rng.uniform(0.1, 0.3)),
        "truncation": float(rng.uniform(0.2, 0.8)) if truncated else 0.0,
        "rounding": _rho(rng),
    }


def _platelet(k: int, p: dict) -> Body:
    """A regular ``k``-gon prism (apothem 1), corners optionally cut towards the ``2k``-gon."""
    circum = 1 / np.cos(np.pi / k)
    sides = _regular_polygon_normals(k)
    corners = _regular_polygon_normals(k, np.pi / k)
    ring = circum * corners[:, :2]
    lateral = np.sqrt(((ring[:, None] - ring[None]) ** 2).sum(-1)).max()  # polygon diameter
    half_t = p["thickness"] * lateral / 2
    normals = [sides, np.array([[0, 0, 1.0], [0, 0, -1.0]])]
    offsets = [np.ones(k), np.full(2, half_t)]
    if p["truncation"] > 0:
        normals.append(corners)
        offsets.append(np.full(k, circum - p["truncation"] * (circum - 1)))
    sharp = Polytope(np.vstack(normals), np.concatenate(offsets))
    r = min(p["rounding"] * sharp.diameter(), 0.45 * half_t)
    return Polytope(sharp.normals, sharp.offsets, rounding=r)


register("triangular_platelet", compact=False)(_draw_platelet)(lambda p: _platelet(3, p))
register("hexagonal_platelet", compact=False)(_draw_platelet)(lambda p: _platelet(6, p))
register("square_platelet", compact=False)(_draw_platelet)(lambda p: _platelet(4, p))


def _bipyramid(radius: float, half_height: float) -> tuple[np.ndarray, np.ndarray]:
    """Half-spaces of a pentagonal bipyramid (equatorial circumradius, apex half-height)."""
    normals, offsets = [], []
    ang = 2 * np.pi * np.arange(5) / 5
    ring = np.stack([radius * np.cos(ang), radius * np.sin(ang), np.zeros(5)], axis=1)
    for j in range(5):
        a, b = ring[j], ring[(j + 1) % 5]
        for apex in (np.array([0, 0, half_height]), np.array([0, 0, -half_height])):
            n = np.cross(b - a, apex - a)
            if n @ a < 0:
                n = -n
            n = n / np.linalg.norm(n)
            normals.append(n)
            offsets.append(n @ a)
    return np.array(normals), np.array(offsets)


@register("oblate_bipyramid")(
    lambda rng: {"aspect": float(rng.uniform(0.9, 1.1)), "truncation": float(rng.uniform(0, 1)),
                 "rounding": _rho(rng)}
)
def _oblate_bipyramid(p: dict) -> Body:
    # Ino decahedron: five {111}-bounded tetrahedra around the 5-fold axis (edge e = 1), whose
    # equatorial edges are cut by {100} facets (the truncation).
    radius = 3**0.5 / 2 * p["aspect"]
    n, d = _bipyramid(radius, 0.5)
    apothem = radius * np.cos(np.pi / 5)
    ino = _regular_polygon_normals(5, np.pi / 5)
    n = np.vstack([n, ino])
    d = np.concatenate([d, np.full(5, apothem * (1 - 0.25 * p["truncation"]))])
    return _rounded(n, d, p["rounding"])


@register("prolate_bipyramid")(
    lambda rng: {"tip_angle": float(rng.uniform(25.0, 35.0)),
                 "tip_truncation": float(rng.uniform(0.0, 0.15)), "rounding": _rho(rng)}
)
def _prolate_bipyramid(p: dict) -> Body:
    # Au bipyramid: a long pentagonal bipyramid, full tip angle ~30 deg, tips optionally flat.
    radius = 0.5 * math.tan(math.radians(p["tip_angle"]) / 2)  # the C library's tan
    n, d = _bipyramid(radius, 0.5)
    tips = np.array([[0, 0, 1.0], [0, 0, -1.0]])
    n = np.vstack([n, tips])
    d = np.concatenate([d, np.full(2, 0.5 * (1 - p["tip_truncation"]))])
    return _rounded(n, d, p["rounding"])


def family(name: str) -> Family:
    """Look up a family by name; the error lists the valid names."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ConfigError(
            f"unknown shape family {name!r}; choose one of: {', '.join(FAMILIES)}"
        ) from None


COMPACT_FAMILIES = tuple(name for name, f in FAMILIES.items() if f.compact)
