"""The paper's mesh path: each particle built as a Blender mesh from its spec (``bpy``).

The ``blender`` voxelization backend: the meshes of :func:`particle_meshes` are
voxelized with VTK (:func:`.meshes.occupancy`) and turned into elements by the
same :func:`.compose.compose` as the analytic backend, so one ``--seed`` gives
the same particles with either backend.

How a spec's body becomes a mesh (local frame, then scaled, rotated and placed like the spec):

* A rounded polytope (the Minkowski sum of a core polytope and a ball of radius ``r``, see
  :class:`nanoedx_dataset.simulate.shapes.Polytope`) is built as the polytope bounded by the core's facet
  planes moved out by ``r`` -- its faces are exactly the rounded body's flat faces -- and every
  edge is bevelled (Blender's Bevel modifier, ``segments`` per edge, circular profile), each edge
  with the offset ``r tan(phi / 2)`` (``phi`` the angle between its faces' normals) that puts
  the bevel's tangent lines where a fillet of radius ``r`` meets the faces. The per-edge
  offsets are the modifier's width times the edge's bevel weight.
* A capsule (sphere, capped rod) is the convex hull of two icospheres at the segment's ends.
* The inner body of a core-shell or hollow particle is the inner shape intersected (Blender's
  Boolean modifier) with the outer body eroded by the spec's wall: a polytope's planes move in
  by the wall and its rounding shrinks by it, a capsule's radius shrinks by it. This is the
  set ``max(inner, outer + wall) < 0`` of :meth:`~nanoedx_dataset.simulate.specs.ParticleSpec.sdfs`.
  A hollow particle's mesh is the outer surface with the void's surface, turned inside out,
  inside it.

Needs the ``blender`` extra (``bpy``, ``vtk``; Python 3.11, numpy < 2):
``pip install "nanoedx[blender]"``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from .. import shapes
from ..specs import ParticleSpec
from . import check_backend, meshes
from .compose import compose
from .meshes import Mesh

SEGMENTS = 8  # bevel segments per rounded edge
ICO_SUBDIVISIONS = 4  # icosphere of a capsule's ends: 2562 vertices
PART_FILES = {"outer": "particle", "core": "core", "wall": "particle"}


def check() -> None:
    """Raise :class:`~nanoedx_dataset.errors.MissingExtraError` unless ``bpy`` and ``vtk`` are
    installed."""
    check_backend("blender")


def _bpy():
    check()
    return meshes.require("bpy", "the blender backend"), meshes.require("bmesh", "bmesh")


# --------------------------------------------------------------------------------------------
# Bodies as meshes, in their local frame
# --------------------------------------------------------------------------------------------
def _facet_polytope(normals: np.ndarray, core: np.ndarray, r: float):
    """Vertices and faces of the polytope of the core's facet planes moved out by ``r``.

    Returns ``(vertices (V, 3), faces: list of vertex-index lists, counter-clockwise seen from
    outside, normals of the faces (F, 3))``.
    """
    verts = shapes.Polytope(normals, core).hull()[0]
    tol = 1e-9 * np.abs(verts).max()
    facet = (np.abs(verts @ normals.T - core) < tol).sum(0) >= 3
    n, d = normals[facet], core[facet] + r
    verts = shapes.Polytope(n, d).hull()[0]
    tol = 1e-9 * np.abs(verts).max()
    faces, face_normals = [], []
    for k in range(len(n)):
        on = np.flatnonzero(np.abs(verts @ n[k] - d[k]) < tol)
        if len(on) < 3:
            continue
        centre = verts[on].mean(0)
        u = verts[on[0]] - centre
        u /= np.linalg.norm(u)
        v = np.cross(n[k], u)
        rel = verts[on] - centre
        faces.append(on[np.argsort(np.arctan2(rel @ v, rel @ u))].tolist())
        face_normals.append(n[k])
    return verts, faces, np.array(face_normals)


def _evaluated(obj) -> Mesh:
    """The object's mesh after its modifiers, triangulated, in the object's frame."""
    bpy, _ = _bpy()
    depsgraph = bpy.context.evaluated_depsgraph_get()
    evaluated = obj.evaluated_get(depsgraph)
    me = evaluated.to_mesh()
    try:
        me.calc_loop_triangles()
        co = np.empty(3 * len(me.vertices))
        me.vertices.foreach_get("co", co)
        tris = np.empty(3 * len(me.loop_triangles), np.int64)
        me.loop_triangles.foreach_get("vertices", tris)
    finally:
        evaluated.to_mesh_clear()
    return Mesh(co.reshape(-1, 3), tris.reshape(-1, 3))


class _Scene:
    """Objects made for one particle, removed from Blender's data on exit."""

    def __enter__(self) -> "_Scene":
        self.bpy, self.bmesh = _bpy()
        self.objects = []
        return self

    def add(self, name: str, bm):
        mesh = self.bpy.data.meshes.new(name)
        bm.to_mesh(mesh)
        bm.free()
        obj = self.bpy.data.objects.new(name, mesh)
        self.bpy.context.scene.collection.objects.link(obj)
        self.objects.append(obj)
        return obj

    def from_mesh(self, name: str, m: Mesh):
        bm = self.bmesh.new()
        verts = [bm.verts.new(p) for p in m.vertices]
        for tri in m.triangles:
            bm.faces.new([verts[i] for i in tri])
        return self.add(name, bm)

    def __exit__(self, *exc) -> None:
        for obj in self.objects:
            mesh = obj.data
            self.bpy.data.objects.remove(obj, do_unlink=True)
            self.bpy.data.meshes.remove(mesh)


