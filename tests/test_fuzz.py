"""Fuzz the command line: damaged databases x every consumer, bad numbers for every numeric
option, bad user files and bad model files. Each case must end in success, or in exit status 2
with one line on stderr naming the problem; never a traceback, and never a half-written output.

Run alone, it prints how many cases ran and how many held (``pytest -s tests/test_fuzz.py``).
"""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from nanoedx_dataset import generate, load_dataset
from nanoedx_dataset.errors import NanoEDXError
from nanoedx_dataset.generation import single
from nanoedx_models.cli import build_parser, main

ANGLES = "--angles=-60:60:30"  # 5 tilts
FLIPS = 14  # bit flips at evenly spaced offsets of the file
CUTS = (0.01, 0.3, 0.7, 0.99)  # truncations, fraction of the file kept
TALLY: dict[str, list[int]] = {}  # group -> [cases, held]


def _tally(group: str, held: bool) -> None:
    count = TALLY.setdefault(group, [0, 0])
    count[0] += 1
    count[1] += held


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    total = [sum(c[0] for c in TALLY.values()), sum(c[1] for c in TALLY.values())]
    lines = [f"{g}: {held} of {n} held" for g, (n, held) in sorted(TALLY.items())]
    print("\nfuzz: " + "; ".join(lines) + f"; all: {total[1]} of {total[0]} held")


