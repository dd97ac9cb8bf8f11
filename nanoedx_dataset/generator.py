"""Generate a database (``generate``) and add noise levels to one (``renoise``).

A sample flows one way: spec -> occupancy -> uint8 volume -> projections -> noisy maps -> file.
Samples are independent, so they are computed in worker processes and written by the parent in
order. The file is written under ``<out>.partial`` with a per-sample ``written`` flag and renamed
to ``<out>`` only when complete: an interrupted run leaves no file that looks finished, and
``resume=True`` continues it. Every random draw depends only on the seed and the sample's index,
so the same seed and config give bit-identical arrays with any number of workers. With a shard
size, the run is a folder of shard files instead, computed on a local pool or a dask cluster
(:mod:`nanoedx_dataset.shards`, which builds each shard with :func:`build`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from . import __version__, schema
from .config import GenerationConfig, preset
from .errors import ConfigError, OutputExistsError
from .noise import add_noise, check_dose, noise_tag
from .project import project
from .specs import ELEMENTS, draw_spec
from .voxelize import check_mesh_backend, voxelize

log = logging.getLogger(__name__)


@dataclass
class Sample:
    """The arrays of one sample, as written to the file."""

    index: int
    spec_json: str
    family: str
    kind: str
    volume: np.ndarray  # (element, z, y, x) uint8
    projection: np.ndarray  # (element, angle, row, col) float32
    noisy: np.ndarray  # (element, angle, row, col) uint16
    seconds: dict


def noise_seed(seed: int, counts: float, background: float) -> int:
    """Default seed of a noise level: derived from the generation seed and the level's tag."""
    digest = hashlib.sha256(f"{seed}/{noise_tag(counts, background)}".encode()).hexdigest()
    return int(digest[:8], 16)


def noise_rng(seed: int, index: int) -> np.random.Generator:
    """The generator that draws sample ``index``'s counts of a noise level with ``seed``."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2, index)))


def splits(n: int, seed: int) -> np.ndarray:
    """Split of each sample: 70 % train, 15 % val, 15 % test, in an order fixed by the seed."""
    order = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(3,))).permutation(n)
    n_train, n_val = round(0.7 * n), round(0.15 * n)
    out = np.empty(n, dtype=object)
    out[order[:n_train]] = "train"
    out[order[n_train : n_train + n_val]] = "val"
    out[order[n_train + n_val :]] = "test"
    return out


def make_sample(cfg: GenerationConfig, index: int, mesh_dir=None) -> Sample:
    """Compute every array of sample ``index`` (no I/O but the meshes saved in ``mesh_dir``)."""
    t0 = time.perf_counter()
    spec = draw_spec(cfg.seed, index)
    occ = voxelize(spec, cfg.size, backend=cfg.backend, mesh_dir=mesh_dir)
    seconds = time.perf_counter() - t0
    s = sample_from_occupancy(cfg, index, occ, spec.to_json(), spec.family, spec.kind)
    s.seconds = {"voxelize": seconds, **s.seconds}
    return s


def sample_from_occupancy(cfg: GenerationConfig, index: int, occ: np.ndarray, params: str,
                          family: str, kind: str) -> Sample:
    """Quantize an occupancy (element, z, y, x), project it and noise the projections."""
    t1 = time.perf_counter()
    volume = np.rint(occ / schema.VOLUME_SCALE).astype(np.uint8)
    # Project the stored (quantized) occupancy, so projections and volume agree exactly.
    # An absent element (the core of a solid particle) projects to zeros: skip it.
    proj = np.zeros((len(ELEMENTS), len(cfg.angles), cfg.size, cfg.size), np.float32)
    present = np.flatnonzero(volume.any(axis=(1, 2, 3)))
    if present.size:
        occ_q = volume[present].astype(np.float32) * np.float32(schema.VOLUME_SCALE)
        proj[present] = project(occ_q, cfg.angles)
    t2 = time.perf_counter()
    rng = noise_rng(noise_seed(cfg.seed, cfg.counts, cfg.background), index)
    noisy = add_noise(proj, cfg.counts, cfg.background, rng)
    t3 = time.perf_counter()
    return Sample(index, params, family, kind, volume, proj, noisy,
                  {"project": t2 - t1, "noise": t3 - t2})


def write_sample(f: h5py.File, counts_ds: h5py.Dataset, s: Sample, first: int = 0) -> None:
    """Write one sample's arrays and catalogue row, then mark it written (flushed).

    ``first`` is the global index of the file's first sample (non-zero in a shard).
    """
    i = s.index - first
    f["volume"][i] = s.volume
    f["projection"][i] = s.projection
    counts_ds[i] = s.noisy
    f["family"][i], f["kind"][i], f["params"][i] = s.family, s.kind, s.spec_json
    f["written"][i] = 1
    f.flush()


def _one_blas_thread() -> None:
    # The small matrix products of the voxelizer gain nothing from BLAS threads, whose spinning
    # takes the cores the other workers need.
    threadpool_limits(1)


def _map(fn, args: list, workers: int):
    """Ordered results of ``fn(*a)`` for ``a`` in ``args``, in a process pool if ``workers > 1``."""
    if workers <= 1:
        with threadpool_limits(1):
            for a in args:
                yield fn(*a)
        return
    with ProcessPoolExecutor(max_workers=workers, initializer=_one_blas_thread) as pool:
        yield from pool.map(fn, *zip(*args), chunksize=1)


def _created() -> str:
    """Creation time (UTC, ISO 8601); ``SOURCE_DATE_EPOCH`` pins it for byte-identical files."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = datetime.fromtimestamp(int(epoch), timezone.utc) if epoch else datetime.now(timezone.utc)
    return when.isoformat(timespec="seconds")


