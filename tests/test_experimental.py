"""A user's own tilt series, end to end: every format in and out, denoise, reconstruct."""

import numpy as np
import pytest

from nanoedx_dataset import draw_spec, project, voxelize
from nanoedx_dataset.simulate.noise import expected_signal
from nanoedx_models.cli import main
from nanoedx_models.evaluation.metrics import nmae
from nanoedx_models.data.tiltio import Series, read_array, read_series, write_series

ANGLES = np.arange(-70.0, 71.0, 10.0)
ELEMENTS = ["Ag", "Au"]  # shell, core of a core-shell particle


@pytest.fixture(scope="module")
def experiment():
    """A core-shell particle at 64^3 seen at 1e5 counts per map: the 'long exposure'."""
    vol = voxelize(draw_spec(11, 0, family="cube", kind="core_shell"), 64)
    proj = project(vol, ANGLES)
    rng = np.random.default_rng(0)
    high = rng.poisson(expected_signal(proj, 1e5) + 5e3 / 64**2).astype(np.uint16)
    return vol, high


def write_hspy(path, maps, title):
    from rsciio.hspy import file_writer

    axes = [{"name": "tilt", "size": len(ANGLES), "offset": float(ANGLES[0]), "scale": 10.0,
             "units": "deg", "navigate": True}]
    axes += [{"name": n, "size": 64, "offset": 0.0, "scale": 1.0, "units": "px",
              "navigate": False} for n in ("y", "x")]
    file_writer(str(path), {"data": maps, "axes": axes, "original_metadata": {},
                            "metadata": {"General": {"title": title}, "Signal": {}},
                            "tmp_parameters": {}, "attributes": {"_lazy": False},
                            "learning_results": {}, "models": {},
                            "package_info": {"name": "test", "version": "0"}})


def inputs(fmt, tmp_path, high):
    """Write the experiment in one format; return (input args, out extension, needs --angles)."""
    if fmt == "npy":  # element axis inside one file, no metadata
        np.save(tmp_path / "exp.npy", high)
        return [str(tmp_path / "exp.npy"), "--element", "Ag,Au"], ".npy", True
    if fmt == "tiff":  # one file per element, angles in the description
        paths = []
        for e, name in enumerate(ELEMENTS):
            write_series(tmp_path / f"{name}.tif", Series(high[e : e + 1], [name], ANGLES))
            paths.append(str(tmp_path / f"{name}.tif"))
        return paths, ".tif", False
    if fmt == "hdf5":  # a dataset path inside a file, attributes
        path = f"{tmp_path / 'exp.h5'}:/scan/maps"
        write_series(path, Series(high, ELEMENTS, ANGLES, {"microscope": "simulated"}))
        return [path], ".h5", False
    pytest.importorskip("rsciio")  # hyperspy: one titled signal per element
    for e, name in enumerate(ELEMENTS):
        write_hspy(tmp_path / f"{name}.hspy", high[e], name)
    return [str(tmp_path / f"{n}.hspy") for n in ELEMENTS], ".h5", False


@pytest.mark.parametrize("fmt", ["npy", "tiff", "hdf5", "hspy"])
def test_denoise_then_reconstruct_beats_the_raw_reconstruction(experiment, tmp_path, fmt,
                                                                 capsys):
    vol, high = experiment
    args, ext, need_angles = inputs(fmt, tmp_path, high)
    angles = ["--angles=-70:70:10"] if need_angles else []
    thin, den = str(tmp_path / f"thin{ext}"), str(tmp_path / f"den{ext}")
    assert main(["denoise", *args, "--downsample-counts", "1000", "--seed", "3",
                 "--save-thinned", thin, "-o", den, *angles]) == 0
    low, denoised = read_series(thin), read_series(den)
    assert low.data.shape == denoised.data.shape == high.shape
    assert low.elements == denoised.elements == ELEMENTS or fmt == "npy"
    assert np.allclose(low.data.reshape(-1, 64 * 64).sum(1).mean(), 1000, rtol=0.05)
    if not need_angles:  # the angles travelled through both files
        np.testing.assert_allclose(denoised.angles, ANGLES)
    scores = {}
    for name, series in (("raw", thin), ("denoised", den)):
        out = tmp_path / f"{name}_vol{ext}"
        assert main(["reconstruct", series, "-o", str(out), *angles]) == 0
        data, attrs = read_array(out)
        assert data.shape == (2, 64, 64, 64) and data.dtype == np.float32
        assert attrs.get("dims", "element,z,y,x") == "element,z,y,x"
        assert (tmp_path / f"{name}_vol.png").read_bytes()[:4] == b"\x89PNG"
        ref = [v * 1000 / v.sum() for v in vol]
        scores[name] = np.mean([nmae(d, r) for d, r in zip(data, ref)])
    assert scores["denoised"] < 0.75 * scores["raw"], scores


