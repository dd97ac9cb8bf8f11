"""The dataset subcommands of the ``nanoedx`` program (``nanoedx_models.cli`` is the program).

Each subcommand parses its arguments and calls one public function, imported only when the
subcommand runs, so ``nanoedx --help`` stays fast. The conventions every subcommand keeps:

* inputs are positional, every output is ``-o/--out``, and ``--overwrite`` is the one way to
  replace an existing output; no command ever writes onto one of its inputs
  (:func:`guard_outputs`, :func:`staged_folder`: the one rule, for files and folders);
* every option has a help text and shows its default;
* an error a user can cause (a bad option, a damaged or foreign file, too little memory) is one
  line on stderr and exit status 2 (:func:`run`); an interrupted run says how to resume it.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import math
import os
import shutil
import sys
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from . import __version__
from .errors import ConfigError, NanoEDXError, OutputExistsError

OUT_HELP = "output file"
# errors of the system rather than of a file's content: no space, no permission, ...
SYSTEM_ERRNOS = (errno.ENOSPC, errno.EACCES, errno.EPERM, errno.EROFS, errno.EDQUOT)
RADIANS_LIMIT = 3.2  # |angle| below this at every one of more than 3 tilts: radians, likely


# ---------------------------------------------------------------- parser conventions
def _presets() -> str:
    from .generation.config import PRESETS

    return ", ".join(PRESETS)


# "{name}" in a help text -> filled in when the help is shown (what it lists needs imports
# that `nanoedx --help` should not pay for)
LAZY_HELP = {"{presets}": _presets}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default after its help (not for unset or flag options), and fills
    in the :data:`LAZY_HELP` fields of a help text."""

    def _get_help_string(self, action):
        text = action.help or ""
        for key, fill in LAZY_HELP.items():
            text = text.replace(key, fill()) if key in text else text
        if ("%(default)" in text or "default" in text or not action.option_strings
                or any(action.default is v for v in (None, False, argparse.SUPPRESS))):
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line and exit 2, like every error."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def numeric(cast=float, low: float | None = None, above: float | None = None,
            high: float | None = None):
    """An argparse type: a finite number (``cast`` int or float) in the given range.

    Whole numbers are at most 2**53 unless ``high`` says otherwise.
    """
    kind = "a whole number" if cast is int else "a number"
    high = 2**53 if high is None and cast is int else high

    def parse(text: str):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {kind}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if cast is int:
            if not value.is_integer():
                raise argparse.ArgumentTypeError(f"{text!r} is not {kind}")
            value = int(text) if text.strip().lstrip("+-").isdigit() else int(value)
        if low is not None and value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low:g}, got {text}")
        if above is not None and value <= above:
            raise argparse.ArgumentTypeError(f"must be more than {above:g}, got {text}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high:g}, got {text}")
        return value

    parse.__name__ = kind
    return parse


POSITIVE = numeric(float, above=0)  # counts per map, ...
NONNEGATIVE = numeric(float, low=0)  # background counts, ...
COUNT = numeric(int, low=1)  # samples, voxels, epochs, ...
SEED = numeric(int, low=0)
MAX_WORKERS = max(64, 4 * (os.cpu_count() or 1))  # local processes: more would fork-bomb
WORKERS = numeric(int, low=1, high=MAX_WORKERS)


def add_out(p, help: str = OUT_HELP, required: bool = True, aliases: tuple[str, ...] = ()):
    """``-o/--out`` (and old spellings kept as hidden aliases) plus ``--overwrite``."""
    p.add_argument("-o", "--out", required=required and not aliases, help=help)
    for alias in aliases:
        p.add_argument(alias, dest="out", help=argparse.SUPPRESS)
    if aliases and required:
        p.set_defaults(_out_required=True)
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing output (an input is never overwritten)")


