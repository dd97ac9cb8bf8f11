import importlib.util
import subprocess
from pathlib import Path
import sys

import pytest

from nanoedx_dataset import draw_spec, voxelize
from nanoedx_models.cli import main
from nanoedx_dataset.errors import MissingExtraError


def test_generate_info_verify_renoise_preview(tmp_path, capsys):
    out = tmp_path / "db.h5"
    assert main(["generate", "--n", "4", "--size", "24", "--angles=-60:60:30",
                 "--seed", "3", "--out", str(out)]) == 0
    assert main(["info", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "samples            4" in shown and "[-60.0, -30.0, 0.0, 30.0, 60.0]" in shown
    assert main(["renoise", str(out), "--counts", "300", "--background", "30"]) == 0
    assert main(["verify", str(out)]) == 0
    assert "OK" in capsys.readouterr().out
    png = tmp_path / "fig.png"
    assert main(["preview", str(out), "-o", str(png), "--noise", "c300_b30"]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args,match", [
    (["--preset", "huge"], "unknown preset 'huge'"),
    (["--size", "8"], "size must be at least 16"),
    (["--counts", "0"], "counts must be a positive"),
    (["--background", "-2"], "background must be >= 0"),
])
def test_bad_generate_options_exit_nonzero_with_no_file(tmp_path, capsys, args, match):
    out = tmp_path / "x.h5"
    assert main(["generate", "--n", "2", "--size", "16", *args, "--out", str(out)]) == 2
    assert match in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_bad_angles_exit_nonzero(tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        main(["generate", "--angles=-100:100:10", "--out", str(tmp_path / "x.h5")])
    assert err.value.code == 2
    assert "strictly between -90 and 90" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_not_a_database_exits_nonzero(tmp_path, capsys):
    bogus = tmp_path / "bogus.h5"
    bogus.write_text("nope")
    for cmd in (["info", str(bogus)], ["verify", str(bogus)],
                ["renoise", str(bogus), "--counts", "10", "--background", "1"]):
        assert main(cmd) == 2
        assert "not an HDF5 file" in capsys.readouterr().err


def test_console_script_is_the_one_program_with_every_subcommand():
    script = Path(sys.executable).with_name("nanoedx")
    done = subprocess.run([str(script), "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("nanoedx ")
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True)
    assert done.returncode == 0
    for command in ("generate", "renoise", "voxelize", "publish", "info", "verify", "preview",
                    "train", "denoise", "reconstruct", "benchmark", "evaluate"):
        assert command in done.stdout


@pytest.mark.skipif(importlib.util.find_spec("bpy") is not None, reason="bpy is installed")
def test_blender_backend_without_the_extra_names_the_install(tmp_path, capsys):
    out = tmp_path / "x.h5"
    assert main(["generate", "--n", "1", "--size", "16", "--backend", "blender",
                 "--out", str(out)]) == 2
    assert 'pip install "nanoedx[blender]"' in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(MissingExtraError, match=r'pip install "nanoedx\[blender\]"'):
        voxelize(draw_spec(0, 0), 16, backend="blender")


@pytest.mark.skipif(importlib.util.find_spec("vtk") is not None, reason="vtk is installed")
def test_voxelize_a_mesh_without_the_extra_names_the_install(tmp_path, capsys):
    stl = tmp_path / "m.stl"
    stl.write_text("solid m\nendsolid m\n")
    assert main(["voxelize", str(stl), "--size", "16", "-o", str(tmp_path / "m.h5")]) == 2
    assert 'pip install "nanoedx[blender]"' in capsys.readouterr().err
    assert not (tmp_path / "m.h5").exists()


def test_mesh_dir_needs_a_mesh_backend(tmp_path, capsys):
    out = tmp_path / "x.h5"
    assert main(["generate", "--n", "1", "--size", "16", "--mesh-dir", str(tmp_path / "m"),
                 "--out", str(out)]) == 2
    assert "analytic backend builds no meshes" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
