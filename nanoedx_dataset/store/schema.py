"""The HDF5 database format: the one definition every writer, reader and check derives from.

A database is a netCDF-4 compatible HDF5 file (dimension names are HDF5 dimension scales), so
``xarray.open_dataset(path, engine="h5netcdf")`` shows a labelled dataset and
``group="noisy/c1000_b100"`` one noise level. This module holds the contract and its vocabulary
(variable and attribute names, kinds, elements, splits, the noise tag, dtypes) and nothing
else: no physics, no producer. Nothing outside it spells a path or attribute inside the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import h5py
import numpy as np

FORMAT_NAME = "nanoedx"
# 1.1 adds the optional HAADF variables (HAADF_FIELDS); a file without them is a 1.0 file and
# says so (format_version()), so that it keeps the exact bytes of the releases before 1.1.
FORMAT_VERSION = "1.1"
STR = h5py.string_dtype()
VOLUME_SCALE = 1 / 255  # uint8 occupancy -> [0, 1]
COUNT_DTYPE = np.uint16  # noisy EDX counts (NOISY_FIELD's dtype, "u2")
HAADF_DTYPE = np.uint16  # recorded HAADF-STEM counts (the haadf variable's dtype)

# ---------------------------------------------------------------- vocabulary
SPLITS = ("train", "val", "test")
KINDS = ("solid", "core_shell", "hollow")
# Element 0 ("A") is the particle's main element: a solid particle, the shell of a core-shell
# particle, the wall of a hollow one. Element 1 ("B") is the core of a core-shell particle.
ELEMENTS = ("A", "B")
MESH_FAMILY = "mesh"  # a sample voxelized from a user's mesh file (params: file and placement)
# The family and the kind of a field of several particles, supports and phases (params: its
# SceneSpec JSON, nanoedx_dataset.simulate.scenes); it may hold both elements.
SCENE = "scene"


def present_elements(kind: str) -> tuple[int, ...]:
    """Indices of the elements a particle of ``kind`` (or a scene) may hold (the others are
    empty)."""
    return (0, 1) if kind in ("core_shell", SCENE) else (0,)


def noise_tag(counts: float, background: float) -> str:
    """Name of a noise level, e.g. ``c1000_b100``."""
    return f"c{float(counts):g}_b{float(background):g}"


# ---------------------------------------------------------------- names in the file
ELEMENT, ANGLE = "element", "angle"
FAMILY, KIND, SPLIT, PARAMS, WRITTEN = "family", "kind", "split", "params", "written"
VOLUME, PROJECTION = "volume", "projection"
HAADF, HAADF_PARAMS = "haadf", "haadf_params"
CATALOGUE = (FAMILY, KIND, SPLIT, PARAMS)
NOISY = "noisy"  # group holding one subgroup per noise level
PARTIAL_PREFIX = "partial_"  # a noise level being written; renamed when complete

# Root attributes
ATTR_FORMAT_NAME, ATTR_FORMAT_VERSION = "format_name", "format_version"
ATTR_DATASET_VERSION, ATTR_GENERATOR_VERSION = "dataset_version", "generator_version"
ATTR_CONFIG, ATTR_CREATED, ATTR_COMPLETE = "config", "created", "complete"
ROOT_ATTRS = (ATTR_FORMAT_NAME, ATTR_FORMAT_VERSION, ATTR_DATASET_VERSION,
              ATTR_GENERATOR_VERSION, ATTR_CONFIG, ATTR_CREATED, ATTR_COMPLETE)
# Optional root attribute of a shard: the global index of its first sample (0 when absent).
# A shard's config is the whole run's; its samples are the run's first_sample, first_sample + 1...
FIRST_SAMPLE = "first_sample"
# Attributes of a noise level's group
NOISY_ATTRS = ("counts", "background", "seed")


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
    Field(ELEMENT, ("element",), STR, "element names: A = the particle's main element "
          "(solid, shell or hollow wall), B = the core of a core-shell particle"),
    Field(ANGLE, ("angle",), "f8", "tilt angle about the y axis", "degree"),
    # The descriptions are bytes of every file: changing one needs a new release version.
    # (A sample voxelized from a mesh file has the family MESH_FAMILY.)
    Field(FAMILY, ("sample",), STR, "shape family (nanoedx_dataset.shapes.FAMILIES)"),
    Field(KIND, ("sample",), STR, "solid, core_shell or hollow"),
    Field(SPLIT, ("sample",), STR, "train, val or test (70/15/15, fixed by the seed)"),
    Field(PARAMS, ("sample",), STR, "the sample's JSON spec (ParticleSpec.to_json)"),
    Field(WRITTEN, ("sample",), "u1", "1 once the sample's arrays are written"),
    Field(VOLUME, ("sample", "element", "z", "y", "x"), "u1",
          "occupancy fraction of each element per voxel", "1",
          {"scale_factor": np.float32(VOLUME_SCALE)}, compress=True),
    Field(PROJECTION, ("sample", "element", "angle", "row", "col"), "f4",
          "clean parallel-beam line integrals of the occupancy (row = y)", "voxel",
          compress=True),
)
# Optional root variables (format 1.1): the HAADF-STEM image recorded with every tilt, written
# by a config with HAADF options (nanoedx_dataset.simulate.haadf), in file order after FIELDS.
HAADF_FIELDS: tuple[Field, ...] = (
    Field(HAADF_PARAMS, ("sample",), STR, "the sample's HAADF JSON: element symbols and Z, "
          "gamma, peak, support, blur, read_noise (nanoedx_dataset.simulate.haadf)"),
    Field(HAADF, ("sample", "angle", "row", "col"), "u2",
          "HAADF-STEM counts recorded with each tilt: Poisson(probe-blurred peak-scaled "
          "sum_e Z_e^gamma p_e + support film) + read noise", "count", compress=True),
)
NOISY_FIELD = Field("counts", ("sample", "element", "angle", "row", "col"), "u2",
                    "Poisson EDX counts: counts * p / sum(p) + background / n_pixels per pixel",
                    "count", compress=True)


def fields() -> dict[str, Field]:
    """The root variables by name (the optional HAADF ones included)."""
    return {f.name: f for f in FIELDS + HAADF_FIELDS}


def root_fields(haadf: bool) -> tuple[Field, ...]:
    """The root variables of a file, with or without the HAADF images."""
    return FIELDS + HAADF_FIELDS if haadf else FIELDS


def format_version(haadf: bool) -> str:
    """The format version a file declares: 1.1 with the HAADF images, else 1.0."""
    return FORMAT_VERSION if haadf else "1.0"


def noisy_path(tag: str) -> str:
    """Path of a noise level's group, e.g. ``noisy/c1000_b100``."""
    return f"{NOISY}/{tag}"