def add_angle_unit(p) -> None:
    """``--radians`` / ``--degrees``: what tilt angles that look like radians really are."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--radians", dest="angle_unit", action="store_const", const="radians",
                   help="the tilt angles are in radians: convert them to degrees")
    g.add_argument("--degrees", dest="angle_unit", action="store_const", const="degrees",
                   help="the tilt angles are in degrees, even if all are small (|a| < 3.2)")


def tilt_degrees(angles, unit: str | None = None) -> tuple[float, ...] | None:
    """Tilt angles in degrees, refusing a series that looks like radians unless ``unit`` says.

    A series of more than 3 tilts all within +-3.2 is most likely in radians (a tilt range of
    a few degrees is rare); ``unit="radians"`` converts it, ``unit="degrees"`` keeps it.
    """
    if angles is None:
        return None
    values = [float(a) for a in angles]
    if unit == "radians":
        return tuple(math.degrees(a) for a in values)
    if unit is None and len(values) > 3 and all(abs(a) < RADIANS_LIMIT for a in values):
        raise ConfigError(f"the tilt angles {min(values):g} to {max(values):g} look like "
                          "radians (nanoedx reads degrees): pass --radians to convert them, or "
                          "--degrees if they are degrees")
    return tuple(values)


# ---------------------------------------------------------------- the one output rule
def file_part(text) -> Path:
    """The file of a path, without an HDF5 dataset suffix (``file.h5:/maps`` -> ``file.h5``)."""
    head, sep, tail = str(text).rpartition(":")
    return Path(head) if sep and head and tail.startswith("/") else Path(str(text))


def _same(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b) or a.resolve() == b.resolve()
    except OSError:
        return False


def guard_outputs(outputs, inputs=(), overwrite: bool = False) -> list[Path]:
    """The one output rule of every command, checked before any work.

    An output is never one of the inputs (not even with ``overwrite``), no two outputs are
    the same file, and an existing output is replaced only with ``overwrite``; the folder of
    each output must exist. ``None`` entries are skipped; ``file.h5:/path`` names a file.

    Returns
    -------
    list of Path
        The output files.
    """
    ins = [file_part(i) for i in inputs if i is not None]
    done: list[Path] = []
    for out in outputs:
        if out is None:
            continue
        path = file_part(out)
        for i in ins:
            if _same(path, i):
                raise ConfigError(f"{path} is an input of this command: write the output to "
                                  "another file (an input is never overwritten, even with "
                                  "--overwrite)")
        if any(_same(path, d) for d in done):
            raise ConfigError(f"{path} is given for two outputs; give each its own file")
        if path.is_dir():
            raise OutputExistsError(f"{path} is a folder; give a file name for the output")
        if path.exists() and not overwrite:
            raise OutputExistsError(f"{path} exists; pass --overwrite to replace it, or choose "
                                    "another name")
        if not path.parent.is_dir():
            raise ConfigError(f"the output folder {path.parent} does not exist; create it first")
        done.append(path)
    return done


@contextmanager
def staged_folder(out, own: str, inputs=(), overwrite: bool = False) -> Iterator[Path]:
    """A folder output written whole or not at all: the run writes into ``OUT.partial/``.

    ``own`` is the glob of the files a run of the command writes (e.g. ``leaderboard*``). A
    folder already holding such files is refused without ``overwrite``; with it, those old
    files are removed when the new run has succeeded, so the folder holds only the new run's
    files (other files are left alone). If the run fails, nothing in ``out`` changes.
    """
    out = Path(out)
    for i in inputs:
        if i is not None and _same(out, file_part(i)):
            raise ConfigError(f"{out} is an input of this command: choose another folder")
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out} is a file; --out names a folder here")
    old = sorted(out.glob(own)) if out.is_dir() else []
    if old and not overwrite:
        raise OutputExistsError(f"{out} holds the files of an earlier run ({old[0].name}, ...); "
                                "pass --overwrite to replace them, or choose another folder")
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        yield staging
        out.mkdir(parents=True, exist_ok=True)
        for path in sorted(out.glob(own)):
            path.unlink()
        for path in sorted(staging.iterdir()) if staging.is_dir() else []:
            os.replace(path, out / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def check_room(out, nbytes: float, what: str) -> None:
    """Refuse a run that would write more than the free space of ``out``'s folder."""
    folder = file_part(out).parent
    try:
        free = shutil.disk_usage(folder if folder.is_dir() else Path.cwd()).free
    except OSError:
        return
    if nbytes > free:
        raise ConfigError(f"{what} needs at least {nbytes / 1e9:.3g} GB on disk, but only "
                          f"{free / 1e9:.3g} GB are free in {folder}; make fewer or smaller "
                          "samples, or write elsewhere")


# ---------------------------------------------------------------- subcommands
def _angles(text: str):
    from .generation.config import parse_angles

    try:
        return parse_angles(text)
    except NanoEDXError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def _indices(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of sample indices, e.g. "
                                         "0,5,9") from None
    return values


