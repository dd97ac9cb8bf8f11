"""Scenes: fields of view that look like real ones, with several particles, supports and phases.

A scene holds 1 to ~12 particles of the catalogue's families and kinds (each a
:class:`~nanoedx_dataset.simulate.specs.ParticleSpec`), of very different sizes, separate or
touching; some porous or with an irregular surface (thresholded smooth random fields), some with
a composition that varies inside them (an alloy whose fraction of the second element changes
smoothly); optionally a thin support slab and an extended textured phase that fill the field.
A :class:`SceneSpec` is drawn from ``(seed, index)`` and the :class:`SceneOptions` alone, stored
as JSON in the sample's ``params``, and resolution-independent: random fields live on lattices
in field (or particle) units, never on the voxel grid.

Everything stays inside the cylinder of radius :data:`~nanoedx_dataset.simulate.specs.FIELD_RADIUS`
around the tilt axis, so projections conserve mass; occupancies add up and are scaled down
wherever the elements of overlapping parts would sum to more than 1, so ``A + B <= 1``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields, replace

import numpy as np
from scipy import ndimage, special
from scipy.spatial.transform import Rotation

from ..errors import ConfigError
from ..store.schema import ELEMENTS, SCENE, VOLUME_SCALE
from . import blur, shapes
from .specs import (_KIND_CYCLE, DRAWN_FAMILIES, FIELD_RADIUS, ParticleSpec, draw_shape,
                    rounded, world_hull)
from .voxelizers import voxelize
from .voxelizers.analytic import occupancy

__all__ = ["SCENE", "SceneOptions", "SceneSpec", "draw_scene", "smooth_field", "voxelize_scene"]

TRIES = 40  # placements tried before a particle is shrunk
SHRINK = 0.8  # factor of each shrink
TOUCH = (0.8, 1.0)  # centre distance / the sum of the two reaches along the line of centres
GAP = 0.01  # field units kept between separate particles' bounding spheres
MAX_LATTICE = 96  # lattice points per side of a random field
ROUGH = (0.04, 0.12)  # surface displacement of an irregular particle / its diameter
ROUGH_LENGTH = (0.12, 0.3)  # smoothing width of its surface field / its diameter
PORE_LENGTH = (0.05, 0.15)  # smoothing width of a pore field / the particle's diameter
PORE_FRACTION = (0.1, 0.4)  # share of the particle's volume in pores
SUPPORT_THICKNESS = (0.015, 0.06)  # field units
PHASE_THICKNESS = (0.1, 0.5)  # field units: the layer an extended phase fills
PHASE_LENGTH = (0.015, 0.06)  # smoothing width of the phase's field, field units
PHASE_FRACTION = (0.15, 0.5)  # share of the layer the phase fills
SIMILAR = (0.75, 1.25)  # spread of the particles' sizes about a field's common size
TILT = np.deg2rad(20.0)  # largest tilt of a support's or layer's normal from the beam (z)


@dataclass(frozen=True)
class SceneOptions:
    """How scenes are drawn (a generation option, see
    :class:`~nanoedx_dataset.generation.config.GenerationConfig`).

    Attributes
    ----------
    particles : (int, int)
        Range of the number of particles per field (uniform over the integers, ends included).
    extent : (float, float)
        Range of a particle's largest extent (diameter), field units; drawn log-uniformly, and
        shrunk (never below the low end) when a crowded field has no room.
    similar : float
        Probability that a field's particles share one size (log-uniform in ``extent``, each
        particle within :data:`SIMILAR` of it) instead of sizes drawn one by one.
    touching : float
        Probability that a particle (after the first) is placed against another one.
    porous, irregular, gradient, swap : float
        Per-particle probabilities: pores; an irregular surface (solid particles); a
        composition gradient (solid and hollow particles); the two elements exchanged (B the
        main element).
    support, phase : float
        Per-field probabilities of a thin support slab and of an extended textured phase.
    """

    particles: tuple[int, int] = (1, 12)
    extent: tuple[float, float] = (0.05, 0.9)
    similar: float = 0.4
    touching: float = 0.5
    porous: float = 0.2
    irregular: float = 0.2
    gradient: float = 0.3
    swap: float = 0.3
    support: float = 0.4
    phase: float = 0.25

    def validate(self) -> "SceneOptions":
        """Return the options with types normalized, or raise :class:`ConfigError`."""
        lo, hi = (int(v) for v in self.particles)
        if not 1 <= lo <= hi <= 64:
            raise ConfigError(f"scene particles must be a range (low, high) with 1 <= low <= "
                              f"high <= 64, got {self.particles}")
        e_lo, e_hi = (float(v) for v in self.extent)
        if not 0.01 <= e_lo <= e_hi <= 2 * FIELD_RADIUS:
            raise ConfigError(f"scene extent must be a range (low, high) of field fractions "
                              f"with 0.01 <= low <= high <= {2 * FIELD_RADIUS}, got "
                              f"{self.extent}")
        probs = {f.name: float(getattr(self, f.name)) for f in fields(self)
                 if f.name not in ("particles", "extent")}
        bad = {k: v for k, v in probs.items() if not 0.0 <= v <= 1.0}
        if bad:
            raise ConfigError(f"scene probabilities must lie in [0, 1], got {bad}")
        return SceneOptions((lo, hi), (e_lo, e_hi), **probs)

    @classmethod
    def from_dict(cls, d: dict) -> "SceneOptions":
        """Options from their JSON form (lists for the ranges); the error lists valid keys."""
        names = [f.name for f in fields(cls)]
        unknown = set(d) - set(names)
        if unknown:
            raise ConfigError(f"unknown scene options {sorted(unknown)}; valid: "
                              f"{', '.join(names)}")
        d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**d).validate()


@dataclass(frozen=True)
class SceneSpec:
    """Everything needed to rebuild one field.

    Attributes
    ----------
    index, seed : int
        Position in the database and the generation seed it was drawn from.
    particles : list of dict
        Largest first; each ``particle`` (a :class:`ParticleSpec` as a dict), ``elements``
        (``[main, other]`` element indices: ``[0, 1]``, or ``[1, 0]`` when exchanged: the
        main element is the solid, the shell or the hollow wall), ``pores`` (``seed``,
        ``length``: smoothing width / diameter, ``fraction``) or None, ``rough`` (``seed``,
        ``length``, ``amplitude``: largest surface displacement / diameter) or None and
        ``gradient`` (``profile`` ``linear`` / ``radial`` / ``random``, ``from`` and ``to``:
        the fraction of the other element at one end and the other, ``direction`` or
        ``seed`` and ``length``) or None.
    support : dict or None
        A slab: ``element``, ``thickness`` (field units), unit ``normal`` (z, y, x),
        ``offset`` (of its mid-plane along the normal) and ``density`` (``seed``,
        ``length``, ``contrast``: its occupancy varies in [1 - contrast, 1]) or None.
    phase : dict or None
        An extended textured phase: ``element``, the layer it fills (``thickness``,
        ``normal``, ``offset``) and its random field (``seed``, ``length`` in field units,
        ``fraction`` of the layer).
    """

    index: int
    seed: int
    particles: list
    support: dict | None = None
    phase: dict | None = None

    def to_json(self) -> str:
        """The spec as a JSON string (floats round-trip exactly)."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "SceneSpec":
        """Rebuild a spec from :meth:`to_json` output."""
        try:
            spec = cls(**json.loads(text))
            for p in spec.particles:
                ParticleSpec(**p["particle"])
        except (TypeError, KeyError, json.JSONDecodeError) as err:
            raise ConfigError(f"not a scene spec: {text[:80]!r} ({err})") from err
        return spec

    def particle_specs(self) -> list[ParticleSpec]:
        """The particles' :class:`ParticleSpec`, largest first."""
        return [ParticleSpec(**p["particle"]) for p in self.particles]

    def elements(self) -> set[int]:
        """Indices of the elements the scene holds (by its spec)."""
        held = set()
        for p in self.particles:
            both = p["particle"]["kind"] == "core_shell" or p["gradient"] is not None
            held |= set(p["elements"]) if both else {p["elements"][0]}
        held |= {part["element"] for part in (self.support, self.phase) if part is not None}
        return held


