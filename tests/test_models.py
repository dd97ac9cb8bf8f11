import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from nanoedx_dataset import ConfigError, SchemaError
from nanoedx_models import (EDXMaps, TiltSeries, UNet, denoise, denormalize, load_model,
                            load_pretrained,
                            normalize, save_model, train)
from nanoedx_models.training import loop as train_module
from nanoedx_models.denoisers.classical import gaussian
from nanoedx_models.denoisers.registry import conserve, oracle
from nanoedx_models.evaluation.metrics import nmae


def test_maps_have_shape_dtype_and_a_round_tripping_normalization(tiny_db):
    ds = EDXMaps(tiny_db, "train")
    assert len(ds) == 8  # one map per training structure
    x, y = ds[0]
    assert x.shape == y.shape == (1, 32, 32) and x.dtype == y.dtype == torch.float32
    assert float(x.mean()) == pytest.approx(1.0, rel=1e-5)
    raw = np.random.default_rng(0).poisson(2.0, (32, 32))
    norm, k = normalize(raw)
    np.testing.assert_allclose(denormalize(norm, k), raw, rtol=1e-6)


def test_all_maps_mode_skips_empty_projections(tiny_db):
    import h5py

    ds = EDXMaps(tiny_db, None, per_structure=False)
    with h5py.File(tiny_db) as f:
        present = f["projection"][:].sum(axis=(2, 3, 4)) > 0  # (sample, element)
    assert len(ds) == int(present.sum()) * 16
    assert all(present[s, e] for _, s, e, _ in ds.items)


def test_on_the_fly_noise_is_fresh_each_epoch_and_repeatable(tiny_db):
    ds = EDXMaps(tiny_db, "train", counts=(100, 10_000), background_fraction=0.1, seed=3)
    a = ds[2][0].clone()
    assert torch.equal(a, ds[2][0])
    ds.set_epoch(1)
    assert not torch.equal(a, ds[2][0])
    ds.set_epoch(0)
    assert torch.equal(a, ds[2][0])
    # targets are the expected signal: normalized by the noisy mean, so their sum differs
    x, y = ds[2]
    assert float(y.sum()) > 0


def test_dataloader_with_worker_processes(tiny_db):
    ds = EDXMaps(tiny_db, "train", counts=500.0, background=50.0)
    batches = list(DataLoader(ds, batch_size=4, num_workers=2))
    assert sum(len(x) for x, _ in batches) == len(ds)
    single = torch.cat([x for x, _ in DataLoader(ds, batch_size=4)])
    assert torch.equal(torch.cat([x for x, _ in batches]), single)


def test_tilt_series_items(tiny_db):
    ts = TiltSeries(tiny_db, "test")
    item = ts[0]
    assert item["noisy"].shape == item["target"].shape == (16, 32, 32)
    assert item["reference"].shape == (32, 32, 32)
    assert item["reference"].sum() == pytest.approx(1000.0, rel=1e-4)
    np.testing.assert_allclose(item["target"].sum(axis=(1, 2)), 1000.0, rtol=1e-4)


def test_bad_dataset_options(tiny_db):
    with pytest.raises(ConfigError, match="unknown split"):
        EDXMaps(tiny_db, "dev")
    with pytest.raises(ConfigError, match="no noise level 'c1_b0'"):
        EDXMaps(tiny_db, "train", noise="c1_b0")
    with pytest.raises(ConfigError, match="not both"):
        EDXMaps(tiny_db, "train", noise="c1000_b100", counts=10)


@pytest.mark.parametrize("shape", [(1, 1, 32, 32), (2, 1, 37, 50), (1, 1, 5, 7)])
def test_unet_keeps_any_size(shape):
    net = UNet(depth=2, base=4)
    assert net(torch.rand(shape)).shape == shape
    with pytest.raises(ConfigError, match=r"\(N, 1, H, W\)"):
        net(torch.rand(3, 32, 32))


