"""``load_dataset``: a release or local files as one lazy, labelled ``xarray.Dataset``.

The ``mini`` release ships inside the package; the others are fetched (:mod:`.fetch`). Files
are read through the one reader, :mod:`nanoedx_dataset.store.reader`; a folder of shards is
joined along ``sample``. Nothing here imports the generator, a voxelizer or torch.
"""

from __future__ import annotations

from pathlib import Path

import xarray as xr

from ..errors import DatasetNotFoundError, SchemaError
from ..store import index, reader, schema
from .fetch import fetch_release
from . import registry


def _local_files(path: Path) -> list[Path]:
    if path.is_dir():
        index.check_complete(path)  # a sharded run still being written is refused
        files = sorted(path.glob("*.h5"))
        if not files:
            raise DatasetNotFoundError(f"no .h5 files in {path}; generate one with "
                                       "`nanoedx generate --out DIR/FILE.h5`")
        return files
    if path.is_file():
        return [path]
    raise DatasetNotFoundError(f"unknown release {str(path)!r} and no such file or folder; "
                               f"known releases: {registry.listing()}")


def resolve(name_or_path, version: str = "latest", cache_dir=None) -> list[Path]:
    """Local files of a release name (fetched if needed), a file, or a folder of shards."""
    path = Path(name_or_path)
    if isinstance(name_or_path, str) and name_or_path in registry.releases() and not path.exists():
        return fetch_release(name_or_path, version, cache_dir)
    return _local_files(path)


def load_dataset(name_or_path="mini", version: str = "latest", split: str | None = None,
                 noise: str | None = None, cache_dir=None) -> xr.Dataset:
    """Load a nanoedx database as a lazy, labelled ``xarray.Dataset``.

    Parameters
    ----------
    name_or_path : str or path-like
        A release name (``"mini"``, ``"standard"``, ``"paper"``), an HDF5 file, or a folder of
        shard files (joined along ``sample`` in name order).
    version : str
        Release version, or ``"latest"``. Ignored for local paths.
    split : {"train", "val", "test"}, optional
        Keep one split.
    noise : str, optional
        Noise level tag (e.g. ``"c1000_b100"``) to expose as ``noisy``; default: the file's
        first level.
    cache_dir : path-like, optional
        Download cache (default ``$NANOEDX_DATA_DIR`` or the OS cache).

    Returns
    -------
    xarray.Dataset
        ``volume`` (sample, element, z, y, x) occupancy in [0, 1]; ``projection`` (sample,
        element, angle, row, col) clean line integrals in voxels; ``noisy`` (same dims) uint16
        counts; coordinates ``angle`` (degrees), ``element`` and the catalogue ``family``,
        ``kind``, ``split`` and ``params`` (JSON spec) per sample. Arrays are dask-backed and
        read only when used.

    Examples
    --------
    >>> from nanoedx_dataset import load_dataset
    >>> ds = load_dataset("mini", split="test")  # embedded: works offline
    >>> ds.noisy.isel(sample=0, element=0, angle=7).values.sum()  # doctest: +SKIP
    """
    reader.check_split(split)
    parts = [reader.open_xarray(p, noise) for p in resolve(name_or_path, version, cache_dir)]
    if len(parts) == 1:
        ds = parts[0]
    else:
        for p in parts[1:]:
            if p.sizes["z"] != parts[0].sizes["z"] or not (p[schema.ANGLE] == parts[0][schema.ANGLE]).all():
                raise SchemaError("shards differ in size or angles; they are not one release")
        offsets, start = [], 0
        for p in parts:
            offsets.append(p.assign_coords(sample=range(start, start + p.sizes["sample"])))
            start += p.sizes["sample"]
        ds = xr.concat(offsets, dim="sample", data_vars="minimal", coords="minimal",
                       compat="override", join="override", combine_attrs="override")
    if split is not None:
        ds = ds.isel(sample=(ds[schema.SPLIT] == split).values)
    return ds
