"""The standardized 2D and 3D benchmark of the registered denoisers (the paper's Fig. 2b and 3b).

2D: one map per structure of a split (a present element and an angle fixed by the seed), each
denoised and scored by nMAE against its expected signal. 3D: every map of each structure's noisy
tilt series denoised, then 15 EM iterations, scored by nMAE against the reference volume scaled
to the same total (DESIGN.md); a structure's score is the mean over its elements. A
``volume``-scope method (:data:`~nanoedx_models.denoisers.registry.SCOPES`) reconstructs each
element's raw tilt series itself, in place of the denoise-then-EM path, and has no 2D score; a
fitted one gets its parameter from validation structures' 3D nMAE. Beside each
nMAE, the signed bias of the total (:func:`.metrics.bias`, %): of each map against its expected
signal (2D), of each reconstruction against its reference volume (3D). Fitted methods
get their one parameter from validation maps first; oracles from each map's ground truth.

A method that raises, or returns the wrong shape or NaN, is reported as failed in its row; the
rest of the leaderboard completes. Numbers depend only on the inputs (data, split, dose, seed,
methods, quick), never on the number of worker processes.

Tasks are spread over processes by the package's one :class:`~nanoedx_dataset.generation.executor.
Executor`; the table, JSON and figures of a leaderboard are written by :mod:`.leaderboard`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from nanoedx_dataset import __version__
from nanoedx_dataset.generation.executor import Executor
from nanoedx_dataset.errors import ConfigError

from ..data.datasets import EDXMaps, TiltSeries
from ..denoisers import DENOISERS, Denoiser, denoiser
from ..denoisers.learned import reads_haadf
from ..denoisers.registry import DenoiserFailed, apply, apply_volume, fit_parameter
from ..reconstruction.em import reconstruct
from .figures import orthoslices
from .leaderboard import DIMS, leaderboard, write
from .metrics import bias, nmae

__all__ = ["DIMS", "DenoiserFailed", "benchmark"]

QUICK = {"maps": 24, "structures": 4, "fit_maps": 8}  # --quick: evenly spaced subsets
FIT_MAPS = 30  # validation maps that set a fitted method's parameter
FIT_STRUCTURES = {False: 6, True: 2}  # validation structures of a fitted volume method (quick)


@dataclass
class _Task:
    """What a worker needs to score one map (2D) or one structure (3D)."""

    dim: str
    index: int  # map index (2D) or structure index (3D)
    methods: tuple[str, ...]  # names: worker processes look them up (registered by fork)
    params: dict
    iterations: int
    keep: bool  # return the outputs (2D maps, 3D orthoslices), for the example figures


_DATA: dict = {}


def _init_worker(maps, series, structures, blas_threads: int | None) -> None:
    _DATA.update(maps=maps, series=series, structures=structures, threads=blas_threads)
    if blas_threads is not None:
        import torch

        threadpool_limits(blas_threads)
        torch.set_num_threads(blas_threads)


def _method(name: str) -> Denoiser:
    """The denoiser called ``name``, one instance per process (a U-net loads once)."""
    cache = _DATA.setdefault("methods", {})
    if name not in cache:
        cache[name] = denoiser(name)
    return cache[name]


def _score(task: _Task) -> dict:
    """nMAE, bias and seconds of every method on one map or structure; failures as messages."""
    scores, biases, seconds, errors, kept = {}, {}, {}, {}, {}
    if task.dim == "2d":
        x, truth, _, b = _DATA["maps"].raw(task.index)
        x = x.astype(np.float64)
        context = None  # the particle's series around the map, read once for series methods
        for d in map(_method, task.methods):
            if d.scope == "volume":  # reconstructs tilt series: no 2D score
                continue
            try:
                if d.scope == "series" and context is None:
                    context = _DATA["maps"].series(task.index)
                out, seconds[d.name] = apply(d, x, b, task.params.get(d.name), truth,
                                             series=context)
            except Exception as err:  # noqa: BLE001 -- a failing method fails its row only
                errors[d.name] = f"{type(err).__name__}: {err}"
                continue
            scores[d.name], biases[d.name] = nmae(out, truth), bias(out, truth)
            if task.keep:
                kept[d.name] = out.astype(np.float32)
        if task.keep:
            kept |= {"_noisy": x.astype(np.float32), "_truth": truth}
        return {"scores": scores, "bias": biases, "seconds": seconds, "errors": errors,
                "kept": kept}
    items = [_DATA["series"][k] for k in _DATA["structures"][task.index]]
    for d in map(_method, task.methods):
        try:
            per_element, bias_element = [], []
            vols, total = _volumes(d, items, task.params.get(d.name), task.iterations)
            for item, rec in zip(items, vols):
                per_element.append(nmae(rec, item["reference"]))
                bias_element.append(bias(rec, item["reference"]))
                if task.keep and item is items[0]:
                    kept[d.name] = orthoslices(rec)
        except Exception as err:  # noqa: BLE001
            errors[d.name] = f"{type(err).__name__}: {err}"
            continue
        scores[d.name], seconds[d.name] = float(np.mean(per_element)), total
        biases[d.name] = float(np.mean(bias_element))
    if task.keep:
        kept["_truth"] = orthoslices(items[0]["reference"])
    return {"scores": scores, "bias": biases, "seconds": seconds, "errors": errors,
            "kept": kept,
            "maps": sum(len(i["noisy"]) for i in items)}


def _volumes(d: Denoiser, items: list[dict], param, iterations: int) -> tuple[list, float]:
    """The volumes of a structure's elements by ``d`` and the seconds its denoising took: a map
    method denoises each map, a series method all maps of all elements together, then EM; a
    volume method reconstructs each raw series itself (timed whole)."""
    threads = _DATA.get("threads")
    if d.scope == "volume":
        done = [apply_volume(d, item["noisy"].astype(np.float64), item["angles"],
                             item["background"], param, iterations, threads) for item in items]
        return [v for v, _ in done], sum(s for _, s in done)
    if d.scope == "series":
        t = time.perf_counter()
        stack = np.stack([item["noisy"] for item in items]).astype(np.float64)
        maps = d.series(stack, items[0]["background"], items[0]["haadf"], parameter=param)
        if not np.all(np.isfinite(maps)):
            raise DenoiserFailed("returned NaN or infinite values")
        total = time.perf_counter() - t
    else:
        maps, total = [], 0.0
        for item in items:
            outs = []
            for x, truth in zip(item["noisy"].astype(np.float64), item["target"]):
                out, s = apply(d, x, item["background"], param, truth)
                outs.append(out)
                total += s
            maps.append(np.stack(outs))
    return [reconstruct(m, item["angles"], iterations, threads=threads)
            for m, item in zip(maps, items)], total


def _volume_nmae(job) -> float:
    """Mean 3D nMAE over one validation structure's elements (a picklable unit of a volume
    method's fit)."""
    name, items, p, iterations = job
    vols, _ = _volumes(_method(name), items, p, iterations)
    return float(np.mean([nmae(v, item["reference"]) for v, item in zip(vols, items)]))


