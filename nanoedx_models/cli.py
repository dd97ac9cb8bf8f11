"""The ``nanoedx`` program: the dataset subcommands (:mod:`nanoedx_dataset.cli`) and the models'
(train, denoise, reconstruct, benchmark, evaluate). Each subcommand imports what it runs only
when it runs, so ``nanoedx --help`` does not import torch."""

from __future__ import annotations

import json
import sys
from pathlib import Path


from nanoedx_dataset import cli as dataset_cli
from nanoedx_dataset.errors import ConfigError
from nanoedx_dataset.store.files import atomic_output

from .data.tiltio import Series, check_output, read_series, write_array, write_series
from .denoisers import DENOISERS
from .evaluation.leaderboard import DIMS


def _counts(text: str):
    lo, _, hi = text.partition(":")
    return (float(lo), float(hi)) if hi else float(lo)


def _elements(text: str | None) -> list[str] | None:
    return [e.strip() for e in text.split(",") if e.strip()] if text else None


def _read(a) -> Series:
    """The input series of denoise/reconstruct, thinned when --downsample-counts is given."""
    from .experimental import thin

    series = read_series(a.input, _elements(a.element), a.angles)
    if a.downsample_counts is not None:
        series = thin(series, a.downsample_counts, seed=a.seed)
        if a.save_thinned:
            print(write_series(a.save_thinned, series))
    return series


def _denoise_files(a) -> None:
    from .experimental import denoise_series

    series = _read(a)
    check_output(a.output)
    out = denoise_series(series, model=a.model, device=a.device)
    print(write_series(a.output, out))


def _reconstruct_files(a) -> None:
    from .evaluation.figures import volume_figure
    from .experimental import reconstruct_series

    series = _read(a)
    check_output(a.output)
    vol = reconstruct_series(series, iterations=a.iterations, method=a.method,
                             device=None if a.device == "scipy" else a.device)
    data = vol[0] if len(series.elements) == 1 else vol
    path = write_array(a.output, data, {"elements": series.elements,
                                        "tilt_angles": series.angles,
                                        "dims": "z,y,x" if data.ndim == 3 else "element,z,y,x",
                                        "iterations": a.iterations, "method": a.method})
    png = Path(a.png) if a.png else path.with_suffix(".png")
    volume_figure(vol, series.elements, png, title=f"{path.name}: {a.method.upper()}, "
                  f"{a.iterations} iterations, {len(series.angles)} tilts")
    print(path)
    print(png)


def _series_parser(sub, name: str, help: str, description: str, what: str, output: str):
    """A subcommand that reads a tilt series and writes one output file."""
    p = sub.add_parser(name, help=help, description=description)
    p.add_argument("input", nargs="+", help=f"{what}: .tif/.tiff, .npy, .h5 (file.h5:/path), or "
                   ".hspy/.emd/.bcf (hyperspy extra); several files = one per element")
    p.add_argument("--element", help="element names, one per input file (Au,Ag), or the one "
                   "element to take from a multi-element file")
    p.add_argument("--angles", help="tilt angles START:STOP:STEP, a,b,c or a file of angles "
                   "(default: from the file, where it has them)")
    p.add_argument("--downsample-counts", type=float, metavar="C",
                   help="first thin every map to C counts: Poisson(x C / sum x), to try a "
                   "low dose on high-dose data")
    p.add_argument("--seed", type=int, default=0, help="seed of --downsample-counts")
    p.add_argument("--save-thinned", help="also write the thinned series here")
    p.add_argument("-o", "--output", required=True, help=output)
    return p


def _evaluate(a) -> None:
    from .data.counts import check_counts
    from .evaluation.holdout import evaluate_methods

    series = read_series(a.input, _elements(a.element))
    check_counts(series.data)
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    if a.out:
        check_output_json(a.out)
    report = {"counts": a.counts, "seed": a.seed, "background": a.background, "elements": {}}
    for e, name in enumerate(series.elements):
        rows = evaluate_methods(series.data[e], methods, counts=a.counts, seed=a.seed,
                                background=a.background)
        report["elements"][name] = rows
        print(f"\n{name}: hold-out score (%; lower is better), {a.counts:g} counts per input map")
        print("| method | score (mean) | score (median) | parameter | status |")
        print("| --- | --- | --- | --- | --- |")
        for r in rows:
            fmt = lambda v: "–" if v is None else f"{v:.3g}"
            print(f"| {r['method']} | {fmt(r['score_mean'])} | {fmt(r['score_median'])} | "
                  f"{fmt(r['parameter'])} | {r['status']} |")
    if a.out:
        with atomic_output(Path(a.out)) as tmp:
            tmp.write_text(json.dumps(report, indent=1, default=float) + "\n")
        print(a.out)


def check_output_json(text) -> None:
    path = Path(text)
    if path.suffix != ".json" or not path.parent.is_dir():
        raise ConfigError(f"--out must be a .json file in an existing folder, got {text}")


def _benchmark(a) -> None:
    from .evaluation.benchmark import benchmark
    from .evaluation.leaderboard import markdown

    methods = [m.strip() for m in a.methods.split(",") if m.strip()] if a.methods else None
    board = benchmark(a.data, split=a.split, methods=methods, counts=a.counts,
                      background=a.background, noise=a.noise, seed=a.seed,
                      dims=[d.strip() for d in a.dims.split(",")], quick=a.quick,
                      workers=a.workers, iterations=a.iterations, fit_maps=a.fit_maps,
                      out=a.out, figures=not a.no_figures, version=a.version)
    print(markdown(board))
    print(f"written to {a.out}")


