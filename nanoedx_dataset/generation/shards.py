"""Sharded databases: one file per shard of samples, computed on a local pool or a dask cluster.

A sharded database is a folder holding ``shard-00000.h5``, ``shard-00001.h5``, ... and
``index.json`` (:mod:`nanoedx_dataset.store.index`). Each shard is a complete nanoedx database of
the run's global samples ``start`` to ``stop - 1``: the run's config, catalogue, splits and seeds,
with the root attribute ``first_sample = start``. Sample ``i``'s arrays depend only on
``(seed, i)``, so any shard size and any number of workers give the same arrays as one file.
:func:`nanoedx_dataset.load_dataset` and :func:`nanoedx_dataset.publish` read the folder like
any folder of shards (files in name order); ``index.json`` lists the config, the shard size, and
each shard's file, range, size and SHA-256 (null until the shard is finished).

One task computes and writes one shard, straight into the folder, on whichever machine runs it
(the workers of a cluster need a file system shared with this machine). A shard is written as
``shard-K.h5.partial`` and renamed when complete, and the index is rewritten (atomically) after
each finished shard, so a killed worker leaves nothing that looks finished. Rerunning the same
call keeps every shard whose file exists and checks out, and redoes only the others. Tasks run
in this process (``workers=1``), in a local process pool (``workers > 1``) or on a
``dask.distributed`` cluster (``client``): one :class:`~.executor.Executor`.

With ``overwrite`` the new run is built in a folder beside the old one, ``<folder>.partial``
(rerunning the same command continues it), and the two are swapped only when it is complete,
so a kill never loses the old database; files of the user's in the old folder are copied
over. One run writes a folder at a time (its lock is ``<folder>.lock``).
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict
from pathlib import Path

from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from ..errors import (ConfigError, DatasetNotFoundError, GenerationError, OutputExistsError,
                      SchemaError)
from ..simulate.noise import check_dose, noise_tag
from ..store import files, reader, schema
from ..store.index import (INDEX, INDEX_FORMAT, SHARD_NAME, Shard, check_complete, plan,
                           read_index, record, write_index)
from ..store.lock import output_lock
from .config import GenerationConfig
from .executor import Executor, cluster
from .single import build, created, finish, plan_level, renoise_copy, root_attrs

log = logging.getLogger(__name__)


def _finished(path: Path, shard: Shard, cfg: GenerationConfig) -> bool:
    """Whether a shard's final file is a complete database of this run and range."""
    try:
        with reader.open_database(path) as f:
            return (GenerationConfig.from_json(f.attrs[schema.ATTR_CONFIG]) == cfg
                    and reader.first_sample(f) == shard.start
                    and len(f[schema.WRITTEN]) == shard.samples
                    and bool((f[schema.WRITTEN][:] == 1).all()))
    except (OSError, ValueError, KeyError) as err:
        log.warning("%s does not check out (%s); it will be regenerated", path, err)
        return False


def _run(fn, tasks: list[tuple], shard_of, index: dict, directory: Path, client, workers: int,
         bar: tqdm, what: str) -> None:
    """Run shard tasks, record each finished shard in the index; raise if any failed."""
    records = {s["file"]: s for s in index["shards"]}
    failed = []
    with Executor(workers, client) as ex:
        results = list(_recorded(ex.as_completed(fn, tasks), shard_of, records, index,
                                 directory, bar, what))
    failed = [r for r in results if r is not None]
    bar.close()
    if failed:
        names = ", ".join(f"{name} ({type(err).__name__}: {err})" for name, err in failed[:3])
        raise GenerationError(
            f"{what} of {len(failed)} of {len(tasks)} shards failed: {names}"
            f"{', ...' if len(failed) > 3 else ''}. The finished shards are kept in "
            f"{directory}; rerun the same command to redo only the missing ones") \
            from failed[0][1]


def _recorded(results, shard_of, records, index, directory, bar, what):
    """Record each finished shard in the index as it comes; yield (file, error) or None."""
    for args, result in results:
        shard = shard_of(args)
        if isinstance(result, BaseException):
            log.error("%s of %s failed: %r", what, shard.file, result)
            yield shard.file, result
            continue
        records[shard.file].update(result)
        write_index(directory, index)
        bar.update(shard.samples)
        yield None