def partial_path(out: Path) -> Path:
    """Where ``out`` is written until complete: ``<out>.partial`` (never matches ``*.h5``)."""
    return out.with_name(out.name + ".partial")


def _check_output(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out} exists; pass --overwrite (overwrite=True) to replace it")
    if not out.parent.is_dir():
        raise ConfigError(f"the output folder {out.parent} does not exist; create it first")


def _create(partial: Path, cfg: GenerationConfig, n: int, attrs: dict) -> None:
    """An empty database of ``n`` samples for ``cfg`` at ``partial``, with its noise group."""
    partial.unlink(missing_ok=True)
    schema.create(partial, n, cfg.size, np.array(cfg.angles), ELEMENTS, attrs)
    schema.create_noise_group(partial, noise_tag(cfg.counts, cfg.background),
                              {"counts": cfg.counts, "background": cfg.background,
                               "seed": noise_seed(cfg.seed, cfg.counts, cfg.background)})


def root_attrs(cfg: GenerationConfig, created: str, first_sample: int | None = None) -> dict:
    """Root attributes of a new file; ``first_sample`` is given for a shard only."""
    attrs = {"dataset_version": cfg.dataset_version, "generator_version": __version__,
             "config": cfg.to_json(), "created": created, "complete": np.int8(0)}
    if first_sample is not None:
        attrs[schema.FIRST_SAMPLE] = np.int64(first_sample)
    return attrs


def resolve_config(preset_name: str | None, **overrides) -> GenerationConfig:
    """A preset with the given (non-None) overrides, validated; no preset needs n and size."""
    base = preset(preset_name) if preset_name else None
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if base is None and ("n" not in overrides or "size" not in overrides):
        raise ConfigError("without a preset, give both n and size")
    cfg = replace(base, **overrides) if base else GenerationConfig(**overrides)
    return cfg.validate()


def build(partial: Path, cfg: GenerationConfig, start: int, stop: int, attrs: dict, *,
          workers: int = 1, resume: bool = False, progress: bool = True,
          desc: str = "generate", mesh_dir=None) -> None:
    """Write samples ``start`` to ``stop - 1`` of ``cfg`` into ``partial`` and mark it complete.

    The file is created anew (root attributes ``attrs``), or with ``resume`` continued from
    its ``written`` flags; either way it holds the run's splits for its range and its first
    noise level. Moving it to its final name is the caller's job. ``mesh_dir``: see
    :func:`generate`.
    """
    if resume and partial.exists():
        with schema.open_database(partial, complete=False) as f:
            stored = schema.config(f)
            if GenerationConfig.from_json(f.attrs["config"]) != cfg:
                raise ConfigError(f"{partial} was started with another config ({stored}); "
                                  "rerun with the same options or pass --overwrite")
            todo = [start + int(i) for i in np.flatnonzero(f["written"][:] != 1)]
        log.info("resuming %s: %d of %d samples left", partial, len(todo), stop - start)
    else:
        _create(partial, cfg, stop - start, attrs)
        with h5py.File(partial, "r+") as f:
            f["split"][:] = splits(cfg.n, cfg.seed)[start:stop]
        todo = list(range(start, stop))

    tag = schema.noisy_path(noise_tag(cfg.counts, cfg.background))
    with h5py.File(partial, "r+") as f:
        counts_ds = f[tag][schema.NOISY_FIELD.name]
        bar = tqdm(total=stop - start, initial=stop - start - len(todo), desc=desc,
                   unit="sample", disable=not progress)
        extra = () if mesh_dir is None else (mesh_dir,)
        for s in _map(make_sample, [(cfg, i, *extra) for i in todo], workers):
            write_sample(f, counts_ds, s, first=start)
            bar.update()
        bar.close()
        f.attrs["complete"] = np.int8(1)