def _subset(n: int, k: int | None) -> list[int]:
    """``k`` evenly spaced indices of ``range(n)`` (all of them for None)."""
    if k is None or k >= n:
        return list(range(n))
    return sorted(set(np.linspace(0, n - 1, k).round().astype(int).tolist()))


def _fit(methods, data, dose: dict, n_maps: int, n_structures: int, iterations: int, mapper,
         progress: bool) -> tuple[dict, dict, int | None]:
    """Parameters of the fitted methods: map methods from validation maps, volume methods from
    validation structures (mean 3D nMAE, ``iterations`` EM iterations); failures as messages;
    the number of validation structures used (None without a fitted volume method)."""
    params, errors, structures = {}, {}, None
    fitted = [d for d in methods if d.mode == "fitted"]
    if not fitted:
        return params, errors, None
    if any(d.scope == "map" for d in fitted):
        val = EDXMaps(data, "val", **dose)
        pairs = [val.raw(i) for i in _subset(len(val), n_maps)]
        noisy = [p[0].astype(np.float64) for p in pairs]
        truth = [p[1] for p in pairs]
    if any(d.scope == "volume" for d in fitted):
        val_series = TiltSeries(data, "val", **dose)
        groups = _group(val_series)
        structures = [[val_series[k] for k in groups[i]]
                      for i in _subset(len(groups), n_structures)]
    for d in tqdm(fitted, desc="fit on val", disable=not progress):
        try:
            if d.scope == "volume":
                def loss(p: float) -> float:
                    jobs = [(d.name, items, p, iterations) for items in structures]
                    return float(np.mean(list(mapper(_volume_nmae, jobs))))

                params[d.name] = fit_parameter(loss, d.bounds)
            else:
                params[d.name] = d.fit(noisy, truth, pairs[0][3], mapper=mapper)
        except Exception as err:  # noqa: BLE001
            errors[d.name] = f"fit failed: {type(err).__name__}: {err}"
    return params, errors, None if structures is None else len(structures)


