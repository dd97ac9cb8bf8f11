"""The ``nanoedx`` console script: the dataset commands plus ``train`` and ``denoise``."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from nanoedx_dataset.cli import build_parser, run
from nanoedx_dataset.errors import ConfigError
from nanoedx_dataset.files import atomic_output

from . import distributed
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


def _train(a) -> None:
    out = train(a.data, a.out, preset=a.preset, epochs=a.epochs, batch_size=a.batch_size,
                lr=a.lr, device=a.device, seed=a.seed, noise=a.noise, counts=a.counts,
                background=a.background, background_fraction=a.background_fraction,
                per_structure=not a.all_maps, maps_per_epoch=a.maps_per_epoch,
                workers=a.workers, resume=a.resume)
    if distributed.world().main:  # under torchrun, one line (rank 0's)
        print(out)


def main(argv: list[str] | None = None) -> int:
    parser, sub = build_parser()
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
    p = sub.add_parser("denoise", help="denoise count maps (.npy) with a U-net")
    p.add_argument("input", help="raw count maps, .npy (row, col) or (map, row, col)")
    p.add_argument("-o", "--output", required=True, help=".npy of expected signal counts")
    p.add_argument("--model", help="pretrained name or model file (default: embedded model)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_denoise_files)
    return run(parser, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