def _polytope_object(scene: _Scene, name: str, normals, core, r: float):
    verts, faces, face_normals = _facet_polytope(normals, core, r)
    bm = scene.bmesh.new()
    bverts = [bm.verts.new(p) for p in verts]
    for face in faces:
        bm.faces.new([bverts[i] for i in face])
    bm.normal_update()
    obj_faces = {f.index: n for f, n in zip(bm.faces, face_normals)}
    offsets = []
    for e in bm.edges:
        a, b = (obj_faces[f.index] for f in e.link_faces)
        phi = np.arccos(np.clip(a @ b, -1.0, 1.0))
        offsets.append(r * np.tan(phi / 2))
    offsets = np.array(offsets)
    width = float(offsets.max()) if len(offsets) else 0.0
    if r > 0 and width > 0:
        layer = bm.edges.layers.float.new("bevel_weight_edge")
        for e, off in zip(bm.edges, offsets):
            e[layer] = float(off / width)
    obj = scene.add(name, bm)
    if r > 0 and width > 0:
        mod = obj.modifiers.new("bevel", "BEVEL")
        mod.limit_method = "WEIGHT"
        mod.offset_type = "OFFSET"
        mod.width = width
        mod.segments = SEGMENTS
        mod.profile = 0.5  # circular
        mod.use_clamp_overlap = False
        mod.affect = "EDGES"
    return obj


def _capsule_object(scene: _Scene, name: str, half_length: float, radius: float):
    """Points within ``radius`` of the segment +-``half_length`` along local axis 2."""
    ball = scene.bmesh.new()
    scene.bmesh.ops.create_icosphere(ball, subdivisions=ICO_SUBDIVISIONS, radius=1.0)
    # Vertices on a sphere a little larger than the ball, so that the (inscribed) facets
    # enclose the ball's volume: -0.9 % without it.
    grow = radius * (4 * np.pi / 3 / ball.calc_volume()) ** (1 / 3)
    for v in ball.verts:
        v.co *= grow
    if half_length == 0:
        return scene.add(name, ball)
    points = np.array([tuple(v.co) for v in ball.verts])
    ball.free()
    bm = scene.bmesh.new()
    for shift in (-half_length, half_length):
        for p in points:
            bm.verts.new((p[0], p[1], p[2] + shift))
    hull = scene.bmesh.ops.convex_hull(bm, input=list(bm.verts))
    inside = list({v for v in hull["geom_interior"] + hull["geom_unused"]
                   if isinstance(v, scene.bmesh.types.BMVert)})
    scene.bmesh.ops.delete(bm, geom=inside, context="VERTS")
    return scene.add(name, bm)