def test_denoise_background_sets_each_elements_total(experiment, tmp_path, capsys):
    _, high = experiment
    np.save(tmp_path / "exp.npy", high[:, :4])
    out = tmp_path / "den.h5"
    assert main(["denoise", str(tmp_path / "exp.npy"), "--element", "Ag,Au",
                 "--background", "300,5000", "-o", str(out)]) == 0
    den = read_series(out)
    expected = high[:, :4].sum(axis=(2, 3)) - np.array([[300.0], [5000.0]])
    np.testing.assert_allclose(den.data.sum(axis=(2, 3)), expected, rtol=1e-4)
    assert main(["denoise", str(tmp_path / "exp.npy"), "--background", "1,2,3", "-o",
                 str(tmp_path / "bad.h5")]) == 2
    assert "3 values for 2 elements" in capsys.readouterr().err
    assert not (tmp_path / "bad.h5").exists()


def test_formats_round_trip(tmp_path):
    data = np.random.default_rng(1).poisson(4.0, (2, 5, 8, 8)).astype(np.uint16)
    series = Series(data, ["Au", "Ag"], np.linspace(-60, 60, 5), {"note": "x"})
    for name in ("s.tif", "s.h5", "s.h5:/a/b", "s.npy"):
        back = read_series(write_series(tmp_path / name, series) if ":" not in name
                           else f"{write_series(f'{tmp_path}/{name}', series)}:/a/b")
        np.testing.assert_array_equal(back.data, data)
        if not name.endswith(".npy"):
            assert back.elements == ["Au", "Ag"] and back.metadata == {"note": "x"}
            np.testing.assert_allclose(back.angles, series.angles)
    one = read_series(write_series(tmp_path / "one.tif", Series(data[:1], ["Au"], None)))
    assert one.elements == ["Au"] and one.angles is None


def test_element_choice_and_labels(tmp_path):
    data = np.ones((2, 3, 8, 8), np.uint16)
    path = write_series(tmp_path / "two.h5", Series(data * [[[[1]]], [[[2]]]], ["Au", "Ag"]))
    ag = read_series(path, ["Ag"])
    assert ag.elements == ["Ag"] and ag.data.max() == 2
    np.save(tmp_path / "three.npy", data[0])
    assert read_series(tmp_path / "three.npy", ["Pt"]).elements == ["Pt"]


def _bad(tmp_path):
    np.save(tmp_path / "rank2.npy", np.ones((8, 8), np.uint16))
    np.save(tmp_path / "float.npy", np.full((3, 8, 8), 0.5))
    np.save(tmp_path / "neg.npy", -np.ones((3, 8, 8)))
    np.save(tmp_path / "ok.npy", np.ones((3, 8, 8), np.uint16))
    (tmp_path / "maps.mrc").write_bytes(b"\0" * 64)
    return tmp_path


@pytest.mark.parametrize("command,args,match", [
    ("denoise", ["rank2.npy"], "(angle, row, col)"),
    ("denoise", ["float.npy"], "whole numbers"),
    ("denoise", ["neg.npy"], "negative"),
    ("denoise", ["maps.mrc"], "unknown file format"),
    ("denoise", ["missing.npy"], "no input file"),
    ("denoise", ["ok.npy", "--angles=-60:60:10"], "13 angles for 3 maps"),
    ("reconstruct", ["ok.npy"], "--angles"),
    ("reconstruct", ["ok.npy", "--angles", "0,10"], "2 angles for 3 maps"),
    ("denoise", ["ok.npy", "ok.npy", "--element", "Au"], "1 element names for 2 input files"),
    ("denoise", ["ok.npy", "--downsample-counts", "-1"], "counts"),
])
def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, command, args, match):
    folder = _bad(tmp_path)
    before = sorted(p.name for p in folder.iterdir())
    argv = [command] + [str(folder / a) if a.endswith((".npy", ".mrc")) else a for a in args]
    assert main(argv + ["-o", str(folder / "out.npy")]) == 2
    assert match in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == before


