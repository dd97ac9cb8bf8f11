"""``auto``: choose a denoiser for a user's own maps by the binomial hold-out, then apply it.

Every candidate is scored on the user's maps with :func:`.holdout.evaluate_methods` (the same
binomial splits for all of them, so the comparison is paired), and the one with the lowest mean
net squared error is applied to the full maps.

How it ranks
------------
Real maps often hold few counts (single events, mostly 0 and 1), where the clipped hold-out
``score`` is 0 for many maps and hides the differences; ``auto`` ranks on the unclipped,
unbiased ``nmse`` (the net squared error of the fitted output against the expected remainder,
over the squared mean count), averaged over ``repeats`` splits per map and then over the maps.
Its noise estimate is the standard error over the maps (over the repeats for a single map), and
a candidate's difference from the best is judged on the paired per-map differences, which
cancel what the maps share. The rule: the best is the lowest mean ``nmse``; every candidate
within one paired standard error of it is *tied*, and of the tied ones the first in the
candidate list is picked. The default list runs from the simplest and most transparent method to
the most elaborate (a Gaussian filter, then the U-nets; BM3D, which costs seconds per map, only
when named), so a tie goes to the simpler one.
A flat prediction (the map's mean everywhere) is scored as a baseline and reported, never
picked: a pick that does not beat it by more than its noise means the maps hold too few counts
to tell methods apart.

Parameters: a ``fitted`` method's parameter is chosen on the hold-out of each split (on half of
the remainder, on ``select_maps`` maps) to score it. That choice suits the hold-out's dose
(``counts`` per map, half the smallest map's counts by default) and smooths the full maps more
than their optimum, so the picked method's parameter for the full maps is chosen again, near
their own dose, by K-fold cross-validation (:func:`.holdout.select_parameter`, ``folds`` parts,
searched from a quarter to twice the hold-out's median). ``folds=None`` keeps the hold-out's.

Each element of a series is scored and chosen on its own maps (:func:`auto_series`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from tqdm.auto import tqdm

from nanoedx_dataset.errors import ConfigError

from ..data.counts import check_backgrounds, check_counts, series_backgrounds
from ..data.tiltio import Series
from ..denoisers import DENOISERS
from ..denoisers.registry import DenoiserFailed, apply
from .holdout import evaluate_methods, resolve_methods, select_parameter
from .metrics import standard_error

# simplest first: ties go to the earlier one; BM3D (seconds per map) only when asked for
DEFAULT_CANDIDATES = ("gaussian-val", "unet", "unet-multidose")
SELECT_MAPS = 4  # maps that choose a fitted method's parameter (BM3D costs seconds per map)
SCORED_FRACTION = 0.25  # maps below this share of the median map's counts are not scored
FOLDS = 5  # cross-validation parts that choose the picked method's parameter for the full maps
REFIT_RANGE = (0.25, 2.0)  # that search, as factors of the hold-out's choice
FLAT = "flat"  # the baseline's name in the report


def _flat(counts: np.ndarray) -> np.ndarray:
    """The map's mean count everywhere: a denoiser that knows no shape."""
    return np.full(np.shape(counts), float(np.mean(counts)))


_flat.__name__ = FLAT


def default_candidates() -> list[str]:
    """The default candidates that are registered here (U-nets whose weights are available)."""
    return [c for c in DEFAULT_CANDIDATES if c in DENOISERS]


