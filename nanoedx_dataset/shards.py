"""Sharded databases: one file per shard of samples, computed on a local pool or a dask cluster.

A sharded database is a folder holding ``shard-00000.h5``, ``shard-00001.h5``, ... and
``index.json``. Each shard is a complete nanoedx database (:mod:`nanoedx_dataset.schema`) of the
run's global samples ``start`` to ``stop - 1``: the run's config, catalogue, splits and seeds,
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
``dask.distributed`` cluster (``client``): one code path, three ways to map it.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from contextlib import contextmanager
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from . import generator as gen, schema
from .config import GenerationConfig
from .errors import (ConfigError, DatasetNotFoundError, GenerationError, MissingExtraError,
                     OutputExistsError, SchedulerError, SchemaError)
from .files import atomic_output, sha256
from .noise import check_dose, noise_tag

log = logging.getLogger(__name__)

INDEX = "index.json"
INDEX_FORMAT = "nanoedx-shards"
CONNECT_TIMEOUT = 10.0  # seconds to reach a dask scheduler
RETRIES = 1  # dask reruns a task that raised once (a dead worker is handled by the scheduler)
DISTRIBUTED_FIX = 'pip install "nanoedx[distributed]"'
SHARD_NAME = re.compile(r"shard-\d+\.h5")


@dataclass(frozen=True)
class Shard:
    """One shard: its file name in the folder and its global sample range [start, stop)."""

    file: str
    start: int
    stop: int

    @property
    def samples(self) -> int:
        return self.stop - self.start


def plan(n: int, shard_size: int) -> list[Shard]:
    """The shards of ``n`` samples, ``shard_size`` each (the last one may be shorter)."""
    count = -(-n // shard_size)
    width = max(5, len(str(count - 1)))
    return [Shard(f"shard-{k:0{width}d}.h5", k * shard_size, min(n, (k + 1) * shard_size))
            for k in range(count)]


# ---------------------------------------------------------------- the index


def read_index(directory) -> dict | None:
    """The index of a sharded folder, or None when it has none."""
    path = Path(directory) / INDEX
    if not path.is_file():
        return None
    try:
        index = json.loads(path.read_text())
    except ValueError as err:
        raise SchemaError(f"{path} is not valid JSON ({err}); rerun the generate command with "
                          "--overwrite") from err
    if index.get("format") != INDEX_FORMAT:
        raise SchemaError(f"{path} is not a nanoedx shard index (format "
                          f"{index.get('format')!r}, expected {INDEX_FORMAT!r})")
    return index


def _write_index(directory: Path, index: dict) -> None:
    done = all(s["sha256"] for s in index["shards"])
    with atomic_output(directory / INDEX) as tmp:
        tmp.write_text(json.dumps({**index, "complete": done}, indent=1) + "\n")


def missing(directory) -> list[str]:
    """Shards an index lists as unfinished or whose file is gone ([] without an index)."""
    directory = Path(directory)
    index = read_index(directory)
    if index is None:
        return []
    return [s["file"] for s in index["shards"]
            if not s["sha256"] or not (directory / s["file"]).is_file()]


def check_complete(directory) -> None:
    """Refuse a sharded folder whose run has not finished (named in the error)."""
    gone = missing(directory)
    if gone:
        total = len(read_index(directory)["shards"])
        raise SchemaError(f"{directory} is an unfinished sharded database: {len(gone)} of "
                          f"{total} shards missing ({', '.join(gone[:3])}"
                          f"{', ...' if len(gone) > 3 else ''}); rerun the generate command "
                          "to finish it")


def _record(path: Path, shard: Shard) -> dict:
    return {**asdict(shard), "bytes": path.stat().st_size, "sha256": sha256(path)}


def _finished(path: Path, shard: Shard, cfg: GenerationConfig) -> bool:
    """Whether a shard's final file is a complete database of this run and range."""
    try:
        with schema.open_database(path) as f:
            return (GenerationConfig.from_json(f.attrs["config"]) == cfg
                    and schema.first_sample(f) == shard.start
                    and len(f["written"]) == shard.samples
                    and bool((f["written"][:] == 1).all()))
    except (OSError, ValueError, KeyError) as err:
        log.warning("%s does not check out (%s); it will be regenerated", path, err)
        return False