def _generate(a) -> None:
    from .generation import api
    from .generation.single import resolve_config
    from .simulate.haadf import HaadfOptions

    angles = tilt_degrees(a.angles, a.angle_unit)
    cfg = resolve_config(a.preset, n=a.n, size=a.size, counts=a.counts,
                         background=a.background, angles=angles, seed=a.seed,
                         backend=a.backend, dataset_version=a.dataset_version,
                         haadf=HaadfOptions() if a.haadf else None)
    if a.shard_size is None and a.scheduler is None and not a.resume:
        guard_outputs([a.out], overwrite=a.overwrite)
    # projections are the bulk of a file; compressed, at least a twelfth of their float32 size
    check_room(a.out, cfg.n * 2 * len(cfg.angles) * cfg.size**2 * 4 / 12,
               f"{cfg.n} samples at {cfg.size}^3")
    print(api.generate(a.out, a.preset, n=a.n, size=a.size, counts=a.counts,
                       background=a.background, angles=angles, seed=a.seed, backend=a.backend,
                       dataset_version=a.dataset_version, workers=a.workers,
                       shard_size=a.shard_size, client=a.scheduler, overwrite=a.overwrite,
                       resume=a.resume, mesh_dir=a.mesh_dir, haadf=a.haadf))


def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="generate a simulated database (HDF5)")
    p.add_argument("--preset", default="mini",
                   help="starting config ({presets}); the options below override it")
    p.add_argument("--n", type=COUNT, help="number of samples (default: the preset's)")
    p.add_argument("--size", type=COUNT, help="voxels per axis, >= 16 (default: the preset's)")
    p.add_argument("--counts", type=POSITIVE, help="signal counts per map on average "
                   "(default: the preset's, 1000)")
    p.add_argument("--background", type=NONNEGATIVE,
                   help="background counts per map (default: the preset's, 100)")
    p.add_argument("--angles", type=_angles,
                   help="tilt angles in degrees: --angles=START:STOP:STEP or --angles=a,b,c "
                        "(default -75:75:10; write the = when the value starts with -)")
    add_angle_unit(p)
    p.add_argument("--seed", type=SEED, help="random seed (default: the preset's, 0)")
    p.add_argument("--backend",
                   help="voxelization backend: analytic (default; exact signed distances) or "
                        "blender (the paper's Blender meshes voxelized with VTK; needs "
                        'pip install "nanoedx[blender]")')
    p.add_argument("--mesh-dir", help="with --backend blender: also save each particle's "
                                      "meshes (binary STL) in this folder")
    p.add_argument("--haadf", action="store_true",
                   help="also simulate the HAADF-STEM image recorded with every tilt (Z^1.7 "
                        "contrast, support film, probe blur, its own noise; stored as the "
                        "variable haadf); the EDX arrays are the same as without")
    p.add_argument("--dataset-version", help="semantic version of the database "
                   "(default: the preset's, 0.1.0)")
    p.add_argument("--workers", type=WORKERS, default=1, help="local worker processes")
    p.add_argument("--shard-size", type=numeric(int),
                   help="write one file per N samples into the folder --out, plus index.json; "
                        "rerunning the command redoes only the missing shards")
    _add_scheduler(p)
    add_out(p, "output HDF5 file (a folder with --shard-size)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run "
                   "(OUT.partial)")
    p.set_defaults(func=_generate, _resume_hint=True)


def _voxelize(a) -> None:
    from .generation import single

    guard_outputs([a.out], [a.mesh], a.overwrite)
    print(single.generate_from_mesh(
        a.mesh, a.out, a.size, extent=a.extent, voxel_size=a.voxel_size, counts=a.counts,
        background=a.background, angles=tilt_degrees(a.angles, a.angle_unit), seed=a.seed,
        overwrite=a.overwrite))


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
    p.add_argument("--size", type=COUNT, required=True, help="voxels per axis (>= 16)")
    add_out(p, "output HDF5 database")
    p.add_argument("--extent", type=numeric(float, above=0, high=0.95), default=0.9,
                   help="diameter of the mesh's enclosing sphere as a fraction of the field, "
                        "at most 0.95")
    p.add_argument("--voxel-size", type=POSITIVE,
                   help="mesh units per voxel: keep the mesh's own scale instead of --extent")
    p.add_argument("--counts", type=POSITIVE, default=1000.0,
                   help="signal counts per map on average")
    p.add_argument("--background", type=NONNEGATIVE, default=100.0,
                   help="background counts per map")
    p.add_argument("--angles", type=_angles, help="tilt angles as for generate "
                                                  "(default -75:75:10)")
    add_angle_unit(p)
    p.add_argument("--seed", type=SEED, default=0, help="noise seed")
    p.set_defaults(func=_voxelize, _inputs=("mesh",))


