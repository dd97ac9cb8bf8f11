"""Self-supervised adaptation (nanoedx_models.training.adapt) on small simulated maps."""

import numpy as np
import pytest
import torch

from nanoedx_dataset.errors import ConfigError
from nanoedx_models import UNet, adapt, denoise, load_model, save_model
from nanoedx_models.data.datasets import EDXMaps
from nanoedx_models.training import adapt as adapt_module
from nanoedx_models.training.adapt import count_loss

FAST = dict(batch_size=8, crop=48, progress=False, device="cpu")


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks run many times faster on one thread than on a shared machine's two."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def mini():
    """8 noisy 64^2 maps of the embedded mini release (1000 counts + 100 background) and their
    expected counts per pixel, background included."""
    noisy, lam = [], []
    ds = EDXMaps("mini", "val")
    for i in range(8):
        x, g, _, b = ds.raw(i)
        noisy.append(x)
        lam.append(g + b / g.size)
    return np.array(noisy).astype(np.int64), np.array(lam)


@pytest.fixture(scope="module")
def random_start(tmp_path_factory):
    """A tiny U-net with random weights as a model file (it knows nothing of EDX maps)."""
    torch.manual_seed(0)
    return save_model(tmp_path_factory.mktemp("init") / "random.pt", UNet(depth=2, base=8), {})


def rel_error(out, lam):
    """nMAE (%) against the expected counts, mean over maps."""
    return float(np.mean(np.abs(out - lam).mean((1, 2)) / lam.mean((1, 2))) * 100)


@pytest.mark.parametrize("loss, fraction", [("poisson", 0.3), ("mse", 0.5)])
def test_adaptation_learns_the_expected_counts_without_ground_truth(tmp_path, mini, random_start,
                                                                    loss, fraction):
    noisy, lam = mini
    start = rel_error(denoise(noisy, model=str(random_start)), lam)
    out = adapt(noisy, tmp_path / "a.pt", init=str(random_start), steps=80, lr=3e-3, loss=loss,
                fraction=fraction, **FAST)
    d = denoise(noisy, model=str(out))
    assert start > 90  # the random start answers ~nothing
    assert rel_error(d, lam) < 0.6 * rel_error(noisy, lam)  # raw maps: ~73 %, adapted: ~30 %
    # the halves' scale (1 - p) / p is right: totals are conserved (at p = 0.3 it is 2.3)
    assert d.sum() / noisy.sum() == pytest.approx(1.0, abs=0.15)
    _, meta = load_model(out)
    assert meta["loss"] == loss and meta["adapted_from"] == str(random_start)
    assert len(meta["history"]) == 80


def test_adapting_the_default_model_keeps_it_working(tmp_path, mini):
    noisy, lam = mini
    out = adapt(noisy, tmp_path / "a.pt", steps=10, batch_size=4, crop=64, progress=False,
                device="cpu")
    d = denoise(noisy, model=str(out))
    assert rel_error(d, lam) < 0.5 * rel_error(noisy, lam)
    assert d.sum() / noisy.sum() == pytest.approx(1.0, abs=0.1)  # background kept: all counts

    from nanoedx_models.denoisers import denoiser

    as_method = denoiser(f"unet:{out}")(noisy[0].astype(float), 0.0)
    np.testing.assert_allclose(as_method, d[0], rtol=1e-5, atol=1e-6)


def test_losses_are_minimized_by_the_mean_count():
    target = torch.tensor([0.0, 0.0, 0.0, 1.0, 3.0])  # sparse: median 0, mean 0.8
    levels = torch.linspace(0.05, 3, 296)
    for kind in ("poisson", "mse"):
        values = [count_loss(torch.full_like(target, float(v)), target, kind) for v in levels]
        assert float(levels[int(torch.stack(values).argmin())]) == pytest.approx(0.8, abs=0.01)
    with pytest.raises(ConfigError, match="unknown loss 'l1'; choose one of: poisson, mse"):
        count_loss(target, target, "l1")


