"""The HDF5 database format: the one definition every writer, reader and check derives from.

A database is a netCDF-4 compatible HDF5 file (dimension names are HDF5 dimension scales), so
``xarray.open_dataset(path, engine="h5netcdf")`` shows a labelled dataset and
``group="noisy/c1000_b100"`` one noise level. Nothing outside this module spells a path inside
the file: use the names defined here.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5netcdf
import h5py
import numpy as np

from .errors import ConfigError, DatasetNotFoundError, SchemaError

FORMAT_NAME = "nanoedx"
FORMAT_VERSION = "1.0"
STR = h5py.string_dtype()
VOLUME_SCALE = 1 / 255  # uint8 occupancy -> [0, 1]
SPLITS = ("train", "val", "test")
NOISY = "noisy"  # group holding one subgroup per noise level
PARTIAL_PREFIX = "partial_"  # a noise level being written; renamed when complete
MESH_FAMILY = "mesh"  # a sample voxelized from a user's mesh file (params: file and placement)


@dataclass(frozen=True)
class Field:
    """One variable of the database."""

    name: str
    dims: tuple[str, ...]
    dtype: object
    description: str
    units: str = ""
    attrs: dict = field(default_factory=dict)
    compress: bool = False


# Root variables, in file order. Dimensions: sample, element, angle, z, y, x, row, col.
FIELDS: tuple[Field, ...] = (
    Field("element", ("element",), STR, "element names: A = the particle's main element "
          "(solid, shell or hollow wall), B = the core of a core-shell particle"),
    Field("angle", ("angle",), "f8", "tilt angle about the y axis", "degree"),
    Field("family", ("sample",), STR, "shape family (nanoedx_dataset.shapes.FAMILIES), or "
          f"{MESH_FAMILY!r} for a sample voxelized from a mesh file"),
    Field("kind", ("sample",), STR, "solid, core_shell or hollow"),
    Field("split", ("sample",), STR, "train, val or test (70/15/15, fixed by the seed)"),
    Field("params", ("sample",), STR, "the sample's JSON spec (ParticleSpec.to_json)"),
    Field("written", ("sample",), "u1", "1 once the sample's arrays are written"),
    Field("volume", ("sample", "element", "z", "y", "x"), "u1",
          "occupancy fraction of each element per voxel", "1",
          {"scale_factor": np.float32(VOLUME_SCALE)}, compress=True),
    Field("projection", ("sample", "element", "angle", "row", "col"), "f4",
          "clean parallel-beam line integrals of the occupancy (row = y)", "voxel",
          compress=True),
)
NOISY_FIELD = Field("counts", ("sample", "element", "angle", "row", "col"), "u2",
                    "Poisson EDX counts: counts * p / sum(p) + background / n_pixels per pixel",
                    "count", compress=True)
NOISY_ATTRS = ("counts", "background", "seed")
ROOT_ATTRS = ("format_name", "format_version", "dataset_version", "generator_version",
              "config", "created", "complete")
# Optional root attribute of a shard: the global index of its first sample (0 when absent).
# A shard's config is the whole run's; its samples are the run's first_sample, first_sample + 1...
FIRST_SAMPLE = "first_sample"


def fields() -> dict[str, Field]:
    """The root variables by name."""
    return {f.name: f for f in FIELDS}


def noisy_path(tag: str) -> str:
    """Path of a noise level's group, e.g. ``noisy/c1000_b100``."""
    return f"{NOISY}/{tag}"


def _chunks(f: Field, sizes: dict[str, int]) -> tuple[int, ...] | None:
    if len(f.dims) < 3:
        return None
    return tuple(1 if d in ("sample", "element") else sizes[d] for d in f.dims)


def _create_variable(group, f: Field, sizes: dict[str, int]):
    kw = {"chunks": _chunks(f, sizes)}
    if f.compress:
        kw.update(compression="gzip", compression_opts=4, shuffle=True)
    var = group.create_variable(f.name, f.dims, dtype=f.dtype, **kw)
    var.attrs["description"] = f.description
    if f.units:
        var.attrs["units"] = f.units
    for k, v in f.attrs.items():
        var.attrs[k] = v
    return var


