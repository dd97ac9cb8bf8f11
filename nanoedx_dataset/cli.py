"""The dataset subcommands of the ``nanoedx`` program (``nanoedx_models.cli`` is the program).

Each subcommand parses its arguments and calls one public function, imported only when the
subcommand runs, so ``nanoedx --help`` stays fast. Errors a user can cause are printed as one
clear line on stderr with exit status 2 (:func:`run`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from . import __version__
from .generation.config import PRESETS, parse_angles
from .errors import NanoEDXError


def _angles(text: str):
    try:
        return parse_angles(text)
    except NanoEDXError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="generate a simulated database (HDF5)")
    p.add_argument("--preset", default="mini",
                   help=f"starting config: {', '.join(PRESETS)} (default mini)")
    p.add_argument("--n", type=int, help="number of samples")
    p.add_argument("--size", type=int, help="voxels per axis (>= 16)")
    p.add_argument("--counts", type=float, help="signal counts per map on average (> 0)")
    p.add_argument("--background", type=float, help="background counts per map (>= 0)")
    p.add_argument("--angles", type=_angles,
                   help="tilt angles in degrees: --angles=START:STOP:STEP or --angles=a,b,c "
                        "(default -75:75:10; write the = when the value starts with -)")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--backend",
                   help="voxelization backend: analytic (default; exact signed distances) or "
                        "blender (the paper's Blender meshes voxelized with VTK; needs "
                        'pip install "nanoedx[blender]")')
    p.add_argument("--mesh-dir", help="with --backend blender: also save each particle's "
                                      "meshes (binary STL) in this folder")
    p.add_argument("--dataset-version", help="semantic version of the database")
    p.add_argument("--workers", type=int, default=1, help="local worker processes (default 1)")
    p.add_argument("--shard-size", type=int,
                   help="write one file per N samples into the folder --out, plus index.json; "
                        "rerunning the command redoes only the missing shards")
    _add_scheduler(p)
    p.add_argument("--out", required=True, help="output HDF5 file (a folder with --shard-size)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    p.set_defaults(func=lambda a: print(_api().generate(
        a.out, a.preset, n=a.n, size=a.size, counts=a.counts, background=a.background,
        angles=a.angles, seed=a.seed, backend=a.backend, dataset_version=a.dataset_version,
        workers=a.workers, shard_size=a.shard_size, client=a.scheduler,
        overwrite=a.overwrite, resume=a.resume, mesh_dir=a.mesh_dir)))


def _add_voxelize(sub) -> None:
    p = sub.add_parser(
        "voxelize", help="voxelize a closed mesh file (STL, PLY, OBJ) into a one-sample database",
        description="Voxelize a closed (watertight) mesh into a one-sample nanoedx database "
                    "(family 'mesh', split 'test'), with projections and one noise level, "
                    "readable with load_dataset. Placement: the mesh's (x, y, z) are the "
                    "volume's x, y (tilt axis) and z (beam at 0 deg); it is centred on its "
                    "bounding box's centre and scaled so that the sphere about that centre "
                    "holding it spans --extent of the field (catalogue particles span "
                    "0.5-0.9), or kept at its own scale with --voxel-size. Needs "
                    'pip install "nanoedx[blender]".')
    p.add_argument("mesh", help="a closed mesh file: .stl, .ply or .obj")
    p.add_argument("--size", type=int, required=True, help="voxels per axis (>= 16)")
    p.add_argument("-o", "--out", required=True, help="output HDF5 database")
    p.add_argument("--extent", type=float, default=0.9,
                   help="diameter of the mesh's enclosing sphere as a fraction of the field, "
                        "at most 0.95 (default 0.9)")
    p.add_argument("--voxel-size", type=float,
                   help="mesh units per voxel: keep the mesh's own scale instead of --extent")
    p.add_argument("--counts", type=float, default=1000.0,
                   help="signal counts per map on average (default 1000)")
    p.add_argument("--background", type=float, default=100.0,
                   help="background counts per map (default 100)")
    p.add_argument("--angles", type=_angles, help="tilt angles as for generate "
                                                  "(default -75:75:10)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(func=lambda a: print(_single().generate_from_mesh(
        a.mesh, a.out, a.size, extent=a.extent, voxel_size=a.voxel_size, counts=a.counts,
        background=a.background, angles=a.angles, seed=a.seed, overwrite=a.overwrite)))


def _add_scheduler(p) -> None:
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="map the shards over the dask.distributed cluster of this scheduler, "
                        "e.g. tcp://head:8786 (workers need a shared file system; "
                        'pip install "nanoedx[distributed]")')


def _add_renoise(sub) -> None:
    p = sub.add_parser("renoise", help="add a noise level to a database")
    p.add_argument("file", help="database file, or folder of a sharded one")
    p.add_argument("--counts", type=float, required=True, help="signal counts per map (> 0)")
    p.add_argument("--background", type=float, required=True, help="background counts per map")
    p.add_argument("--seed", type=int, help="noise seed (default: derived from the file's seed)")
    p.add_argument("--overwrite", action="store_true", help="replace the level if present")
    p.add_argument("--workers", type=int, default=1,
                   help="local processes renoising the shards of a sharded folder (default 1)")
    _add_scheduler(p)
    p.set_defaults(func=lambda a: print(_api().renoise(
        a.file, a.counts, a.background, seed=a.seed, overwrite=a.overwrite,
        client=a.scheduler, workers=a.workers)))


def _add_publish(sub) -> None:
    p = sub.add_parser("publish", help="make a release of generated files (registry, card, "
                       "Zenodo metadata; --upload deposits on Zenodo)")
    p.add_argument("directory", help="folder with the release's .h5 files")
    p.add_argument("--version", required=True, help="semantic version X.Y.Z")
    p.add_argument("--name", help="release name (default: the matching preset)")
    p.add_argument("--registry", help="registry JSON to update (default: the package's)")
    p.add_argument("--card", default="DATASET_CARD.md" if Path("DATASET_CARD.md").exists()
                   else None, help="dataset card whose versions table to fill")
    p.add_argument("--embed", action="store_true", help="ship the files inside the package")
    p.add_argument("--upload", action="store_true", help="deposit on Zenodo ($ZENODO_TOKEN)")
    p.add_argument("--sandbox", action="store_true", help="use sandbox.zenodo.org")
    p.set_defaults(func=lambda a: print(json.dumps(_publish().publish(
        a.directory, a.version, name=a.name, registry=a.registry, card_path=a.card,
        embed=a.embed, upload=a.upload, sandbox=a.sandbox), indent=2)))


def _print_info(summary: dict) -> None:
    cfg = summary.pop("config")
    for key, value in summary.items():
        print(f"{key:18s} {json.dumps(value) if isinstance(value, (dict, list)) else value}")
    print(f"{'config':18s} {json.dumps(cfg)}")


def _api():
    from .generation import api

    return api


def _single():
    from .generation import single

    return single


def _publish():
    from .release import publish

    return publish


def _info(a) -> None:
    from .inspect.info import info

    _print_info(info(a.file))


def _verify(a) -> None:
    from .inspect.verify import verify

    verify(a.file)
    print(f"{a.file}: OK")


def _preview(a) -> None:
    from .inspect.preview import preview

    print(preview(a.file, a.out, a.samples, a.noise))


def new_parser(description: str) -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    """The ``nanoedx`` parser with its global options and an empty set of subcommands."""
    parser = argparse.ArgumentParser(prog="nanoedx", description=description)
    parser.add_argument("--version", action="version", version=f"nanoedx {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    return parser, parser.add_subparsers(dest="command", required=True)


def add_commands(sub) -> None:
    """Add the dataset subcommands to the ``nanoedx`` program's subparsers."""
    _add_generate(sub)
    _add_renoise(sub)
    _add_voxelize(sub)
    _add_publish(sub)
    p = sub.add_parser("info", help="summarize a database")
    p.add_argument("file")
    p.set_defaults(func=_info)
    p = sub.add_parser("verify", help="check a database's schema and consistency")
    p.add_argument("file")
    p.set_defaults(func=_verify)
    p = sub.add_parser("preview", help="draw slices, projections and noisy maps to a PNG")
    p.add_argument("file")
    p.add_argument("-o", "--out", required=True, help="PNG file to write")
    p.add_argument("--samples", type=lambda s: [int(v) for v in s.split(",")],
                   help="sample indices, e.g. 0,5,9")
    p.add_argument("--noise", help="noise level tag, e.g. c1000_b100")
    p.set_defaults(func=_preview)


def run(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse ``argv``, run the subcommand; user errors print one line and return 2."""
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    try:
        args.func(args)
    except NanoEDXError as err:
        print(f"nanoedx {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"nanoedx {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0