# ------------------------------------------------------------------------- random fields
def smooth_field(seed: int, length: float, axes) -> np.ndarray:
    """A smooth Gaussian random field of unit variance on a grid of points.

    White noise on a periodic lattice over the unit cube (drawn from ``seed``), smoothed by a
    Gaussian of width ``length`` and interpolated with cubic B-splines (as
    ``scipy.ndimage.map_coordinates(order=3, mode="grid-wrap")``, evaluated axis by axis): the
    same ``seed`` and ``length`` give the same field at any resolution.

    Parameters
    ----------
    seed : int
    length : float
        Gaussian smoothing width, in units of the cube (the field is periodic with period 1).
    axes : three 1-D arrays
        Coordinates along z, y and x of the grid's points, in units of the cube.

    Returns
    -------
    ndarray, shape (len(z), len(y), len(x)), float64
    """
    n = int(np.clip(np.ceil(2.0 / length), 8, MAX_LATTICE))
    lattice = np.random.default_rng(seed).standard_normal((n, n, n))
    lattice = blur.gaussian(lattice, length * n, mode="wrap")
    lattice /= lattice.std()
    coeff = ndimage.spline_filter(lattice, order=3, mode="grid-wrap")
    wz, wy, wx = (_bspline_weights(np.asarray(c, np.float64) * n, n) for c in axes)
    out = np.tensordot(wz, coeff, axes=(1, 0))  # (z, b, c)
    out = np.tensordot(out, wy, axes=(1, 1))  # (z, c, y)
    return np.tensordot(out, wx, axes=(1, 1))  # (z, y, x)