def create(path: Path, n_samples: int, size: int, angles: np.ndarray, elements: tuple[str, ...],
           attrs: dict) -> None:
    """Write an empty database: dimensions, coordinate values and root attributes.

    Parameters
    ----------
    path : Path
        File to create (overwritten).
    n_samples, size : int
        Number of samples and voxels per axis.
    angles : ndarray, shape (angle,)
        Tilt angles in degrees.
    elements : tuple of str
        Element names.
    attrs : dict
        Root attributes (see :data:`ROOT_ATTRS`); ``format_name``/``format_version`` are added.
    """
    sizes = {"sample": n_samples, "element": len(elements), "angle": len(angles),
             "z": size, "y": size, "x": size, "row": size, "col": size}
    with h5netcdf.File(path, "w") as f:
        f.dimensions = sizes
        for fld in FIELDS:
            _create_variable(f, fld, sizes)
        f.variables["element"][:] = np.array(elements, dtype=object)
        f.variables["angle"][:] = np.asarray(angles, dtype=float)
        f.attrs["format_name"] = FORMAT_NAME
        f.attrs["format_version"] = FORMAT_VERSION
        for k, v in attrs.items():
            f.attrs[k] = v
        f.create_group(NOISY)


def create_noise_group(path: Path, name: str, attrs: dict) -> None:
    """Add an empty noise-level group ``noisy/<name>`` holding :data:`NOISY_FIELD`."""
    with h5netcdf.File(path, "a") as f:
        sizes = {d: f.dimensions[d].size for d in NOISY_FIELD.dims}
        grp = f[NOISY].create_group(name)
        _create_variable(grp, NOISY_FIELD, sizes)
        for k in NOISY_ATTRS:
            grp.attrs[k] = attrs[k]


def open_database(path, mode: str = "r", complete: bool = True) -> h5py.File:
    """Open a nanoedx database with h5py after checking that it is one.

    Parameters
    ----------
    path : path-like
    mode : {"r", "r+"}
    complete : bool
        Refuse a file whose generation did not finish.

    Raises
    ------
    DatasetNotFoundError
        The file does not exist.
    SchemaError
        The file is not HDF5, not a nanoedx database, or (with ``complete``) unfinished.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(f"no database file at {path}; generate one with "
                                   "`nanoedx generate --preset mini --out FILE`")
    try:
        f = h5py.File(path, mode)
    except OSError as err:
        raise SchemaError(f"{path} is not an HDF5 file (truncated or another format): "
                          f"{err}") from err
    name = f.attrs.get("format_name")
    if name != FORMAT_NAME:
        f.close()
        raise SchemaError(f"{path} is not a nanoedx database (format_name={name!r}); "
                          "make one with `nanoedx generate`")
    major = str(f.attrs.get("format_version", "")).split(".")[0]
    if major != FORMAT_VERSION.split(".")[0]:
        f.close()
        raise SchemaError(f"{path} has format version {f.attrs.get('format_version')!r}; this "
                          f"nanoedx reads {FORMAT_VERSION}: upgrade nanoedx or regenerate the file")
    if complete and not bool(f.attrs.get("complete", 0)):
        f.close()
        raise SchemaError(f"{path} is an unfinished database; finish it with "
                          "`nanoedx generate ... --resume`")
    return f


def check_split(split: str | None) -> None:
    """Refuse a split name other than None, train, val or test."""
    if split is not None and split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")


def strings(ds: h5py.Dataset) -> list[str]:
    """A string variable's values as Python strings."""
    return ds.asstr()[:].tolist()


def noise_levels(f: h5py.File) -> dict[str, dict]:
    """Complete noise levels of an open file: ``{tag: {"counts", "background", "seed"}}``."""
    out = {}
    for tag, grp in f.get(NOISY, {}).items():
        if not tag.startswith(PARTIAL_PREFIX):
            out[tag] = {k: grp.attrs[k].item() for k in NOISY_ATTRS}
    return out


def first_sample(f: h5py.File) -> int:
    """Global index of an open file's first sample: 0, or a shard's ``first_sample``."""
    return int(np.ravel(f.attrs.get(FIRST_SAMPLE, 0))[0])


def config(f: h5py.File) -> dict:
    """The generation config stored in an open file."""
    return json.loads(f.attrs["config"])


