"""A database in one file, written so that a kill at any moment loses nothing.

The file is written under ``<out>.partial`` and moved to ``<out>`` only when complete, so an
interrupted run leaves no file that looks finished. After each sample the file is flushed and
made durable, and only then is the sample's SHA-256 appended to a journal beside it
(``<out>.partial.journal``, deleted with the ``.partial``). HDF5 writes data and metadata in no
set order, so ``resume=True`` trusts neither the file's ``written`` flags nor its structure: it
reads back every sample the journal records, copies those that match their digest into a fresh
file that replaces the ``.partial`` (a file HDF5 cannot open is reported and started over), and
computes the rest. Samples are computed by an :class:`Executor` (worker processes compute,
this process writes, in sample order). One run writes an output at a time
(:func:`~nanoedx_dataset.store.lock.output_lock`). Noise levels are added later with
:func:`renoise_file`, to a copy of the file that replaces it when complete.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np
from tqdm.auto import tqdm

from .. import __version__
from ..errors import ConfigError, NanoEDXError, OutputExistsError
from ..simulate.noise import NoiseModel, check_dose
from ..store import files, reader, schema, writer
from ..store.lock import output_lock
from ..store.schema import ELEMENTS, noise_tag
from .config import GenerationConfig, preset
from .executor import Executor
from .sample import (digest, encode, make_sample, noise_rng, noise_seed, sample_from_occupancy,
                     splits, stored, write, write_encoded)

log = logging.getLogger(__name__)

JOURNAL_FORMAT = "nanoedx-samples"
RESCUE_SUFFIX = ".rescue"  # the fresh file a resumed run copies the checked samples into
RENOISE_SUFFIX = ".renoise"  # renoise writes <name>.renoise.partial, then moves it onto <name>


def created() -> str:
    """Creation time (UTC, ISO 8601); ``SOURCE_DATE_EPOCH`` pins it for byte-identical files."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = datetime.fromtimestamp(int(epoch), timezone.utc) if epoch else datetime.now(timezone.utc)
    return when.isoformat(timespec="seconds")


def check_folder(out: Path) -> None:
    """Refuse an output whose folder does not exist."""
    if not out.parent.is_dir():
        raise ConfigError(f"the output folder {out.parent} does not exist; create it first")


def check_output(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out} exists; pass --overwrite (overwrite=True) to replace it")
    check_folder(out)


def create(partial: Path, cfg: GenerationConfig, n: int, attrs: dict) -> None:
    """An empty database of ``n`` samples for ``cfg`` at ``partial``, with its noise group."""
    partial.unlink(missing_ok=True)
    writer.create(partial, n, cfg.size, np.array(cfg.angles), ELEMENTS, attrs,
                  haadf=cfg.haadf is not None)
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


# ---------------------------------------------------------------- interrupted runs
def _journal_header(cfg: GenerationConfig, start: int, stop: int) -> dict:
    return {"format": JOURNAL_FORMAT, "config": cfg.to_json(), "start": start, "stop": stop}


def recorded(partial: Path, cfg: GenerationConfig, start: int, stop: int) -> dict[int, str]:
    """The digests the journal of ``partial`` records, by global sample index ({} if none)."""
    header, records = files.read_journal(files.journal_path(partial))
    if header != _journal_header(cfg, start, stop):
        return {}
    out = {}
    for r in records:
        i, h = r.get("sample"), r.get("sha256")
        if isinstance(i, int) and start <= i < stop and isinstance(h, str):
            out[i] = h
    return out


def open_interrupted(partial: Path, cfg: GenerationConfig) -> tuple[h5py.File | None, str]:
    """An interrupted run's file, open for reading, and its creation time.

    Returns ``(None, reason)`` when HDF5 cannot open it or its root attributes do not read
    back: it cannot be continued.

    Raises
    ------
    ConfigError
        It is a run of another config.
    """
    try:
        f = h5py.File(partial, "r")
    except OSError as err:
        return None, f"HDF5 cannot open it ({err})"
    try:
        text = f.attrs[schema.ATTR_CONFIG]
        same = GenerationConfig.from_json(text) == cfg
        when = str(f.attrs[schema.ATTR_CREATED])
    except Exception as err:  # noqa: BLE001 -- whatever a damaged file raises
        f.close()
        return None, f"its root attributes do not read back ({type(err).__name__}: {err})"
    if not same:
        f.close()
        raise ConfigError(f"{partial} was started with another config ({text}); rerun with the "
                          "same options or pass --overwrite")
    return f, when


def intact(f: h5py.File, cfg: GenerationConfig, digests: dict[int, str], start: int):
    """Yield each sample of an open file that reads back to its recorded digest."""
    try:
        counts_ds = f[schema.counts_path(noise_tag(cfg.counts, cfg.background))]
    except Exception:  # noqa: BLE001 -- a damaged file: nothing reads back
        return
    for i in sorted(digests):
        try:
            s = stored(f, counts_ds, i, start)
        except Exception:  # noqa: BLE001 -- damaged data or metadata: the sample is redone
            continue
        if digest(s) == digests[i]:
            yield s