def test_resume_reaches_the_weights_of_an_uninterrupted_run(tmp_path, mini, random_start,
                                                            monkeypatch):
    noisy, _ = mini
    kw = dict(init=str(random_start), steps=12, lr=3e-3, checkpoint_every=4, **FAST)
    full = adapt(noisy, tmp_path / "full.pt", **kw)
    real = adapt_module._save_checkpoint

    def dies_at_step_8(path, state):
        real(path, state)
        if state["epoch"] == 8:
            raise KeyboardInterrupt

    monkeypatch.setattr(adapt_module, "_save_checkpoint", dies_at_step_8)
    with pytest.raises(KeyboardInterrupt):
        adapt(noisy, tmp_path / "cut.pt", **kw)
    assert not (tmp_path / "cut.pt").exists() and (tmp_path / "cut.pt.ckpt").exists()
    monkeypatch.setattr(adapt_module, "_save_checkpoint", real)
    adapt(noisy, tmp_path / "cut.pt", resume=True, **kw)
    (a, meta_a), (b, meta_b) = load_model(full), load_model(tmp_path / "cut.pt")
    flat = torch.nn.utils.parameters_to_vector
    assert torch.equal(flat(a.parameters()), flat(b.parameters()))
    assert meta_a["history"] == meta_b["history"]
    with pytest.raises(ConfigError, match="nothing to resume"):
        adapt(noisy, tmp_path / "other.pt", resume=True, **kw)


def test_bad_maps_and_options_are_refused(tmp_path, random_start):
    ok = np.random.default_rng(0).poisson(0.2, (2, 32, 32))
    cases = [(ok + 0.5, "fractions, not whole numbers"), (-ok, "non-negative"),
             (np.zeros((2, 32, 32), int), "map 0 holds 0 counts"),
             (np.ones((2, 8, 8), int), "too small")]
    for maps, match in cases:
        with pytest.raises(ConfigError, match=match):
            adapt(maps, tmp_path / "x.pt", init=str(random_start), **FAST)
    with pytest.raises(ConfigError, match="fraction must be between 0 and 1"):
        adapt(ok, tmp_path / "x.pt", init=str(random_start), fraction=1.0, **FAST)
    with pytest.raises(ConfigError, match="is the model to start from"):
        adapt(ok, random_start, init=str(random_start), **FAST)
    assert not (tmp_path / "x.pt").exists()


def test_cli_adapt(tmp_path, mini, random_start, capsys):
    from nanoedx_models.cli import main

    noisy, _ = mini
    np.save(tmp_path / "maps.npy", noisy.astype(np.uint16))
    out = tmp_path / "m.pt"
    args = ["adapt", str(tmp_path / "maps.npy"), "-o", str(out), "--init", str(random_start),
            "--steps", "3", "--batch-size", "2", "--crop", "32", "--device", "cpu"]
    assert main(args) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert main(["denoise", str(tmp_path / "maps.npy"), "-o", str(tmp_path / "d.npy"),
                 "--model", str(out)]) == 0
    assert np.load(tmp_path / "d.npy").shape == noisy.shape
    assert main(args) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    assert main([*args[:3], str(tmp_path / "maps.npy"), *args[4:], "--overwrite"]) == 2
    assert "is an input of this command" in capsys.readouterr().err
    assert main([*args[:3], str(random_start), *args[4:]]) == 2
    assert "is an input of this command" in capsys.readouterr().err
    np.save(tmp_path / "float.npy", noisy / 3.0)
    assert main(["adapt", str(tmp_path / "float.npy"), "-o", str(tmp_path / "f.pt")]) == 2
    assert "not whole numbers" in capsys.readouterr().err
    np.save(tmp_path / "few.npy", (noisy > 5).astype(np.uint8))
    assert main(["adapt", str(tmp_path / "few.npy"), "-o", str(tmp_path / "f.pt")]) == 2
    assert "adaptation needs at least 100" in capsys.readouterr().err