def _bspline_weights(coords: np.ndarray, n: int) -> np.ndarray:
    """Cubic B-spline weights (len(coords), n) of periodic lattice points at ``coords``."""
    base = np.floor(coords)
    t = coords - base
    w = np.stack([(1 - t) ** 3, 3 * t**3 - 6 * t**2 + 4, -3 * t**3 + 3 * t**2 + 3 * t + 1,
                  t**3], axis=1) / 6
    idx = (base.astype(int)[:, None] + np.arange(-1, 3)[None]) % n
    out = np.zeros((len(coords), n))
    np.add.at(out, (np.repeat(np.arange(len(coords)), 4), idx.ravel()), w.ravel())
    return out


def soft_occupancy(g: np.ndarray, size: int) -> np.ndarray:
    """Occupancy of the region ``g < 0`` of a smooth function sampled on a block of voxels.

    The partial volume of a voxel is a linear ramp one voxel wide across the level set,
    ``clip(0.5 - g / |grad g|, 0, 1)`` with ``g / |grad g|`` in voxels (finite differences).

    Parameters
    ----------
    g : ndarray, shape (nz, ny, nx), each side >= 2
        The function at voxel centres (any units per field unit).
    size : int
        Voxels per field unit.
    """
    grad = np.gradient(g, 1.0 / size)
    norm = np.sqrt(sum(d * d for d in grad))
    dist = g / np.maximum(norm, 1e-9) * size
    return np.clip(0.5 - dist, 0.0, 1.0).astype(np.float32)


# ------------------------------------------------------------------------- drawing
def _unit(rng: np.random.Generator) -> list[float]:
    v = rng.normal(size=3)
    return [float(c) for c in v / math.hypot(*v)]


def _tilted_normal(rng: np.random.Generator) -> list[float]:
    """A unit normal (z, y, x) within :data:`TILT` of the beam at 0 degrees."""
    theta, phi = rng.uniform(0.0, TILT), rng.uniform(0.0, 2 * np.pi)
    return [float(np.cos(theta)), float(np.sin(theta) * np.sin(phi)),
            float(np.sin(theta) * np.cos(phi))]


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2**31))


