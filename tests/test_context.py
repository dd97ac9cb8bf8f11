"""Context U-nets: the HAADF image, the other elements and the neighbouring tilts beside a map."""

import numpy as np
import pytest
import torch

from nanoedx_dataset import generate
from nanoedx_dataset.errors import ConfigError
from nanoedx_models.data.context import channels, check_context, n_channels, neighbours
from nanoedx_models.data.datasets import EDXMaps
from nanoedx_models.denoisers import denoiser
from nanoedx_models.denoisers.inference import denoise, denoise_context
from nanoedx_models.denoisers.modelfile import load_model, save_model
from nanoedx_models.denoisers.unet import UNet
from nanoedx_models.evaluation.benchmark import benchmark
from nanoedx_models.training.loop import train

ALL = ("haadf", "elements", "tilts")


@pytest.fixture(scope="module")
def haadf_db(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("ctx") / "h.h5", None, n=20, size=32, seed=5,
                    haadf=True, progress=False)


@pytest.fixture(scope="module")
def context_model(haadf_db, tmp_path_factory):
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("model") / "ctx.pt"
    return train(haadf_db, out, preset="tiny", epochs=1, counts=1000.0, context=ALL,
                 progress=False)


def series(seed=0, shape=(2, 5, 16, 16), lam=3.0):
    return np.random.default_rng(seed).poisson(lam, shape).astype(np.float64)


def test_context_names_are_checked_and_ordered():
    assert check_context(["tilts", "haadf"]) == ("haadf", "tilts")
    assert n_channels(ALL) == 5 and n_channels(()) == 1
    with pytest.raises(ConfigError, match="haadf, elements, tilts"):
        check_context(["haadf", "spectra"])
    with pytest.raises(ConfigError):
        check_context(["tilts", "tilts"])


def test_channels_hold_the_map_and_its_context_each_at_unit_mean():
    x = series()
    x[1] *= 3  # the other element at three times the dose
    img = series(1, (5, 16, 16), 500.0)
    c, k = channels(x, 0, 2, ALL, img)
    assert c.shape == (5, 16, 16) and k == pytest.approx(x[0, 2].mean())
    np.testing.assert_allclose(c[0] * k, x[0, 2], rtol=1e-6)
    np.testing.assert_allclose(c[1:].mean(axis=(1, 2)), 1.0, rtol=1e-5)
    np.testing.assert_allclose(c[2], x[1, 2] / x[1, 2].mean(), rtol=1e-5)  # the other element
    np.testing.assert_allclose(c[3], x[0, 1] / x[0, 1].mean(), rtol=1e-5)  # previous tilt
    np.testing.assert_allclose(c[4], x[0, 3] / x[0, 3].mean(), rtol=1e-5)  # next tilt


def test_series_ends_use_their_one_neighbour_and_one_element_gives_zeros():
    assert neighbours(5, 0) == (1, 1) and neighbours(5, 4) == (3, 3) and neighbours(5, 2) == (1, 3)
    c, _ = channels(series(shape=(1, 3, 8, 8)), 0, 0, ("elements",))
    assert not c[1].any()
    with pytest.raises(ConfigError, match="HAADF"):
        channels(series(), 0, 0, ("haadf",))
    with pytest.raises(ConfigError, match="one image per tilt"):
        channels(series(), 0, 0, ("haadf",), np.ones((4, 16, 16)))


def test_unet_config_names_channels_only_beyond_one():
    assert "in_channels" not in UNet(2, 4).config
    net = UNet(2, 4, in_channels=3)
    assert net.config["in_channels"] == 3
    assert net(torch.zeros(1, 3, 12, 12)).shape == (1, 1, 12, 12)
    with pytest.raises(ConfigError, match=r"\(N, 3, H, W\)"):
        net(torch.zeros(1, 1, 12, 12))


def test_dataset_items_carry_the_context(haadf_db):
    ds = EDXMaps(haadf_db, "train", counts=1000.0, context=ALL)
    x, y = ds[0]
    assert x.shape == (5, 32, 32) and y.shape == (1, 32, 32)
    plain = EDXMaps(haadf_db, "train", counts=1000.0)
    assert plain[0][0].shape == (1, 32, 32)


def test_series_holds_exactly_the_map_every_method_sees(haadf_db):
    for kw in ({}, {"counts": 300.0}):
        ds = EDXMaps(haadf_db, "test", **kw)
        for i in range(len(ds)):
            s = ds.series(i)
            np.testing.assert_array_equal(s["noisy"][s["element"], s["angle"]], ds.raw(i)[0])
            assert s["haadf"].shape == s["noisy"].shape[1:]


def test_the_haadf_context_needs_a_file_with_images(tiny_db):
    with pytest.raises(ConfigError, match="--haadf"):
        EDXMaps(tiny_db, "train", counts=1000.0, context=("haadf",))