def run_cli(argv: list[str]) -> tuple[int, list[str], str | None]:
    """Run ``main(argv)``; returns (status, error lines, traceback type or None)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main(argv)
        except BaseException as exc:  # noqa: BLE001 -- a traceback: what the fuzz looks for
            return -1, [], f"{type(exc).__name__}: {exc}"
    lines = [line for line in err.getvalue().splitlines() if ": error:" in line
             or "Traceback" in line]
    return status, lines, None


def files_of(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def check(group: str, argv: list, folder: Path, keep: set[str] | None = None) -> int:
    """Run one case and hold it to the rule; ``folder`` is where outputs would appear."""
    before = files_of(folder) if keep is None else keep
    status, lines, crash = run_cli([str(a) for a in argv])
    after = files_of(folder)
    partial = sorted(p for p in after - before if ".partial" in p)
    ok = crash is None and not partial and (
        status == 0 or (status == 2 and len(lines) == 1 and lines[0].startswith("nanoedx ")))
    if status not in (0, None) and ok:  # a refused run leaves no new file
        ok = after <= before
    _tally(group, ok)
    assert ok, (f"{argv}: status {status}, crash {crash}, error lines {lines}, new files "
                f"{sorted(after - before)}")
    return status


# ---------------------------------------------------------------- damaged databases
@pytest.fixture(scope="module")
def db(tmp_path_factory) -> Path:
    """12 samples at 16^3, 5 tilts (every split present)."""
    path = tmp_path_factory.mktemp("fuzz") / "db.h5"
    return generate(path, None, n=12, size=16, seed=7, angles=(-60, -30, 0, 30, 60),
                    progress=False)


def _edit(path: Path, fn) -> None:
    with h5py.File(path, "r+") as f:
        fn(f)


def _replace(name: str, make):
    def edit(f):
        data = make(f[name][()])
        del f[name]
        f[name] = data
    return edit


EDITS = {
    "deleted volume": lambda f: f.__delitem__("volume"),
    "deleted projection": lambda f: f.__delitem__("projection"),
    "deleted angle": lambda f: f.__delitem__("angle"),
    "deleted element": lambda f: f.__delitem__("element"),
    "deleted split": lambda f: f.__delitem__("split"),
    "deleted params": lambda f: f.__delitem__("params"),
    "deleted counts": lambda f: f.__delitem__("noisy/c1000_b100/counts"),
    "deleted noise level": lambda f: f.__delitem__("noisy/c1000_b100"),
    "angles fewer than maps": _replace("angle", lambda a: a[:2]),
    "fractional float counts": _replace("noisy/c1000_b100/counts",
                                        lambda c: c.astype(np.float64) + 0.5),
    "float32 volume": _replace("volume", lambda v: v.astype(np.float32)),
    "projection half the rows": _replace("projection", lambda p: p[..., :8, :]),
    "catalogue one short": _replace("family", lambda c: c[:-1]),
    "config not JSON": lambda f: f.attrs.__setitem__("config", "{not json"),
    "unfinished": lambda f: f.attrs.__setitem__("complete", 0),
    "no format name": lambda f: f.attrs.__delitem__("format_name"),
}


@pytest.fixture(scope="module")
def damaged(db, tmp_path_factory) -> dict[str, bytes]:
    """Name -> bytes of a damaged copy of ``db``."""
    data = db.read_bytes()
    out = {}
    for k, offset in enumerate(np.linspace(0, len(data) - 1, FLIPS).astype(int)):
        flipped = bytearray(data)
        flipped[offset] ^= 0xFF if k % 2 else 0x10  # offsets through superblock, headers, data
        out[f"bit flip {k}"] = bytes(flipped)
    for k, frac in enumerate(CUTS):
        out[f"truncated {k}"] = data[: int(len(data) * frac)]
    work = tmp_path_factory.mktemp("edits")
    for name, fn in EDITS.items():
        path = work / "x.h5"
        path.write_bytes(data)
        _edit(path, fn)
        out[name] = path.read_bytes()
    return out


@pytest.fixture(scope="module")
def killed(tmp_path_factory) -> Path:
    """The ``.partial`` a generate killed by Ctrl-C left, made through the CLI."""
    folder = tmp_path_factory.mktemp("killed")
    real = single.make_sample

    def dies(cfg, i):
        if i == 3:
            raise KeyboardInterrupt
        return real(cfg, i)

    single.make_sample = dies
    try:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(["generate", "--n", "6", "--size", "16", ANGLES, "-o",
                           str(folder / "cut.h5")])
    finally:
        single.make_sample = real
    assert status == 130 and "--resume" in err.getvalue()
    return folder / "cut.h5.partial"


CONSUMERS = {
    "info": lambda p, o: ["info", p],
    "verify": lambda p, o: ["verify", p],
    "preview": lambda p, o: ["preview", p, "-o", o / "p.png", "--samples", "0,1"],
    "renoise": lambda p, o: ["renoise", p, "--counts", "50", "--background", "5"],
    "train": lambda p, o: ["train", p, "-o", o / "m.pt", "--preset", "tiny", "--epochs", "1",
                           "--maps-per-epoch", "2", "--batch-size", "2"],
    "benchmark": lambda p, o: ["benchmark", p, "--methods", "noisy", "--quick", "--no-figures",
                               "--iterations", "2", "-o", o / "board"],
}
DAMAGE = ([f"bit flip {k}" for k in range(FLIPS)] + [f"truncated {k}" for k in range(len(CUTS))]
          + list(EDITS) + ["killed .partial"])


def _damaged_file(name: str, damaged, killed, folder: Path) -> Path:
    if name == "killed .partial":
        path = folder / killed.name
        shutil.copy(killed, path)
        return path
    path = folder / "damaged.h5"
    path.write_bytes(damaged[name])
    return path


@pytest.mark.parametrize("consumer", CONSUMERS)
@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_database(damage, consumer, damaged, killed, tmp_path):
    path = _damaged_file(damage, damaged, killed, tmp_path)
    check("damaged database", CONSUMERS[consumer](path, tmp_path), tmp_path)


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_database_load_dataset(damage, damaged, killed, tmp_path):
    """The Python reader: a package error on opening; reading a damaged chunk of the lazy
    arrays raises h5py's OSError (or works)."""
    path = _damaged_file(damage, damaged, killed, tmp_path)
    held = True
    try:
        ds = load_dataset(path)
    except NanoEDXError:
        ds = None
    except Exception as exc:  # noqa: BLE001
        held = False
        reason = f"opening: {type(exc).__name__}: {exc}"
    if ds is not None:
        try:
            for var in [*ds.data_vars.values(), *ds.coords.values()]:
                var.values
        except (NanoEDXError, OSError):
            pass
        except Exception as exc:  # noqa: BLE001
            held = False
            reason = f"reading: {type(exc).__name__}: {exc}"
    _tally("damaged database", held)
    assert held, reason