def test_tiny_unet_overfits_a_few_maps(tiny_db):
    torch.manual_seed(0)
    x, y = map(torch.stack, zip(*[EDXMaps(tiny_db, "train")[i] for i in range(4)]))
    net = UNet(depth=2, base=8)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        opt.zero_grad()
        loss = torch.nn.functional.l1_loss(net(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 5


def test_resume_gives_the_weights_of_an_uninterrupted_run(tmp_path, tiny_db, monkeypatch):
    kw = dict(preset="tiny", epochs=3, batch_size=4, counts=800.0, background=80.0,
              progress=False)
    full = train(tiny_db, tmp_path / "full.pt", **kw)
    real = train_module._save_checkpoint
    calls = []

    def dies_after_second_epoch(path, state):
        real(path, state)
        calls.append(state["epoch"])
        if state["epoch"] == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "_save_checkpoint", dies_after_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_db, tmp_path / "cut.pt", **kw)
    monkeypatch.setattr(train_module, "_save_checkpoint", real)
    train(tiny_db, tmp_path / "cut.pt", resume=True, **kw)
    a, meta_a = load_model(full)
    b, meta_b = load_model(tmp_path / "cut.pt")
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    assert [h["val_nmae"] for h in meta_a["history"]] == [h["val_nmae"] for h in meta_b["history"]]
    assert meta_a["data_version"] == "0.1.0" and meta_a["epochs"] == 3
    assert len(meta_a["history"]) == 3 and meta_a["val_nmae"] == min(
        h["val_nmae"] for h in meta_a["history"])


def test_model_files_of_another_kind_are_refused(tmp_path):
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(SchemaError, match="not a nanoedx model file"):
        load_model(other)
    text = tmp_path / "text.pt"
    text.write_text("hello")
    with pytest.raises(SchemaError, match="not a nanoedx model file"):
        load_model(text)
    net = UNet(depth=2, base=4)
    path = save_model(tmp_path / "ok.pt", net, {"x": 1}, half=True)
    back, meta = load_model(path)
    assert meta == {"x": 1} and back.config == {"depth": 2, "base": 4}


def test_denoise_checks_its_input(tmp_path):
    net = UNet(depth=2, base=4)
    out = denoise(np.ones((2, 20, 24)), model=net)
    assert out.shape == (2, 20, 24) and out.dtype == np.float32 and out.min() >= 0
    assert denoise(np.ones((20, 24)), model=net).shape == (20, 24)
    for bad, match in [(np.ones(5), "must be \\(row, col\\)"), (-np.ones((8, 8)), "non-negative"),
                       (np.full((8, 8), np.nan), "NaN"), (np.ones((1, 2, 8, 8)), "must be")]:
        with pytest.raises(ConfigError, match=match):
            denoise(bad, model=net)


def test_denoise_conserves_the_counts_less_the_background():
    net = load_pretrained("default")[0]  # an untrained net may put out zeros: nothing to scale
    maps = np.random.default_rng(0).poisson(3.0, (3, 16, 16))
    totals = maps.sum(axis=(1, 2))
    np.testing.assert_allclose(denoise(maps, model=net).sum(axis=(1, 2)), totals, rtol=1e-5)
    out = denoise(maps, model=net, background=[10.0, 20.0, 1e6])
    np.testing.assert_allclose(out.sum(axis=(1, 2)), [totals[0] - 10, totals[1] - 20, 0],
                               rtol=1e-5)
    assert out.min() >= 0
    for bad in (-1.0, [1.0, 2.0], np.nan):
        with pytest.raises(ConfigError, match="background must be"):
            denoise(maps, model=net, background=bad)


def test_gaussian_oracle_finds_the_best_width():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:48, :48]
    truth = 5 * np.exp(-((yy - 24) ** 2 + (xx - 20) ** 2) / 60.0)
    noisy = rng.poisson(truth + 0.1)
    best, sigma = oracle(gaussian, noisy, truth, (0.05, 20.0), background=0.1 * truth.size)
    b = 0.1 * truth.size
    grid = [np.abs(conserve(gaussian(noisy, s, b), noisy, b) - truth).mean()  # as delivered
            for s in np.linspace(0.1, 10, 400)]
    assert np.abs(best - truth).mean() <= min(grid) + 1e-3
    assert nmae(best, truth) < nmae(np.maximum(noisy - 0.1, 0), truth)


def test_cli_train_and_denoise(tmp_path, tiny_db, capsys):
    from nanoedx_models.cli import main

    model = tmp_path / "m.pt"
    assert main(["train", str(tiny_db), "-o", str(model), "--preset", "tiny", "--epochs", "1",
                 "--batch-size", "4", "--counts", "300:3000", "--background-fraction", "0.1",
                 "--device", "cpu"]) == 0
    _, meta = load_model(model)
    assert meta["counts"] == [300.0, 3000.0] or meta["counts"] == (300.0, 3000.0)
    maps = np.random.default_rng(0).poisson(1.0, (3, 24, 24)).astype(np.uint16)
    np.save(tmp_path / "in.npy", maps)
    assert main(["denoise", str(tmp_path / "in.npy"), "-o", str(tmp_path / "out.npy"),
                 "--model", str(model)]) == 0
    out = np.load(tmp_path / "out.npy")
    assert out.shape == maps.shape and out.dtype == np.float32
    np.save(tmp_path / "neg.npy", -np.ones((2, 8, 8)))
    assert main(["denoise", str(tmp_path / "neg.npy"), "-o", str(tmp_path / "bad.npy"),
                 "--model", str(model)]) == 2
    assert "non-negative" in capsys.readouterr().err
    assert not (tmp_path / "bad.npy").exists()
    assert main(["train", str(tiny_db), "-o", str(tmp_path / "x.pt"), "--preset", "huge"]) == 2
    assert "unknown U-net preset 'huge'" in capsys.readouterr().err