@dataclass
class AutoReport:
    """What :func:`auto_denoise` scored and picked.

    Attributes
    ----------
    method : str
        The method applied to the full maps.
    parameter : float or None
        Its parameter on the full maps (for a fitted method: cross-validated near the maps'
        dose, or the hold-out's median with ``folds=None``).
    holdout_parameter : float or None
        The median over the splits of the parameter the hold-out chose (at its lower dose).
    folds : int or None
        Cross-validation parts that chose ``parameter`` (None: not cross-validated).
    counts : float
        Counts per hold-out input map.
    repeats, seed : int
        Binomial splits per map, and the seed of the first (``seed + k`` for the k-th).
    rows : list of dict
        One per candidate in the given order, then the flat baseline: ``method``, ``status``,
        ``parameter``, ``nmse_mean`` and ``nmse_se`` (unclipped relative squared error and its
        standard error), ``diff`` and ``diff_se`` (paired difference from the best and its
        standard error), ``tied`` (within one ``diff_se`` of the best), ``score_mean`` (the
        clipped relative RMSE in %, as ``nanoedx evaluate`` shows it), ``seconds_per_map``.
    rule : str
        The rule that picked ``method``, in words.
    note : str
        A warning when the pick does not beat the flat baseline beyond the noise, else "".
    """

    method: str
    parameter: float | None
    holdout_parameter: float | None
    folds: int | None
    counts: float
    repeats: int
    seed: int
    rows: list = field(default_factory=list)
    rule: str = ""
    note: str = ""

    def to_dict(self) -> dict:
        """JSON-ready."""
        return asdict(self)

    def table(self) -> str:
        """The scores as a Markdown table, the pick marked."""
        fmt = lambda v, f="{:.4g}": "–" if v is None else f.format(v)  # noqa: E731
        par = "" if self.parameter is None else f" (parameter {self.parameter:.3g}" + (
            "" if self.folds is None else f", {self.folds}-fold cross-validated on the full "
            f"maps; {self.holdout_parameter:.3g} at the hold-out's dose") + ")"
        lines = [f"picked {self.method}{par}; hold-out at {self.counts:g} counts per map, "
                 f"{self.repeats} split(s)",
                 "", "| method | nMSE (mean ± se) | vs best (± se) | tied | score % | "
                 "parameter | s / map | status |", "| --- | --- | --- | --- | --- | --- | --- "
                 "| --- |"]
        for r in self.rows:
            mark = "**" if r["method"] == self.method else ""
            lines.append(
                f"| {mark}{r['method']}{mark} | {fmt(r['nmse_mean'])} ± {fmt(r['nmse_se'])} | "
                f"{fmt(r['diff'], '{:+.3g}')} ± {fmt(r['diff_se'], '{:.2g}')} | "
                f"{'yes' if r['tied'] else 'no'} | {fmt(r['score_mean'], '{:.1f}')} | "
                f"{fmt(r['parameter'], '{:.3g}')} | {fmt(r['seconds_per_map'], '{:.3f}')} | "
                f"{r['status']} |")
        return "\n".join(lines + ([self.note] if self.note else [])) + "\n"


def _noise(per_split: np.ndarray) -> float:
    """Standard error of the mean of (split, map) values: over maps, or splits for one map."""
    return standard_error(per_split.mean(axis=0) if per_split.shape[1] > 1 else per_split[:, 0])


def _score(maps, candidates, counts, seed, background, repeats, select_maps, progress):
    """Per candidate: its rows over the splits; per-split, per-map nmse of the ok ones."""
    runs = {}
    for k in tqdm(range(repeats), desc="auto: hold-out splits", disable=not progress):
        rows = evaluate_methods(maps, [*candidates, _flat], counts, seed + k, background,
                                progress=False, select_maps=select_maps)
        for r in rows:
            runs.setdefault(r["method"], []).append(r)
    return runs


def _rows(names, runs) -> tuple[list[dict], dict]:
    """Report rows (without the paired differences) and the (split, map) nmse of ok rows."""
    rows, nmse = [], {}
    for name in [*names, FLAT]:
        got = runs[name]
        failed = [r["status"] for r in got if r["status"] != "ok"]
        if failed:
            rows.append({"method": name, "status": failed[0], "parameter": None,
                         "nmse_mean": None, "nmse_se": None, "diff": None, "diff_se": None,
                         "tied": False, "score_mean": None, "seconds_per_map": None})
            continue
        nmse[name] = np.array([r["nmse"] for r in got])
        params = [r["parameter"] for r in got]
        rows.append({"method": name, "status": "ok" if name != FLAT else "baseline",
                     "parameter": None if params[0] is None else float(np.median(params)),
                     "nmse_mean": float(nmse[name].mean()), "nmse_se": _noise(nmse[name]),
                     "diff": None, "diff_se": None, "tied": False,
                     "score_mean": float(np.mean([r["score_mean"] for r in got])),
                     "seconds_per_map": float(np.mean([r["seconds_per_map"] for r in got]))})
    return rows, nmse


