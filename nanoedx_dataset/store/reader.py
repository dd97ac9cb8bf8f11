"""Read the database format: the one reader behind ``load_dataset``, the torch Datasets, the
figures and the checks.

:func:`open_database` opens a file with h5py after checking that it is a (complete) nanoedx
database; :class:`Database` reads one sample, map or tilt series at a time (decoded volumes,
one noise level chosen by :func:`select_level`) with handles opened lazily in each process, so
it can travel to DataLoader and pool workers; :func:`open_xarray` shows a file as a lazy,
labelled ``xarray.Dataset``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np

from ..errors import ConfigError, DatasetNotFoundError, SchemaError
from . import schema


def open_database(path, mode: str = "r", complete: bool = True,
                  check: bool = True) -> h5py.File:
    """Open a nanoedx database with h5py after checking that it is one.

    Parameters
    ----------
    path : path-like
    mode : {"r", "r+"}
    complete : bool
        Refuse a file whose generation did not finish.
    check : bool
        Refuse a file whose layout does not match the schema (:func:`layout_problems`).

    Raises
    ------
    DatasetNotFoundError
        The file does not exist.
    SchemaError
        The file is not HDF5, not a nanoedx database, (with ``complete``) unfinished, or
        (with ``check``) damaged: a variable missing or of the wrong dtype or shape.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(f"no database file at {path}; generate one with "
                                   "`nanoedx generate --preset mini -o FILE`")
    try:
        f = h5py.File(path, mode)
    except OSError as err:
        raise SchemaError(f"{path} is not an HDF5 file (truncated or another format): "
                          f"{err}") from err
    name = f.attrs.get(schema.ATTR_FORMAT_NAME)
    if name != schema.FORMAT_NAME:
        f.close()
        raise SchemaError(f"{path} is not a nanoedx database (format_name={name!r}); "
                          "make one with `nanoedx generate`")
    version = f.attrs.get(schema.ATTR_FORMAT_VERSION, "")
    if str(version).split(".")[0] != schema.FORMAT_VERSION.split(".")[0]:
        f.close()
        raise SchemaError(f"{path} has format version {version!r}; this nanoedx reads "
                          f"{schema.FORMAT_VERSION}: upgrade nanoedx or regenerate the file")
    if complete and not bool(f.attrs.get(schema.ATTR_COMPLETE, 0)):
        f.close()
        raise SchemaError(f"{path} is an unfinished database; finish it with "
                          "`nanoedx generate ... --resume`")
    try:
        found = layout_problems(f) if check else []
    except (OSError, KeyError, ValueError) as err:  # metadata that h5py cannot read
        found = [f"its metadata cannot be read ({type(err).__name__}: {err})"]
    if found:
        f.close()
        raise SchemaError(f"{path} is damaged: {'; '.join(found[:3])}"
                          f"{'; ...' if len(found) > 3 else ''} (`nanoedx verify {path}` lists "
                          "every problem); regenerate or download it again")
    return f


def layout_problems(f: h5py.File) -> list[str]:
    """What is wrong with the layout of an open database against the schema; [] if nothing.

    Reads no arrays, only their metadata: every variable of :data:`schema.FIELDS` (and of
    :data:`schema.HAADF_FIELDS` when the file holds one of them) present with its dtype and rank, one size per dimension across the variables (so the angles match the
    maps and the catalogue the samples), a cubic grid (z = y = x = row = col), and each noise
    level's counts of the schema's dtype and the projections' shape.
    """
    out: list[str] = []
    sizes: dict[str, tuple[str, int]] = {}  # dimension -> (the variable that set it, size)
    haadf = any(fld.name in f for fld in schema.HAADF_FIELDS)  # both or neither
    expected = [(fld.name, fld) for fld in schema.root_fields(haadf)]
    for tag, grp in f.get(schema.NOISY, {}).items():
        if not tag.startswith(schema.PARTIAL_PREFIX):
            if not isinstance(grp, h5py.Group) or schema.NOISY_FIELD.name not in grp:
                out.append(f"noise level {tag!r} has no {schema.NOISY_FIELD.name!r} variable")
                continue
            expected.append((schema.counts_path(tag), schema.NOISY_FIELD))
    for name, fld in expected:
        ds = f.get(name)
        if not isinstance(ds, h5py.Dataset):
            out.append(f"variable {name!r} is missing")
            continue
        want = np.dtype(fld.dtype)
        if ds.dtype != want and not (fld.dtype is schema.STR and ds.dtype.kind == "O"):
            out.append(f"{name} has dtype {ds.dtype}, expected {want}")
        if ds.ndim != len(fld.dims):
            out.append(f"{name} has {ds.ndim} dimensions, expected {len(fld.dims)} "
                       f"({', '.join(fld.dims)})")
            continue
        for dim, n in zip(fld.dims, ds.shape):
            dim = "size" if dim in ("z", "y", "x", "row", "col") else dim
            first, m = sizes.setdefault(dim, (name, n))
            if m != n:
                label = "the grid" if dim == "size" else f"dimension {dim!r}"
                out.append(f"{name} has {n} along {label}, {first} {m}")
    return out