def _add_scheduler(p) -> None:
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="map the shards over the dask.distributed cluster of this scheduler, "
                        "e.g. tcp://head:8786 (workers need a shared file system; "
                        'pip install "nanoedx[distributed]")')


def _renoise(a) -> None:
    from .generation import api

    print(api.renoise(a.file, a.counts, a.background, seed=a.seed, overwrite=a.overwrite,
                      client=a.scheduler, workers=a.workers))


def _add_renoise(sub) -> None:
    p = sub.add_parser("renoise", help="add a noise level to a database")
    p.add_argument("file", help="database file, or folder of a sharded one")
    p.add_argument("--counts", type=POSITIVE, required=True, help="signal counts per map")
    p.add_argument("--background", type=NONNEGATIVE, required=True,
                   help="background counts per map")
    p.add_argument("--seed", type=SEED, help="noise seed (default: derived from the file's seed)")
    p.add_argument("--overwrite", action="store_true", help="replace the level if present")
    p.add_argument("--workers", type=WORKERS, default=1,
                   help="local processes renoising the shards of a sharded folder")
    _add_scheduler(p)
    p.set_defaults(func=_renoise)


def _publish(a) -> None:
    from .release import publish

    if a.dataset_version is None:
        raise ConfigError("give the release's version: --dataset-version X.Y.Z")
    print(json.dumps(publish.publish(
        a.directory, a.dataset_version, name=a.name, registry=a.registry, card_path=a.card,
        embed=a.embed, upload=a.upload, sandbox=a.sandbox), indent=2))


def _add_publish(sub) -> None:
    p = sub.add_parser("publish", help="make a release of generated files (registry, card, "
                       "Zenodo metadata; --upload deposits on Zenodo)")
    p.add_argument("directory", help="folder with the release's .h5 files")
    p.add_argument("--dataset-version", help="semantic version X.Y.Z of the release (required)")
    p.add_argument("--version", dest="dataset_version", help=argparse.SUPPRESS)  # old spelling
    p.add_argument("--name", help="release name (default: the matching preset)")
    p.add_argument("--registry", help="registry JSON to update (default: the package's)")
    p.add_argument("--card", default="DATASET_CARD.md" if Path("DATASET_CARD.md").exists()
                   else None, help="dataset card whose versions table to fill")
    p.add_argument("--embed", action="store_true", help="ship the files inside the package")
    p.add_argument("--upload", action="store_true", help="deposit on Zenodo ($ZENODO_TOKEN)")
    p.add_argument("--sandbox", action="store_true", help="use sandbox.zenodo.org")
    p.set_defaults(func=_publish, _inputs=("directory",))


def _print_info(summary: dict) -> None:
    cfg = summary.pop("config")
    for key, value in summary.items():
        print(f"{key:18s} {json.dumps(value) if isinstance(value, (dict, list)) else value}")
    print(f"{'config':18s} {json.dumps(cfg)}")


def _info(a) -> None:
    from .inspect.info import info

    _print_info(info(a.file))


def _verify(a) -> None:
    from .inspect.verify import verify

    verify(a.file)
    print(f"{a.file}: OK")


def _preview(a) -> None:
    from .inspect.preview import preview

    guard_outputs([a.out], [a.file], a.overwrite)
    print(preview(a.file, a.out, a.samples, a.noise))


def new_parser(description: str) -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    """The ``nanoedx`` parser with its global options and an empty set of subcommands."""
    parser = Parser(prog="nanoedx", description=description)
    parser.add_argument("--version", action="version", version=f"nanoedx {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log progress details; show the traceback of an error")
    return parser, parser.add_subparsers(dest="command", required=True, metavar="COMMAND")


