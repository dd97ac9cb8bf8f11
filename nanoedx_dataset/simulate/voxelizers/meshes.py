"""Triangle meshes: VTK voxelization to partial-volume occupancy, checks and mesh files.

The mesh half of the paper's pipeline (its meshes came from Blender, see
:mod:`.blender`; a user's own STL / PLY / OBJ file enters here too). A closed
mesh is rasterized with VTK's ``vtkPolyDataToImageStencil`` on a grid ``supersample`` times
finer than the volume along each axis (the inside test is even-odd along each raster line, so a
mesh made of several closed shells, such as a particle with a void, voxelizes as one body);
each voxel's occupancy is the fraction of its ``supersample``^3 sample points inside. The fine
samples of voxel ``i`` sit at ``(i - (n - 1) / 2 + (j + 1/2) / s - 1/2) / n`` for
``j = 0 .. s - 1``, so the volume has the grid and axes of the analytic voxelizer: world
coordinates (z, y, x) in units of the field of view, which spans [-0.5, 0.5].

Files on disk are in (x, y, z) order, as every mesh program expects; :class:`Mesh` holds
(z, y, x) like the rest of the package, and the readers and writers swap the order.

Needs the ``blender`` extra (``vtk``): ``pip install "nanoedx[blender]"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import ConfigError, MissingExtraError, SchemaError
from ...store.files import atomic_output
from . import BLENDER_EXTRA

SUPERSAMPLE = 8  # fine samples per voxel along each axis: occupancy in steps of 1 / 512
_SLAB = 1 << 25  # fine samples rasterized at once (32 MB)
EXTRA = BLENDER_EXTRA
READERS = {".stl": "vtkSTLReader", ".ply": "vtkPLYReader", ".obj": "vtkOBJReader"}
WRITERS = {".stl": "vtkSTLWriter", ".ply": "vtkPLYWriter"}


def require(module: str, what: str):
    """Import ``module`` of the ``blender`` extra or raise :class:`MissingExtraError`."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingExtraError(
            f"{what} needs the blender extra (bpy, vtk; Python 3.11, numpy < 2), which is not "
            f"installed ({err}); install it with: {EXTRA}"
        ) from err


@dataclass
class Mesh:
    """A triangle mesh in world coordinates.

    Attributes
    ----------
    vertices : ndarray, shape (V, 3), float64
        Positions (z, y, x) in units of the field of view (the grid spans [-0.5, 0.5]).
    triangles : ndarray, shape (T, 3), int64
        Vertex indices, counter-clockwise seen from outside in (x, y, z) order.
    """

    vertices: np.ndarray
    triangles: np.ndarray

    def join(self, other: "Mesh", flip: bool = False) -> "Mesh":
        """Both meshes as one; ``flip`` turns ``other`` inside out (a void inside this one)."""
        tris = other.triangles[:, ::-1] if flip else other.triangles
        return Mesh(np.vstack([self.vertices, other.vertices]),
                    np.vstack([self.triangles, tris + len(self.vertices)]))

    def volume(self) -> float:
        """Enclosed volume (world units^3) by the divergence theorem; > 0 if facing outward."""
        a, b, c = (self.vertices[:, ::-1][self.triangles[:, k]] for k in range(3))
        return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6)


def _vtk():
    return (require("vtkmodules.vtkCommonCore", "the mesh path"),
            require("vtkmodules.vtkCommonDataModel", "the mesh path"),
            require("vtkmodules.util.numpy_support", "the mesh path"))


def to_polydata(mesh: Mesh):
    """The mesh as a ``vtkPolyData`` in (x, y, z) order."""
    core, model, ns = _vtk()
    points = core.vtkPoints()
    points.SetData(ns.numpy_to_vtk(np.ascontiguousarray(mesh.vertices[:, ::-1], float),
                                   deep=True))
    tris = np.asarray(mesh.triangles, np.int64)
    cells = model.vtkCellArray()
    cells.SetData(ns.numpy_to_vtkIdTypeArray(np.arange(0, 3 * len(tris) + 1, 3), deep=True),
                  ns.numpy_to_vtkIdTypeArray(tris.ravel().copy(), deep=True))
    poly = model.vtkPolyData()
    poly.SetPoints(points)
    poly.SetPolys(cells)
    return poly


def from_polydata(poly, source: str) -> Mesh:
    """A :class:`Mesh` from a ``vtkPolyData``: duplicate points merged, polygons triangulated."""
    _, _, ns = _vtk()
    filters = require("vtkmodules.vtkFiltersCore", "the mesh path")
    clean = filters.vtkCleanPolyData()
    clean.SetInputData(poly)
    clean.PointMergingOn()
    tri = filters.vtkTriangleFilter()
    tri.SetInputConnection(clean.GetOutputPort())
    tri.PassVertsOff()
    tri.PassLinesOff()
    tri.Update()
    out = tri.GetOutput()
    if out.GetNumberOfPoints() == 0 or out.GetNumberOfPolys() == 0:
        raise SchemaError(f"{source} holds no triangles (an empty mesh); export the surface "
                          "of a solid body")
    verts = ns.vtk_to_numpy(out.GetPoints().GetData()).astype(float)[:, ::-1]
    conn = ns.vtk_to_numpy(out.GetPolys().GetConnectivityArray()).astype(np.int64)
    return Mesh(verts, conn.reshape(-1, 3))


