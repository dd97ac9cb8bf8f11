"""The ``nanoedx`` console script: the dataset commands plus ``train`` and ``denoise``."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from nanoedx_dataset.cli import build_parser, run
from nanoedx_dataset.errors import ConfigError
from nanoedx_dataset.files import atomic_output

from .benchmark import DIMS, benchmark, markdown
from .denoisers import DENOISERS
from .inference import denoise
from .training import train


def _counts(text: str):
    lo, _, hi = text.partition(":")
    return (float(lo), float(hi)) if hi else float(lo)


def _denoise_files(args) -> None:
    src, dst = Path(args.input), Path(args.output)
    if src.suffix != ".npy" or dst.suffix != ".npy":
        raise ConfigError(f"denoise reads and writes .npy arrays (row, col) or (map, row, col); "
                          f"got {src.name} -> {dst.name}")
    if not src.is_file():
        raise ConfigError(f"no input file {src}")
    maps = np.load(src, allow_pickle=False)
    out = denoise(maps, model=args.model, device=args.device)
    with atomic_output(dst) as tmp:
        np.save(tmp, out)
    print(dst)


def _benchmark(a) -> None:
    methods = [m.strip() for m in a.methods.split(",") if m.strip()] if a.methods else None
    board = benchmark(a.data, split=a.split, methods=methods, counts=a.counts,
                      background=a.background, noise=a.noise, seed=a.seed,
                      dims=[d.strip() for d in a.dims.split(",")], quick=a.quick,
                      workers=a.workers, iterations=a.iterations, fit_maps=a.fit_maps,
                      out=a.out, figures=not a.no_figures, version=a.version)
    print(markdown(board))
    print(f"written to {a.out}")


def main(argv: list[str] | None = None) -> int:
    parser, sub = build_parser()
    p = sub.add_parser("train", help="train a U-net denoiser on a database")
    p.add_argument("data", help="release name, database file or folder of shards")
    p.add_argument("-o", "--out", required=True, help="model file to write (.pt)")
    p.add_argument("--preset", default="small", help="U-net preset: paper, small, tiny")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=8)
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
    p.set_defaults(func=lambda a: print(train(
        a.data, a.out, preset=a.preset, epochs=a.epochs, batch_size=a.batch_size, lr=a.lr,
        device=a.device, seed=a.seed, noise=a.noise, counts=a.counts, background=a.background,
        background_fraction=a.background_fraction, per_structure=not a.all_maps,
        maps_per_epoch=a.maps_per_epoch, workers=a.workers, resume=a.resume)))
    p = sub.add_parser("denoise", help="denoise count maps (.npy) with a U-net")
    p.add_argument("input", help="raw count maps, .npy (row, col) or (map, row, col)")
    p.add_argument("-o", "--output", required=True, help=".npy of expected signal counts")
    p.add_argument("--model", help="pretrained name or model file (default: embedded model)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_denoise_files)
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
    return run(parser, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