# ---------------------------------------------------------------- mapping tasks


def connect(address: str, timeout: float | None = None):
    """A ``dask.distributed.Client`` connected to the scheduler at ``address``.

    Raises
    ------
    MissingExtraError
        ``dask.distributed`` is not installed.
    SchedulerError
        No scheduler answers at ``address`` within ``timeout`` seconds.
    """
    try:
        from distributed import Client
    except ImportError as err:
        raise MissingExtraError(f"a dask cluster needs dask.distributed: {DISTRIBUTED_FIX}") \
            from err
    try:
        return Client(address, timeout=timeout or CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ValueError) as err:
        raise SchedulerError(
            f"cannot reach a dask scheduler at {address!r} ({err}); start one with "
            "`dask scheduler` and workers with `dask worker ADDRESS`, or drop --scheduler to "
            "use local --workers") from err


@contextmanager
def cluster(client):
    """A client as given, or one connected to the address given (closed afterwards)."""
    if not isinstance(client, str):
        yield client
        return
    connected = connect(client)
    try:
        yield connected
    finally:
        connected.close()


def run_tasks(fn, tasks: list[tuple], client=None, workers: int = 1):
    """Yield ``(args, result)`` of ``fn(*args)`` for each task as it finishes.

    On a dask ``client`` (one task each, ``retries=RETRIES``), in a process pool of
    ``workers``, or here one after another. A task that fails yields its exception as the
    result, so the others still finish.
    """
    if not tasks:
        return
    if client is not None:
        from distributed import as_completed as dask_completed

        futures = client.map(fn, *zip(*tasks), pure=False, retries=RETRIES)
        by_key = {fut.key: args for fut, args in zip(futures, tasks)}
        pending = dask_completed(futures)
        del futures  # hold each result only until it is read: a worker lost later must not
        for fut in pending:  # make the scheduler recompute tasks that are done
            try:
                result = fut.result()
            except Exception as err:  # the task's own error, or KilledWorker
                result = err
            fut.release()
            yield by_key[fut.key], result
        return
    if workers <= 1:
        for args in tasks:
            try:
                yield args, fn(*args)
            except Exception as err:
                yield args, err
        return
    with ProcessPoolExecutor(max_workers=workers, initializer=gen._one_blas_thread) as pool:
        futures = {pool.submit(fn, *args): args for args in tasks}
        for fut in as_completed(futures):
            try:
                yield futures[fut], fut.result()
            except Exception as err:  # including a pool broken by a dead process
                yield futures[fut], err


def _run(fn, tasks: list[tuple], shard_of, index: dict, directory: Path, client, workers: int,
         bar: tqdm, what: str) -> None:
    """Run shard tasks, record each finished shard in the index; raise if any failed."""
    records = {s["file"]: s for s in index["shards"]}
    failed = []
    for args, result in run_tasks(fn, tasks, client, workers):
        shard = shard_of(args)
        if isinstance(result, BaseException):
            log.error("%s of %s failed: %r", what, shard.file, result)
            failed.append((shard.file, result))
            continue
        records[shard.file].update(result)
        _write_index(directory, index)
        bar.update(shard.samples)
    bar.close()
    if failed:
        names = ", ".join(f"{name} ({type(err).__name__}: {err})" for name, err in failed[:3])
        raise GenerationError(
            f"{what} of {len(failed)} of {len(tasks)} shards failed: {names}"
            f"{', ...' if len(failed) > 3 else ''}. The finished shards are kept in "
            f"{directory}; rerun the same command to redo only the missing ones") \
            from failed[0][1]


# ---------------------------------------------------------------- generate


def write_shard(directory: str, cfg: GenerationConfig, shard: Shard, created: str) -> dict:
    """Compute and write one shard (the task a worker runs); returns its index record.

    A shard already finished (a task run twice) is only hashed, not rewritten.
    """
    final = Path(directory) / shard.file
    if final.is_file() and _finished(final, shard, cfg):
        return _record(final, shard)
    partial = gen.partial_path(final)
    with threadpool_limits(1):
        gen.build(partial, cfg, shard.start, shard.stop,
                  gen.root_attrs(cfg, created, first_sample=shard.start), progress=False)
    schema.replace_atomically(partial, final)
    return _record(final, shard)