def add_commands(sub) -> None:
    """Add the dataset subcommands to the ``nanoedx`` program's subparsers."""
    _add_generate(sub)
    _add_renoise(sub)
    _add_voxelize(sub)
    _add_publish(sub)
    p = sub.add_parser("info", help="summarize a database")
    p.add_argument("file", help="database file")
    p.set_defaults(func=_info)
    p = sub.add_parser("verify", help="check a database's schema and consistency")
    p.add_argument("file", help="database file")
    p.set_defaults(func=_verify)
    p = sub.add_parser("preview", help="draw slices, projections and noisy maps to a PNG")
    p.add_argument("file", help="database file")
    add_out(p, "PNG file to write")
    p.add_argument("--samples", type=_indices,
                   help="sample indices, e.g. 0,5,9 (default: four families)")
    p.add_argument("--noise", help="noise level tag, e.g. c1000_b100 (default: the first)")
    p.set_defaults(func=_preview)


# ---------------------------------------------------------------- running a command
def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


def _inputs(args) -> list[str]:
    names = getattr(args, "_inputs", ("file", "input", "data"))
    found = []
    for name in names:
        value = getattr(args, name, None)
        found += [str(v) for v in (value if isinstance(value, list) else [value]) if v]
    return found


def _damaged(args, err: BaseException) -> str:
    """The message of an error raised while reading a damaged or foreign file."""
    where = getattr(err, "filename", None) or " or ".join(_inputs(args)) or "the input"
    what = str(err) or type(err).__name__
    fix = getattr(args, "_fix", None) or (
        f"the file is damaged or not what `nanoedx {args.command}` reads: check it with "
        f"`nanoedx verify {where}`, and regenerate or download it again")
    return f"cannot read {where} ({type(err).__name__}: {_one_line(what)}); {fix}"


def _interrupted(args) -> str:
    if getattr(args, "_resume_hint", False) and getattr(args, "out", None):
        if getattr(args, "shard_size", None) or getattr(args, "scheduler", None):
            return (f"interrupted; the finished shards are kept in {args.out}: rerun the same "
                    "command to make only the missing ones")
        kept = f"{args.out}.ckpt" if args.command in ("train", "adapt") else f"{args.out}.partial"
        return f"interrupted; the work done is kept in {kept}: rerun the same command with " \
               "--resume to continue"
    return "interrupted"


def _end_progress_bars() -> None:
    """Close the progress bars an error left open, so that its message starts a line."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", None) or []):
        try:
            bar.close()
        except Exception:  # noqa: BLE001 -- a bar that cannot redraw is no reason to fail
            pass


def run(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the subcommand; returns the exit status.

    A user's error is one line on stderr and status 2: the package's errors, a usage error,
    too little memory, and the OSError, KeyError and ValueError raised while reading a damaged
    or foreign file (named in the message, with the fix; ``-v`` also shows the traceback).
    Other exceptions are bugs and keep their traceback. Ctrl-C is status 130, with a hint to
    resume where the command can.
    """
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:
        return 0 if stop.code is None else int(stop.code) if isinstance(stop.code, int) else 2
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    prefix = f"nanoedx {args.command}: error:"
    try:
        try:
            if getattr(args, "_out_required", False) and args.out is None:
                raise ConfigError("the output is missing: give -o/--out")
            args.func(args)
        finally:
            _end_progress_bars()
    except KeyboardInterrupt:
        print(f"nanoedx {args.command}: {_interrupted(args)}", file=sys.stderr)
        return 130
    except NanoEDXError as err:
        if args.verbose:
            traceback.print_exc()
        print(f"{prefix} {_one_line(err)}", file=sys.stderr)
        return 2
    except MemoryError as err:
        if args.verbose:
            traceback.print_exc()
        print(f"{prefix} not enough memory ({_one_line(err) or 'MemoryError'}); use smaller "
              "inputs or sizes", file=sys.stderr)
        return 2
    except (OSError, KeyError, ValueError, EOFError) as err:
        if args.verbose:
            traceback.print_exc()
        if isinstance(err, OSError) and err.errno in SYSTEM_ERRNOS:
            print(f"{prefix} {err.strerror}: {err.filename or _inputs(args)}; free some space "
                  "or fix the permissions, or choose another folder", file=sys.stderr)
            return 2
        print(f"{prefix} {_damaged(args, err)}", file=sys.stderr)
        return 2
    return 0