def write_shard(directory: str, cfg: GenerationConfig, shard: Shard, when: str) -> dict:
    """Compute and write one shard (the task a worker runs); returns its index record.

    A shard already finished (a task run twice) is only hashed, not rewritten.
    """
    final = Path(directory) / shard.file
    if final.is_file() and _finished(final, shard, cfg):
        return record(final, shard)
    partial = files.partial_path(final)
    with threadpool_limits(1):
        build(partial, cfg, shard.start, shard.stop,
              root_attrs(cfg, when, first_sample=shard.start), progress=False, journal=False)
    finish(partial, final)
    return record(final, shard)


def _ours(name: str) -> bool:
    """Whether a folder entry is a file of a sharded run (a shard, its temporary, the index)."""
    return (SHARD_NAME.fullmatch(name) is not None or name.startswith(INDEX)
            or (name.startswith("shard-") and files.PARTIAL_SUFFIX in name))


def _carry(old: Path, new: Path) -> None:
    """Copy the user's own files (anything not of the run) from ``old`` into ``new``."""
    for entry in sorted(old.iterdir()):
        if _ours(entry.name):
            continue
        target = new / entry.name
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(entry, target, symlinks=True)
        else:
            shutil.copy2(entry, target, follow_symlinks=False)


def generate_sharded(directory, cfg: GenerationConfig, shard_size: int | None, *, client=None,
                     workers: int = 1, overwrite: bool = False, progress: bool = True) -> Path:
    """:func:`nanoedx_dataset.generate` into a folder of shards (see the module's notes)."""
    if shard_size is None:
        raise ConfigError("a dask cluster maps shards: give shard_size (--shard-size N)")
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise ConfigError(f"shard size must be a whole number of samples >= 1, got "
                          f"{shard_size!r}")
    directory = Path(directory)
    if not directory.parent.is_dir():
        raise ConfigError(f"the output folder's parent {directory.parent} does not exist; "
                          "create it first")
    if directory.exists() and not directory.is_dir():
        raise OutputExistsError(f"{directory} is a file; with --shard-size, --out names a folder")
    with output_lock(directory), cluster(client) as client:  # connect before writing anything
        if files.restore_folder(directory):
            log.warning("%s: put back the previous run, whose replacement was cut short",
                        directory)
        return _generate(directory, cfg, shard_size, client, workers, overwrite, progress)


def _same_run(index: dict | None, cfg: GenerationConfig, shard_size: int) -> bool:
    return (index is not None and index["shard_size"] == shard_size
            and GenerationConfig.from_json(json.dumps(index["config"])) == cfg)


def _generate(directory: Path, cfg: GenerationConfig, shard_size: int, client, workers: int,
              overwrite: bool, progress: bool) -> Path:
    index = read_index(directory) if directory.is_dir() and not overwrite else None
    foreign = sorted(p.name for p in directory.glob("*.h5") if not SHARD_NAME.fullmatch(p.name))
    if foreign and (index is not None or overwrite):
        raise OutputExistsError(f"{directory} holds .h5 files that are not shards "
                                f"({', '.join(foreign[:3])}); load_dataset would join them: "
                                "choose a new folder")
    if overwrite and directory.is_dir() and any(directory.iterdir()):
        return _replace(directory, cfg, shard_size, client, workers, progress)
    if index is None and directory.is_dir() and any(directory.glob("*.h5*")):
        raise OutputExistsError(f"{directory} holds .h5 files but no {INDEX}: it is not a "
                                "sharded nanoedx run; choose a new folder or pass --overwrite")
    if index is not None and not _same_run(index, cfg, shard_size):
        raise OutputExistsError(
            f"{directory} holds a sharded run of another config or shard size "
            f"({json.dumps(index['config'])}, shard size {index['shard_size']}); rerun with the "
            "same options to finish it, or pass --overwrite to start over")
    _build(directory, cfg, shard_size, index, client, workers, progress)
    return directory