def check_closed(mesh: Mesh, source: str = "the mesh") -> None:
    """Refuse an empty mesh or one that is not closed (watertight) and manifold.

    Raises
    ------
    SchemaError
        No triangles, or edges used by one triangle only (holes) or by more than two.
    """
    if len(mesh.triangles) == 0 or len(mesh.vertices) == 0:
        raise SchemaError(f"{source} holds no triangles (an empty mesh); export the surface of "
                          "a solid body")
    filters = require("vtkmodules.vtkFiltersCore", "the mesh path")
    edges = filters.vtkFeatureEdges()
    edges.SetInputData(to_polydata(mesh))
    edges.BoundaryEdgesOn()
    edges.NonManifoldEdgesOn()
    edges.FeatureEdgesOff()
    edges.ManifoldEdgesOff()
    edges.Update()
    bad = edges.GetOutput().GetNumberOfCells()
    if bad:
        raise SchemaError(
            f"{source} is not closed: {bad} edges bound a hole or are shared by more than two "
            "triangles, so its inside is undefined; make it watertight (e.g. Blender's "
            "3D-Print toolbox 'Make Manifold', or MeshLab's 'Close Holes') and try again"
        )


def occupancy(mesh: Mesh, size: int, supersample: int = SUPERSAMPLE) -> np.ndarray:
    """Partial-volume occupancy of a closed mesh on a ``size``^3 grid, with VTK.

    Parameters
    ----------
    mesh : Mesh
        A closed mesh (see :func:`check_closed`) in world coordinates (z, y, x).
    size : int
        Voxels per axis.
    supersample : int
        Sample points per voxel along each axis.

    Returns
    -------
    ndarray, shape (size, size, size), float32
        Fraction of each voxel's samples inside the mesh, in [0, 1]; axes (z, y, x).
    """
    if supersample < 1:
        raise ConfigError(f"supersample must be at least 1, got {supersample}")
    stencil_mod = require("vtkmodules.vtkImagingStencil", "the mesh path")
    _, _, ns = _vtk()
    out = np.zeros((size,) * 3, np.float32)
    s, fine = supersample, size * supersample
    lo = np.clip(np.floor((mesh.vertices.min(0) + 0.5) * size).astype(int), 0, size - 1)
    hi = np.clip(np.ceil((mesh.vertices.max(0) + 0.5) * size).astype(int), 1, size)
    if np.any(hi <= lo):
        return out
    poly = to_polydata(mesh)
    (z0, y0, x0), (z1, y1, x1) = lo, hi
    rows = max(1, _SLAB // ((y1 - y0) * (x1 - x0) * s**3))  # voxel rows of z per slab
    for za in range(z0, z1, rows):
        zb = min(za + rows, z1)
        rast = stencil_mod.vtkPolyDataToImageStencil()
        rast.SetInputData(poly)
        rast.SetTolerance(0.0)
        rast.SetOutputOrigin(*(0.5 / fine - 0.5,) * 3)
        rast.SetOutputSpacing(*(1.0 / fine,) * 3)
        rast.SetOutputWholeExtent(x0 * s, x1 * s - 1, y0 * s, y1 * s - 1, za * s, zb * s - 1)
        image = stencil_mod.vtkImageStencilToImage()
        image.SetInputConnection(rast.GetOutputPort())
        image.SetInsideValue(1)
        image.SetOutsideValue(0)
        image.SetOutputScalarTypeToUnsignedChar()
        image.Update()
        inside = ns.vtk_to_numpy(image.GetOutput().GetPointData().GetScalars())
        dz, dy, dx = zb - za, y1 - y0, x1 - x0
        counts = inside.reshape(dz, s, dy, s, dx, s).sum(axis=(1, 3, 5), dtype=np.int32)
        out[za:zb, y0:y1, x0:x1] = counts / np.float32(s**3)
    return out


def read_mesh(path) -> Mesh:
    """Read a mesh file (STL, PLY or OBJ) with VTK, in the file's own units.

    Returns
    -------
    Mesh
        Duplicate points merged, polygons split into triangles, coordinates as (z, y, x).

    Raises
    ------
    ConfigError
        The file does not exist or has another extension.
    SchemaError
        VTK reads no triangles from it.
    """
    path = Path(path)
    if path.suffix.lower() not in READERS:
        raise ConfigError(f"cannot read mesh {path.name}: use one of "
                          f"{', '.join(READERS)} (by extension)")
    if not path.is_file():
        raise ConfigError(f"no mesh file at {path}")
    io = require("vtkmodules.vtkIOGeometry" if path.suffix.lower() != ".ply"
                 else "vtkmodules.vtkIOPLY", "reading a mesh file")
    reader = getattr(io, READERS[path.suffix.lower()])()
    reader.SetFileName(str(path))
    reader.Update()
    return from_polydata(reader.GetOutput(), str(path))


def write_mesh(mesh: Mesh, path) -> Path:
    """Write a mesh as binary STL or PLY (by extension), atomically, in (x, y, z) order."""
    path = Path(path)
    kind = path.suffix.lower()
    if kind not in WRITERS:
        raise ConfigError(f"cannot write mesh {path.name}: use {' or '.join(WRITERS)}")
    io = require("vtkmodules.vtkIOGeometry" if kind == ".stl" else "vtkmodules.vtkIOPLY",
                 "writing a mesh file")
    writer = getattr(io, WRITERS[kind])()
    writer.SetInputData(to_polydata(mesh))
    writer.SetFileTypeToBinary()
    with atomic_output(path) as tmp:
        named = tmp.with_name(tmp.name + kind)  # VTK's PLY writer appends a missing extension
        writer.SetFileName(str(named))
        try:
            if writer.Write() != 1:
                raise OSError(f"VTK could not write {named}")
            named.replace(tmp)
        finally:
            named.unlink(missing_ok=True)
    return path


def fit_to_field(mesh: Mesh, extent: float | None = 0.9,
                 voxel_size: float | None = None, size: int | None = None) -> Mesh:
    """Place a mesh given in its own units in the field of view.

    The mesh is centred on the centre of its bounding box. With ``extent`` (the default) it is
    scaled so that the sphere about that centre holding every vertex has a diameter of
    ``extent`` times the field (the catalogue's particles span 0.5--0.9 of it); with
    ``voxel_size`` (mesh units per voxel, needs ``size``) it keeps its physical size.

    Raises
    ------
    ConfigError
        ``extent`` outside (0, 0.95], or a mesh that does not fit in 95 % of the field (beyond
        it, tilted projections lose mass): choose a larger ``size`` or ``voxel_size``.
    """
    centre = (mesh.vertices.min(0) + mesh.vertices.max(0)) / 2
    offsets = mesh.vertices - centre
    radius = float(np.linalg.norm(offsets, axis=1).max())
    if radius == 0:
        raise SchemaError("the mesh has no extent (all vertices coincide)")
    if voxel_size is not None:
        if voxel_size <= 0 or size is None:
            raise ConfigError(f"voxel_size must be > 0 mesh units per voxel and needs size, "
                              f"got {voxel_size}")
        scale = 1.0 / (voxel_size * size)
        if 2 * radius * scale > 0.95:
            need = 2 * radius / (0.95 * size)
            raise ConfigError(f"the mesh spans {2 * radius:.4g} units: at {voxel_size} units per "
                              f"voxel it does not fit in 95 % of a {size}-voxel field; use "
                              f"voxel_size >= {need:.4g} or a larger size")
    else:
        if not 0 < extent <= 0.95:
            raise ConfigError(f"extent must be in (0, 0.95] of the field, got {extent}")
        scale = extent / (2 * radius)
    return Mesh(offsets * scale, mesh.triangles.copy())


def voxelize_mesh(path, size: int, extent: float | None = 0.9, voxel_size: float | None = None,
                  supersample: int = SUPERSAMPLE) -> np.ndarray:
    """Occupancy of a closed mesh file (STL, PLY or OBJ) on a ``size``^3 grid.

    Parameters
    ----------
    path : path-like
        The mesh file; its (x, y, z) become the volume's axes x, y (the tilt axis) and z (the
        beam at 0 deg).
    size : int
        Voxels per axis.
    extent : float
        Diameter of the sphere (about the mesh's bounding-box centre) holding the mesh, as a
        fraction of the field of view, at most 0.95 (default 0.9; catalogue particles span
        0.5--0.9). Ignored when ``voxel_size`` is given.
    voxel_size : float, optional
        Mesh units per voxel, to keep the mesh's own scale (centred in the field).
    supersample : int
        Sample points per voxel along each axis.

    Returns
    -------
    ndarray, shape (2, size, size, size), float32
        Occupancy in [0, 1], axes (element, z, y, x): the mesh is element ``A``, ``B`` is
        empty (a one-element particle, like the catalogue's solid ones).

    Raises
    ------
    SchemaError
        The mesh is empty or not closed (watertight).
    ConfigError
        Unknown file type, missing file, or a mesh that does not fit in the field.
    """
    mesh = read_mesh(path)
    check_closed(mesh, str(path))
    placed = fit_to_field(mesh, extent, voxel_size, size)
    out = np.zeros((2,) + (size,) * 3, np.float32)
    out[0] = occupancy(placed, size, supersample)
    return out