def generate(out, preset_name: str | None = "mini", *, n: int | None = None,
             size: int | None = None, counts: float | None = None,
             background: float | None = None, angles=None, seed: int | None = None,
             backend: str | None = None, dataset_version: str | None = None, workers: int = 1,
             shard_size: int | None = None, client=None, overwrite: bool = False,
             resume: bool = False, progress: bool = True, mesh_dir=None) -> Path:
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
        See :class:`nanoedx_dataset.config.GenerationConfig`.
    workers : int
        Processes computing samples (the parent writes); with ``shard_size``, processes each
        computing and writing whole shards.
    shard_size : int, optional
        Write one file of (at most) this many samples per shard into the folder ``out``, plus
        ``index.json`` (see :mod:`nanoedx_dataset.shards`). Rerunning the same call keeps the
        finished shards and redoes only the missing ones.
    client : dask.distributed.Client or str, optional
        Map the shards over this dask cluster (or the scheduler at this address) instead of
        local processes; needs ``shard_size`` and a folder every worker can write to.
    overwrite : bool
        Replace an existing ``out`` (and discard an interrupted run).
    resume : bool
        Continue an interrupted run of the same config from ``<out>.partial`` (a sharded run
        always continues a run of the same config).
    progress : bool
        Show a tqdm progress bar.
    mesh_dir : path-like, optional
        With ``backend="blender"``, also save every particle's meshes (binary STL) in this
        folder (created if missing): ``sample000012_particle.stl`` and, for a core-shell
        particle, ``sample000012_core.stl``.

    Returns
    -------
    Path
        ``out``, complete.

    Examples
    --------
    >>> generate("mini.h5", "mini", n=4, size=32)  # doctest: +SKIP
    >>> generate("big", "paper", shard_size=100, client="tcp://head:8786")  # doctest: +SKIP
    """
    out = Path(out)
    cfg = resolve_config(preset_name, n=n, size=size, counts=counts, background=background,
                         angles=angles, seed=seed, backend=backend,
                         dataset_version=dataset_version)
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    if mesh_dir is not None:
        if shard_size is not None or client is not None:
            raise ConfigError("--mesh-dir works with a single output file, not with shards")
        check_mesh_backend(cfg.backend)
    if shard_size is not None or client is not None:
        from . import shards  # shards builds on this module

        return shards.generate_sharded(out, cfg, shard_size, client=client, workers=workers,
                                       overwrite=overwrite, progress=progress)
    partial = partial_path(out)
    _check_output(out, overwrite)
    if partial.exists() and not (resume or overwrite):
        raise OutputExistsError(f"an interrupted run left {partial}; pass --resume to continue "
                                "it or --overwrite to start over")
    if mesh_dir is not None:
        Path(mesh_dir).mkdir(parents=True, exist_ok=True)
    build(partial, cfg, 0, cfg.n, root_attrs(cfg, _created()), workers=workers,
          resume=resume, progress=progress, desc=f"generate {out.name}", mesh_dir=mesh_dir)
    schema.replace_atomically(partial, out)
    return out


def write_one(out, cfg: GenerationConfig, occ: np.ndarray, params: str, family: str,
              kind: str = "solid", split: str = "test", overwrite: bool = False) -> Path:
    """Write a one-sample database from an occupancy computed elsewhere (e.g. a mesh file).

    Parameters
    ----------
    out : path-like
        The HDF5 file to write (atomically: ``<out>.partial``, then renamed).
    cfg : GenerationConfig
        Size, angles, noise level and seed (``n`` must be 1).
    occ : ndarray, shape (2, size, size, size)
        Occupancy in [0, 1] of each element, axes (element, z, y, x).
    params, family, kind, split : str
        The sample's catalogue row (``params`` a JSON string).
    overwrite : bool
        Replace an existing ``out``.

    Returns
    -------
    Path
        ``out``, a complete database that :func:`nanoedx_dataset.load_dataset` opens.
    """
    out = Path(out)
    _check_output(out, overwrite)
    expected = (len(ELEMENTS),) + (cfg.size,) * 3
    if cfg.n != 1 or occ.shape != expected:
        raise ConfigError(f"write_one writes one sample of shape {expected}; got n={cfg.n} and "
                          f"an occupancy of shape {occ.shape}")
    sample = sample_from_occupancy(cfg, 0, occ, params, family, kind)
    partial = partial_path(out)
    try:
        _create(partial, cfg, 1, root_attrs(cfg, _created()))
        with h5py.File(partial, "r+") as f:
            f["split"][:] = [split]
            tag = schema.noisy_path(noise_tag(cfg.counts, cfg.background))
            write_sample(f, f[tag][schema.NOISY_FIELD.name], sample)
            f.attrs["complete"] = np.int8(1)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    schema.replace_atomically(partial, out)
    return out


def generate_from_mesh(mesh, out, size: int, *, extent: float | None = 0.9,
                       voxel_size: float | None = None, counts: float = 1000.0,
                       background: float = 100.0, angles=None, seed: int = 0,
                       overwrite: bool = False) -> Path:
    """Voxelize a closed mesh file (STL, PLY, OBJ) into a one-sample database.

    The sample has family ``"mesh"``, kind ``solid``, split ``test``; its ``params`` record the
    file name, SHA-256 and placement. Projections and one noise level are made as by
    :func:`generate`. See :func:`nanoedx_dataset.meshes.voxelize_mesh` for ``extent`` and
    ``voxel_size`` (how the mesh is placed in the field); needs ``pip install "nanoedx[blender]"``.

    Returns
    -------
    Path
        ``out``, readable with :func:`nanoedx_dataset.load_dataset`.
    """
    from . import meshes
    from .load import sha256

    cfg = GenerationConfig(n=1, size=size, counts=counts, background=background, seed=seed,
                           **({"angles": angles} if angles is not None else {})).validate()
    _check_output(Path(out), overwrite)
    occ = meshes.voxelize_mesh(mesh, cfg.size, extent=extent, voxel_size=voxel_size)
    params = json.dumps({"mesh": Path(mesh).name, "sha256": sha256(mesh),
                         "extent": None if voxel_size is not None else extent,
                         "voxel_size": voxel_size}, sort_keys=True)
    return write_one(out, replace(cfg, backend="vtk-mesh"), occ, params, schema.MESH_FAMILY,
                     overwrite=overwrite)


def renoise(path, counts: float, background: float, *, seed: int | None = None,
            overwrite: bool = False, client=None, workers: int = 1,
            progress: bool = True) -> str:
    """Add a noise level to an existing database, touching nothing else in it.

    Parameters
    ----------
    path : path-like
        A complete nanoedx database, or the folder of a sharded one (each shard is rewritten
        under a temporary name and renamed, and ``index.json`` updated).
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
        from . import shards  # shards builds on this module

        return shards.renoise_sharded(path, counts, background, seed=seed, overwrite=overwrite,
                                      client=client, workers=workers, progress=progress)
    return renoise_file(path, counts, background, seed=seed, overwrite=overwrite,
                        progress=progress)


