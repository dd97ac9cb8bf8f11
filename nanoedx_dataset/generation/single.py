"""A database in one file: written under ``<out>.partial`` with a per-sample ``written`` flag,
moved to ``<out>`` only when complete, so an interrupted run leaves no file that looks finished
and ``resume=True`` continues it. Samples are computed by an :class:`Executor` (worker
processes compute, this process writes, in sample order); noise levels are added later with
:func:`renoise_file`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np
from tqdm.auto import tqdm

from .. import __version__
from ..errors import ConfigError, NanoEDXError, OutputExistsError
from ..simulate.noise import add_noise, check_dose
from ..store import files, reader, schema, writer
from ..store.schema import ELEMENTS, noise_tag
from .config import GenerationConfig, preset
from .executor import Executor
from .sample import make_sample, noise_rng, noise_seed, sample_from_occupancy, splits, write

log = logging.getLogger(__name__)


def created() -> str:
    """Creation time (UTC, ISO 8601); ``SOURCE_DATE_EPOCH`` pins it for byte-identical files."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = datetime.fromtimestamp(int(epoch), timezone.utc) if epoch else datetime.now(timezone.utc)
    return when.isoformat(timespec="seconds")


def check_output(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out} exists; pass --overwrite (overwrite=True) to replace it")
    if not out.parent.is_dir():
        raise ConfigError(f"the output folder {out.parent} does not exist; create it first")


def create(partial: Path, cfg: GenerationConfig, n: int, attrs: dict) -> None:
    """An empty database of ``n`` samples for ``cfg`` at ``partial``, with its noise group."""
    partial.unlink(missing_ok=True)
    writer.create(partial, n, cfg.size, np.array(cfg.angles), ELEMENTS, attrs)
    writer.create_noise_group(partial, noise_tag(cfg.counts, cfg.background),
                              {"counts": cfg.counts, "background": cfg.background,
                               "seed": noise_seed(cfg.seed, cfg.counts, cfg.background)})


def root_attrs(cfg: GenerationConfig, created: str, first_sample: int | None = None) -> dict:
    """Root attributes of a new file; ``first_sample`` is given for a shard only."""
    attrs = {schema.ATTR_DATASET_VERSION: cfg.dataset_version,
             schema.ATTR_GENERATOR_VERSION: __version__, schema.ATTR_CONFIG: cfg.to_json(),
             schema.ATTR_CREATED: created, schema.ATTR_COMPLETE: np.int8(0)}
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
        with reader.open_database(partial, complete=False) as f:
            stored = reader.config(f)
            if GenerationConfig.from_json(f.attrs[schema.ATTR_CONFIG]) != cfg:
                raise ConfigError(f"{partial} was started with another config ({stored}); "
                                  "rerun with the same options or pass --overwrite")
            todo = [start + int(i) for i in np.flatnonzero(f[schema.WRITTEN][:] != 1)]
        log.info("resuming %s: %d of %d samples left", partial, len(todo), stop - start)
    else:
        create(partial, cfg, stop - start, attrs)
        with h5py.File(partial, "r+") as f:
            f[schema.SPLIT][:] = splits(cfg.n, cfg.seed)[start:stop]
        todo = list(range(start, stop))

    with h5py.File(partial, "r+") as f:
        counts_ds = f[schema.counts_path(noise_tag(cfg.counts, cfg.background))]
        bar = tqdm(total=stop - start, initial=stop - start - len(todo), desc=desc,
                   unit="sample", disable=not progress)
        extra = [[mesh_dir] * len(todo)] if mesh_dir is not None else []
        with Executor(workers) as ex:
            for s in ex.map(make_sample, [cfg] * len(todo), todo, *extra):
                write(f, counts_ds, s, first=start)
                bar.update()
        bar.close()
        writer.mark_complete(f)