def problems(f: h5py.File) -> list[str]:
    """Everything wrong with an open database (schema and internal consistency); [] if none."""
    out: list[str] = []
    for a in ROOT_ATTRS:
        if a not in f.attrs:
            out.append(f"root attribute {a!r} is missing")
    for fld in FIELDS:
        if fld.name not in f:
            out.append(f"variable {fld.name!r} is missing")
            continue
        ds = f[fld.name]
        if ds.dtype != np.dtype(fld.dtype) and not (fld.dtype is STR and ds.dtype.kind == "O"):
            out.append(f"{fld.name} has dtype {ds.dtype}, expected {np.dtype(fld.dtype)}")
        if ds.ndim != len(fld.dims):
            out.append(f"{fld.name} has {ds.ndim} dimensions, expected {fld.dims}")
    if out:
        return out
    n, n_el, n_ang, size = f["volume"].shape[0], *f["projection"].shape[1:4]
    if f["projection"].shape != (n, n_el, n_ang, size, size):
        out.append(f"projection shape {f['projection'].shape} does not match volume "
                   f"{f['volume'].shape} and {n_ang} angles")
    if not np.all(f["written"][:] == 1):
        out.append(f"{int((f['written'][:] != 1).sum())} samples were never written")
    from . import shapes, specs  # local: schema is imported by them indirectly

    cols = {col: strings(f[col]) for col in ("family", "kind", "split", "params")}
    families = (*shapes.FAMILIES, MESH_FAMILY)
    for col, valid in (("family", families), ("kind", specs.KINDS), ("split", SPLITS)):
        bad = set(cols[col]) - set(valid)
        if bad:
            out.append(f"{col} holds unknown values {sorted(bad)}; valid: {', '.join(valid)}")
    first = first_sample(f)
    for i, raw in enumerate(cols["params"]):
        if cols["family"][i] == MESH_FAMILY:
            if "mesh" not in _json_object(raw):
                out.append(f"sample {i}: a mesh sample's params do not name its mesh file")
            continue
        try:
            spec = specs.ParticleSpec.from_json(raw)
        except ValueError as err:
            out.append(f"sample {i}: params is not a spec ({err})")
            continue
        fam = cols["family"][i]
        if spec.family != fam or spec.index != first + i:
            out.append(f"sample {i}: params (family {spec.family}, index {spec.index}) "
                       f"disagree with the catalogue (family {fam})")
    for i in range(n):
        vol = f["volume"][i].astype(np.float64).sum(axis=(1, 2, 3)) * VOLUME_SCALE
        proj = f["projection"][i].astype(np.float64).sum(axis=(2, 3))  # (element, angle)
        kind = cols["kind"][i]
        held = set(np.flatnonzero(vol > 0).tolist())
        if kind in specs.KINDS and held != set(specs.present_elements(kind)):
            out.append(f"sample {i}: a {kind} particle holds elements {np.flatnonzero(vol > 0)}")
        rel = np.abs(proj - vol[:, None]) / np.maximum(vol[:, None], 1.0)
        if rel.max() > 0.005:
            out.append(f"sample {i}: a projection's sum differs from the volume's by "
                       f"{100 * rel.max():.2f} % (limit 0.5 %)")
    for tag, grp in f.get(NOISY, {}).items():
        if tag.startswith(PARTIAL_PREFIX):
            out.append(f"noise level {tag!r} was never finished; rerun `nanoedx renoise`")
            continue
        missing = [a for a in NOISY_ATTRS if a not in grp.attrs]
        if missing:
            out.append(f"noise level {tag!r} lacks attributes {missing}")
        if NOISY_FIELD.name not in grp:
            out.append(f"noise level {tag!r} has no {NOISY_FIELD.name!r} variable")
        elif grp[NOISY_FIELD.name].shape != f["projection"].shape:
            out.append(f"noise level {tag!r} has shape {grp[NOISY_FIELD.name].shape}, "
                       f"expected {f['projection'].shape}")
    return out


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def field_table() -> str:
    """A Markdown table of the format's variables (for the dataset card)."""
    rows = ["| name | dims | dtype | units | meaning |", "| --- | --- | --- | --- | --- |"]
    for fld in FIELDS + (NOISY_FIELD,):
        name = fld.name if fld is not NOISY_FIELD else f"{NOISY}/c{{C}}_b{{B}}/{fld.name}"
        dtype = "str" if fld.dtype is STR else np.dtype(fld.dtype).name
        rows.append(f"| `{name}` | ({', '.join(fld.dims)}) | {dtype} | {fld.units} | "
                    f"{fld.description} |")
    return "\n".join(rows)


def replace_atomically(tmp: Path, final: Path) -> None:
    """Move a finished file into place (atomic on one file system)."""
    os.replace(tmp, final)