def check_interrupted(partial, cfg: GenerationConfig, start: int = 0,
                      stop: int | None = None) -> dict:
    """What an interrupted run's ``.partial`` holds that a resumed run keeps (reads only).

    Returns
    -------
    dict
        ``readable`` (HDF5 opens it and its attributes read back), ``reason`` (why not),
        ``recorded`` (samples the journal records), ``flagged`` (samples the file's
        ``written`` flag marks; None if unreadable) and ``intact`` (the global indices of the
        recorded samples that read back to their digest).
    """
    partial, stop = Path(partial), cfg.n if stop is None else stop
    digests = recorded(partial, cfg, start, stop)
    f, when = open_interrupted(partial, cfg)
    report = {"readable": f is not None, "reason": "" if f else when,
              "recorded": len(digests), "flagged": None, "intact": []}
    if f is None:
        return report
    with f:
        try:
            report["flagged"] = int((f[schema.WRITTEN][:] == 1).sum())
        except Exception:  # noqa: BLE001
            pass
        report["intact"] = [s.index for s in intact(f, cfg, digests, start)]
    return report


def _rescue(partial: Path, cfg: GenerationConfig, start: int, stop: int,
            attrs: dict) -> set[int] | None:
    """Replace an interrupted run's file by a fresh one holding its samples that check out.

    Returns their global indices, or None when the file cannot be read (start over). The
    interrupted file is only read until the fresh one, complete and durable, replaces it.
    """
    digests = recorded(partial, cfg, start, stop)
    f, when = open_interrupted(partial, cfg)
    if f is None:
        log.warning("%s cannot be continued: %s; starting it over", partial, when)
        return None
    fresh = partial.with_name(partial.name + RESCUE_SUFFIX)
    kept = []
    with f:
        create(fresh, cfg, stop - start, {**attrs, schema.ATTR_CREATED: when})
        with h5py.File(fresh, "r+") as g:
            g[schema.SPLIT][:] = splits(cfg.n, cfg.seed)[start:stop]
            counts_ds = g[schema.counts_path(noise_tag(cfg.counts, cfg.background))]
            for s in intact(f, cfg, digests, start):
                write(g, counts_ds, s, first=start)
                kept.append(s.index)
            writer.sync(g)
    files.replace(fresh, partial)
    journal = files.journal_path(partial)
    with files.atomic_output(journal) as tmp:
        files.start_journal(tmp, _journal_header(cfg, start, stop))
        for i in kept:
            files.append_record(tmp, {"sample": i, "sha256": digests[i]})
    lost = len(digests) - len(kept)
    (log.warning if lost else log.info)(
        "resuming %s: %d of %d samples kept%s", partial, len(kept), stop - start,
        f" ({lost} recorded samples did not read back and are redone)" if lost else "")
    return set(kept)


def _encoded(cfg: GenerationConfig, index: int, *mesh_dir):
    """Sample ``index`` computed and compressed (in a worker: the writer only writes bytes)."""
    return encode(make_sample(cfg, index, *mesh_dir))


def build(partial: Path, cfg: GenerationConfig, start: int, stop: int, attrs: dict, *,
          workers: int = 1, resume: bool = False, progress: bool = True,
          desc: str = "generate", mesh_dir=None, journal: bool = True) -> None:
    """Write samples ``start`` to ``stop - 1`` of ``cfg`` into ``partial`` and mark it complete.

    The file is created anew (root attributes ``attrs``), or with ``resume`` continued from
    the samples of an interrupted run that check out (see the module's notes); either way it
    holds the run's splits for its range and its first noise level. With ``journal`` each
    sample is made durable and recorded in the journal (what ``resume`` needs); a file that is
    never resumed (a shard) does without. Moving it to its final name is the caller's job
    (:func:`finish`). ``mesh_dir``: see :func:`generate`.
    """
    kept = _rescue(partial, cfg, start, stop, attrs) if resume and partial.exists() else None
    if kept is None:
        kept = set()
        create(partial, cfg, stop - start, attrs)
        with h5py.File(partial, "r+") as f:
            f[schema.SPLIT][:] = splits(cfg.n, cfg.seed)[start:stop]
        if journal:
            files.start_journal(files.journal_path(partial), _journal_header(cfg, start, stop))
    todo = [i for i in range(start, stop) if i not in kept]

    with Executor(workers) as ex, h5py.File(partial, "r+") as f:
        counts_ds = f[schema.counts_path(noise_tag(cfg.counts, cfg.background))]
        bar = tqdm(total=stop - start, initial=stop - start - len(todo), desc=desc,
                   unit="sample", disable=not progress)
        extra = [[mesh_dir] * len(todo)] if mesh_dir is not None else []
        for s in ex.map(_encoded, [cfg] * len(todo), todo, *extra):
            write_encoded(f, counts_ds, s, first=start)
            if journal:  # the digest is recorded only once the sample is durable
                writer.sync(f)
                files.append_record(files.journal_path(partial),
                                    {"sample": s.index, "sha256": s.digest})
            bar.update()
        bar.close()
        writer.mark_complete(f)