def benchmark(data, *, split: str = "test", methods=None, counts: float | None = None,
              background: float | None = None, noise: str | None = None, seed: int = 0,
              dims=DIMS, quick: bool = False, workers: int = 1, iterations: int = 15,
              fit_maps: int | None = None, out=None, figures: bool = False,
              progress: bool = True, version: str = "latest") -> dict:
    """Run the 2D and 3D benchmark of denoisers on a database; return the leaderboard.

    Parameters
    ----------
    data : str or path-like
        Release name (``"standard"``, ``"mini"``), database file or folder of shards.
    split : str
        Split to score (``"test"``); fitted methods always fit on ``"val"``.
    methods : sequence of str, optional
        Registered denoiser names or ``unet:PATH`` (default: all registered but the
        reconstruction-domain ones, ``scope="volume"``, and those that read HAADF images when
        the data hold none).
    counts, background : float, optional
        Draw the noise on the fly at this dose (background default 10 % of the counts), seeded
        by ``seed``; otherwise the stored noise level ``noise`` (default: the file's first).
    seed : int
        Picks each structure's 2D map and seeds on-the-fly noise.
    dims : sequence of {"2d", "3d"}
    quick : bool
        Score evenly spaced subsets (24 maps, 4 structures, 8 validation maps).
    workers : int
        Processes (one BLAS/torch thread each); does not change the numbers.
    iterations : int
        EM iterations of the 3D benchmark (15 in the paper).
    fit_maps : int, optional
        Validation maps for the fitted map methods (default 30, 8 with ``quick``); fitted
        volume methods fit on 6 validation structures (2 with ``quick``).
    out : path-like, optional
        Folder for ``leaderboard.md``, ``leaderboard.json``, ``leaderboard_examples.npz``
        (the example outputs) and, with
        ``figures``, the PNG figures.
    progress : bool
    version : str
        Release version, for a release name.

    Returns
    -------
    dict
        The leaderboard: ``rows`` (one per method: ``method``, ``status``, ``parameter``,
        ``nmae2d_mean``/``_std`` (None for a volume method), ``nmae3d_mean``/``_std``,
        ``bias2d_mean``/``_std``, ``bias3d_mean``/``_std`` (signed %, best at 0), ``seconds_per_map``, per-map ``nmae2d``
        and ``bias2d``, per-structure ``nmae3d`` and ``bias3d``) and the inputs.
    """
    dims = tuple(dims)
    if not dims or any(d not in DIMS for d in dims):
        raise ConfigError(f"dims must be a non-empty subset of {DIMS}, got {dims}")
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    names = list(methods or DENOISERS)  # the registry now, with denoisers added since import
    chosen = tuple(denoiser(n) for n in names)  # unknown names: an error before any work
    if len(set(names)) != len(names):
        raise ConfigError(f"methods are listed twice: {names}")
    dose = {"noise": noise, "counts": counts, "background": background, "seed": seed,
            "version": version}
    maps = EDXMaps(data, split, **dose)
    if methods is None:
        # by default, the methods the data can feed (no HAADF model on data without images)
        # and not the reconstruction-domain ones (minutes per structure: name them)
        images = all(db.has_haadf for db in maps.files)
        chosen = tuple(d for d in chosen if d.scope != "volume" and (images or not reads_haadf(d)))
        names = [d.name for d in chosen]
    series = TiltSeries(data, split, **dose)
    structures = _group(series)
    limits = QUICK if quick else {"maps": None, "structures": None, "fit_maps": FIT_MAPS}
    tasks_2d = _subset(len(maps), limits["maps"]) if "2d" in dims else []
    tasks_3d = _subset(len(structures), limits["structures"]) if "3d" in dims else []
    if not tasks_2d and not tasks_3d:
        raise ConfigError(f"split {split!r} of {data} holds no structures to score")
    executor = Executor(workers, initializer=_init_worker, threads=None,
                        initargs=(maps, series, structures, 1 if workers > 1 else None))
    with executor as ex:
        mapper = ex.map
        to_fit = [d for d in chosen if d.scope == "map" or "3d" in dims]
        params, failed, fit_structures = _fit(to_fit, data, dose, fit_maps or limits["fit_maps"],
                              FIT_STRUCTURES[quick], iterations, mapper, progress)
        run = tuple(d.name for d in chosen if d.name not in failed)
        tasks = ([_Task("2d", i, run, params, iterations, i == tasks_2d[0]) for i in tasks_2d]
                 + [_Task("3d", i, run, params, iterations, i == tasks_3d[0])
                    for i in tasks_3d])
        # the structures (minutes each) first, the maps fill in behind them: the workers finish
        # together; the results go back in task order
        order = sorted(range(len(tasks)), key=lambda k: tasks[k].dim != "3d")
        done = list(tqdm(mapper(_score, [tasks[k] for k in order]), total=len(tasks),
                         desc="benchmark", disable=not progress))
        results = [None] * len(tasks)
        for k, r in zip(order, done):
            results[k] = r
    board = leaderboard(names, params, failed, tasks, results)
    c, b = maps.dose or maps.raw(0)[2:]
    board.update(data={"source": str(data), **maps.describe()}, split=split, seed=seed,
                 quick=quick, dims=list(dims), iterations=iterations,
                 package_version=__version__, counts=float(c), background=float(b),
                 noise=maps.noise if counts is None else "on the fly",
                 n_maps_2d=len(tasks_2d), n_structures_3d=len(tasks_3d),
                 fit_maps=fit_maps or limits["fit_maps"],
                 fit_structures=fit_structures)
    examples = {f"{t.dim}/{k}": v for t, r in zip(tasks, results) if t.keep
                for k, v in r["kept"].items()}
    if out is not None:
        write(board, out, examples, figures=figures)
    return board


def _group(series: TiltSeries) -> list[list[int]]:
    """Indices of the series items of each structure (its elements), in order."""
    groups: dict[tuple[int, int], list[int]] = {}
    for k, (fi, s, _) in enumerate(series.items):
        groups.setdefault((fi, s), []).append(k)
    return list(groups.values())