def _body_object(scene: _Scene, name: str, body: shapes.Body, erode: float = 0.0):
    """A Blender object of ``body`` (local frame) shrunk by ``erode`` (local units)."""
    if isinstance(body, shapes.Capsule):
        return _capsule_object(scene, name, body.half_length, body.radius - erode)
    r = body.rounding
    core = body.offsets - max(r, erode)
    return _polytope_object(scene, name, body.normals, core, max(r - erode, 0.0))


def _placed(m: Mesh, scale: float, rotation: list, center: list) -> Mesh:
    """Local mesh -> world (z, y, x); triangles turned counter-clockwise in (x, y, z)."""
    rot = Rotation.from_quat(rotation).as_matrix()
    verts = np.asarray(center, float) + scale * (m.vertices @ rot.T)
    return Mesh(verts, m.triangles[:, ::-1].copy())


def _intersect(scene: _Scene, a: Mesh, b: Mesh) -> Mesh:
    """The intersection of two closed meshes (world frame) with Blender's Boolean modifier."""
    obj_a = scene.from_mesh("a", Mesh(a.vertices, a.triangles[:, ::-1]))
    obj_b = scene.from_mesh("b", Mesh(b.vertices, b.triangles[:, ::-1]))
    mod = obj_a.modifiers.new("clip", "BOOLEAN")
    mod.operation = "INTERSECT"
    mod.solver = "MANIFOLD" if "MANIFOLD" in mod.bl_rna.properties["solver"].enum_items else \
        "EXACT"
    mod.object = obj_b
    obj_b.hide_set(True)
    out = _evaluated(obj_a)
    return Mesh(out.vertices, out.triangles[:, ::-1].copy())


def particle_meshes(spec: ParticleSpec) -> dict[str, Mesh]:
    """The meshes of a particle's parts, in world coordinates.

    Parameters
    ----------
    spec : ParticleSpec

    Returns
    -------
    dict of str to Mesh
        ``"outer"``: the whole particle; for ``core_shell`` also ``"core"`` (the inner shape
        clipped to stay ``wall`` inside the shell); for ``hollow`` ``"wall"`` (the outer surface
        and the clipped void's surface, inside out, in one closed mesh). The same parts as
        :meth:`ParticleSpec.sdfs`.
    """
    outer_body = shapes.family(spec.family).build(spec.params)
    with _Scene() as scene:
        outer = _placed(_evaluated(_body_object(scene, "outer", outer_body)),
                        spec.scale, spec.rotation, spec.center)
        parts = {"outer": outer}
        if spec.inner is None:
            return parts
        inner_body = shapes.family(spec.inner["family"]).build(spec.inner["params"])
        inner = _placed(_evaluated(_body_object(scene, "inner", inner_body)),
                        spec.inner["scale"], spec.rotation, spec.center)
        eroded = _placed(_evaluated(_body_object(scene, "eroded", outer_body,
                                                 spec.inner["wall"] / spec.scale)),
                         spec.scale, spec.rotation, spec.center)
        clipped = _intersect(scene, inner, eroded)
    if spec.kind == "core_shell":
        parts["core"] = clipped
    else:
        parts["wall"] = outer.join(clipped, flip=True)
    return parts


def save_meshes(parts: dict[str, Mesh], folder, index: int, suffix: str = ".stl") -> list[Path]:
    """Write a particle's meshes as ``sample{index:06d}_{particle|core}.stl`` in ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = {"core": "core"} if "core" in parts else {}
    names["wall" if "wall" in parts else "outer"] = "particle"
    return [meshes.write_mesh(parts[p], folder / f"sample{index:06d}_{f}{suffix}")
            for p, f in names.items()]


def voxelize_spec(spec: ParticleSpec, size: int, mesh_dir=None) -> np.ndarray:
    """Occupancy (element, z, y, x) of ``spec`` from its Blender meshes, voxelized with VTK."""
    parts = particle_meshes(spec)
    for name, m in parts.items():
        meshes.check_closed(m, f"the {name} mesh of sample {spec.index}")
    if mesh_dir is not None:
        save_meshes(parts, mesh_dir, spec.index)
    return compose(spec, size, lambda name: meshes.occupancy(parts[name], size))