def _clear(directory: Path) -> None:
    for path in [*directory.glob("shard-*.h5"), *directory.glob("shard-*.h5.partial"),
                 directory / INDEX]:
        path.unlink(missing_ok=True)


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
    with cluster(client) as client:  # connect before writing anything
        return _generate(directory, cfg, shard_size, client, workers, overwrite, progress)


def _generate(directory: Path, cfg: GenerationConfig, shard_size: int, client, workers: int,
              overwrite: bool, progress: bool) -> Path:
    index = read_index(directory) if directory.is_dir() else None
    foreign = sorted(p.name for p in directory.glob("*.h5") if not SHARD_NAME.fullmatch(p.name))
    if foreign and (index is not None or overwrite):
        raise OutputExistsError(f"{directory} holds .h5 files that are not shards "
                                f"({', '.join(foreign[:3])}); load_dataset would join them: "
                                "choose a new folder")
    if overwrite and directory.is_dir():
        _clear(directory)
        index = None
    elif index is None and directory.is_dir() and any(directory.glob("*.h5*")):
        raise OutputExistsError(f"{directory} holds .h5 files but no {INDEX}: it is not a "
                                "sharded nanoedx run; choose a new folder or pass --overwrite")
    elif index is not None and (GenerationConfig.from_json(json.dumps(index["config"])) != cfg
                                or index["shard_size"] != shard_size):
        raise OutputExistsError(
            f"{directory} holds a sharded run of another config or shard size "
            f"({json.dumps(index['config'])}, shard size {index['shard_size']}); rerun with the "
            "same options to finish it, or pass --overwrite to start over")

    planned = plan(cfg.n, shard_size)
    created = index["created"] if index else gen._created()
    old = {s["file"]: s for s in index["shards"]} if index else {}
    records = []
    for shard in planned:
        rec = {**asdict(shard), "bytes": None, "sha256": None}
        path = directory / shard.file
        if path.is_file() and _finished(path, shard, cfg):
            prev = old.get(shard.file, {})
            same = prev.get("sha256") and prev.get("bytes") == path.stat().st_size
            rec = prev if same else _record(path, shard)
        records.append(rec)
    index = {"format": INDEX_FORMAT, "config": json.loads(cfg.to_json()),
             "shard_size": shard_size, "created": created, "shards": records}
    todo = [Shard(r["file"], r["start"], r["stop"]) for r in records if not r["sha256"]]
    directory.mkdir(exist_ok=True)
    _write_index(directory, index)
    log.info("%s: %d of %d shards to generate", directory, len(todo), len(records))
    bar = tqdm(total=cfg.n, initial=cfg.n - sum(s.samples for s in todo), unit="sample",
               desc=f"generate {directory.name}", disable=not progress)
    _run(write_shard, [(str(directory), cfg, s, created) for s in todo], lambda a: a[2], index,
         directory, client, workers, bar, "generation")
    return directory


# ---------------------------------------------------------------- renoise


def renoise_shard(directory: str, shard: Shard, counts: float, background: float,
                  seed: int | None, overwrite: bool) -> dict:
    """Add a noise level to a copy of one shard, then move the copy over it (a worker's task)."""
    final = Path(directory) / shard.file
    partial = gen.partial_path(final)
    shutil.copyfile(final, partial)
    try:
        gen.renoise_file(partial, counts, background, seed=seed, overwrite=overwrite,
                         progress=False)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    schema.replace_atomically(partial, final)
    return _record(final, shard)


def renoise_sharded(directory, counts: float, background: float, *, seed: int | None = None,
                    overwrite: bool = False, client=None, workers: int = 1,
                    progress: bool = True) -> str:
    """:func:`nanoedx_dataset.renoise` of a sharded folder, shard by shard.

    Shards that have the level already are skipped (unless ``overwrite``), so an interrupted
    call is finished by running it again.
    """
    with cluster(client) as client:  # connect before writing anything
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
        with schema.open_database(directory / shard.file) as f:
            if tag in schema.noise_levels(f):
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
