"""Particle specs: the small, serializable description from which a sample's volume is rebuilt.

A :class:`ParticleSpec` holds the family, kind and random parameters of one particle, its
rotation, scale and position in the field of view, and (for ``core_shell`` and ``hollow``) the
inner shape. It is drawn from ``(seed, index)`` alone, stored in the database as JSON, and
resolution-independent: the same spec voxelizes at any grid size.

World coordinates are ``(z, y, x)`` in units of the field of view, which spans [-0.5, 0.5] on each
axis; the tilt axis is y. Every particle lies inside the cylinder of radius 0.475 around the tilt
axis (95 % of the field), so no projection at any tilt angle loses mass.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
from scipy.spatial.transform import Rotation

from ..errors import ConfigError
from ..store.schema import ELEMENTS, KINDS, present_elements
from . import shapes

__all__ = ["ELEMENTS", "KINDS", "ParticleSpec", "draw_shape", "draw_spec", "present_elements",
           "world_hull"]

EXTENT = (0.5, 0.9)  # largest extent (diameter) of a particle, in units of the field of view
FIELD_RADIUS = 0.475  # the particle stays inside this cylinder around the tilt axis
CORE_FRACTION = (0.5, 0.9)  # core diameter / shell diameter, before clipping to the shell
VOID_FRACTION = (0.3, 0.7)  # void diameter / shell diameter
WALL = 0.08  # the inner shape stays this far (times the shell diameter) inside the shell,
# or half the depth of the shell's centre if that is less
BLUR = (0.0, 0.012)  # Gaussian sigma of the core-shell interface, in units of the field
# Compact families get kinds from this list, shuffled per block of samples; platelets are solid.
_KIND_CYCLE = ("solid",) * 3 + ("core_shell",) * 4 + ("hollow",) * 2
# The families of the stratified draw, frozen: a family registered later in shapes.FAMILIES
# does not change the specs of any existing seed (it is drawn only when asked for by name).
DRAWN_FAMILIES = ("sphere", "cube", "capped_rod", "octahedron", "truncated_octahedron",
                  "icosahedron", "truncated_icosahedron", "triangular_platelet",
                  "hexagonal_platelet", "square_platelet", "oblate_bipyramid",
                  "prolate_bipyramid")

SDF = Callable[[np.ndarray], np.ndarray]

# Significant digits kept of every float of a drawn spec. The last bits of a float64 computed
# through BLAS or SIMD kernels differ between CPUs; rounding what a spec records (and then
# voxelizes) makes a seed give the same spec, and the same file bytes, on every machine.
SPEC_DIGITS = 9


def rounded(value):
    """``value`` with every float inside (dicts, lists, tuples) rounded to :data:`SPEC_DIGITS`
    significant digits; other values unchanged."""
    if isinstance(value, (float, np.floating)):
        return float(f"{float(value):.{SPEC_DIGITS}g}")
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v) for v in value]
    return value


def unit_quaternion(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random rotation as a unit quaternion (x, y, z, w), normalized without BLAS
    (``math.hypot`` gives the same bits on every CPU)."""
    quat = rng.normal(size=4)
    return quat / math.hypot(*quat)


# Distances are exact within BAND (field units) of a surface; beyond it they may be lower bounds.
BAND = 0.04