# ---------------------------------------------------------------- bad numbers
@pytest.fixture(scope="module")
def maps(tmp_path_factory) -> Path:
    """A (5, 16, 16) tilt series of ~5000 counts per map, as .npy."""
    folder = tmp_path_factory.mktemp("maps")
    rng = np.random.default_rng(0)
    lam = np.full((5, 16, 16), 2.0)
    lam[:, 4:12, 4:12] += 70.0
    np.save(folder / "maps.npy", rng.poisson(lam).astype(np.uint16))
    return folder / "maps.npy"


def _base(command: str, db: Path, maps: Path, out: Path) -> list:
    """A valid, quick run of each command that has numeric options."""
    copy = out / "db.h5"
    if command == "renoise":
        shutil.copy(db, copy)
    return {
        "generate": ["generate", "--n", "2", "--size", "16", ANGLES, "-o", out / "g.h5"],
        "voxelize": ["voxelize", out / "missing.stl", "--size", "16", "-o", out / "v.h5"],
        "renoise": ["renoise", copy, "--counts", "50", "--background", "5"],
        "train": CONSUMERS["train"](db, out),
        "adapt": ["adapt", maps, "-o", out / "a.pt", "--steps", "1", "--batch-size", "1",
                  "--crop", "16", "--device", "cpu"],
        "denoise": ["denoise", maps, ANGLES, "-o", out / "d.npy"],
        "align": ["align", maps, ANGLES, "-o", out / "al.npy"],
        "reconstruct": ["reconstruct", maps, ANGLES, "--iterations", "2", "-o", out / "r.npy"],
        "benchmark": CONSUMERS["benchmark"](db, out),
        "evaluate": ["evaluate", maps, "--methods", "noisy", "--counts", "500"],
    }[command]


def _numeric_options() -> list[tuple[str, str]]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return [(name, opt.option_strings[-1]) for name, p in sub.choices.items()
            for opt in p._actions if opt.type is not None and opt.option_strings
            and opt.help != "==SUPPRESS=="
            and opt.option_strings[-1] not in ("--angles", "--samples")]


NUMERIC = _numeric_options()
BAD_NUMBERS = ("-1", "nan", "inf", "1e300", "0")


def test_every_numeric_option_is_fuzzed():
    commands = {c for c, _ in NUMERIC}
    assert {"generate", "renoise", "train", "align", "denoise", "reconstruct", "benchmark",
            "evaluate", "voxelize"} <= commands
    assert len(NUMERIC) >= 35


@pytest.mark.parametrize("value", BAD_NUMBERS)
@pytest.mark.parametrize("command,option", NUMERIC)
def test_bad_number(command, option, value, db, maps, tmp_path):
    check("bad number", [*_base(command, db, maps, tmp_path), option, value], tmp_path)


@pytest.mark.parametrize("samples", ["0,99", "-1", "x", "0,,1", ""])
def test_bad_sample_indices(samples, db, tmp_path):
    check("bad number", ["preview", db, "-o", tmp_path / "p.png", "--samples", samples],
          tmp_path)


@pytest.mark.parametrize("angles", ["=-1.2:1.2:0.3", "=-100:100:10", "=10:-10:5", "=a,b",
                                    "=0,0,0", "="])
def test_bad_angles(angles, tmp_path):
    check("bad number", ["generate", "--n", "1", "--size", "16", f"--angles{angles}", "-o",
                         tmp_path / "g.h5"], tmp_path)