def generate_file(out: Path, cfg: GenerationConfig, *, workers: int = 1, overwrite: bool = False,
                  resume: bool = False, progress: bool = True, mesh_dir=None) -> Path:
    """:func:`~nanoedx_dataset.generate` into one file (see the module's notes)."""
    partial = files.partial_path(out)
    check_output(out, overwrite)
    if partial.exists() and not (resume or overwrite):
        raise OutputExistsError(f"an interrupted run left {partial}; pass --resume to continue "
                                "it or --overwrite to start over")
    if mesh_dir is not None:
        Path(mesh_dir).mkdir(parents=True, exist_ok=True)
    try:
        build(partial, cfg, 0, cfg.n, root_attrs(cfg, created()), workers=workers,
              resume=resume, progress=progress, desc=f"generate {out.name}", mesh_dir=mesh_dir)
    except NanoEDXError:
        # a fresh run whose config cannot give this database (e.g. too many counts for a
        # pixel): nothing to resume, so nothing is left behind; a resumed run keeps its file
        if not resume:
            partial.unlink(missing_ok=True)
        raise
    files.replace(partial, out)
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
    check_output(out, overwrite)
    expected = (len(ELEMENTS),) + (cfg.size,) * 3
    if cfg.n != 1 or occ.shape != expected:
        raise ConfigError(f"write_one writes one sample of shape {expected}; got n={cfg.n} and "
                          f"an occupancy of shape {occ.shape}")
    sample = sample_from_occupancy(cfg, 0, occ, params, family, kind)
    with files.atomic_output(out) as partial:
        create(partial, cfg, 1, root_attrs(cfg, created()))
        with h5py.File(partial, "r+") as f:
            f[schema.SPLIT][:] = [split]
            write(f, f[schema.counts_path(noise_tag(cfg.counts, cfg.background))], sample)
            writer.mark_complete(f)
    return out


def generate_from_mesh(mesh, out, size: int, *, extent: float | None = 0.9,
                       voxel_size: float | None = None, counts: float = 1000.0,
                       background: float = 100.0, angles=None, seed: int = 0,
                       overwrite: bool = False) -> Path:
    """Voxelize a closed mesh file (STL, PLY, OBJ) into a one-sample database.

    The sample has family ``"mesh"``, kind ``solid``, split ``test``; its ``params`` record the
    file name, SHA-256 and placement. Projections and one noise level are made as by
    :func:`generate`. See :func:`nanoedx_dataset.simulate.voxelizers.meshes.voxelize_mesh` for ``extent`` and
    ``voxel_size`` (how the mesh is placed in the field); needs ``pip install "nanoedx[blender]"``.

    Returns
    -------
    Path
        ``out``, readable with :func:`nanoedx_dataset.load_dataset`.
    """
    from ..simulate.voxelizers import meshes

    cfg = GenerationConfig(n=1, size=size, counts=counts, background=background, seed=seed,
                           **({"angles": angles} if angles is not None else {})).validate()
    check_output(Path(out), overwrite)
    occ = meshes.voxelize_mesh(mesh, cfg.size, extent=extent, voxel_size=voxel_size)
    params = json.dumps({"mesh": Path(mesh).name, "sha256": files.sha256(mesh),
                         "extent": None if voxel_size is not None else extent,
                         "voxel_size": voxel_size}, sort_keys=True)
    return write_one(out, replace(cfg, backend="vtk-mesh"), occ, params, schema.MESH_FAMILY,
                     overwrite=overwrite)


def renoise_file(path, counts: float, background: float, *, seed: int | None = None,
                 overwrite: bool = False, progress: bool = True) -> str:
    """:func:`~nanoedx_dataset.renoise` of one file (a whole database or one shard)."""
    path = Path(path)
    counts, background = check_dose(counts, background)
    tag = noise_tag(counts, background)
    with reader.open_database(path) as f:
        cfg = reader.config(f)
        n = f[schema.PROJECTION].shape[0]
        first = reader.first_sample(f)
        exists = tag in reader.noise_levels(f)
        stale = schema.PARTIAL_PREFIX + tag in f.get(schema.NOISY, {})
    if exists and not overwrite:
        raise OutputExistsError(f"{path} already has noise level {tag}; pass --overwrite")
    seed = noise_seed(cfg["seed"], counts, background) if seed is None else int(seed)
    tmp = schema.PARTIAL_PREFIX + tag
    if stale:
        with h5py.File(path, "r+") as f:
            del f[schema.noisy_path(tmp)]
    writer.create_noise_group(path, tmp, {"counts": counts, "background": background,
                                          "seed": seed})
    with h5py.File(path, "r+") as f:
        ds = f[schema.noisy_path(tmp)][schema.NOISY_FIELD.name]
        for i in tqdm(range(n), desc=f"renoise {tag}", unit="sample", disable=not progress):
            ds[i] = add_noise(f[schema.PROJECTION][i], counts, background,
                              noise_rng(seed, first + i))
        if exists:
            del f[schema.noisy_path(tag)]
        f.move(schema.noisy_path(tmp), schema.noisy_path(tag))
    return tag