def _gradient(rng: np.random.Generator) -> dict:
    profile = str(rng.choice(["linear", "radial", "random"]))
    out = {"profile": profile, "from": float(rng.uniform(0.05, 0.95)),
           "to": float(rng.uniform(0.05, 0.95))}
    if profile == "linear":
        out["direction"] = _unit(rng)
    elif profile == "random":
        out.update(seed=_seed(rng), length=float(rng.uniform(0.1, 0.3)))
    return out


def _diameter(spec: ParticleSpec) -> float:
    return spec.scale * shapes.family(spec.family).build(spec.params).diameter()


def _rescaled(spec: ParticleSpec, factor: float) -> ParticleSpec:
    """The particle ``factor`` times smaller or larger, its footprint still centred on 0."""
    inner = None if spec.inner is None else {
        **spec.inner, **{k: spec.inner[k] * factor for k in ("scale", "wall", "blur")}}
    return replace(spec, scale=spec.scale * factor, center=[c * factor for c in spec.center],
                   inner=inner)


class _Placed:
    """A particle being placed: its spec, outer surface and bounding spheres."""

    def __init__(self, spec: ParticleSpec, margin: float):
        self.spec, self.margin = spec, margin
        self.sdf = spec.sdfs()["outer"]
        pts, r = world_hull(spec)
        c = np.asarray(spec.center)
        self.offsets, self.r = pts - c, r + margin
        self.radius = float(np.linalg.norm(self.offsets, axis=1).max() + self.r)
        self.inscribed = float(-self.sdf(c[None])[0])

    @property
    def center(self) -> np.ndarray:
        return np.asarray(self.spec.center)

    def moved(self, center) -> "_Placed":
        out = object.__new__(_Placed)
        out.__dict__.update(self.__dict__)
        out.spec = replace(self.spec, center=[float(v) for v in center])
        c = np.asarray(out.spec.center)
        base = self.sdf
        shift = c - self.center
        out.sdf = lambda p: base(p - shift)
        return out

    def inside(self) -> bool:
        """The particle (with its margin) lies inside the field's cylinder and y range."""
        pts = self.offsets + self.center
        return bool(np.all(np.hypot(pts[:, 0], pts[:, 2]) + self.r <= FIELD_RADIUS)
                    and np.all(np.abs(pts[:, 1]) + self.r <= FIELD_RADIUS))

    def room(self) -> tuple[float, float]:
        """How far its centre may move from the field's centre: in (z, x) and along y
        (the spec being centred as :func:`draw_shape` centres it)."""
        radial = np.hypot(self.offsets[:, 0] + self.center[0],
                          self.offsets[:, 2] + self.center[2]).max() + self.r
        half_y = np.abs(self.offsets[:, 1] + self.center[1]).max() + self.r
        return max(FIELD_RADIUS - radial, 0.0), max(FIELD_RADIUS - half_y, 0.0)

    def reach(self, u: np.ndarray) -> float:
        """Distance from the centre to the (convex) surface along the unit vector ``u``."""
        lo, hi = 0.0, self.radius
        for _ in range(2):
            t = np.linspace(lo, hi, 65)
            inside = np.flatnonzero(self.sdf(self.center + t[:, None] * u) < 0)
            k = int(inside.max()) if inside.size else 0
            lo, hi = t[k], t[min(k + 1, 64)]
        return float(lo)