def test_default_model_is_embedded_and_beats_the_oracle_gaussian(monkeypatch):
    """Offline (nothing listens on the URLs), on maps of the embedded mini release."""
    from nanoedx_models.denoisers.pretrained import URL_ENV, registry

    monkeypatch.setenv(URL_ENV, "http://127.0.0.1:9")
    monkeypatch.setenv("NANOEDX_DATA_URL", "http://127.0.0.1:9")
    assert registry()["unet-small"]["embedded"]
    noisy, truth = [], []
    for split in ("val", "test"):
        ds = EDXMaps("mini", split)
        for i in range(len(ds)):
            x, g, _, _ = ds.raw(i)
            noisy.append(x)
            truth.append(g)
    out = denoise(np.array(noisy))  # model=None: the default pretrained model
    unet = np.mean([nmae(d, g) for d, g in zip(out, truth)])
    gauss = np.mean([nmae(oracle(gaussian, x, g, (0.05, 20.0), 100.0)[0], g)
                     for x, g in zip(noisy, truth)])
    assert unet < gauss


def test_large_pretrained_weights_come_through_pooch(tmp_path, monkeypatch):
    from nanoedx_dataset.store.files import sha256
    from nanoedx_models.denoisers import pretrained
    from servers import file_server

    served = tmp_path / "served"
    served.mkdir()
    save_model(served / "big.pt", UNet(depth=2, base=4), {"name": "big"})
    reg = {**pretrained.registry(),
           "unet-big": {"file": "big.pt", "sha256": "sha256:" + sha256(served / "big.pt"),
                        "embedded": False, "url": "http://127.0.0.1:9/none"}}
    monkeypatch.setattr(pretrained, "registry", lambda: reg)
    with file_server(served) as (server, url):
        monkeypatch.setenv(pretrained.URL_ENV, url)
        path = pretrained.model_path("unet-big", cache_dir=tmp_path / "cache")
        assert server.requests == ["/big.pt"]
    assert load_model(path)[1]["name"] == "big"
    reg["unet-big"]["sha256"] = "sha256:" + "0" * 64
    (tmp_path / "cache" / "big.pt").unlink()
    with file_server(served) as (server, url):
        monkeypatch.setenv(pretrained.URL_ENV, url)
        with pytest.raises(SchemaError, match="big.pt.*corrupt.*does not match"):
            pretrained.model_path("unet-big", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache" / "big.pt").exists()
    with pytest.raises(Exception, match="not available.*GPU"):
        load_pretrained("unet-paper")


def test_fine_tuning_on_crops_of_several_sources_over_a_dose_range(tmp_path, tiny_db):
    ds = EDXMaps([tiny_db, tiny_db], "train", counts=(16.0, 1600.0),
                 background_fraction=(0.02, 0.6), seed=1)
    assert len(ds) == 2 * len(EDXMaps(tiny_db, "train"))
    fractions = {round(ds.raw(i)[3] / ds.raw(i)[2], 6) for i in range(6)}
    assert len(fractions) > 1 and all(0.02 <= f <= 0.6 for f in fractions)
    base = train(tiny_db, tmp_path / "base.pt", preset="tiny", epochs=1, batch_size=4,
                 counts=800.0, background=80.0, progress=False)
    tuned = train([tiny_db, tiny_db], tmp_path / "tuned.pt", preset="tiny", epochs=1,
                  batch_size=4, counts=(16.0, 1600.0), background_fraction=(0.02, 0.6),
                  crops=(16, 24), init=str(base), progress=False)
    meta = load_model(tuned)[1]
    assert meta["crops"] == [16, 24] and meta["init"] == str(base)
    with pytest.raises(ConfigError, match="init model"):
        train(tiny_db, tmp_path / "bad.pt", preset="small", epochs=1, init=str(base),
              counts=800.0, progress=False)
    with pytest.raises(ConfigError, match="background_fraction range"):
        EDXMaps(tiny_db, "train", counts=100.0, background_fraction=(0.5, 0.1))