def test_bad_output_is_refused_before_work(tmp_path, capsys):
    folder = _bad(tmp_path)
    for out, match in ((folder / "out.emd", "cannot write"), (folder / "no" / "o.npy",
                                                               "does not exist")):
        assert main(["denoise", str(folder / "ok.npy"), "-o", str(out)]) == 2
        assert match in capsys.readouterr().err


def test_a_missing_extra_names_the_install(tmp_path, capsys, hide_modules):
    hide_modules("rsciio")
    (tmp_path / "s.hspy").write_bytes(b"\0")
    assert main(["denoise", str(tmp_path / "s.hspy"), "-o", str(tmp_path / "o.h5")]) == 2
    assert 'pip install "nanoedx[hyperspy]"' in capsys.readouterr().err


def test_evaluate_ranks_methods_without_ground_truth(experiment, tmp_path, capsys):
    import json

    _, high = experiment
    path = f"{tmp_path / 'exp.h5'}:/maps"
    write_series(path, Series(high[:, ::4], ELEMENTS, ANGLES[::4]))
    report = tmp_path / "holdout.json"
    assert main(["evaluate", path, "--methods", "noisy,gaussian-val", "--counts", "1000",
                 "-o", str(report)]) == 0
    printed = capsys.readouterr().out
    assert "Ag: hold-out score" in printed and "Au: hold-out score" in printed
    rows = json.loads(report.read_text())["elements"]["Au"]
    by = {r["method"]: r for r in rows}
    assert by["gaussian-val"]["score_mean"] < by["noisy"]["score_mean"]
    # an oracle needs the ground truth: refused before any work, pointing at its -val twin
    assert main(["evaluate", path, "--methods", "noisy,tv-oracle", "-o",
                 str(tmp_path / "o.json")]) == 2
    err = capsys.readouterr().err
    assert "tv-oracle is an oracle" in err and "'tv-val'" in err
    assert not (tmp_path / "o.json").exists()
    assert main(["evaluate", path, "--out", str(tmp_path / "x.txt")]) == 2
    assert "-o/--out must be a .json" in capsys.readouterr().err


def test_thinning_is_refused_above_the_counts_of_the_maps():
    from nanoedx_dataset import downsample_counts
    from nanoedx_dataset.errors import ConfigError
    from nanoedx_models.experimental import thin

    x = np.random.default_rng(0).poisson(4.0, (3, 16, 16))  # ~1000 counts per map
    low = min(x.reshape(3, -1).sum(1))
    with pytest.raises(ConfigError, match=f"only {low} counts.*can only lower the dose"):
        thin(Series(x[None], ["Au"]), 5000)
    assert downsample_counts(x, low, seed=0).reshape(3, -1).sum(1).mean() == \
        pytest.approx(low, rel=0.2)
    big = np.full((1, 4, 4), 1e9)  # a high-dose map thinned to 1e8 counts: 6e6 per pixel
    with pytest.raises(ConfigError, match="uint16"):
        downsample_counts(big, 1e8, seed=0)
    empty = np.zeros((2, 4, 4))
    empty[1] = 5.0
    assert downsample_counts(empty, 10, seed=0)[0].sum() == 0  # an empty map stays empty


def test_a_model_with_nan_weights_is_refused(tmp_path, capsys):
    import torch

    from nanoedx_models import UNet, save_model
    from nanoedx_dataset.errors import SchemaError
    from nanoedx_models.denoisers.modelfile import load_model

    net = UNet.from_preset("tiny")
    with torch.no_grad():
        next(net.parameters())[0] = float("nan")
    model = save_model(tmp_path / "nan.pt", net, {})
    with pytest.raises(SchemaError, match="NaN or infinite weights"):
        load_model(model)
    maps = tmp_path / "m.npy"
    np.save(maps, np.ones((3, 16, 16), np.uint16))
    assert main(["denoise", str(maps), "--model", str(model), "-o", str(tmp_path / "d.npy")]) == 2
    assert "NaN or infinite weights" in capsys.readouterr().err
    assert not (tmp_path / "d.npy").exists()