def auto_denoise(maps, candidates=None, counts: float | None = None, seed: int = 0,
                 background=0.0, repeats: int = 1, select_maps: int | None = SELECT_MAPS,
                 progress: bool = False,
                 folds: int | None = FOLDS) -> tuple[np.ndarray, AutoReport]:
    """Score candidate denoisers on the user's maps by the hold-out, pick one, apply it.

    Parameters
    ----------
    maps : array-like, shape (row, col) or (map, row, col)
        Raw counts of one element (whole numbers, background included), e.g. its tilt series.
    candidates : sequence of str, optional
        Registered non-oracle names or ``unet:PATH`` (a model file), simplest first: a tie goes
        to the earlier one. Default :data:`DEFAULT_CANDIDATES` (those registered).
    counts : float, optional
        Counts per hold-out input map; default half the smallest map's counts (every map keeps
        at least as many counts for its remainder as its input gets).
    seed : int
        Seed of the first binomial split; split ``k`` uses ``seed + k``.
    background : float or array-like of shape (map,)
        Background counts of each whole map: the hold-out inputs get their share, and the
        output maps total their counts minus this, clipped at zero (0: the whole total).
    repeats : int
        Binomial splits per map; more splits, less noise in the ranking, ``repeats`` times the
        scoring time.
    select_maps : int or None
        Maps that choose a fitted method's parameter in each split, and again for the full
        maps (None: all).
    progress : bool
    folds : int or None
        Cross-validation parts that choose the picked fitted method's parameter for the full
        maps (module docstring); None reuses the hold-out's median.

    Returns
    -------
    out : ndarray, shape of ``maps``, float32
        Expected signal counts of the picked method.
    report : AutoReport
        The pick, the rule, and every candidate's score with its noise estimate.

    Examples
    --------
    >>> lam = np.full((4, 48, 48), 0.2)
    >>> lam[:, 12:36, 12:36] += 3.0
    >>> maps = np.random.default_rng(0).poisson(lam)
    >>> out, report = auto_denoise(maps, candidates=["noisy", "gaussian-val"])
    >>> report.method, out.shape
    ('gaussian-val', (4, 48, 48))
    """
    x = check_counts(maps)
    shape = np.shape(maps)
    names = list(candidates) if candidates is not None else default_candidates()
    if FLAT in names:
        raise ConfigError(f"{FLAT!r} is the baseline's name; give the candidate another name")
    resolved = resolve_methods(names)  # unknown names, oracles, bad model files: now
    if repeats < 1:
        raise ConfigError(f"repeats must be >= 1, got {repeats}")
    if folds is not None and (int(folds) != folds or folds < 2):
        raise ConfigError(f"folds must be a whole number >= 2 (or None), got {folds}")
    totals = x.sum(axis=(1, 2))
    # maps far below the others (an empty or nearly empty tilt) are denoised, not scored
    scored = (totals >= max(2.0, SCORED_FRACTION * float(np.median(totals))) if counts is None
              else totals >= 2 * counts)
    if not scored.any():
        raise ConfigError(f"the maps hold at most {int(totals.max())} counts: auto splits each "
                          "map in two and needs at least 2 counts in a map (or twice "
                          "--holdout-counts); run one method instead (--method gaussian-val)")
    if counts is None:
        counts = 0.5 * float(totals[scored].min())
    b = check_backgrounds(background, (len(x),))
    runs = _score(x[scored], names, counts, seed, b[scored], repeats, select_maps, progress)
    rows, nmse = _rows([d.name for d in resolved], runs)
    ok = [r for r in rows if r["method"] in nmse and r["method"] != FLAT]
    if not ok:
        raise DenoiserFailed("every candidate failed on these maps: " + "; ".join(
            f"{r['method']}: {r['status']}" for r in rows if r["method"] != FLAT))
    best = min(ok, key=lambda r: r["nmse_mean"])["method"]
    for r in rows:
        if r["method"] in nmse:
            diff = nmse[r["method"]] - nmse[best]
            r["diff"], r["diff_se"] = float(diff.mean()), _noise(diff)
            r["tied"] = bool(r["method"] != FLAT and (
                r["method"] == best or r["diff"] <= np.nan_to_num(r["diff_se"])))
    pick = next(r for r in rows if r["tied"])  # rows keep the candidates' order
    d = resolved[[r["method"] for r in rows].index(pick["method"])]
    note = ""
    if FLAT in nmse:
        gain = nmse[FLAT] - nmse[pick["method"]]
        if gain.mean() <= 2 * np.nan_to_num(_noise(gain)):
            note = (f"note: {pick['method']} does not beat a flat map by more than twice the "
                    "noise of the hold-out; these maps hold too few counts to tell the methods "
                    "apart (try more repeats, or more counts per map)")
    if not scored.all():
        left = ", ".join(str(int(k)) for k in np.flatnonzero(~scored)[:10])
        note = (note + "\n" if note else "") + (
            f"note: map(s) {left} hold too few counts to score ({int(totals[~scored].max())} "
            f"at most); they were denoised with the pick, not scored")
    parameter = pick["parameter"]
    if parameter is not None and d.mode == "fitted" and folds is not None:
        parameter = select_parameter(x[scored], d, folds, seed, b[scored], select_maps,
                                     bounds=tuple(f * parameter for f in REFIT_RANGE))
    out = np.stack([apply(d, xi.astype(np.float64), float(bi), parameter, None)[0]
                    for xi, bi in zip(x, b)]).astype(np.float32)
    rule = ("lowest mean hold-out nMSE; candidates within one paired standard error of it are "
            "tied, and the first tied one in the candidate order (simplest first) is picked")
    report = AutoReport(pick["method"], parameter, pick["parameter"],
                        None if parameter is None or d.mode != "fitted" else folds,
                        float(counts), repeats, seed, rows, rule, note)
    return out.reshape(shape), report


