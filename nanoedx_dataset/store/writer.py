"""Write the database format of :mod:`nanoedx_dataset.store.schema`: empty files, noise-level
groups and samples. Callers write to a ``.partial`` file (:mod:`nanoedx_dataset.store.files`)
and move it into place when it is complete.

HDF5 writes a file's data and its metadata in no set order, so the ``written`` flag of a sample
says nothing after a kill. :func:`sample_digest` hashes exactly what :func:`write_sample`
writes; a resumable run records that digest once the sample is durable (:func:`sync`) and keeps
a sample only if it reads back to it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import h5netcdf
import h5py
import numpy as np

from . import schema
from .schema import NOISY, NOISY_ATTRS, NOISY_FIELD, Field


def _create_variable(group, f: Field, sizes: dict[str, int]):
    kw = {"chunks": schema.chunks(f, sizes)}
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
           attrs: dict, haadf: bool = False) -> None:
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
        Root attributes (see :data:`~nanoedx_dataset.store.schema.ROOT_ATTRS`);
        ``format_name``/``format_version`` are added.
    haadf : bool
        Also hold the HAADF images (:data:`~nanoedx_dataset.store.schema.HAADF_FIELDS`; the
        file is then of format 1.1).
    """
    sizes = {"sample": n_samples, "element": len(elements), "angle": len(angles),
             "z": size, "y": size, "x": size, "row": size, "col": size}
    with h5netcdf.File(path, "w") as f:
        f.dimensions = sizes
        for fld in schema.root_fields(haadf):
            _create_variable(f, fld, sizes)
        f.variables[schema.ELEMENT][:] = np.array(elements, dtype=object)
        f.variables[schema.ANGLE][:] = np.asarray(angles, dtype=float)
        f.attrs[schema.ATTR_FORMAT_NAME] = schema.FORMAT_NAME
        f.attrs[schema.ATTR_FORMAT_VERSION] = schema.format_version(haadf)
        for k, v in attrs.items():
            f.attrs[k] = v
        f.create_group(NOISY)
    _stable_provenance(path, schema.format_version(haadf))


def _stable_provenance(path: Path, version: str) -> None:
    """Replace h5netcdf's ``_NCProperties`` (which names the versions of h5netcdf, h5py and
    HDF5 installed) by one naming the format's writer, so the same command gives the same file
    bytes whatever those libraries' versions; netCDF-4 readers need only its ``version=2``."""
    text = f"version=2,{schema.FORMAT_NAME}={version}"
    with h5py.File(path, "r+") as f:
        f.attrs["_NCProperties"] = np.array(
            text, dtype=h5py.string_dtype(encoding="ascii", length=len(text)))


def create_noise_group(path: Path, name: str, attrs: dict) -> None:
    """Add an empty noise-level group ``noisy/<name>`` holding :data:`NOISY_FIELD`."""
    with h5netcdf.File(path, "a") as f:
        sizes = {d: f.dimensions[d].size for d in NOISY_FIELD.dims}
        grp = f[NOISY].create_group(name)
        _create_variable(grp, NOISY_FIELD, sizes)
        for k in NOISY_ATTRS:
            grp.attrs[k] = attrs[k]


def write_sample(f: h5py.File, counts_ds: h5py.Dataset, index: int, catalogue: dict,
                 volume: np.ndarray, projection: np.ndarray, noisy: np.ndarray,
                 haadf: np.ndarray | None = None) -> None:
    """Write one sample's arrays and catalogue row at position ``index``, then mark it written.

    ``catalogue`` maps :data:`~nanoedx_dataset.store.schema.CATALOGUE` names (but ``split``,
    written with the file) to values, and in a file with HAADF images also ``haadf_params``
    (the images are ``haadf``, (angle, row, col)). The file is flushed after the flag.
    """
    f[schema.VOLUME][index] = volume
    f[schema.PROJECTION][index] = projection
    counts_ds[index] = noisy
    if haadf is not None:
        f[schema.HAADF][index] = haadf
    for name, value in catalogue.items():
        f[name][index] = value
    f[schema.WRITTEN][index] = 1
    f.flush()


def sample_digest(catalogue: dict, volume: np.ndarray, projection: np.ndarray,
                  noisy: np.ndarray, haadf: np.ndarray | None = None) -> str:
    """SHA-256 of one sample as :func:`write_sample` writes it (catalogue strings and arrays)."""
    h = hashlib.sha256()
    for name in sorted(catalogue):
        h.update(f"{name}={catalogue[name]}\0".encode())
    for arr in (volume, projection, noisy) + (() if haadf is None else (haadf,)):
        arr = np.ascontiguousarray(arr)
        h.update(f"{arr.dtype.str}{arr.shape}\0".encode())
        h.update(memoryview(arr).cast("B"))
    return h.hexdigest()


def sync(f: h5py.File) -> None:
    """Flush an open file and make what it holds durable (fsync)."""
    f.flush()
    os.fsync(f.id.get_vfd_handle())


def mark_complete(f: h5py.File) -> None:
    """Flag an open file as complete (every sample written)."""
    f.attrs[schema.ATTR_COMPLETE] = np.int8(1)
