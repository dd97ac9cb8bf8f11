"""The ``nanoedx`` program: the dataset subcommands (:mod:`nanoedx_dataset.cli`) and the models'
(train, adapt, denoise, reconstruct, benchmark, evaluate). Each subcommand imports what it runs only
when it runs, so ``nanoedx --help`` does not import torch. The conventions (inputs positional,
``-o/--out`` for every output, ``--overwrite``, one-line errors with exit status 2) are those of
:mod:`nanoedx_dataset.cli`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from nanoedx_dataset import cli as dataset_cli
from nanoedx_dataset.cli import (COUNT, NONNEGATIVE, POSITIVE, SEED, WORKERS, add_angle_unit,
                                 add_out, guard_outputs, numeric, staged_folder, tilt_degrees)
from nanoedx_dataset.errors import ConfigError

# the files a benchmark run writes into its folder (leaderboard.md, leaderboard_2d.png, ...)
BENCHMARK_FILES = "leaderboard*"
EVALUATE_METHODS = "noisy,gaussian-val,tv-val,anscombe-bm3d-val,unet"
EVALUATE_3D = "noisy,gaussian-val,unet,auto"
# nanoedx denoise --method auto's defaults (evaluation.auto's, spelled here for --help: no torch)
AUTO_CANDIDATES = ("gaussian-val", "unet", "unet-multidose")
FOLDS = 5


def _counts(text: str):
    """``C`` or ``LOW:HIGH``: positive, finite counts per map."""
    lo, sep, hi = text.partition(":")
    values = [POSITIVE(v) for v in ((lo, hi) if sep else (lo,))]
    if sep and values[1] < values[0]:
        raise argparse.ArgumentTypeError(f"the range {text!r} must be LOW:HIGH with LOW <= HIGH")
    return tuple(values) if sep else values[0]


NONNEGATIVE_INT = numeric(int, low=0)


def _folds(text: str) -> int:
    """``K`` >= 2 parts, or 0 for none."""
    k = COUNT(text) if text.strip() != "0" else 0
    if k == 1:
        raise argparse.ArgumentTypeError("--folds must be 0 (none) or at least 2, got 1")
    return k


def _backgrounds(text: str):
    """``B`` or ``B1,B2,...`` (one per element): non-negative counts per map."""
    values = [NONNEGATIVE(v) for v in text.split(",")]
    return values[0] if len(values) == 1 else values


def _names(text: str | None) -> list[str] | None:
    return [e.strip() for e in text.split(",") if e.strip()] if text else None


def _model_input(model) -> str | None:
    """A ``--model`` (or ``unet:PATH``) that names a file: an input of the command."""
    return model if model and Path(model).suffix == ".pt" else None


def _angles_input(a) -> str | None:
    """An ``--angles`` that names a file: an input of the command."""
    angles = getattr(a, "angles", None)
    return angles if angles and Path(angles).is_file() else None


def _series_inputs(a) -> list:
    return [*a.input, _angles_input(a), _model_input(getattr(a, "model", None))]


def _read(a):
    """The input series of denoise/reconstruct (angles in degrees), thinned when asked."""
    from dataclasses import replace

    from .data.tiltio import read_series
    from .experimental import thin

    series = read_series(a.input, _names(a.element), a.angles)
    if series.angles is not None:
        series = replace(series, angles=tilt_degrees(series.angles, a.angle_unit))
    if a.downsample_counts is not None:
        series = thin(series, a.downsample_counts, seed=a.seed)
    return series


def _check_formats(*outputs) -> None:
    from .data.tiltio import check_output

    for out in outputs:
        if out is not None:
            check_output(out)


def _denoise_files(a) -> None:
    import numpy as np

    from .data.tiltio import write_series
    from .denoisers.pretrained import load_pretrained
    from .experimental import denoise_series
    from .reconstruction.em import check_memory

    if a.method is None and a.model is None:
        a.method = "auto"  # the default: never worse on these maps than the best candidate
    if a.method is not None:
        return _denoise_by_method(a)
    if a.candidates or a.report or a.folds != FOLDS:
        flag = "--candidates" if a.candidates else "--report" if a.report else "--folds"
        raise ConfigError(f"{flag} is for --method auto (or --method NAME), not for --model")
    guard_outputs([a.out, a.save_thinned], _series_inputs(a), a.overwrite)
    _check_formats(a.out, a.save_thinned)
    series = _read(a)
    _check_background(a, series)
    net, info = load_pretrained(a.model or "default")  # a bad model file: an error before work
    if a.device != "cuda":
        batch = min(16, series.data.shape[1])
        pixels = series.data.shape[-1] * series.data.shape[-2]
        check_memory(pixels * batch * 30 * net.config.get("base", 16) + series.data.size * 16,
                     f"denoising {series.data.shape[1]} maps of {series.data.shape[-2]} x "
                     f"{series.data.shape[-1]} pixels", "crop or bin the maps first")
    haadf = _haadf_for(a, series, tuple(info.get("context") or ()))
    out = denoise_series(series, model=a.model, device=a.device, background=a.background,
                         haadf=haadf)
    if not np.all(np.isfinite(out.data)):
        raise ConfigError(f"the model {a.model or 'default'} returned NaN or infinite values; "
                          "the model file is damaged or unfit for these maps: retrain it")
    if a.save_thinned:
        print(write_series(a.save_thinned, series))
    print(write_series(a.out, out))


def _context(text: str) -> tuple[str, ...]:
    from .data.context import check_context

    try:
        return check_context([v.strip() for v in text.split(",") if v.strip()])
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _haadf_for(a, series, context: tuple[str, ...]):
    """The HAADF images a model with these ``context`` channels needs (--haadf), checked
    against the series; None for a model without the haadf context."""
    from .data.tiltio import read_series

    if "haadf" not in context:
        if a.haadf:
            reads = ", ".join(context) or "the map alone"
            raise ConfigError(f"--haadf is for a model with the haadf context; "
                              f"{a.model or 'the default model'} reads {reads}")
        return None
    if not a.haadf:
        raise ConfigError(f"{a.model} reads the HAADF image beside each map: give the HAADF "
                          "images of the series with --haadf FILE (angle, row, col)")
    image = read_series(a.haadf).data[0]
    if image.shape != series.data.shape[1:]:
        raise ConfigError(f"--haadf holds images of shape {image.shape}, the maps are "
                          f"{series.data.shape[1:]}: one HAADF image per tilt, of the maps' size")
    return image


def _check_background(a, series) -> None:
    if isinstance(a.background, list) and len(a.background) != len(series.elements):
        raise ConfigError(f"--background gives {len(a.background)} values for "
                          f"{len(series.elements)} elements: give one number, or one per element")


def _denoise_by_method(a) -> None:
    """``denoise --method auto`` (or one named method): chosen and scored by the hold-out."""
    from .data.tiltio import write_series
    from .evaluation.auto import auto_series
    from .evaluation.holdout import resolve_methods

    if a.model:
        raise ConfigError("--model runs that U-net alone, without --method; with --method give "
                          "a model file as unet:PATH (in --candidates for auto)")
    if a.candidates and a.method != "auto":
        raise ConfigError("--candidates is for --method auto")
    if a.device == "cuda":
        raise ConfigError(f"--method {a.method} runs on the CPU; --device cuda is for one U-net "
                          "alone: give --model NAME|PATH (e.g. --model unet-fields)")
    _check_json(a.report, "--report")
    candidates = _names(a.candidates) if a.method == "auto" else [a.method]
    models = [_model_input(c) for c in candidates or []]
    guard_outputs([a.out, a.save_thinned, a.report], [*_series_inputs(a), *models], a.overwrite)
    _check_formats(a.out, a.save_thinned)
    if candidates:
        resolve_methods(candidates)  # unknown names, oracles, bad model files: before work
    series = _read(a)
    _check_background(a, series)
    out, reports = auto_series(series, candidates, counts=a.holdout_counts, seed=a.seed,
                               background=a.background, repeats=a.repeats,
                               folds=a.folds or None)
    for name, report in reports.items():
        print(f"\n{name}: {report.table()}", file=sys.stderr)
    if a.save_thinned:
        print(write_series(a.save_thinned, series))
    print(write_series(a.out, out))
    _write_json(a.report, {n: r.to_dict() for n, r in reports.items()})


def _maps_files(a) -> None:
    import numpy as np

    from .data.spectra import spectrum_maps
    from .data.tiltio import write_array, write_series

    out = dataset_cli.file_part(a.out)
    haadf_out = a.haadf_out or out.with_name(out.stem + "_haadf" + out.suffix)
    guard_outputs([a.out, haadf_out], [*a.input, _angles_input(a)], a.overwrite)
    _check_formats(a.out, haadf_out)
    made = spectrum_maps(a.input, _names(a.lines), background=a.background_windows,
                         angles=a.angles)
    series = made.series
    if series.angles is not None:
        from dataclasses import replace

        series = replace(series, angles=tilt_degrees(series.angles, a.angle_unit))
    print(write_series(a.out, series))
    if made.haadf is not None:
        print(write_array(haadf_out, made.haadf, {"angles": series.angles,
                                                  "dims": "angle,row,col",
                                                  "metadata": {"title": made.haadf_title}}))
    totals = series.data.sum(axis=(2, 3))
    for e, name in enumerate(series.elements):
        line = f"{name} ({series.metadata['lines'][e]}): {int(totals[e].min())}-" \
               f"{int(totals[e].max())} counts per map"
        if "background_counts" in series.metadata:
            b = np.asarray(series.metadata["background_counts"][e])
            line += f", background {b.min():.0f}-{b.max():.0f} (give it to denoise --background)"
            if np.any(b > 0.7 * totals[e]):
                line += ("; WARNING: above 70 % of a map's counts, so other peaks fall in the "
                         "background windows: do not trust it")
        print(line, file=sys.stderr)


def _align_files(a) -> None:
    from .data.tiltio import read_series, write_series
    from .evaluation.figures import alignment_figure
    from .reconstruction.align import align_series, apply_alignment

    png = a.png or dataset_cli.file_part(a.out).with_suffix(".png")
    guard_outputs([a.out, png, a.report, a.save_thinned], [*_series_inputs(a), a.haadf],
                  a.overwrite)
    _check_formats(a.out, a.save_thinned)
    _check_json(a.report, "--report")
    series = _read(a)
    haadf = read_series(a.haadf).data[0] if a.haadf else None
    out, found = align_series(series, haadf, use=a.use, rotation=a.rotation, axis=a.axis,
                              refine=a.refine, subpixel=True if a.subpixel else None,
                              max_shift=a.max_shift, min_correlation=a.min_correlation)
    print(found.table(series.angles), file=sys.stderr)
    if a.save_thinned:
        print(write_series(a.save_thinned, series))
    print(write_series(a.out, out))
    if found.source == "haadf":
        shown, moved = haadf, apply_alignment(haadf, found)
    else:
        shown, moved = series.data.sum(axis=0), out.data.sum(axis=0)
    print(alignment_figure(shown, moved, series.angles, found, png,
                           title=f"{dataset_cli.file_part(a.out).name}: aligned on the "
                           f"{found.source}"))
    _write_json(a.report, found.to_dict())


def _reconstruct_files(a) -> None:
    from .data.tiltio import write_array, write_series
    from .evaluation.figures import volume_figure
    from .experimental import reconstruct_series

    png = a.png or (dataset_cli.file_part(a.out).with_suffix(".png") if a.out else None)
    guard_outputs([a.out, png, a.save_thinned], _series_inputs(a), a.overwrite)
    _check_formats(a.out, a.save_thinned)
    series = _read(a)
    vol = reconstruct_series(series, iterations=a.iterations, method=a.method,
                             device=None if a.device == "scipy" else a.device)
    if a.save_thinned:
        print(write_series(a.save_thinned, series))
    data = vol[0] if len(series.elements) == 1 else vol
    path = write_array(a.out, data, {"elements": series.elements,
                                     "tilt_angles": series.angles,
                                     "dims": "z,y,x" if data.ndim == 3 else "element,z,y,x",
                                     "iterations": a.iterations, "method": a.method,
                                     "metadata": series.metadata or None})
    volume_figure(vol, series.elements, png, title=f"{path.name}: {a.method.upper()}, "
                  f"{a.iterations} iterations, {len(series.angles)} tilts")
    print(path)
    print(png)


def _series_parser(sub, name: str, help: str, description: str, what: str, output: str):
    """A subcommand that reads a tilt series and writes one output file."""
    p = sub.add_parser(name, help=help, description=description)
    p.add_argument("input", nargs="+", help=f"{what}: .tif/.tiff, .npy, .h5 (file.h5:/path), or "
                   ".hspy/.emd/.bcf (hyperspy extra); several files = one per element")
    add_out(p, output, aliases=("--output",))
    p.add_argument("--element", help="element names, one per input file (Au,Ag), or the one "
                   "element to take from a multi-element file")
    p.add_argument("--angles", help="tilt angles START:STOP:STEP, a,b,c or a file of angles "
                   "(default: from the file, where it has them)")
    add_angle_unit(p)
    p.add_argument("--downsample-counts", type=POSITIVE, metavar="C",
                   help="first thin every map to C counts: Poisson(x C / sum x), to try a "
                   "low dose on high-dose data (C at most each map's counts)")
    p.add_argument("--seed", type=SEED, default=0,
                   help="seed of --downsample-counts (and of denoise --method's hold-out)")
    p.add_argument("--save-thinned", help="also write the thinned series here")
    p.set_defaults(_inputs=("input",), _fix="check that each input is a readable tilt series "
                   "(or --angles file) of the format its extension names")
    return p


def _check_json(path, flag: str) -> None:
    """A JSON output must be named .json (checked before any work)."""
    if path and Path(path).suffix != ".json":
        raise ConfigError(f"{flag} must be a .json file, got {path}")


def _write_json(path, record) -> None:
    """Write a JSON report (atomically) and print its path; nothing for no path."""
    if path:
        from nanoedx_dataset.store.files import atomic_output

        with atomic_output(Path(path)) as tmp:
            tmp.write_text(json.dumps(record, indent=1, default=float) + "\n")
        print(path)


def _evaluate(a) -> None:
    from .data.counts import check_counts
    from .data.tiltio import read_series
    from .evaluation.holdout import (SINGLE_EVENT_NOTE, evaluate_methods, resolve_methods,
                                     single_event)

    _check_json(a.out, "-o/--out")
    if a.three_d:
        return _evaluate_3d(a)
    if a.angles or a.folds != 3 or a.iterations != 15:
        raise ConfigError("--angles, --folds and --iterations are for --3d")
    a.counts = 1000.0 if a.counts is None else a.counts
    methods = _names(a.methods or EVALUATE_METHODS) or []
    guard_outputs([a.out], [*a.input, *map(_model_input, methods)], a.overwrite)
    resolve_methods(methods)  # unknown names and oracles: an error before any work
    series = read_series(a.input, _names(a.element))
    check_counts(series.data)
    report = {"counts": a.counts, "seed": a.seed, "background": a.background, "elements": {}}
    for e, name in enumerate(series.elements):
        rows = evaluate_methods(series.data[e], methods, counts=a.counts, seed=a.seed,
                                background=a.background)
        report["elements"][name] = rows
        print(f"\n{name}: hold-out score (%; lower is better), {a.counts:g} counts per input map")
        print("| method | score (mean) | score (median) | parameter | status |")
        print("| --- | --- | --- | --- | --- |")
        for r in rows:
            fmt = lambda v: "–" if v is None else f"{v:.3g}"  # noqa: E731
            print(f"| {r['method']} | {fmt(r['score_mean'])} | {fmt(r['score_median'])} | "
                  f"{fmt(r['parameter'])} | {r['status']} |")
        if single_event(series.data[e]):
            print(SINGLE_EVENT_NOTE)
    _write_json(a.out, report)


def _benchmark(a) -> None:
    from .evaluation.benchmark import benchmark
    from .evaluation.holdout import resolve_methods
    from .evaluation.leaderboard import markdown

    data = a.data or a.data_option
    if data is None:
        raise ConfigError("give the database to score: nanoedx benchmark DATA -o OUT")
    if a.data and a.data_option:
        raise ConfigError("give the database once: as DATA, or the older --data, not both")
    methods = _names(a.methods)
    if methods:
        resolve_methods(methods, oracles=True)  # unknown names: an error before any work
    inputs = [data, *map(_model_input, methods or [])]
    with staged_folder(a.out, BENCHMARK_FILES, inputs, a.overwrite) as staging:
        board = benchmark(data, split=a.split, methods=methods, counts=a.counts,
                          background=a.background, noise=a.noise, seed=a.seed,
                          dims=[d.strip() for d in a.dims.split(",")], quick=a.quick,
                          workers=a.workers, iterations=a.iterations, fit_maps=a.fit_maps,
                          out=staging, figures=not a.no_figures, version=a.data_version)
    print(markdown(board))
    print(f"written to {a.out}")


def _train(a) -> None:
    from .training import distributed
    from .training.loop import train

    out = Path(a.out)
    if not a.resume:
        guard_outputs([out, out.with_name(out.name + ".ckpt")], [a.data], a.overwrite)
    else:
        guard_outputs([out], [a.data], overwrite=True)
    out = train(a.data, a.out, preset=a.preset, epochs=a.epochs, batch_size=a.batch_size,
                lr=a.lr, device=a.device, seed=a.seed, noise=a.noise, counts=a.counts,
                background=a.background, background_fraction=a.background_fraction,
                per_structure=not a.all_maps, maps_per_epoch=a.maps_per_epoch,
                workers=a.workers, resume=a.resume, init=a.init, context=a.context)
    if distributed.world().main:  # under torchrun, one line (rank 0's)
        print(out)


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a U-net denoiser on a database")
    p.add_argument("data", help="release name, database file or folder of shards")
    add_out(p, "model file to write (.pt); OUT.ckpt holds the state to resume from")
    p.add_argument("--preset", default="small", help="U-net preset: paper, small or tiny")
    p.add_argument("--epochs", type=COUNT, default=10, help="training epochs")
    p.add_argument("--batch-size", type=COUNT, default=8,
                   help="maps per step; under torchrun the global batch, shared by the processes")
    p.add_argument("--lr", type=numeric(float, above=0, high=1), default=1e-3,
                   help="Adam's learning rate")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="auto takes the GPU when there is one")
    p.add_argument("--seed", type=SEED, default=0, help="seed of the weights, noise and order")
    p.add_argument("--noise", help="stored noise level, e.g. c1000_b100 (default: the first)")
    p.add_argument("--counts", type=_counts,
                   help="on-the-fly noise: counts per map, or LOW:HIGH (log-uniform)")
    p.add_argument("--background", type=NONNEGATIVE,
                   help="on-the-fly background counts per map (default: 10 %% of the counts)")
    p.add_argument("--background-fraction", type=NONNEGATIVE,
                   help="on-the-fly background as a fraction of the counts")
    p.add_argument("--all-maps", action="store_true",
                   help="train on every angle and element (default: one map per structure)")
    p.add_argument("--maps-per-epoch", type=COUNT, help="random maps per epoch (default: all)")
    p.add_argument("--workers", type=numeric(int, low=0, high=dataset_cli.MAX_WORKERS),
                   default=0, help="DataLoader worker processes")
    p.add_argument("--resume", action="store_true", help="continue from OUT.ckpt")
    p.add_argument("--context", type=_context, default=(), metavar="NAMES",
                   help="context channels beside each map, comma-separated: haadf (the HAADF "
                   "image at its tilt; needs a database generated with --haadf), elements (the "
                   "other elements' maps), tilts (the neighbouring tilts)")
    p.add_argument("--init", help="start from this model (pretrained name or model file of the "
                   "same preset; a single-map model can start a context model)")
    p.set_defaults(func=_train, _resume_hint=True, _inputs=("data",))


def _adapt(a) -> None:
    from .data.tiltio import read_series
    from .training.adapt import adapt

    out = Path(a.out)
    inputs = [*a.input, _model_input(a.init)]
    if not a.resume:
        guard_outputs([out, out.with_name(out.name + ".ckpt")], inputs, a.overwrite)
    else:
        guard_outputs([out], inputs, overwrite=True)
    series = read_series(a.input, _names(a.element))
    print(adapt(series.data, out, init=a.init, steps=a.steps, batch_size=a.batch_size,
                crop=a.crop, lr=a.lr, fraction=a.fraction, loss=a.loss, seed=a.seed,
                device=a.device, resume=a.resume))


def _add_adapt(sub) -> None:
    p = sub.add_parser("adapt", help="fine-tune a U-net on your own noisy maps, no ground truth",
                       description="Split random crops of your raw count maps binomially into "
                       "two independent halves and train the model to predict one half from the "
                       "other (Poisson likelihood or squared error), starting from a pretrained "
                       "model. Writes an ordinary model file (nanoedx denoise --model OUT); its "
                       "output is the expected counts per pixel, background included.")
    p.add_argument("input", nargs="+", help="raw count maps: .tif, .npy, .h5 or HyperSpy; "
                   "several files = one per element (all train one model)")
    add_out(p, "model file to write (.pt); OUT.ckpt holds the state to resume from")
    p.add_argument("--element", help="element names (one per file) or the one to take")
    p.add_argument("--init", default="default",
                   help="pretrained name (default, unet-multidose, unet-fields) or model file")
    p.add_argument("--steps", type=COUNT, default=300, help="optimizer steps")
    p.add_argument("--batch-size", type=COUNT, default=8, help="crops per step")
    p.add_argument("--crop", type=numeric(int, low=16), default=96, help="crop side (px)")
    p.add_argument("--lr", type=numeric(float, above=0, high=1), default=1e-4,
                   help="Adam's learning rate")
    p.add_argument("--fraction", type=numeric(float, above=0, high=0.99), default=0.5,
                   help="share of each crop's counts given to the network (the rest: target)")
    p.add_argument("--loss", default="poisson", choices=("poisson", "mse"),
                   help="Poisson likelihood or squared error of the target counts")
    p.add_argument("--seed", type=SEED, default=0, help="seed of the crops and splits")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="auto takes the GPU when there is one")
    p.add_argument("--resume", action="store_true", help="continue from OUT.ckpt")
    p.set_defaults(func=_adapt, _resume_hint=True, _inputs=("input",),
                   _fix="check that each input is a readable stack of count maps of the "
                   "format its extension names")


def _denoisers() -> str:
    from .denoisers import DENOISERS

    return ", ".join(DENOISERS)


dataset_cli.LAZY_HELP["{denoisers}"] = _denoisers


class _Renamed(argparse.Action):
    """An option that was renamed: using it is a usage error naming the new spelling."""

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string} is now {self.const}")


def _add_benchmark(sub) -> None:

    p = sub.add_parser("benchmark", help="2D and 3D leaderboard of denoisers on a database",
                       description="Score denoisers on one map per structure (2D) and on EM "
                       "reconstructions of denoised tilt series (3D); writes OUT/leaderboard.md, "
                       "OUT/leaderboard.json, OUT/leaderboard_examples.npz and figures.")
    p.add_argument("data", nargs="?", help="release name, database file or shard folder")
    p.add_argument("--data", dest="data_option", help=argparse.SUPPRESS)  # old spelling
    p.add_argument("--version", nargs="?", action=_Renamed, help=argparse.SUPPRESS,
                   const="--data-version (`nanoedx --version` is the program's version)")
    add_out(p, "output folder (with --overwrite, the files of an earlier run there are "
            "replaced)")
    p.add_argument("--data-version", default="latest",
                   help="release version, for a release name")
    p.add_argument("--split", default="test", help="split to score: train, val or test")
    p.add_argument("--methods", help="comma-separated denoisers (default: all but the "
                   "reconstruction-domain em-bm4d-val and n2i); registered: {denoisers}; or "
                   "unet:MODEL.pt")
    p.add_argument("--counts", type=POSITIVE, help="score at this dose, noise drawn on the fly")
    p.add_argument("--background", type=NONNEGATIVE,
                   help="on-the-fly background (default 10 %% of --counts)")
    p.add_argument("--noise", help="stored noise level (default: the file's first)")
    p.add_argument("--seed", type=SEED, default=0, help="picks the maps; seeds on-the-fly noise")
    p.add_argument("--dims", default="2d,3d", help="2d, 3d or 2d,3d")
    p.add_argument("--quick", action="store_true", help="evenly spaced subsets (minutes)")
    p.add_argument("--workers", type=WORKERS, default=1,
                   help="processes; the numbers do not depend on them")
    p.add_argument("--iterations", type=COUNT, default=15, help="EM iterations (3D)")
    p.add_argument("--fit-maps", type=COUNT,
                   help="validation maps for fitted methods (default 30, 8 with --quick)")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    p.set_defaults(func=_benchmark, _inputs=("data", "data_option"))


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="rank denoisers on your own maps, no ground truth",
                       description="Split each raw count map binomially into a low-dose input "
                       "(--counts) and an independent remainder, denoise the input, fit the "
                       "output to the remainder (scale and offset) and report the held-out "
                       "error net of the remainder's Poisson noise (%%, lower is better). With "
                       "--3d, rank whole pipelines (denoiser + EM) on an aligned tilt series "
                       "instead: every --folds-th tilt is left out in turn, the others are "
                       "denoised and reconstructed, and the reconstruction's projections are "
                       "scored against the left-out tilts' counts the same way.")
    p.add_argument("input", nargs="+", help="raw count maps: .tif, .npy, .h5 or HyperSpy; "
                   "several files = one per element")
    add_out(p, "write the rows as JSON (.json)", required=False)
    p.add_argument("--element", help="element names (one per file) or the one to take")
    p.add_argument("--methods", help="comma-separated denoisers (no oracles: they need the "
                   f"ground truth); default {EVALUATE_METHODS}, with --3d {EVALUATE_3D}")
    p.add_argument("--counts", type=POSITIVE, help="counts per input map (default 1000; with "
                   "--3d: thin every map to this many first, default none)")
    p.add_argument("--3d", dest="three_d", action="store_true",
                   help="score denoiser + EM pipelines by left-out tilts (needs the angles)")
    p.add_argument("--angles", help="with --3d: tilt angles START:STOP:STEP, a,b,c or a file "
                   "(default: from the file)")
    add_angle_unit(p)
    p.add_argument("--folds", type=numeric(int, low=2), default=3,
                   help="with --3d: every K-th tilt is left out in turn (default 3)")
    p.add_argument("--iterations", type=COUNT, default=15, help="with --3d: EM iterations")
    p.add_argument("--background", type=NONNEGATIVE,
                   help="background counts per given map (default 0: the fit's offset takes it)")
    p.add_argument("--seed", type=SEED, default=0, help="seed of the binomial split")
    p.set_defaults(func=_evaluate, _inputs=("input",),
                   _fix="check that each input is a readable stack of count maps of the "
                   "format its extension names")


def _evaluate_3d(a) -> None:
    from .data.counts import check_counts
    from .data.tiltio import read_series
    from .evaluation.holdout import SINGLE_EVENT_NOTE, single_event
    from .evaluation.holdout3d import evaluate_pipelines, resolve_pipelines, table

    methods = _names(a.methods or EVALUATE_3D) or []
    guard_outputs([a.out], [*a.input, *map(_model_input, methods), _angles_input(a)],
                  a.overwrite)
    resolve_pipelines(methods)  # unknown names and oracles: an error before any work
    series = read_series(a.input, _names(a.element), a.angles)
    if series.angles is None:
        raise ConfigError("--3d needs the tilt angles: give --angles START:STOP:STEP or a file "
                          "of angles (one per map)")
    angles = tilt_degrees(series.angles, a.angle_unit)
    check_counts(series.data)
    report = {"counts": a.counts, "seed": a.seed, "folds": a.folds,
              "iterations": a.iterations, "elements": {}}
    for e, name in enumerate(series.elements):
        rows = evaluate_pipelines(series.data[e], angles, methods, folds=a.folds,
                                  iterations=a.iterations, counts=a.counts, seed=a.seed,
                                  background=a.background or 0.0, progress=True)
        report["elements"][name] = rows
        print(f"\n{name}: left-out tilts predicted by each pipeline (nMSE, lower is better)")
        print(table(rows), end="")
        if single_event(series.data[e]):
            print(SINGLE_EVENT_NOTE)
    _write_json(a.out, report)


def main(argv: list[str] | None = None) -> int:
    """Run the ``nanoedx`` program; returns the exit status (2 for a user's error)."""
    return dataset_cli.run(build_parser(), argv)


def build_parser() -> argparse.ArgumentParser:
    """The ``nanoedx`` program's parser, every subcommand included."""
    parser, sub = dataset_cli.new_parser("Simulated nanoparticle EDX tomography databases, "
                                         "denoisers and their benchmarks.")
    dataset_cli.add_commands(sub)
    _add_train(sub)
    _add_adapt(sub)
    p = sub.add_parser(
        "maps", help="spectrum images (.emd, .bcf, .hspy) to elemental count maps",
        description="Integrate X-ray lines of a tilt series of EDX spectrum images (one file "
        "per tilt, or one file with the tilt as a third navigation axis) into elemental count "
        "maps with exspy: whole counts, never rescaled. Keeps the HAADF image of each tilt "
        "(written beside the maps) and the tilt angles of the metadata (else --angles).")
    p.add_argument("input", nargs="+", help="spectrum images: .emd, .bcf or .hspy")
    add_out(p, "elemental maps (element, angle, row, col): .hspy, .h5, .tif or .npy")
    p.add_argument("--lines", help="X-ray lines, e.g. Au_La,Ag_La (default: the file's "
                   "metadata.Sample.xray_lines)")
    p.add_argument("--background-windows", action="store_true",
                   help="estimate each map's continuum from exspy's background windows and "
                   "report it (the maps stay raw counts): the counts for denoise --background")
    p.add_argument("--angles", help="tilt angles START:STOP:STEP, a,b,c or a file (default: "
                   "the files' Stage.tilt_alpha)")
    add_angle_unit(p)
    p.add_argument("--haadf-out", help="where the HAADF images go (default: beside -o, "
                   "NAME_haadf.EXT)")
    p.set_defaults(func=_maps_files, _inputs=("input",),
                   _fix="check that each input is a spectrum image HyperSpy can read")
    p = _series_parser(
        sub, "align", "align a tilt series: drift, tilt axis, in-plane rotation",
        "Register every tilt to its neighbours by cross-correlation (of the HAADF images with "
        "--haadf, else of the summed elemental maps), place the tilt axis at the centre "
        "column (where reconstructions from all but every third tilt best predict the tilts "
        "left out), and optionally undo an in-plane rotation of the axis; the same moves for "
        "every element. Raw counts move by whole pixels and stay counts; writes the aligned "
        "series, a PNG of the shifts and of the column profiles before and after, and the "
        "table to stderr. A tilt that matches no neighbour is an error, not a guess.",
        "maps (angle, row, col) or (element, angle, row, col) with their tilt angles",
        "aligned series: .hspy, .tif, .npy or .h5")
    p.add_argument("--haadf", help="HAADF images, one per tilt (angle, row, col), of the maps' "
                   "pixels: registered instead of the maps (any series format)")
    p.add_argument("--use", default="auto", choices=("auto", "haadf", "maps"),
                   help="what to register (auto: the HAADF images when given)")
    p.add_argument("--rotation", action="store_true",
                   help="also find and undo an in-plane rotation of the tilt axis (up to 10 deg)")
    p.add_argument("--axis", default="reprojection", choices=("reprojection", "com"),
                   help="how to place the tilt axis: reprojection (any field) or com (one "
                   "object wholly inside the field)")
    p.add_argument("--refine", type=NONNEGATIVE_INT, default=0, metavar="N",
                   help="rounds of projection matching after that (default 0)")
    p.add_argument("--subpixel", action="store_true",
                   help="move raw counts by sub-pixel shifts too (interpolated: no longer whole "
                   "counts, which the denoisers need); non-integer maps always move so")
    p.add_argument("--max-shift", type=POSITIVE, metavar="PX",
                   help="largest shift between neighbouring tilts (default a quarter of the "
                   "smaller side)")
    p.add_argument("--min-correlation", type=numeric(float, low=0.0, high=1.0), default=0.3,
                   metavar="R", help="least correlation of a tilt with its neighbour after its "
                   "shift (default 0.3)")
    p.add_argument("--png", help="figure of the alignment (default: beside -o, .png)")
    p.add_argument("--report", help="also write the shifts and scores as JSON (.json)")
    p.set_defaults(func=_align_files)
    p = _series_parser(
        sub, "denoise", "denoise a tilt series of EDX count maps (the best method for them, "
        "or a U-net)",
        "Denoise every map (angle, row, col) of one or more elements; writes expected signal "
        "counts (background removed; each map totals its counts minus --background) as TIFF, "
        "NPY or HDF5 by the output's extension, keeping angles, element names and metadata "
        "where the format can hold them. By default (--method auto) it scores the candidate "
        "denoisers on the maps themselves (binomial hold-out, per element) and applies the "
        "best, so the result is never worse than a tuned Gaussian filter's beyond the "
        "score's noise; --model runs one U-net alone.",
        "raw count maps (angle, row, col) or (element, angle, row, col)",
        "denoised series: .hspy, .tif, .npy or .h5")
    p.add_argument("--model", help="run this U-net alone (pretrained name or model file, e.g. "
                   "unet-fields, the embedded default), without scoring other methods")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="for --model: auto takes the GPU when there is one")
    p.add_argument("--haadf", help="for a --model with the haadf context (unet-haadf, "
                   "unet-context): the HAADF images of the series, one per tilt")
    p.add_argument("--background", type=_backgrounds, default=0.0, metavar="B[,B2,...]",
                   help="background counts per map (the whole map), one number or one per "
                   "element: each output map then sums to its input's counts minus B (default "
                   "0: to the input's whole total)")
    p.add_argument("--method", help="auto (the default without --model): score the "
                   "--candidates on your maps by the binomial hold-out, per element, and apply "
                   "the best (the table goes to stderr); or one denoiser by name (a fitted one "
                   "gets its parameter from the hold-out and --folds); runs on the CPU")
    p.add_argument("--candidates", help="comma-separated denoisers for --method auto, simplest "
                   "first (ties go to the earlier); default: "
                   f"{', '.join(AUTO_CANDIDATES)} (unet is unet-fields); add anscombe-bm3d-val "
                   "for BM3D (seconds per map); unet:MODEL.pt for a model file")
    p.add_argument("--folds", type=_folds, default=FOLDS, metavar="K",
                   help=f"a picked fitted method's parameter for the full maps by K-fold "
                   f"cross-validation on them (default {FOLDS}; 0 keeps the hold-out's choice, "
                   "made at its lower dose)")
    p.add_argument("--holdout-counts", type=POSITIVE, metavar="C",
                   help="counts per hold-out input map (default: half the smallest map's)")
    p.add_argument("--repeats", type=COUNT, default=1,
                   help="binomial splits per map for --method (default 1; seeds --seed, "
                   "--seed + 1, ...)")
    p.add_argument("--report", help="with --method: also write the scores as JSON (.json)")
    p.set_defaults(func=_denoise_files)
    p = _series_parser(
        sub, "reconstruct", "EM reconstruction of a (denoised) tilt series",
        "EM (or SIRT) reconstruction of each element; writes the volume (z, y, x), or (element, "
        "z, y, x), by the output's extension and a PNG of the central orthoslices (a colour "
        "composite for several elements). The series must be aligned to the tilt axis along "
        "the rows.", "raw or denoised maps (angle, row, col) or (element, angle, row, col)",
        "volume: .hspy, .tif, .npy or .h5")
    p.add_argument("--iterations", type=COUNT, default=15, help="EM or SIRT iterations")
    p.add_argument("--method", default="em", choices=("em", "sirt"),
                   help="EM (MLEM, as in the paper) or SIRT")
    p.add_argument("--device", default="scipy", choices=("scipy", "cpu", "cuda"),
                   help="scipy (CPU), or cpu/cuda for torch sparse products")
    p.add_argument("--png", help="orthoslice figure (default: OUT with .png)")
    p.set_defaults(func=_reconstruct_files)
    _add_benchmark(sub)
    _add_evaluate(sub)
    return parser


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