def auto_series(series: Series, candidates=None, counts: float | None = None, seed: int = 0,
                background=0.0, repeats: int = 1, select_maps: int | None = SELECT_MAPS,
                progress: bool = True,
                folds: int | None = FOLDS) -> tuple[Series, dict[str, AutoReport]]:
    """:func:`auto_denoise` on each element of a series, each scored and chosen on its own maps.

    ``background`` is one number, one per element or one per map (element, angle), counts of
    each whole map. Returns the denoised series (float32; its metadata records each element's
    method and parameter) and ``{element: AutoReport}``.
    """
    check_counts(series.data)
    b = series_backgrounds(background, series.data.shape[:2])
    out = np.empty(series.data.shape, np.float32)
    reports = {}
    for e, name in enumerate(tqdm(series.elements, desc="auto", disable=not progress)):
        out[e], reports[name] = auto_denoise(series.data[e], candidates, counts, seed, b[e],
                                             repeats, select_maps, folds=folds)
    chosen = {n: {"method": r.method, "parameter": r.parameter} for n, r in reports.items()}
    meta = dict(series.metadata, denoised_with=chosen, background_counts=b.tolist())
    return Series(out, series.elements, series.angles, meta, series.format), reports


__all__ = ["DEFAULT_CANDIDATES", "AutoReport", "auto_denoise", "auto_series",
           "default_candidates"]