def _place(rng: np.random.Generator, part: _Placed, placed: list[_Placed],
           touching: float, lo_extent: float) -> _Placed:
    """Move (and if need be shrink) ``part`` to a free place in the field."""
    while True:
        centred = part
        room_zx, room_y = centred.room()
        candidate = None
        for _ in range(TRIES):
            touch = None
            if placed and rng.random() < touching:
                touch = int(rng.integers(len(placed)))
                other = placed[touch]
                u = np.asarray(_unit(rng))
                dist = (other.reach(u) + centred.reach(-u)) * rng.uniform(*TOUCH)
                candidate = centred.moved(other.center + dist * u)
                if not candidate.inside():
                    continue
            else:
                ang, rad = rng.uniform(0, 2 * np.pi), room_zx * np.sqrt(rng.uniform())
                shift = [rad * np.cos(ang), rng.uniform(-room_y, room_y), rad * np.sin(ang)]
                candidate = centred.moved(centred.center + np.asarray(shift))
            if _clear(candidate, placed, touch):
                return candidate
        extent = _diameter(part.spec)
        if extent * SHRINK < lo_extent:
            # no room left at the smallest size: accept an overlap (an agglomerate), but stay
            # inside the field
            if candidate is None or not candidate.inside():
                candidate = centred
            return candidate
        part = _Placed(_rescaled(part.spec, SHRINK), part.margin * SHRINK)


def _clear(c: _Placed, placed: list[_Placed], touch: int | None) -> bool:
    for k, other in enumerate(placed):
        d = float(np.linalg.norm(c.center - other.center))
        if touch is None:
            if d < c.radius + other.radius + GAP:
                return False
        elif k != touch and d < c.inscribed + other.inscribed:
            return False
    return True


def _layer(rng: np.random.Generator, thickness: tuple[float, float],
           offset: float) -> dict:
    return {"element": int(rng.integers(len(ELEMENTS))),
            "thickness": float(rng.uniform(*thickness)), "normal": _tilted_normal(rng),
            "offset": float(rng.uniform(-offset, offset))}


def draw_scene(seed: int, index: int, options: SceneOptions | None = None) -> SceneSpec:
    """Draw the scene of sample ``index`` of a database generated with ``seed``.

    Parameters
    ----------
    seed, index : int
        The generation seed and the sample's index; with ``options`` the scene depends on
        nothing else.
    options : SceneOptions, optional
        Default: :class:`SceneOptions()`.

    Returns
    -------
    SceneSpec
        It holds both elements (when the draw gives only one, the largest particle gets a
        composition gradient).
    """
    opt = (options or SceneOptions()).validate()
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(4, index)))
    n = int(rng.integers(opt.particles[0], opt.particles[1] + 1))
    # log-uniform extents, with the C library's log and exp (numpy's differ in their last bits
    # between CPUs with and without AVX-512)
    lo, hi = math.log(opt.extent[0]), math.log(opt.extent[1])
    if rng.random() < opt.similar:
        extents = math.exp(rng.uniform(lo, hi)) * rng.uniform(*SIMILAR, n)
    else:
        extents = np.array([math.exp(v) for v in rng.uniform(lo, hi, n).tolist()])
    extents = np.sort(np.clip(extents, *opt.extent))[::-1]
    placed: list[_Placed] = []
    entries: list[dict] = []
    for extent in extents:
        fam = str(rng.choice(DRAWN_FAMILIES))
        kind = str(rng.choice(_KIND_CYCLE)) if shapes.family(fam).compact else "solid"
        spec = draw_shape(rng, fam, kind, float(extent), index=index, seed=seed)
        d = _diameter(spec)
        swap = bool(rng.random() < opt.swap)
        pores = rough = gradient = None
        if rng.random() < opt.porous:
            pores = {"seed": _seed(rng), "length": float(rng.uniform(*PORE_LENGTH)),
                     "fraction": float(rng.uniform(*PORE_FRACTION))}
        if kind == "solid" and rng.random() < opt.irregular:
            rough = {"seed": _seed(rng), "length": float(rng.uniform(*ROUGH_LENGTH)),
                     "amplitude": float(rng.uniform(*ROUGH))}
        if kind != "core_shell" and rng.random() < opt.gradient:
            gradient = _gradient(rng)
        margin = rough["amplitude"] * d if rough else 0.0
        part = _place(rng, _Placed(spec, margin), placed, opt.touching, opt.extent[0])
        placed.append(part)
        entries.append({"particle": asdict(part.spec), "elements": [1, 0] if swap else [0, 1],
                        "pores": pores, "rough": rough, "gradient": gradient})
    support = phase = None
    if rng.random() < opt.support:
        support = _layer(rng, SUPPORT_THICKNESS, 0.3)
        support["density"] = ({"seed": _seed(rng), "length": float(rng.uniform(0.02, 0.08)),
                               "contrast": float(rng.uniform(0.2, 0.7))}
                              if rng.random() < 0.5 else None)
    if rng.random() < opt.phase:
        phase = _layer(rng, PHASE_THICKNESS, 0.25)
        phase.update(seed=_seed(rng), length=float(rng.uniform(*PHASE_LENGTH)),
                     fraction=float(rng.uniform(*PHASE_FRACTION)))
    if SceneSpec(index, seed, entries, support, phase).elements() != set(range(len(ELEMENTS))):
        # the largest particle is single-element here (a core-shell one holds both)
        entries[0]["gradient"] = _gradient(rng)
    return SceneSpec(int(index), int(seed), rounded(entries), rounded(support),
                     rounded(phase))