def counts_path(tag: str) -> str:
    """Path of a noise level's count variable, e.g. ``noisy/c1000_b100/counts``."""
    return f"{noisy_path(tag)}/{NOISY_FIELD.name}"


def chunks(f: Field, sizes: dict[str, int]) -> tuple[int, ...] | None:
    """HDF5 chunk shape of a variable: one sample and element per chunk (None: contiguous)."""
    if len(f.dims) < 3:
        return None
    return tuple(1 if d in ("sample", "element") else sizes[d] for d in f.dims)


def field_table() -> str:
    """A Markdown table of the format's variables (for the dataset card)."""
    rows = ["| name | dims | dtype | units | meaning |", "| --- | --- | --- | --- | --- |"]
    for fld in FIELDS + HAADF_FIELDS + (NOISY_FIELD,):
        name = fld.name if fld is not NOISY_FIELD else f"{NOISY}/c{{C}}_b{{B}}/{fld.name}"
        dtype = "str" if fld.dtype is STR else np.dtype(fld.dtype).name
        note = "optional (format 1.1, `--haadf`): " if fld in HAADF_FIELDS else ""
        rows.append(f"| `{name}` | ({', '.join(fld.dims)}) | {dtype} | {fld.units} | "
                    f"{note}{fld.description} |")
    return "\n".join(rows)
