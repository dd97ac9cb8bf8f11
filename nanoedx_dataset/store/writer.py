"""Write the database format of :mod:`nanoedx_dataset.store.schema`: empty files, noise-level
groups and samples. Callers write to a ``.partial`` file (:mod:`nanoedx_dataset.store.files`)
and move it into place when it is complete.

HDF5 writes a file's data and its metadata in no set order, so the ``written`` flag of a sample
says nothing after a kill. :func:`sample_digest` hashes exactly what :func:`write_sample`
writes; a resumable run records that digest once the sample is durable (:func:`sync`) and keeps
a sample only if it reads back to it.

A compressed variable is stored with HDF5's shuffle and deflate filters (:data:`GZIP_LEVEL`).
:func:`encode_sample` compresses a sample's chunks the same way outside HDF5 (in a worker
process), and :func:`write_chunks` writes those bytes as they are: the file is byte for byte
the one :func:`write_sample` writes, which :func:`precompressed` checks against this HDF5.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from functools import lru_cache
from pathlib import Path

import h5netcdf
import h5py
import numpy as np

from . import schema
from .schema import NOISY, NOISY_ATTRS, NOISY_FIELD, Field

GZIP_LEVEL = 4  # deflate level of the compressed variables (after HDF5's shuffle filter)


def _filters() -> dict:
    """h5py's keywords for the filters of a compressed variable."""
    return {"compression": "gzip", "compression_opts": GZIP_LEVEL, "shuffle": True}


def _create_variable(group, f: Field, sizes: dict[str, int]):
    kw = {"chunks": schema.chunks(f, sizes)}
    if f.compress:
        kw.update(_filters())
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
    _write_row(f, index, catalogue)
    f.flush()


def _write_row(f: h5py.File, index: int, catalogue: dict) -> None:
    """A sample's catalogue row and its ``written`` flag, after its arrays."""
    for name, value in catalogue.items():
        f[name][index] = value
    f[schema.WRITTEN][index] = 1


def encode_chunk(chunk: np.ndarray) -> bytes:
    """One chunk as HDF5's shuffle and deflate filters store it (bytes grouped by their place
    in each element, then zlib at :data:`GZIP_LEVEL`)."""
    a = np.ascontiguousarray(chunk)
    raw = a.view(np.uint8).reshape(-1, a.itemsize).T.tobytes() if a.itemsize > 1 else a.tobytes()
    return zlib.compress(raw, GZIP_LEVEL)


def decode_chunk(data: bytes, dtype, shape: tuple[int, ...]) -> np.ndarray:
    """The array of a chunk :func:`encode_chunk` compressed."""
    dtype = np.dtype(dtype)
    raw = np.frombuffer(zlib.decompress(data), np.uint8)
    if dtype.itemsize > 1:
        raw = np.ascontiguousarray(raw.reshape(dtype.itemsize, -1).T)
    return raw.view(dtype).reshape(shape)


@lru_cache(maxsize=1)
def precompressed() -> bool:
    """Whether :func:`encode_chunk` gives this HDF5's filter output byte for byte (checked once
    per process on smooth and on incompressible data); if not, samples are written as arrays."""
    rng = np.random.default_rng(0)
    tests = [np.linspace(0, 3, 4096, dtype=np.float32).reshape(4, 32, 32),
             rng.integers(0, 65535, (4, 32, 32), dtype=np.uint16),
             rng.integers(0, 3, (16, 16, 16), dtype=np.uint8)]
    with h5py.File("precompressed.h5", "w", driver="core", backing_store=False) as f:
        for k, t in enumerate(tests):
            ds = f.create_dataset(str(k), data=t, chunks=t.shape, **_filters())
            mask, stored = ds.id.read_direct_chunk((0,) * t.ndim)
            if mask != 0 or stored != encode_chunk(t):
                return False
    return True


def encode_sample(volume: np.ndarray, projection: np.ndarray, noisy: np.ndarray,
                  haadf: np.ndarray | None = None) -> dict[str, list[bytes]]:
    """A sample's compressed chunks by variable (one per element, one HAADF chunk), for
    :func:`write_chunks`."""
    out = {schema.VOLUME: [encode_chunk(v) for v in volume],
           schema.PROJECTION: [encode_chunk(p) for p in projection],
           NOISY_FIELD.name: [encode_chunk(c) for c in noisy]}
    if haadf is not None:
        out[schema.HAADF] = [encode_chunk(haadf)]
    return out


def write_chunks(f: h5py.File, counts_ds: h5py.Dataset, index: int, catalogue: dict,
                 chunks: dict[str, list[bytes]]) -> None:
    """:func:`write_sample` of a sample compressed by :func:`encode_sample`: the same file.

    HDF5 places a chunk when it leaves the chunk cache: :func:`write_sample`'s root variables
    at once (each is opened for one write), the counts (an open dataset) at the closing
    flush, after the catalogue row; a variable's chunk index when its first chunk is written.
    The chunks are written in that order.
    """
    for name in (schema.VOLUME, schema.PROJECTION):
        _direct(f[name], index, chunks[name])
    counts = chunks[NOISY_FIELD.name]
    first = counts_ds.id.get_storage_size() == 0  # no chunk yet (O(1), unlike counting them)
    if first:  # the file's first counts: HDF5 makes their index now, so they go through it
        counts_ds[index] = np.stack([decode_chunk(c, counts_ds.dtype, counts_ds.chunks[2:])
                                     for c in counts])
    if schema.HAADF in chunks:
        _direct(f[schema.HAADF], index, chunks[schema.HAADF])
    _write_row(f, index, catalogue)
    if not first:
        _direct(counts_ds, index, counts)
    f.flush()


def _direct(ds: h5py.Dataset, index: int, parts: list[bytes]) -> None:
    """Write sample ``index``'s compressed chunks: one per element (``(sample, element, ...)``
    variables) or one (the HAADF images, ``(sample, angle, row, col)``)."""
    for e, data in enumerate(parts):
        at = (index, e) + (0,) * (ds.ndim - 2) if ds.ndim == 5 else (index,) + (0,) * (ds.ndim - 1)
        ds.id.write_direct_chunk(at, data)


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