# ------------------------------------------------------------------------- voxels
def _axes(size: int, box: tuple[slice, ...]) -> list[np.ndarray]:
    """World coordinates along z, y and x of the voxel centres of ``box``."""
    return [(np.arange(s.start, s.stop) - (size - 1) / 2) / size for s in box]


def _points(axes: list[np.ndarray]) -> np.ndarray:
    """The grid of ``axes`` as points (M, 3)."""
    return np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)


def _box(lo: np.ndarray, hi: np.ndarray, size: int) -> tuple[slice, ...]:
    """Voxels covering world points from ``lo`` to ``hi`` (3,), two voxels of margin."""
    a = np.floor(np.asarray(lo) * size + (size - 1) / 2).astype(int) - 2
    b = np.ceil(np.asarray(hi) * size + (size - 1) / 2).astype(int) + 3
    a, b = np.clip(a, 0, size - 2), np.clip(b, 2, size)
    return tuple(slice(int(i), int(j)) for i, j in zip(a, b))


def _particle(entry: dict, size: int) -> np.ndarray:
    """Occupancy (element, z, y, x) of one particle of a scene, on the whole grid."""
    spec = ParticleSpec(**entry["particle"])
    pts, r = world_hull(spec)
    d = _diameter(spec)
    center = np.asarray(spec.center)
    rough = entry["rough"]
    amp = rough["amplitude"] * d if rough else 0.0
    box = _box(pts.min(0) - r - amp, pts.max(0) + r + amp, size)
    axes = _axes(size, box)
    local = [(a - c) / d for a, c in zip(axes, center)]  # particle units, for random fields
    shape = tuple(len(a) for a in axes)
    if rough:
        body = shapes.family(spec.family).build(spec.params)
        rot = Rotation.from_quat(spec.rotation).as_matrix()
        q = ((_points(axes) - center) @ rot) / spec.scale
        # exact within the reach of the bumps; beyond it a lower bound, still outside
        sdf = spec.scale * body.sdf(q, band=(amp + 3 / size) / spec.scale)
        bumps = np.clip(smooth_field(rough["seed"], rough["length"], local), -2.5, 2.5) / 2.5
        occ = np.zeros((len(ELEMENTS), size, size, size), np.float32)
        occ[(0, *box)] = soft_occupancy(sdf.reshape(shape) + amp * bumps, size)
    else:
        occ = voxelize(spec, size)
    sub = occ[(slice(None), *box)]  # a view
    pores = entry["pores"]
    if pores:
        thresh = special.ndtri(1.0 - pores["fraction"])
        sub *= 1.0 - soft_occupancy(thresh - smooth_field(pores["seed"], pores["length"],
                                                           local), size)
    grad = entry["gradient"]
    if grad:
        x = _fraction(grad, local, shape)
        main = sub[0].copy()
        sub[0] = main * (1 - x)
        sub[1] = main * x
    if entry["elements"][0] != 0:
        occ = occ[::-1]
    return occ