def _train(a) -> None:
    from .training import distributed
    from .training.loop import train

    out = train(a.data, a.out, preset=a.preset, epochs=a.epochs, batch_size=a.batch_size,
                lr=a.lr, device=a.device, seed=a.seed, noise=a.noise, counts=a.counts,
                background=a.background, background_fraction=a.background_fraction,
                per_structure=not a.all_maps, maps_per_epoch=a.maps_per_epoch,
                workers=a.workers, resume=a.resume)
    if distributed.world().main:  # under torchrun, one line (rank 0's)
        print(out)


def main(argv: list[str] | None = None) -> int:
    """Run the ``nanoedx`` program; returns the exit status (2 for a user's error)."""
    parser, sub = dataset_cli.new_parser("Simulated nanoparticle EDX tomography databases, "
                                         "denoisers and their benchmarks.")
    dataset_cli.add_commands(sub)
    p = sub.add_parser("train", help="train a U-net denoiser on a database")
    p.add_argument("data", help="release name, database file or folder of shards")
    p.add_argument("-o", "--out", required=True, help="model file to write (.pt)")
    p.add_argument("--preset", default="small", help="U-net preset: paper, small, tiny")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=8,
                   help="maps per step; under torchrun the global batch, shared by the processes")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--noise", help="stored noise level, e.g. c1000_b100 (default: the first)")
    p.add_argument("--counts", type=_counts,
                   help="on-the-fly noise: counts per map, or LOW:HIGH (log-uniform)")
    p.add_argument("--background", type=float, help="on-the-fly background counts per map")
    p.add_argument("--background-fraction", type=float, help="background as a fraction of counts")
    p.add_argument("--all-maps", action="store_true",
                   help="train on every angle and element (default: one map per structure)")
    p.add_argument("--maps-per-epoch", type=int)
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--resume", action="store_true", help="continue from OUT.ckpt")
    p.set_defaults(func=_train)
    p = _series_parser(
        sub, "denoise", "denoise a tilt series of EDX count maps with a U-net",
        "Denoise every map (angle, row, col) of one or more elements; writes expected signal "
        "counts (background removed) as TIFF, NPY or HDF5 by the output's extension, keeping "
        "angles, element names and metadata where the format can hold them.",
        "raw count maps (angle, row, col) or (element, angle, row, col)",
        "denoised series: .tif, .npy or .h5")
    p.add_argument("--model", help="pretrained name or model file (default: embedded model)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_denoise_files)
    p = _series_parser(
        sub, "reconstruct", "EM reconstruction of a (denoised) tilt series",
        "EM (or SIRT) reconstruction of each element; writes the volume (z, y, x), or (element, "
        "z, y, x), by the output's extension and a PNG of the central orthoslices (a colour "
        "composite for several elements). The series must be aligned to the tilt axis along "
        "the rows.", "raw or denoised maps (angle, row, col) or (element, angle, row, col)",
        "volume: .tif, .npy or .h5")
    p.add_argument("--iterations", type=int, default=15)
    p.add_argument("--method", default="em", help="em (default) or sirt")
    p.add_argument("--device", default="scipy",
                   help="scipy (CPU, default), or cpu/cuda for torch sparse products")
    p.add_argument("--png", help="orthoslice figure (default: OUTPUT with .png)")
    p.set_defaults(func=_reconstruct_files)
    p = sub.add_parser("benchmark", help="2D and 3D leaderboard of denoisers on a database",
                       description="Score denoisers on one map per structure (2D) and on EM "
                       "reconstructions of denoised tilt series (3D); writes OUT/leaderboard.md, "
                       "OUT/leaderboard.json, OUT/leaderboard_examples.npz and figures.")
    p.add_argument("--data", required=True, help="release name, database file or shard folder")
    p.add_argument("--version", default="latest", help="release version (for a release name)")
    p.add_argument("--split", default="test")
    p.add_argument("--methods", help="comma-separated denoisers (default: all); registered: "
                   f"{', '.join(DENOISERS)}; or unet:MODEL.pt")
    p.add_argument("--counts", type=float, help="score at this dose, noise drawn on the fly")
    p.add_argument("--background", type=float, help="on-the-fly background (default 10 %%)")
    p.add_argument("--noise", help="stored noise level (default: the file's first)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dims", default=",".join(DIMS), help="2d, 3d or 2d,3d (default)")
    p.add_argument("--quick", action="store_true", help="evenly spaced subsets (minutes)")
    p.add_argument("--workers", type=int, default=1, help="processes (numbers do not change)")
    p.add_argument("--iterations", type=int, default=15, help="EM iterations (3D)")
    p.add_argument("--fit-maps", type=int, help="validation maps for fitted methods")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=_benchmark)
    p = sub.add_parser("evaluate", help="rank denoisers on your own maps, no ground truth",
                       description="Split each raw count map binomially into a low-dose input "
                       "(--counts) and an independent remainder, denoise the input, fit the "
                       "output to the remainder (scale and offset) and report the held-out "
                       "error net of the remainder's Poisson noise (%, lower is better).")
    p.add_argument("input", nargs="+", help="raw count maps: .tif, .npy, .h5 or HyperSpy; "
                   "several files = one per element")
    p.add_argument("--element", help="element names (one per file) or the one to take")
    p.add_argument("--methods", default="noisy,gaussian-val,tv-val,anscombe-bm3d-val,unet",
                   help="comma-separated denoisers (no oracles: they need the ground truth)")
    p.add_argument("--counts", type=float, default=1000.0, help="counts per input map")
    p.add_argument("--background", type=float,
                   help="background counts per given map (default 0: the fit's offset takes it)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the rows as JSON")
    p.set_defaults(func=_evaluate)
    return dataset_cli.run(parser, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