def check_split(split: str | None) -> None:
    """Refuse a split name other than None, train, val or test."""
    if split is not None and split not in schema.SPLITS:
        raise ConfigError(f"unknown split {split!r}; choose one of: {', '.join(schema.SPLITS)}")


def strings(ds: h5py.Dataset) -> list[str]:
    """A string variable's values as Python strings."""
    return ds.asstr()[:].tolist()


def noise_levels(f: h5py.File) -> dict[str, dict]:
    """Complete noise levels of an open file: ``{tag: {"counts", "background", "seed"}}``."""
    out = {}
    for tag, grp in f.get(schema.NOISY, {}).items():
        if not tag.startswith(schema.PARTIAL_PREFIX):
            out[tag] = {k: grp.attrs[k].item() for k in schema.NOISY_ATTRS}
    return out


def select_level(levels: dict, tag: str | None, name: str) -> str | None:
    """The noise level to use: ``tag``, or the file's first level; None if it has none.

    Raises :class:`ConfigError` naming the levels of ``name`` when ``tag`` is not among them.
    """
    if tag is None:
        return next(iter(levels), None)
    if tag not in levels:
        raise ConfigError(f"{name} has no noise level {tag!r}; it has "
                          f"{', '.join(levels) or 'none'} (add one with `nanoedx renoise`, or "
                          "draw noise on the fly with counts=)")
    return tag


def first_sample(f: h5py.File) -> int:
    """Global index of an open file's first sample: 0, or a shard's ``first_sample``."""
    return int(np.ravel(f.attrs.get(schema.FIRST_SAMPLE, 0))[0])


def read_sample(f: h5py.File, counts_ds: h5py.Dataset, index: int) -> tuple:
    """One sample as :func:`~nanoedx_dataset.store.writer.write_sample` takes it.

    Returns ``(catalogue, volume, projection, noisy, haadf)``: the catalogue row (family,
    kind, params and, in a file with HAADF images, haadf_params as strings) and the stored
    arrays, (element, z, y, x) uint8, (element, angle, row, col) float32 and uint16, and the
    (angle, row, col) uint16 HAADF images or None. HDF5's errors pass through.
    """
    names = [c for c in schema.CATALOGUE if c != schema.SPLIT]
    haadf = f[schema.HAADF][index] if schema.HAADF in f else None
    if haadf is not None:
        names.append(schema.HAADF_PARAMS)
    catalogue = {c: f[c].asstr()[index] for c in names}
    return (catalogue, f[schema.VOLUME][index], f[schema.PROJECTION][index],
            counts_ds[index], haadf)


def config(f: h5py.File) -> dict:
    """The generation config stored in an open file."""
    return json.loads(f.attrs[schema.ATTR_CONFIG])


def decode_volume(raw: np.ndarray) -> np.ndarray:
    """Stored uint8 occupancy to float64 fractions in [0, 1]."""
    return raw.astype(np.float64) * schema.VOLUME_SCALE


