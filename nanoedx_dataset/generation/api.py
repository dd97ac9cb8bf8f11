"""``generate`` and ``renoise``: one database file, or a folder of shards.

A sample flows one way: spec -> occupancy -> uint8 volume -> projections -> noisy maps -> file
(:mod:`.sample`). One file is written by :mod:`.single`; with a shard size the run is a folder
of shard files computed on a local pool or a dask cluster (:mod:`.shards`).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from ..simulate.haadf import HaadfOptions
from ..simulate.voxelizers import check_mesh_backend
from . import shards, single


def generate(out, preset_name: str | None = "mini", *, n: int | None = None,
             size: int | None = None, counts: float | None = None,
             background: float | None = None, angles=None, seed: int | None = None,
             backend: str | None = None, dataset_version: str | None = None, workers: int = 1,
             shard_size: int | None = None, client=None, overwrite: bool = False,
             resume: bool = False, progress: bool = True, mesh_dir=None,
             haadf=None) -> Path:
    """Generate a simulated EDX tomography database.

    Parameters
    ----------
    out : path-like
        The HDF5 file to write; with ``shard_size``, the folder of shard files.
    preset_name : {"mini", "standard", "paper"} or None
        Starting config (mini: 64 samples at 64^3; standard: 1000 at 128^3; paper: 1000 at
        256^3; all 16 angles -75..75 deg and 1000 counts + 100 background per map). Any keyword
        below overrides it; with None, ``n`` and ``size`` are required.
    n, size, counts, background, angles, seed, backend, dataset_version
        See :class:`nanoedx_dataset.generation.config.GenerationConfig`.
    workers : int
        Processes computing samples (the parent writes); with ``shard_size``, processes each
        computing and writing whole shards.
    shard_size : int, optional
        Write one file of (at most) this many samples per shard into the folder ``out``, plus
        ``index.json`` (see :mod:`nanoedx_dataset.generation.shards`). Rerunning the same call keeps the
        finished shards and redoes only the missing ones.
    client : dask.distributed.Client or str, optional
        Map the shards over this dask cluster (or the scheduler at this address) instead of
        local processes; needs ``shard_size`` and a folder every worker can write to.
    overwrite : bool
        Replace an existing ``out`` (and discard an interrupted run). The old ``out`` stays
        whole until the new one is complete: a sharded run is built in ``<out>.partial``
        beside the old folder and swapped in at the end (rerunning the same command continues
        it).
    resume : bool
        Continue an interrupted run of the same config from ``<out>.partial``, keeping only
        the samples that read back to the SHA-256 journalled when they were written (a file
        HDF5 cannot open is started over). A sharded run always continues a run of the same
        config.
    progress : bool
        Show a tqdm progress bar.
    mesh_dir : path-like, optional
        With ``backend="blender"``, also save every particle's meshes (binary STL) in this
        folder (created if missing): ``sample000012_particle.stl`` and, for a core-shell
        particle, ``sample000012_core.stl``.
    haadf : bool or HaadfOptions, optional
        Also simulate the HAADF-STEM image recorded with every tilt (True: the default
        :class:`~nanoedx_dataset.simulate.haadf.HaadfOptions`); default: the preset's (none).

    Returns
    -------
    Path
        ``out``, complete.

    Raises
    ------
    OutputExistsError
        ``out`` exists (without ``overwrite``), or another run is writing it (named in the
        message; its lock is ``<out>.lock``).

    Examples
    --------
    >>> generate("mini.h5", "mini", n=4, size=32)  # doctest: +SKIP
    >>> generate("big", "paper", shard_size=100, client="tcp://head:8786")  # doctest: +SKIP
    """
    out = Path(out)
    cfg = single.resolve_config(preset_name, n=n, size=size, counts=counts, background=background,
                         angles=angles, seed=seed, backend=backend,
                         dataset_version=dataset_version,
                         haadf=HaadfOptions() if haadf is True else (haadf or None))
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    if mesh_dir is not None:
        if shard_size is not None or client is not None:
            raise ConfigError("--mesh-dir works with a single output file, not with shards")
        check_mesh_backend(cfg.backend)
    if shard_size is not None or client is not None:
        return shards.generate_sharded(out, cfg, shard_size, client=client, workers=workers,
                                       overwrite=overwrite, progress=progress)
    return single.generate_file(out, cfg, workers=workers, overwrite=overwrite, resume=resume,
                                progress=progress, mesh_dir=mesh_dir)


def renoise(path, counts: float, background: float, *, seed: int | None = None,
            overwrite: bool = False, client=None, workers: int = 1,
            progress: bool = True) -> str:
    """Add a noise level to an existing database, touching nothing else in it.

    Parameters
    ----------
    path : path-like
        A complete nanoedx database, or the folder of a sharded one. The level is added to a
        copy of each file, which is made durable and renamed over it (so a kill leaves the
        file as it was or with the level complete; the copy needs the file's size in free
        disk space), and ``index.json`` is updated.
    counts, background : float
        Signal counts per map on average (> 0) and background counts per map (>= 0).
    seed : int, optional
        Noise seed; by default derived from the database's seed and the level's tag, so the
        same call always gives the same counts.
    overwrite : bool
        Replace the level if the file has it already.
    client : dask.distributed.Client or str, optional
        For a sharded database: renoise the shards on this dask cluster.
    workers : int
        For a sharded database: local processes renoising shards.
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    str
        The level's tag, e.g. ``"c100_b10"``; its group is ``noisy/<tag>``.
    """
    path = Path(path)
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    if path.is_dir():
        return shards.renoise_sharded(path, counts, background, seed=seed, overwrite=overwrite,
                                      client=client, workers=workers, progress=progress)
    return single.renoise_file(path, counts, background, seed=seed, overwrite=overwrite,
                        progress=progress)