@dataclass(frozen=True)
class ParticleSpec:
    """Everything needed to rebuild one particle.

    Attributes
    ----------
    index, seed : int
        Position in the database and the generation seed it was drawn from.
    family, kind : str
        A name of :data:`nanoedx_dataset.simulate.shapes.FAMILIES` and one of :data:`KINDS`.
    params : dict
        The family's random parameters (see :mod:`nanoedx_dataset.simulate.shapes`).
    rotation : list of float
        Quaternion (x, y, z, w), scalar last as in :class:`scipy.spatial.transform.Rotation`,
        mapping the shape's local frame onto world (z, y, x).
    scale : float
        World units (field of view) per local unit.
    center : list of float
        Position (z, y, x) of the local origin in the field.
    inner : dict or None
        For ``core_shell`` / ``hollow``: ``family``, ``params``, ``scale`` (world per local unit),
        ``wall`` (world distance kept from the shell's surface) and ``blur`` (Gaussian sigma of
        the interface, world units; 0 for a void).
    """

    index: int
    seed: int
    family: str
    kind: str
    params: dict
    rotation: list
    scale: float
    center: list
    inner: dict | None = None

    def to_json(self) -> str:
        """The spec as a JSON string (floats round-trip exactly)."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ParticleSpec":
        """Rebuild a spec from :meth:`to_json` output."""
        try:
            return cls(**json.loads(text))
        except (TypeError, json.JSONDecodeError) as err:
            raise ConfigError(f"not a particle spec: {text[:80]!r} ({err})") from err

    def sdfs(self) -> dict[str, SDF]:
        """Signed distances in world units of the particle's parts.

        Returns
        -------
        dict
            ``"outer"``: the whole particle; for ``core_shell`` also ``"core"`` (the inner
            shape clipped to stay inside the shell's wall); for ``hollow`` ``"wall"`` (the
            particle minus its void, likewise clipped). Values more than :data:`BAND` outside
            a surface may be conservative lower bounds (see :meth:`shapes.Body.sdf`).
        """
        rot = Rotation.from_quat(self.rotation).as_matrix()
        center = np.asarray(self.center, float)

        def placed(body: shapes.Body, scale: float) -> SDF:
            def sdf(p: np.ndarray) -> np.ndarray:
                return scale * body.sdf(((p - center) @ rot) / scale, band=BAND / scale)

            return sdf

        outer = placed(shapes.family(self.family).build(self.params), self.scale)
        if self.inner is None:
            return {"outer": outer}
        inner = placed(shapes.family(self.inner["family"]).build(self.inner["params"]),
                       self.inner["scale"])
        wall = self.inner["wall"]

        def clipped(p: np.ndarray, o: np.ndarray) -> np.ndarray:
            """The inner shape kept ``wall`` inside the shell; evaluated only near it."""
            out = o + wall
            near = np.flatnonzero(out < BAND)
            out[near] = np.maximum(inner(p[near]), out[near])
            return out

        if self.kind == "core_shell":
            return {"outer": outer, "core": lambda p: clipped(p, outer(p))}

        def hollow(p: np.ndarray) -> np.ndarray:
            o = outer(p)
            out = o.copy()
            near = np.flatnonzero(o < BAND)
            out[near] = np.maximum(o[near], -clipped(p[near], o[near]))
            return out

        return {"outer": outer, "wall": hollow}


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _family_and_kind(seed: int, index: int) -> tuple[str, str]:
    """Stratified draw: every block of samples holds each family of :data:`DRAWN_FAMILIES` once,
    in a random order."""
    names = list(DRAWN_FAMILIES)
    block, pos = divmod(index, len(names))
    rng = _rng(seed, 0, block)
    order = rng.permutation(names)
    kinds = list(rng.permutation(_KIND_CYCLE))
    compact = [n for n in order if shapes.family(n).compact]
    name = str(order[pos])
    kind = kinds[compact.index(name) % len(kinds)] if name in compact else "solid"
    return name, str(kind)


def draw_spec(seed: int, index: int, family: str | None = None,
              kind: str | None = None) -> ParticleSpec:
    """Draw the spec of particle ``index`` of a database generated with ``seed``.

    Parameters
    ----------
    seed, index : int
        The generation seed and the sample's index; the spec depends on nothing else.
    family, kind : str, optional
        Force a family or kind instead of the stratified draw (``core_shell`` and ``hollow``
        need a compact family, not a platelet).

    Returns
    -------
    ParticleSpec
    """
    fam, knd = _family_and_kind(seed, index)
    fam = family or fam
    knd = kind or (knd if family is None else ("solid" if not shapes.family(fam).compact else knd))
    if knd not in KINDS:
        raise ConfigError(f"unknown kind {knd!r}; choose one of: {', '.join(KINDS)}")
    if knd != "solid" and not shapes.family(fam).compact:
        raise ConfigError(
            f"kind {knd!r} needs a compact family, not {fam!r}; use one of: "
            + ", ".join(shapes.COMPACT_FAMILIES)
        )
    rng = _rng(seed, 1, index)
    params = shapes.family(fam).draw(rng)
    body = shapes.family(fam).build(params)
    quat = unit_quaternion(rng)
    rot = Rotation.from_quat(quat).as_matrix()
    scale = rng.uniform(*EXTENT) / body.diameter()

    mid, radial, y_lo, y_hi = _footprint(body, rot)
    scale = min(scale, FIELD_RADIUS / radial)
    # Random position: inside the cylinder (z, x) and the field along y.
    room = FIELD_RADIUS - scale * radial
    ang, rad = rng.uniform(0, 2 * np.pi), room * np.sqrt(rng.uniform())
    y_room = FIELD_RADIUS - scale * (y_hi - y_lo) / 2
    center = [
        float(-scale * mid[0] + rad * np.cos(ang)),
        float(-scale * (y_lo + y_hi) / 2 + rng.uniform(-y_room, y_room)),
        float(-scale * mid[1] + rad * np.sin(ang)),
    ]
    inner = _draw_inner(rng, knd, body, scale) if knd != "solid" else None
    return ParticleSpec(
        index=int(index), seed=int(seed), family=fam, kind=knd, params=rounded(params),
        rotation=rounded(quat.tolist()), scale=rounded(scale), center=rounded(center),
        inner=rounded(inner),
    )


def _footprint(body: shapes.Body, rot: np.ndarray) -> tuple[np.ndarray, float, float, float]:
    """Where a rotated body (before scaling) reaches: the middle ``(z, x)`` of its extent, its
    radius about that middle in the (z, x) plane, and its lowest and highest y."""
    pts, r = body.hull()
    world = pts @ rot.T  # local -> world offsets, before scaling
    zx = world[:, [0, 2]]
    mid = (zx.min(0) + zx.max(0)) / 2
    radial = np.linalg.norm(zx - mid, axis=1).max() + r
    return mid, float(radial), float(world[:, 1].min() - r), float(world[:, 1].max() + r)


def _draw_inner(rng: np.random.Generator, knd: str, body: shapes.Body, scale: float) -> dict:
    """The core (``core_shell``) or void (``hollow``) of a particle drawn with ``scale``."""
    inner_fam = str(rng.choice([n for n in DRAWN_FAMILIES if shapes.family(n).compact]))
    inner_params = shapes.family(inner_fam).draw(rng)
    inner_body = shapes.family(inner_fam).build(inner_params)
    frac = rng.uniform(*(CORE_FRACTION if knd == "core_shell" else VOID_FRACTION))
    outer_d = scale * body.diameter()
    # The wall (with the blur's reach) takes at most 3/4 of the depth of the shell's centre
    # below its surface, so that thin shells (a prolate bipyramid, a slim rod) keep a core
    # or void too.
    depth = -scale * float(body.sdf(np.zeros((1, 3)))[0])
    wall = min(WALL * outer_d, depth / 2)
    blur = float(rng.uniform(*BLUR)) if knd == "core_shell" else 0.0
    blur = min(blur, (0.75 * depth - wall) / 3)
    return {
        "family": inner_fam,
        "params": inner_params,
        "scale": float(frac * outer_d / inner_body.diameter()),
        "wall": float(wall + 3 * blur),
        "blur": blur,
    }


def draw_shape(rng: np.random.Generator, family: str, kind: str, extent: float,
               index: int = 0, seed: int = 0) -> ParticleSpec:
    """A particle of a given family, kind and size, centred on the field's centre.

    The building block of a multi-particle scene (:mod:`nanoedx_dataset.simulate.scenes`):
    the family's parameters, a uniformly random rotation and (for ``core_shell`` and
    ``hollow``) the inner shape are drawn from ``rng`` as :func:`draw_spec` draws them; the
    size and the position are the caller's.

    Parameters
    ----------
    rng : numpy.random.Generator
    family, kind : str
        A family of :data:`DRAWN_FAMILIES` (or any registered one) and one of :data:`KINDS`
        (``core_shell`` and ``hollow`` need a compact family).
    extent : float
        Largest extent (diameter) of the particle, field units; reduced if the particle would
        not fit inside the cylinder of radius :data:`FIELD_RADIUS`.
    index, seed : int
        Recorded in the spec.

    Returns
    -------
    ParticleSpec
        Its ``(z, x)`` footprint and its y extent centred on 0.
    """
    if kind not in KINDS:
        raise ConfigError(f"unknown kind {kind!r}; choose one of: {', '.join(KINDS)}")
    if kind != "solid" and not shapes.family(family).compact:
        raise ConfigError(f"kind {kind!r} needs a compact family, not {family!r}")
    params = shapes.family(family).draw(rng)
    body = shapes.family(family).build(params)
    quat = unit_quaternion(rng)
    mid, radial, y_lo, y_hi = _footprint(body, Rotation.from_quat(quat).as_matrix())
    scale = min(float(extent) / body.diameter(), FIELD_RADIUS / radial,
                2 * FIELD_RADIUS / (y_hi - y_lo))
    center = [float(-scale * mid[0]), float(-scale * (y_lo + y_hi) / 2),
              float(-scale * mid[1])]
    inner = _draw_inner(rng, kind, body, scale) if kind != "solid" else None
    return ParticleSpec(index=int(index), seed=int(seed), family=family, kind=kind,
                        params=rounded(params), rotation=rounded(quat.tolist()),
                        scale=rounded(scale), center=rounded(center), inner=rounded(inner))


def world_hull(spec: ParticleSpec) -> tuple[np.ndarray, float]:
    """Points (K, 3) in world (z, y, x) and a radius whose sphere-swept hull is the particle."""
    pts, r = shapes.family(spec.family).build(spec.params).hull()
    rot = Rotation.from_quat(spec.rotation).as_matrix()
    return spec.scale * pts @ rot.T + np.asarray(spec.center), spec.scale * r