# ---------------------------------------------------------------- bad user files
def _user_files(folder: Path, maps: Path) -> dict[str, list]:
    """Name -> the input arguments of a bad (or odd) user file."""
    good = np.load(maps)
    np.save(folder / "objects.npy", np.array([{"a": 1}] * 3, dtype=object), allow_pickle=True)
    (folder / "garbage.npy").write_bytes(np.random.default_rng(1).bytes(900))
    cut = (folder / "cut.npy")
    np.save(cut, good)
    cut.write_bytes(cut.read_bytes()[:700])
    (folder / "empty.npy").write_bytes(b"")
    for name, data in {"text.npy": np.array([["a"] * 16] * 16)[None].repeat(5, 0),
                       "complex.npy": good.astype(np.complex64),
                       "bool.npy": good > 3, "zero-maps.npy": np.zeros((0, 16, 16)),
                       "one-pixel.npy": good[:, :1, :1], "2d.npy": good[0],
                       "5d.npy": good[None, None], "nan.npy": np.where(good > 50, np.nan, good),
                       "negative.npy": good.astype(np.int32) - 40,
                       "fraction.npy": good / 3.0, "all-zero.npy": np.zeros((5, 16, 16)),
                       "huge-counts.npy": good.astype(np.float64) * 1e12}.items():
        np.save(folder / name, data)
    (folder / "garbage.tif").write_bytes(b"II*\0" + np.random.default_rng(2).bytes(500))
    (folder / "garbage.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 300)
    for name, attrs in {"words.h5": {"angles": "a,b,c,d,e"}, "few.h5": {"angles": [0.0, 1.0]},
                        "nested.h5": {"angles": np.zeros((5, 2))},
                        "names.h5": {"elements": 7, "metadata": "{bad json"}}.items():
        with h5py.File(folder / name, "w") as f:
            f["maps"] = good
            for k, v in attrs.items():
                f["maps"].attrs[k] = v
    (folder / "words.txt").write_text("zero ten twenty thirty forty")
    (folder / "radians.txt").write_text("-1.2 -0.6 0 0.6 1.2")
    np.save(folder / "angles-str.npy", np.array(["x"] * 5))
    m = str(maps)
    return {
        "pickled objects": [folder / "objects.npy"], "random bytes": [folder / "garbage.npy"],
        "truncated npy": [folder / "cut.npy"], "empty npy": [folder / "empty.npy"],
        **{n.removesuffix(".npy"): [folder / n, ANGLES] for n in (
            "text.npy", "complex.npy", "bool.npy", "zero-maps.npy", "one-pixel.npy", "2d.npy",
            "5d.npy", "nan.npy", "negative.npy", "fraction.npy", "all-zero.npy",
            "huge-counts.npy")},
        "garbage tif": [folder / "garbage.tif"], "garbage h5": [folder / "garbage.h5"],
        "words as angles attribute": [folder / "words.h5"],
        "two angles for five maps": [folder / "few.h5"],
        "2-D angles attribute": [folder / "nested.h5"],
        "odd element names, metadata": [folder / "names.h5", ANGLES],
        "text angles file": [m, "--angles", folder / "words.txt"],
        "radians file": [m, "--angles", folder / "radians.txt"],
        "radians file, --radians": [m, "--angles", folder / "radians.txt", "--radians"],
        "string angles npy": [m, "--angles", folder / "angles-str.npy"],
        "angles beyond 90": [m, "--angles=-120:120:60"],
        "radians on the command line": [m, "--angles=-1.2:1.2:0.6"],
        "radians, --degrees": [m, "--angles=-1.2:1.2:0.6", "--degrees"],
        "missing file": [folder / "nothing.npy", ANGLES],
        "unknown format": [folder / "words.txt", ANGLES],
        "thinned above its counts": [m, ANGLES, "--downsample-counts", "1e6"],
        "thinned past uint16": [folder / "huge-counts.npy", ANGLES, "--downsample-counts",
                                "1e12"],
    }


@pytest.fixture(scope="module")
def user_files(tmp_path_factory, maps) -> dict[str, list]:
    return _user_files(tmp_path_factory.mktemp("user"), maps)


USER_NAMES = [
    "pickled objects", "random bytes", "truncated npy", "empty npy", "text", "complex", "bool",
    "zero-maps", "one-pixel", "2d", "5d", "nan", "negative", "fraction", "all-zero",
    "huge-counts", "garbage tif", "garbage h5", "words as angles attribute",
    "two angles for five maps", "2-D angles attribute", "odd element names, metadata",
    "text angles file", "radians file", "radians file, --radians", "string angles npy",
    "angles beyond 90", "radians on the command line", "radians, --degrees", "missing file",
    "unknown format", "thinned above its counts", "thinned past uint16"]


@pytest.mark.parametrize("command", ["denoise", "reconstruct", "evaluate"])
@pytest.mark.parametrize("case", USER_NAMES)
def test_bad_user_file(case, command, user_files, tmp_path):
    args = user_files[case]
    if command == "evaluate":
        if any(str(a).startswith(("--angles=-", "--angles", "--r", "--d")) and a != ANGLES
               for a in args):
            pytest.skip("evaluate takes no angles and does not thin")
        argv = ["evaluate", *(a for a in args if a != ANGLES), "--methods", "noisy",
                "--counts", "100", "-o", tmp_path / "e.json"]
    else:
        argv = [command, *args, "-o", tmp_path / "out.npy"]
        if command == "reconstruct":
            argv += ["--iterations", "2"]
    check("bad user file", argv, tmp_path)


def test_radians_are_refused_unless_said(user_files, tmp_path):
    m = user_files["radians file"][0]
    status, lines, _ = run_cli(["reconstruct", m, "--angles=-1.2:1.2:0.6", "-o",
                                str(tmp_path / "r.npy")])
    assert status == 2 and "look like radians" in lines[0] and "--radians" in lines[0]
    assert run_cli(["reconstruct", m, "--angles=-1.2:1.2:0.6", "--radians", "--iterations",
                    "1", "-o", str(tmp_path / "r.h5")])[0] == 0
    with h5py.File(tmp_path / "r.h5") as f:  # converted to degrees
        np.testing.assert_allclose(f["data"].attrs["tilt_angles"], np.degrees([-1.2, -0.6, 0,
                                                                               0.6, 1.2]))


# ---------------------------------------------------------------- bad model files
@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    import torch

    from nanoedx_models import UNet, save_model

    folder = tmp_path_factory.mktemp("models")
    good = save_model(folder / "good.pt", UNet.from_preset("tiny"), {})
    blob = torch.load(good, weights_only=True)
    out = {"good": good}

    def variant(name, change):
        b = {**blob, "state_dict": dict(blob["state_dict"])}
        change(b)
        torch.save(b, folder / f"{name}.pt")
        out[name] = folder / f"{name}.pt"

    first = next(iter(blob["state_dict"]))
    variant("nan weights", lambda b: b["state_dict"].__setitem__(
        first, torch.full_like(b["state_dict"][first], float("nan"))))
    variant("inf weights", lambda b: b["state_dict"].__setitem__(
        first, torch.full_like(b["state_dict"][first], float("inf"))))
    variant("other format", lambda b: b.__setitem__("format", "keras"))
    variant("format version 99", lambda b: b.__setitem__("format_version", 99))
    variant("config of another preset", lambda b: b.__setitem__("config", {"depth": 4,
                                                                           "base": 16}))
    variant("nonsense config", lambda b: b.__setitem__("config", {"depth": -3, "wings": 2}))
    variant("config not a dict", lambda b: b.__setitem__("config", 5))
    variant("no weights", lambda b: b.pop("state_dict"))
    variant("weights not tensors", lambda b: b.__setitem__("state_dict", {first: "x"}))
    torch.save(torch.zeros(3), folder / "tensor.pt")
    out["a tensor, not a dict"] = folder / "tensor.pt"
    (folder / "text.pt").write_text("not torch")
    out["not torch"] = folder / "text.pt"
    (folder / "cut.pt").write_bytes(good.read_bytes()[:300])
    out["truncated"] = folder / "cut.pt"
    out["missing"] = folder / "missing.pt"
    return out


MODEL_CASES = ["good", "nan weights", "inf weights", "other format", "format version 99",
               "config of another preset", "nonsense config", "config not a dict",
               "no weights", "weights not tensors", "a tensor, not a dict", "not torch",
               "truncated", "missing"]


@pytest.mark.parametrize("use", ["denoise", "benchmark", "evaluate", "train --resume"])
@pytest.mark.parametrize("case", MODEL_CASES)
def test_bad_model_file(case, use, models, db, maps, tmp_path):
    path = models[case]
    if use == "denoise":
        argv = ["denoise", maps, ANGLES, "--model", path, "-o", tmp_path / "d.npy"]
    elif use == "benchmark":
        argv = ["benchmark", db, "--methods", f"noisy,unet:{path}", "--dims", "2d", "--quick",
                "--no-figures", "-o", tmp_path / "board"]
    elif use == "evaluate":
        argv = ["evaluate", maps, "--methods", f"noisy,unet:{path}", "--counts", "500"]
    else:  # the file as a checkpoint to resume from
        if path.exists():
            shutil.copy(path, tmp_path / "m.pt.ckpt")
        argv = [*CONSUMERS["train"](db, tmp_path), "--resume"]
    status = check("bad model file", argv, tmp_path, files_of(tmp_path))
    if case != "good" or use == "train --resume":  # a model file is not a checkpoint
        assert status == 2  # a bad model is never scored: the command stops before work