class Database:
    """One complete database file, read a sample or map at a time.

    Attributes read once: ``path``, ``elements``, ``angles`` (degrees), the catalogue columns
    ``family``, ``kind``, ``split``, ``params``, ``levels`` (noise levels), ``first`` (global
    index of the first sample), ``sharded`` (a shard of a sharded run), ``has_haadf`` (it
    holds HAADF images) and ``attrs`` (root attributes as strings). The h5py handle is opened
    on first use in each process.
    """

    def __init__(self, path):
        self.path = Path(path)
        with open_database(self.path) as f:
            self.elements = strings(f[schema.ELEMENT])
            self.angles = f[schema.ANGLE][:]
            self.catalogue = {c: strings(f[c]) for c in schema.CATALOGUE}
            self.levels = noise_levels(f)
            self.first = first_sample(f)
            self.sharded = schema.FIRST_SAMPLE in f.attrs
            self.has_haadf = schema.HAADF in f
            self.attrs = {k: str(f.attrs[k]) for k in schema.ROOT_ATTRS if k in f.attrs}
            self.n, self.size = int(f[schema.VOLUME].shape[0]), int(f[schema.VOLUME].shape[-1])
        self._pid, self._file = None, None

    def __getstate__(self):
        return {**self.__dict__, "_pid": None, "_file": None}

    def __repr__(self) -> str:
        return (f"Database({str(self.path)!r}: {self.n} samples at {self.size}^3, "
                f"{len(self.angles)} angles, noise levels {list(self.levels)})")

    @property
    def file(self) -> h5py.File:
        """This process's read-only h5py handle."""
        if self._pid != os.getpid() or self._file is None:
            self._pid, self._file = os.getpid(), h5py.File(self.path, "r")
        return self._file

    def level(self, tag: str | None = None) -> str | None:
        """A noise level of this file (see :func:`select_level`)."""
        return select_level(self.levels, tag, self.path.name)

    def volume(self, sample: int, element=slice(None)) -> np.ndarray:
        """Occupancy in [0, 1] (float64), (element, z, y, x) or (z, y, x) for one element."""
        return decode_volume(self.file[schema.VOLUME][sample, element])

    def projection(self, sample: int, element=slice(None), angles=slice(None)) -> np.ndarray:
        """Clean line integrals (float32, voxels)."""
        return self.file[schema.PROJECTION][sample, element, angles]

    def counts(self, tag: str, sample: int, element=slice(None), angles=slice(None)) -> np.ndarray:
        """Noisy counts (uint16) of noise level ``tag``."""
        return self.file[schema.counts_path(tag)][sample, element, angles]

    def haadf(self, sample: int, angles=slice(None)) -> np.ndarray:
        """Recorded HAADF-STEM counts (uint16), (angle, row, col) or (row, col) for one angle.

        Raises :class:`ConfigError` for a file without HAADF images.
        """
        self._require_haadf()
        return self.file[schema.HAADF][sample, angles]

    def haadf_params(self, sample: int) -> dict:
        """One sample's HAADF parameters (element symbols and Z, gamma, peak, support, blur,
        read noise)."""
        self._require_haadf()
        return json.loads(self.file[schema.HAADF_PARAMS].asstr()[sample])

    def _require_haadf(self) -> None:
        if not self.has_haadf:
            raise ConfigError(f"{self.path.name} holds no HAADF images; generate a database "
                              "with them (`nanoedx generate ... --haadf`)")


def open_xarray(path: Path, noise: str | None = None):
    """One database file as a lazy ``xarray.Dataset``, one noise level as the variable ``noisy``.

    The catalogue columns are coordinates, ``sample`` numbers the file's samples from 0, and
    ``attrs["noise_levels"]`` lists the file's levels.
    """
    import xarray as xr

    with open_database(path) as f:  # checks it is a complete nanoedx file
        levels = noise_levels(f)
    tag = select_level(levels, noise, Path(path).name)
    try:
        ds = xr.open_dataset(path, engine="h5netcdf", chunks={"sample": 1})
        ds = ds.drop_vars(schema.WRITTEN).set_coords(list(schema.CATALOGUE))
        ds = ds.assign_coords(sample=np.arange(ds.sizes["sample"]))
        if tag is not None:
            grp = xr.open_dataset(path, engine="h5netcdf", group=schema.noisy_path(tag),
                                  chunks={"sample": 1})
            ds["noisy"] = grp[schema.NOISY_FIELD.name].assign_attrs({**grp.attrs, "tag": tag})
    except (OSError, KeyError, ValueError) as err:  # metadata the layout check does not read
        raise SchemaError(f"{path} is damaged ({type(err).__name__}: {err}); check it with "
                          f"`nanoedx verify {path}` and regenerate or download it again") from err
    ds.attrs["noise_levels"] = list(levels)
    return ds