def test_a_context_model_started_from_a_single_map_model_answers_as_it(haadf_db, tmp_path):
    base = UNet(2, 8)
    torch.manual_seed(1)
    for prm in base.parameters():
        prm.data.normal_(0, 0.1)
    path = save_model(tmp_path / "base.pt", base, {})
    out = train(haadf_db, tmp_path / "tilts.pt", preset="tiny", epochs=1, counts=1000.0,
                context=("tilts",), init=str(path), lr=1e-12, progress=False)
    model, meta = load_model(out)
    assert meta["context"] == ["tilts"] and model.in_channels == 3
    x = series(2, (1, 4, 32, 32))
    np.testing.assert_allclose(denoise_context(x, str(out))[0], denoise(x[0], model=base),
                               rtol=1e-4, atol=1e-6)
    assert meta["history"][-1]["map_steps"] > 0 and "Adam" in meta["schedule"]
    # a further stage from this model counts its map-steps on from the first stage's
    first = meta["history"][-1]["map_steps"]
    more = train(haadf_db, tmp_path / "stage2.pt", preset="tiny", epochs=2, counts=1000.0,
                 context=("tilts",), init=str(out), lr=1e-4, progress=False)
    meta2 = load_model(more)[1]
    assert [h["map_steps"] for h in meta2["history"]] == [first * 2, first * 3]
    assert meta2["prior_map_steps"] == first
    assert meta2["schedule"].startswith(meta["schedule"]) and "rate 0.0001" in meta2["schedule"]
    assert meta2["prior_epochs"] == 1 and all(h["seconds"] > 0 for h in meta2["history"])
    third = load_model(train(haadf_db, tmp_path / "stage3.pt", preset="tiny", epochs=1,
                             counts=1000.0, context=("tilts",), init=str(more), lr=1e-4,
                             progress=False))[1]
    assert third["prior_epochs"] == 3 and third["history"][-1]["map_steps"] == first * 4


def test_denoise_context_conserves_counts_and_picks_maps(context_model, haadf_db):
    db_maps = EDXMaps(haadf_db, "test")
    s = db_maps.series(0)
    full = denoise_context(s["noisy"], str(context_model), s["haadf"], background=50.0)
    sums = full.sum(axis=(2, 3))
    kept = sums > 0  # a map the (barely trained) network sets to zero stays zero
    assert kept.sum() >= 4
    np.testing.assert_allclose(sums[kept], (s["noisy"].sum(axis=(2, 3)) - 50.0)[kept],
                               rtol=1e-4)
    some = denoise_context(s["noisy"], str(context_model), s["haadf"], background=50.0,
                           which=[(0, 3), (0, 0)])
    np.testing.assert_allclose(some, full[0, [3, 0]], rtol=1e-5)
    with pytest.raises(ConfigError, match="HAADF"):
        denoise_context(s["noisy"], str(context_model))


def test_a_context_model_is_a_benchmark_row(context_model, haadf_db):
    name = f"unet-context:{context_model}"
    assert denoiser(name).scope == "series"
    one = benchmark(haadf_db, methods=["noisy", name], workers=1, progress=False)
    two = benchmark(haadf_db, methods=["noisy", name], workers=2, progress=False)
    row = {r["method"]: r for r in one["rows"]}[name]
    assert row["status"] == "ok" and row["nmae2d_mean"] > 0 and row["nmae3d_mean"] > 0
    assert one["rows"] == two["rows"] or all(
        a["nmae3d"] == b["nmae3d"] and a["nmae2d"] == b["nmae2d"]
        for a, b in zip(one["rows"], two["rows"]))


def test_a_haadf_model_on_a_file_without_images_fails_its_row_only(context_model, tiny_db):
    board = benchmark(tiny_db, methods=["noisy", f"unet-context:{context_model}"],
                      workers=1, progress=False, dims=("2d",))
    rows = {r["method"]: r["status"] for r in board["rows"]}
    assert rows["noisy"] == "ok" and "HAADF" in rows[f"unet-context:{context_model}"]


def test_cli_trains_and_runs_a_haadf_model(haadf_db, tmp_path, capsys):
    from nanoedx_models.cli import main
    from nanoedx_models.data.tiltio import read_series

    model = tmp_path / "m.pt"
    assert main(["train", str(haadf_db), "-o", str(model), "--preset", "tiny", "--epochs", "1",
                 "--counts", "1000", "--context", "haadf,tilts"]) == 0
    s = EDXMaps(haadf_db, "test").series(0)
    maps, image = tmp_path / "maps.npy", tmp_path / "haadf.npy"
    np.save(maps, s["noisy"].astype(np.uint16))
    np.save(image, s["haadf"])
    out = tmp_path / "out.npy"
    assert main(["denoise", str(maps), "--model", str(model), "-o", str(out)]) == 2
    assert "--haadf" in capsys.readouterr().err and not out.exists()
    assert main(["denoise", str(maps), "--model", str(model), "--haadf", str(image),
                 "-o", str(out)]) == 0
    assert read_series(out).data.shape == s["noisy"].shape
    assert main(["train", str(haadf_db), "-o", str(tmp_path / "x.pt"), "--context", "spectra"]) == 2


def test_the_shipped_context_models_beat_the_noisy_floor(haadf_db):
    names = ["unet-haadf", "unet-joint", "unet-context"]
    board = benchmark(haadf_db, methods=["noisy", *names], workers=1, progress=False,
                      dims=("2d",))
    rows = {r["method"]: r for r in board["rows"]}
    for name in names:
        assert rows[name]["status"] == "ok"
        assert rows[name]["nmae2d_mean"] < rows["noisy"]["nmae2d_mean"] / 2


def test_by_default_the_benchmark_leaves_haadf_models_out_on_data_without_images(tiny_db):
    from nanoedx_models.denoisers.learned import reads_haadf

    assert reads_haadf(denoiser("unet-haadf")) and not reads_haadf(denoiser("unet-joint"))
    board = benchmark(tiny_db, workers=1, progress=False, dims=("2d",), quick=True)
    names = {r["method"] for r in board["rows"]}
    assert "unet-joint" in names and not names & {"unet-haadf", "unet-context"}
