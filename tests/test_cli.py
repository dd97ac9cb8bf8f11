import argparse
import importlib.util
import json
import subprocess
import sys
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import h5py
import numpy as np
import pytest

from nanoedx_dataset import DatasetNotFoundError, draw_spec, generate, load_dataset, voxelize
from nanoedx_dataset.errors import ConfigError, MissingExtraError
from nanoedx_dataset.release import fetch
from nanoedx_dataset.release import registry as release_registry
from nanoedx_dataset.store.files import sha256
from nanoedx_models.cli import build_parser, main

from conftest import fail_at_sample
from servers import file_server, serving


def error_line(capsys) -> str:
    """The one line a failed command printed on stderr."""
    lines = [line for line in capsys.readouterr().err.splitlines()
             if line.strip() and "%|" not in line and "\x1b" not in line]  # progress bars
    assert len(lines) == 1 and lines[0].startswith("nanoedx "), lines
    return lines[0]


def test_generate_info_verify_renoise_preview(tmp_path, capsys):
    out = tmp_path / "db.h5"
    assert main(["generate", "--n", "4", "--size", "24", "--angles=-60:60:30",
                 "--seed", "3", "-o", str(out)]) == 0
    assert main(["info", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "samples            4" in shown and "[-60.0, -30.0, 0.0, 30.0, 60.0]" in shown
    assert main(["renoise", str(out), "--counts", "300", "--background", "30"]) == 0
    assert main(["verify", str(out)]) == 0
    assert "OK" in capsys.readouterr().out
    png = tmp_path / "fig.png"
    assert main(["preview", str(out), "-o", str(png), "--noise", "c300_b30"]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["preview", str(out), "-o", str(png)]) == 2  # exists: --overwrite replaces
    assert "--overwrite" in error_line(capsys)
    assert main(["preview", str(out), "-o", str(png), "--overwrite", "--samples", "1"]) == 0
    assert main(["preview", str(out), "-o", str(tmp_path / "p.png"), "--samples", "0,99"]) == 2
    assert "sample indices [99] are out of range" in error_line(capsys)


@pytest.mark.parametrize("args,match", [
    (["--preset", "huge"], "unknown preset 'huge'"),
    (["--size", "8"], "size must be at least 16"),
    (["--counts", "0"], "argument --counts: must be more than 0"),
    (["--background", "-2"], "argument --background: must be at least 0"),
    (["--n", "nan"], "argument --n: 'nan' is not a finite number"),
    (["--seed", "1.5"], "argument --seed: '1.5' is not a whole number"),
    (["--workers", "100000"], "argument --workers: must be at most"),
    (["--angles=-100:100:10"], "strictly between -90 and 90"),
    (["--angles=-1.2:1.2:0.4"], "look like radians"),
    (["--n", "1000000000000"], "on disk"),
])
def test_bad_generate_options_exit_2_with_one_line_and_no_file(tmp_path, capsys, args, match):
    out = tmp_path / "x.h5"
    assert main(["generate", "--n", "2", "--size", "16", *args, "-o", str(out)]) == 2
    assert match in error_line(capsys)
    assert list(tmp_path.iterdir()) == []


def test_radians_are_converted_when_said(tmp_path):
    out = tmp_path / "r.h5"
    assert main(["generate", "--n", "1", "--size", "16", "--angles=-1:1:0.5", "--radians",
                 "-o", str(out)]) == 0
    np.testing.assert_allclose(load_dataset(out).angle.values,
                               np.degrees([-1, -0.5, 0, 0.5, 1]))
    assert main(["generate", "--n", "1", "--size", "16", "--angles=-1:1:0.5", "--degrees",
                 "-o", str(tmp_path / "d.h5")]) == 0
    np.testing.assert_allclose(load_dataset(tmp_path / "d.h5").angle.values,
                               [-1, -0.5, 0, 0.5, 1])


def test_not_a_database_exits_2(tmp_path, capsys):
    bogus = tmp_path / "bogus.h5"
    bogus.write_text("nope")
    for cmd in (["info", str(bogus)], ["verify", str(bogus)],
                ["renoise", str(bogus), "--counts", "10", "--background", "1"]):
        assert main(cmd) == 2
        assert "not an HDF5 file" in error_line(capsys)


def _edited(tiny_db, tmp_path, fn) -> Path:
    path = tmp_path / "edited.h5"
    path.write_bytes(tiny_db.read_bytes())
    with h5py.File(path, "r+") as f:
        fn(f)
    return path


def test_verify_checks_dtypes_shapes_angles_and_whole_counts(tiny_db, tmp_path, capsys):
    def fractional(f):
        counts = f["noisy/c1000_b100/counts"][()] + 0.25
        del f["noisy/c1000_b100/counts"]
        f["noisy/c1000_b100/counts"] = counts

    def short_angles(f):
        del f["angle"]
        f["angle"] = np.arange(3.0)

    for fn, match, count in (
            (fractional, "noisy/c1000_b100/counts has dtype float64, expected uint16", 1),
            (short_angles, "projection has 16 along dimension 'angle', angle 3", 2)):
        path = _edited(tiny_db, tmp_path, fn)
        assert main(["verify", str(path)]) == 2
        line = error_line(capsys)
        assert match in line and f"failed verification ({count} problem" in line
        for command in (["info", str(path)], ["train", str(path), "-o", str(tmp_path / "m.pt")]):
            assert main(command) == 2  # the reader refuses it, with the same reason
            line = error_line(capsys)
            assert match in line and "is damaged" in line
    damaged = _edited(tiny_db, tmp_path, lambda f: None)
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a flipped bit in a compressed chunk
    damaged.write_bytes(bytes(data))
    assert main(["verify", str(damaged)]) == 2
    assert "cannot be read" in error_line(capsys)


def test_an_unexpected_error_keeps_its_traceback(monkeypatch, tmp_path):
    from nanoedx_dataset.inspect import info

    def bug(path):
        raise TypeError("a bug")

    monkeypatch.setattr(info, "info", bug)
    with pytest.raises(TypeError, match="a bug"):
        main(["info", str(tmp_path)])


def test_verbose_shows_the_traceback_of_a_mapped_error(tmp_path, capsys):
    bad = tmp_path / "garbage.npy"
    bad.write_bytes(b"\x93NUMPY garbage")
    assert main(["-v", "evaluate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("nanoedx evaluate")


def test_interrupted_generate_says_how_to_resume(tmp_path, capsys, monkeypatch):
    fail_at_sample(monkeypatch, 2, KeyboardInterrupt())
    out = tmp_path / "cut.h5"
    assert main(["generate", "--n", "4", "--size", "16", "-o", str(out)]) == 130
    err = capsys.readouterr().err
    assert f"{out}.partial" in err and "--resume" in err
    monkeypatch.undo()
    assert main(["generate", "--n", "4", "--size", "16", "-o", str(out), "--resume"]) == 0


def test_console_script_is_the_one_program_with_every_subcommand():
    script = Path(sys.executable).with_name("nanoedx")
    done = subprocess.run([str(script), "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("nanoedx ")
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True)
    assert done.returncode == 0
    for command in ("generate", "renoise", "voxelize", "publish", "info", "verify", "preview",
                    "train", "maps", "align", "denoise", "reconstruct", "benchmark", "evaluate"):
        assert command in done.stdout


def test_help_is_light():
    """`nanoedx --help` imports neither torch nor scipy: it answers in a fraction of a second."""
    code = ("import sys, json\nfrom nanoedx_models.cli import main\nmain(['--help'])\n"
            "print(json.dumps(sorted(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    loaded = set(json.loads(done.stdout.splitlines()[-1]))
    assert not {"torch", "scipy", "h5py", "matplotlib"} & loaded


def _subcommands():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


def test_one_convention_for_every_subcommand():
    for name, p in _subcommands().items():
        options = {s: a for a in p._actions for s in a.option_strings}
        for action in p._actions:
            if action.help != argparse.SUPPRESS:
                assert action.help, f"{name} {action.option_strings or action.dest} has no help"
        help_text = p.format_help()
        for action in p._actions:
            if (action.option_strings and action.default not in (None, False)
                    and action.help != argparse.SUPPRESS and action.default != "==SUPPRESS=="):
                flat = "".join(help_text.split())
                assert "default" in (action.help or "") or \
                    f"(default:{action.default})".replace(" ", "") in flat, (name, action.dest)
        if "--out" in options:  # every output is -o/--out, with --overwrite beside it
            assert options["--out"].option_strings[:2] == ["-o", "--out"], name
            assert "--overwrite" in options, name
        assert "--output" not in p.format_help() and "--data " not in p.format_usage()
    outputs = {n for n, p in _subcommands().items()
               if "--out" in {s for a in p._actions for s in a.option_strings}}
    assert outputs == {"generate", "voxelize", "preview", "train", "adapt", "maps", "align",
                       "denoise", "reconstruct", "benchmark", "evaluate"}
    bench = {s for a in _subcommands()["benchmark"]._actions for s in a.option_strings}
    assert "--data-version" in bench


def test_benchmark_version_option_is_the_data_version_now(tmp_path, capsys):
    assert main(["benchmark", "mini", "--version", "0.1.0", "-o", str(tmp_path / "b")]) == 2
    assert "--version is now --data-version" in error_line(capsys)
    assert main(["--version"]) == 0 and capsys.readouterr().out.startswith("nanoedx ")


@pytest.fixture
def maps(tmp_path):
    """A raw (5, 16, 16) tilt series of ~1100 counts per map."""
    lam = np.full((5, 16, 16), 1.0)
    lam[:, 4:12, 4:12] += 15.0
    path = tmp_path / "raw.npy"
    np.save(path, np.random.default_rng(0).poisson(lam).astype(np.uint16))
    return path


def test_no_command_overwrites_its_input(maps, tmp_path, capsys):
    raw = maps.read_bytes()
    for command in (["denoise", str(maps), "-o", str(maps)],
                    ["denoise", str(maps), "-o", str(maps), "--overwrite"],
                    ["denoise", str(maps), "--angles=-60:60:30", "-o", str(tmp_path / "d.npy"),
                     "--downsample-counts", "100", "--save-thinned", str(maps), "--overwrite"],
                    ["reconstruct", str(maps), "--angles=-60:60:30", "-o", str(maps)],
                    ["reconstruct", str(maps), "--angles=-60:60:30", "-o",
                     str(tmp_path / "v.npy"), "--png", str(maps), "--overwrite"]):
        assert main(command) == 2
        assert "is an input of this command" in error_line(capsys)
    assert maps.read_bytes() == raw
    db = tmp_path / "db.h5"
    generate(db, None, n=2, size=16, progress=False)
    before = db.read_bytes()
    for command in (["preview", str(db), "-o", str(db), "--overwrite"],
                    ["train", str(db), "-o", str(db), "--overwrite"]):
        assert main(command) == 2
        assert "is an input" in error_line(capsys)
    assert db.read_bytes() == before


def test_existing_outputs_are_replaced_only_with_overwrite(maps, tmp_path, capsys):
    out = tmp_path / "vol.npy"
    args = ["reconstruct", str(maps), "--angles=-60:60:30", "--iterations", "2", "-o", str(out)]
    assert main(args) == 0 and out.exists() and out.with_suffix(".png").exists()
    first = out.read_bytes()
    out.write_bytes(b"old")
    assert main(args) == 2
    assert f"{out} exists; pass --overwrite" in error_line(capsys)
    assert out.read_bytes() == b"old"
    out.unlink()
    assert main(args) == 2  # the figure of the earlier run is an output too
    assert "vol.png exists" in error_line(capsys)
    assert main(args + ["--overwrite"]) == 0 and out.read_bytes() == first
    den = tmp_path / "den.npy"
    den.write_bytes(b"old")
    assert main(["denoise", str(maps), "-o", str(den)]) == 2
    assert "--overwrite" in error_line(capsys) and den.read_bytes() == b"old"
    assert main(["denoise", str(maps), "--output", str(den), "--overwrite"]) == 0  # old spelling
    assert np.load(den).shape == (5, 16, 16)
    assert "picked" in capsys.readouterr().err  # the default, auto, reports its pick
    report = tmp_path / "e.json"
    report.write_text("{}")
    assert main(["evaluate", str(maps), "--methods", "noisy", "--counts", "100", "-o",
                 str(report)]) == 2
    assert "--overwrite" in error_line(capsys) and report.read_text() == "{}"


def test_thinning_above_the_counts_of_the_data_is_refused(maps, tmp_path, capsys):
    for counts, match in (("5000", "thinning can only lower the dose"),
                          ("1e9", "thinning can only lower the dose")):
        assert main(["denoise", str(maps), "--downsample-counts", counts, "-o",
                     str(tmp_path / "d.npy")]) == 2
        assert match in error_line(capsys)
    assert not (tmp_path / "d.npy").exists()


def test_unknown_methods_exit_2_before_any_work(maps, tiny_db, tmp_path, capsys):
    assert main(["evaluate", str(maps), "--methods", "noisy,gausian-val", "--counts", "100"]) == 2
    assert "unknown denoiser 'gausian-val'" in error_line(capsys)
    assert main(["evaluate", str(maps), "--methods", "tv-oracle", "--counts", "100"]) == 2
    assert "tv-val" in error_line(capsys)
    out = tmp_path / "board"
    assert main(["benchmark", str(tiny_db), "--methods", "noisy,wiener", "-o", str(out)]) == 2
    assert "unknown denoiser 'wiener'" in error_line(capsys) and not out.exists()
    assert main(["benchmark", str(tiny_db), "--methods", "unet:missing.pt", "-o", str(out)]) == 2
    assert "no model file at missing.pt" in error_line(capsys)


def test_a_reused_benchmark_folder_holds_only_the_new_run(tiny_db, tmp_path, capsys):
    out = tmp_path / "board"
    out.mkdir()
    (out / "leaderboard_3d.png").write_bytes(b"an earlier run's figure")
    (out / "notes.txt").write_text("mine")
    args = ["benchmark", str(tiny_db), "--methods", "noisy", "--dims", "2d", "--quick",
            "--no-figures", "-o", str(out)]
    assert main(args) == 2
    line = error_line(capsys)
    assert "earlier run" in line and "--overwrite" in line
    assert main(args + ["--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["leaderboard.json", "leaderboard.md",
                                                    "leaderboard_examples.npz", "notes.txt"]
    assert not out.with_name("board.partial").exists()
    board = json.loads((out / "leaderboard.json").read_text())
    assert board["data"]["source"] == str(tiny_db)
    assert main(["benchmark", "--data", str(tiny_db), "--methods", "noisy", "--dims", "2d",
                 "--quick", "--no-figures", "--out", str(tmp_path / "old")]) == 0  # old spelling
    twice = ["benchmark", str(tiny_db), "--data", str(tiny_db), "-o", str(tmp_path / "x")]
    assert main(twice) == 2
    assert "give the database once" in error_line(capsys)


def test_a_failed_benchmark_leaves_the_folder_as_it_was(tiny_db, tmp_path, capsys):
    out = tmp_path / "board"
    args = ["benchmark", str(tiny_db), "--methods", "noisy", "--dims", "2d", "--quick",
            "--no-figures", "-o", str(out)]
    assert main(args) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(args + ["--overwrite", "--counts", "1e12"]) == 2  # fails after it started
    assert "uint16" in error_line(capsys)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not out.with_name("board.partial").exists()


def test_reconstruct_too_large_for_memory_is_refused_before_work(maps, tmp_path, capsys,
                                                                  monkeypatch):
    from nanoedx_models.reconstruction import em

    monkeypatch.setattr(em, "available_memory", lambda: 1000)
    assert main(["reconstruct", str(maps), "--angles=-60:60:30", "-o",
                 str(tmp_path / "v.npy")]) == 2
    line = error_line(capsys)
    assert "reconstructing 5 maps of 16 x 16 pixels" in line and "GiB are available" in line
    assert not (tmp_path / "v.npy").exists()
    assert em.reconstruction_bytes(16, 3000, 3000) > 100 * 2**30  # the 3000 x 3000 case


@pytest.mark.skipif(importlib.util.find_spec("bpy") is not None, reason="bpy is installed")
def test_blender_backend_without_the_extra_names_the_install(tmp_path, capsys):
    out = tmp_path / "x.h5"
    assert main(["generate", "--n", "1", "--size", "16", "--backend", "blender",
                 "-o", str(out)]) == 2
    assert 'pip install "nanoedx[blender]"' in error_line(capsys)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(MissingExtraError, match=r'pip install "nanoedx\[blender\]"'):
        voxelize(draw_spec(0, 0), 16, backend="blender")


@pytest.mark.skipif(importlib.util.find_spec("vtk") is not None, reason="vtk is installed")
def test_voxelize_a_mesh_without_the_extra_names_the_install(tmp_path, capsys):
    stl = tmp_path / "m.stl"
    stl.write_text("solid m\nendsolid m\n")
    assert main(["voxelize", str(stl), "--size", "16", "-o", str(tmp_path / "m.h5")]) == 2
    assert 'pip install "nanoedx[blender]"' in error_line(capsys)
    assert not (tmp_path / "m.h5").exists()


def test_mesh_dir_needs_a_mesh_backend(tmp_path, capsys):
    out = tmp_path / "x.h5"
    assert main(["generate", "--n", "1", "--size", "16", "--mesh-dir", str(tmp_path / "m"),
                 "-o", str(out)]) == 2
    assert "analytic backend builds no meshes" in error_line(capsys)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- downloads
@pytest.fixture
def release(tmp_path, monkeypatch):
    """A release 'tiny' of one file, registered; returns (folder of the file, file name)."""
    folder = tmp_path / "server"
    folder.mkdir()
    fname = "nanoedx-tiny-1.0.0.h5"
    generate(folder / fname, None, n=2, size=16, progress=False)
    entry = {"files": {fname: "sha256:" + sha256(folder / fname)}, "url": None,
             "command": "nanoedx generate --n 2 --size 16 ..."}
    reg = {**release_registry.releases(), "tiny": {"1.0.0": entry}}
    monkeypatch.setattr(release_registry, "releases", lambda: reg)
    return folder, fname


def test_a_bad_data_url_is_a_clear_error(release, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv(fetch.URL_ENV, "notaurl")
    with pytest.raises(ConfigError, match="'notaurl' .NANOEDX_DATA_URL. is not a download"):
        load_dataset("tiny", cache_dir=tmp_path / "cache")
    assert main(["train", "tiny", "-o", str(tmp_path / "m.pt")]) == 2
    assert "is not a download address" in error_line(capsys)


@contextmanager
def slow_drip():
    """A server that answers with a byte every 0.2 s."""
    class Drip(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            for _ in range(100):
                try:
                    self.wfile.write(b"x")
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(0.2)

    with serving(Drip) as (server, url):
        yield url


def test_a_slow_download_stops_at_the_overall_timeout(release, monkeypatch, tmp_path):
    cache = tmp_path / "cache"
    with slow_drip() as url:
        monkeypatch.setenv(fetch.URL_ENV, url)
        monkeypatch.setenv(fetch.TIMEOUT_ENV, "1")
        start = time.monotonic()
        with pytest.raises(DatasetNotFoundError,
                           match="longer than 1 s.*NANOEDX_DOWNLOAD_TIMEOUT"):
            load_dataset("tiny", cache_dir=cache)
        assert time.monotonic() - start < 5
    assert not any(cache.iterdir())  # the partial download is gone
    monkeypatch.setenv(fetch.TIMEOUT_ENV, "soon")
    with pytest.raises(ConfigError, match="NANOEDX_DOWNLOAD_TIMEOUT='soon'"):
        load_dataset("tiny", cache_dir=cache)


def test_a_corrupt_cached_file_is_deleted_and_fetched_again(release, monkeypatch, tmp_path):
    folder, fname = release
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / fname).write_bytes(folder.joinpath(fname).read_bytes()[:1000])  # cut short
    monkeypatch.setenv(fetch.URL_ENV, "http://127.0.0.1:9")  # nothing listens
    with pytest.raises(DatasetNotFoundError, match="cannot download"):
        load_dataset("tiny", cache_dir=cache)
    assert not (cache / fname).exists()  # not kept
    (cache / fname).write_bytes(b"junk")
    with file_server(folder) as (server, url):
        monkeypatch.setenv(fetch.URL_ENV, url)
        assert load_dataset("tiny", cache_dir=cache).sizes["sample"] == 2
        assert server.requests == [f"/{fname}"]
    assert sha256(cache / fname) == sha256(folder / fname)