def _replace(directory: Path, cfg: GenerationConfig, shard_size: int, client, workers: int,
             progress: bool) -> Path:
    """Build the run in ``<directory>.partial`` and swap it in once complete."""
    new = files.partial_path(directory)
    try:
        index = read_index(new) if new.is_dir() else None
    except SchemaError:
        index = None
    if not _same_run(index, cfg, shard_size):  # not an earlier try of this command: start over
        shutil.rmtree(new, ignore_errors=True)
        index = None
    new.mkdir(exist_ok=True)
    _build(new, cfg, shard_size, index, client, workers, progress)
    _carry(directory, new)
    old = files.swap_folders(new, directory)
    (old / INDEX).unlink(missing_ok=True)  # what is left there is no run to continue
    shutil.rmtree(old)
    return directory


def _build(directory: Path, cfg: GenerationConfig, shard_size: int, index: dict | None,
           client, workers: int, progress: bool) -> None:
    """Generate every shard of the run in ``directory`` that is not finished already."""
    planned = plan(cfg.n, shard_size)
    when = index["created"] if index else created()
    old = {s["file"]: s for s in index["shards"]} if index else {}
    records = []
    for shard in planned:
        rec = {**asdict(shard), "bytes": None, "sha256": None}
        path = directory / shard.file
        if path.is_file() and _finished(path, shard, cfg):
            prev = old.get(shard.file, {})
            same = prev.get("sha256") and prev.get("bytes") == path.stat().st_size
            rec = prev if same else record(path, shard)
        records.append(rec)
    index = {"format": INDEX_FORMAT, "config": json.loads(cfg.to_json()),
             "shard_size": shard_size, "created": when, "shards": records}
    todo = [Shard(r["file"], r["start"], r["stop"]) for r in records if not r["sha256"]]
    directory.mkdir(exist_ok=True)
    write_index(directory, index)
    log.info("%s: %d of %d shards to generate", directory, len(todo), len(records))
    bar = tqdm(total=cfg.n, initial=cfg.n - sum(s.samples for s in todo), unit="sample",
               desc=f"generate {directory.name}", disable=not progress)
    _run(write_shard, [(str(directory), cfg, s, when) for s in todo], lambda a: a[2], index,
         directory, client, workers, bar, "generation")


def renoise_shard(directory: str, shard: Shard, counts: float, background: float,
                  seed: int | None, overwrite: bool) -> dict:
    """Add a noise level to a copy of one shard, then move the copy over it (a worker's task)."""
    final = Path(directory) / shard.file
    partial = files.partial_path(final)
    renoise_copy(final, partial, plan_level(final, counts, background, seed, overwrite))
    files.replace(partial, final)
    return record(final, shard)


def renoise_sharded(directory, counts: float, background: float, *, seed: int | None = None,
                    overwrite: bool = False, client=None, workers: int = 1,
                    progress: bool = True) -> str:
    """:func:`nanoedx_dataset.renoise` of a sharded folder, shard by shard.

    Shards that have the level already are skipped (unless ``overwrite``), so an interrupted
    call is finished by running it again.
    """
    with output_lock(directory), cluster(client) as client:  # connect before writing anything
        return _renoise(Path(directory), counts, background, seed, overwrite, client, workers,
                        progress)


def _renoise(directory: Path, counts: float, background: float, seed: int | None,
             overwrite: bool, client, workers: int, progress: bool) -> str:
    index = read_index(directory)
    if index is None:
        raise DatasetNotFoundError(f"{directory} has no {INDEX}: not a sharded nanoedx "
                                   "database; renoise its files one by one")
    check_complete(directory)
    counts, background = check_dose(counts, background)
    tag = noise_tag(counts, background)
    shards = [Shard(s["file"], s["start"], s["stop"]) for s in index["shards"]]
    have = set()
    for shard in shards:
        with reader.open_database(directory / shard.file) as f:
            if tag in reader.noise_levels(f):
                have.add(shard.file)
    if len(have) == len(shards) and not overwrite:
        raise OutputExistsError(f"{directory} already has noise level {tag}; pass --overwrite")
    todo = shards if overwrite else [s for s in shards if s.file not in have]
    bar = tqdm(total=sum(s.samples for s in shards),
               initial=sum(s.samples for s in shards) - sum(s.samples for s in todo),
               unit="sample", desc=f"renoise {tag}", disable=not progress)
    tasks = [(str(directory), s, counts, background, seed, overwrite) for s in todo]
    _run(renoise_shard, tasks, lambda a: a[1], index, directory, client, workers, bar, "renoise")
    return tag