def finish(partial: Path, final: Path) -> None:
    """Move a complete ``partial`` onto ``final`` and drop its journal."""
    files.replace(partial, final)
    files.journal_path(partial).unlink(missing_ok=True)


def _discard(partial: Path) -> None:
    partial.unlink(missing_ok=True)
    files.journal_path(partial).unlink(missing_ok=True)
    partial.with_name(partial.name + RESCUE_SUFFIX).unlink(missing_ok=True)


def generate_file(out: Path, cfg: GenerationConfig, *, workers: int = 1, overwrite: bool = False,
                  resume: bool = False, progress: bool = True, mesh_dir=None) -> Path:
    """:func:`~nanoedx_dataset.generate` into one file (see the module's notes)."""
    partial = files.partial_path(out)
    check_folder(out)
    with output_lock(out):
        if not partial.exists():  # what a run killed after its rename left
            _discard(partial)
        check_output(out, overwrite)
        if partial.exists() and not (resume or overwrite):
            raise OutputExistsError(f"an interrupted run left {partial}; pass --resume to "
                                    "continue it or --overwrite to start over")
        resume = resume and partial.exists()
        if resume:  # another config's run is refused before anything is touched
            f, _ = open_interrupted(partial, cfg)
            if f is not None:
                f.close()
        else:
            _discard(partial)
        if mesh_dir is not None:
            Path(mesh_dir).mkdir(parents=True, exist_ok=True)
        try:
            build(partial, cfg, 0, cfg.n, root_attrs(cfg, created()), workers=workers,
                  resume=resume, progress=progress, desc=f"generate {out.name}",
                  mesh_dir=mesh_dir)
        except NanoEDXError:
            # a fresh run whose config cannot give this database (e.g. too many counts for a
            # pixel): nothing to resume, so nothing is left behind; a resumed run keeps its file
            if not resume:
                _discard(partial)
            raise
        finish(partial, out)
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
    with output_lock(out):
        check_output(out, overwrite)
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


def plan_level(path: Path, counts: float, background: float, seed: int | None,
           overwrite: bool) -> dict:
    """What adding a noise level to ``path`` takes; raises if it has the level already."""
    tag = noise_tag(counts, background)
    with reader.open_database(path) as f:
        cfg = reader.config(f)
        level = {"tag": tag, "counts": counts, "background": background,
                 "n": f[schema.PROJECTION].shape[0], "first": reader.first_sample(f),
                 "exists": tag in reader.noise_levels(f), "model": NoiseModel.from_config(cfg)}
    if level["exists"] and not overwrite:
        raise OutputExistsError(f"{path} already has noise level {tag}; pass --overwrite")
    level["seed"] = noise_seed(cfg["seed"], counts, background) if seed is None else int(seed)
    return level


def add_level(path: Path, level: dict, progress: bool = False) -> str:
    """Add a noise level (planned by :func:`plan_level`) to the file ``path``, in place.

    Only ever called on a copy: a kill leaves that copy half-written, never the database.
    """
    tag, counts, background = level["tag"], level["counts"], level["background"]
    tmp = schema.PARTIAL_PREFIX + tag
    with h5py.File(path, "r") as f:
        stale = tmp in f.get(schema.NOISY, {})
    if stale:
        with h5py.File(path, "r+") as f:
            del f[schema.noisy_path(tmp)]
    writer.create_noise_group(path, tmp, {"counts": counts, "background": background,
                                          "seed": level["seed"]})
    with h5py.File(path, "r+") as f:
        ds = f[schema.noisy_path(tmp)][schema.NOISY_FIELD.name]
        for i in tqdm(range(level["n"]), desc=f"renoise {tag}", unit="sample",
                      disable=not progress):
            ds[i] = level["model"].sample_elements(f[schema.PROJECTION][i], counts, background,
                                                   noise_rng(level["seed"], level["first"] + i))
        if level["exists"]:
            del f[schema.noisy_path(tag)]
        f.move(schema.noisy_path(tmp), schema.noisy_path(tag))
    return tag


def renoise_copy(path: Path, tmp: Path, level: dict, progress: bool = False) -> None:
    """Copy ``path`` to ``tmp`` and add the noise level to the copy (``tmp`` is removed if
    that fails); moving it onto ``path`` is the caller's job."""
    try:
        shutil.copyfile(path, tmp)
        add_level(tmp, level, progress)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def renoise_file(path, counts: float, background: float, *, seed: int | None = None,
                 overwrite: bool = False, progress: bool = True) -> str:
    """:func:`~nanoedx_dataset.renoise` of one file (a whole database or one shard).

    The level is added to a copy, ``<name>.renoise.partial``, which is made durable and moved
    onto the file: a kill leaves the file as it was or with the level complete.
    """
    path = Path(path)
    counts, background = check_dose(counts, background)
    reader.open_database(path).close()  # a missing or foreign file is refused first
    with output_lock(path):
        level = plan_level(path, counts, background, seed, overwrite)
        tmp = files.partial_path(path.with_name(path.name + RENOISE_SUFFIX))
        renoise_copy(path, tmp, level, progress)
        files.replace(tmp, path)
    return level["tag"]