def _fraction(grad: dict, local: list[np.ndarray], shape: tuple) -> np.ndarray:
    """The other element's fraction in [0, 1] on the grid of ``local`` (particle units
    about the particle's centre)."""
    if grad["profile"] == "random":
        t = special.ndtr(smooth_field(grad["seed"], grad["length"], local))
    else:
        offset = _points(local).reshape(*shape, 3)
        if grad["profile"] == "linear":
            t = np.clip(offset @ np.asarray(grad["direction"]) + 0.5, 0.0, 1.0)
        else:  # radial: from the centre to the surface
            t = np.clip(2 * np.linalg.norm(offset, axis=-1), 0.0, 1.0) ** 2
    return (grad["from"] + (grad["to"] - grad["from"]) * t).astype(np.float32)


def _slab(part: dict, size: int) -> np.ndarray:
    """Occupancy (z, y, x) of a layer (a slab through the field) clipped to the cylinder."""
    normal, off, half = np.asarray(part["normal"]), part["offset"], part["thickness"] / 2

    def sdf(p: np.ndarray) -> np.ndarray:
        return np.maximum(np.abs(p @ normal - off) - half,
                          np.hypot(p[:, 0], p[:, 2]) - FIELD_RADIUS)

    return occupancy(sdf, size)


def _textured(occ: np.ndarray, seed: int, length: float, size: int):
    """The box of the voxels ``occ`` fills, and a random field (field units) on it."""
    held = np.argwhere(occ > 0)
    # at least two voxels per side, for the finite differences of soft_occupancy
    lo = np.minimum(held.min(0), size - 2)
    hi = np.maximum(held.max(0) + 1, lo + 2)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    return box, smooth_field(seed, length, _axes(size, box))


def voxelize_scene(scene: SceneSpec, size: int) -> np.ndarray:
    """Occupancy of each element of a scene on a ``size``^3 grid.

    Particles are voxelized with the ``analytic`` backend (exact partial volumes); irregular
    surfaces, pores and phases with a one-voxel linear ramp across their level sets
    (:func:`soft_occupancy`).

    Parameters
    ----------
    scene : SceneSpec
    size : int

    Returns
    -------
    ndarray, shape (2, size, size, size), float32
        Occupancy fractions in [0, 1], axes (element, z, y, x), ``A + B <= 1`` per voxel:
        where overlapping parts would exceed 1, every element is scaled down by the sum.
        Values are multiples of the stored volume's step
        (:data:`~nanoedx_dataset.store.schema.VOLUME_SCALE`), rounded so that the stored
        elements sum to at most 1 too.
    """
    out = np.zeros((len(ELEMENTS), size, size, size), np.float32)
    for entry in scene.particles:
        out += _particle(entry, size)
    if scene.support is not None:
        s = scene.support
        slab = _slab(s, size)
        if s["density"] is not None and slab.any():
            box, field = _textured(slab, s["density"]["seed"], s["density"]["length"], size)
            slab[box] *= (1.0 - s["density"]["contrast"] * special.ndtr(field)).astype(
                np.float32)
        out[s["element"]] += slab
    if scene.phase is not None:
        p = scene.phase
        layer = _slab(p, size)
        if layer.any():
            box, field = _textured(layer, p["seed"], p["length"], size)
            thresh = special.ndtri(1.0 - p["fraction"])
            layer[box] *= soft_occupancy(thresh - field, size)
        out[p["element"]] += layer
    total = out.sum(0)
    over = total > 1
    if over.any():
        out[:, over] /= total[over]
    # On the stored volume's grid of 1/255, where the rounded elements still sum to <= 1.
    q = np.rint(np.clip(out, 0.0, 1.0) / VOLUME_SCALE)
    q[1] = np.minimum(q[1], np.rint(1 / VOLUME_SCALE) - q[0])
    return (q * VOLUME_SCALE).astype(np.float32)