def renoise_file(path, counts: float, background: float, *, seed: int | None = None,
                 overwrite: bool = False, progress: bool = True) -> str:
    """:func:`renoise` of one file (a whole database or one shard)."""
    path = Path(path)
    counts, background = check_dose(counts, background)
    tag = noise_tag(counts, background)
    with schema.open_database(path) as f:
        cfg = schema.config(f)
        n = f["projection"].shape[0]
        first = schema.first_sample(f)
        exists = tag in schema.noise_levels(f)
        stale = schema.PARTIAL_PREFIX + tag in f.get(schema.NOISY, {})
    if exists and not overwrite:
        raise OutputExistsError(f"{path} already has noise level {tag}; pass --overwrite")
    seed = noise_seed(cfg["seed"], counts, background) if seed is None else int(seed)
    tmp = schema.PARTIAL_PREFIX + tag
    if stale:
        with h5py.File(path, "r+") as f:
            del f[schema.noisy_path(tmp)]
    schema.create_noise_group(path, tmp, {"counts": counts, "background": background,
                                          "seed": seed})
    with h5py.File(path, "r+") as f:
        ds = f[schema.noisy_path(tmp)][schema.NOISY_FIELD.name]
        for i in tqdm(range(n), desc=f"renoise {tag}", unit="sample", disable=not progress):
            ds[i] = add_noise(f["projection"][i], counts, background, noise_rng(seed, first + i))
        if exists:
            del f[schema.noisy_path(tag)]
        f.move(schema.noisy_path(tmp), schema.noisy_path(tag))
    return tag
