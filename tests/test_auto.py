import json

import numpy as np
import pytest

from nanoedx_dataset import ConfigError
from nanoedx_models.cli import main
from nanoedx_models.data.tiltio import Series, read_series, write_series
from nanoedx_models.evaluation.auto import FLAT, auto_denoise, auto_series, default_candidates

N = 48
YY, XX = np.mgrid[:N, :N]


def _maps(n_maps=5, peak=1.0, floor=0.05, seed=0):
    """Count maps of a blob on a uniform floor (about 1e3 counts each)."""
    lam = floor + peak * np.exp(-((YY - 22.0) ** 2 + (XX - 26.0) ** 2) / 60.0)
    return np.random.default_rng(seed).poisson(np.broadcast_to(lam, (n_maps, N, N)))


CANDIDATES = ["noisy", "gaussian-val", "tv-val"]


@pytest.fixture(scope="module")
def picked():
    maps = _maps()
    return maps, *auto_denoise(maps, candidates=CANDIDATES, repeats=2)


def test_auto_picks_a_method_no_worse_than_the_best_candidate(picked):
    maps, out, report = picked
    rows = {r["method"]: r for r in report.rows}
    assert [r["method"] for r in report.rows] == [*CANDIDATES, FLAT]  # every candidate, in order
    ok = [r for r in report.rows if r["status"] == "ok"]
    best = min(r["nmse_mean"] for r in ok)
    pick = rows[report.method]
    assert pick["tied"] and pick["nmse_mean"] <= best + pick["diff_se"]
    assert rows["noisy"]["nmse_mean"] > pick["nmse_mean"]  # smoothing beats the raw counts
    assert report.method != "noisy" and report.parameter > 0
    for r in ok:
        assert r["nmse_se"] > 0 and r["diff_se"] >= 0 and r["seconds_per_map"] >= 0
    assert rows[FLAT]["status"] == "baseline" and not rows[FLAT]["tied"]
    assert report.counts == pytest.approx(maps.sum(axis=(1, 2)).min() / 2)
    assert "picked" in report.table() and report.method in report.table()
    json.dumps(report.to_dict())  # JSON-ready


def test_auto_output_is_the_picked_method_on_the_full_maps(picked):
    from nanoedx_models.denoisers import denoiser

    maps, out, report = picked
    assert out.shape == maps.shape and out.dtype == np.float32 and out.min() >= 0
    np.testing.assert_allclose(out.sum(axis=(1, 2)), maps.sum(axis=(1, 2)), rtol=1e-5)
    d = denoiser(report.method)
    np.testing.assert_allclose(out[0], d(maps[0], 0.0, report.parameter), rtol=1e-5)


def test_a_tie_goes_to_the_earlier_candidate():
    def first(c):
        return np.asarray(c, float)

    def second(c):
        return np.asarray(c, float)

    maps = _maps(4)
    for order in ([first, second], [second, first]):
        _, report = auto_denoise(maps, candidates=order)
        assert report.method == order[0].__name__
        assert [r["tied"] for r in report.rows[:2]] == [True, True]


def test_single_event_maps_rank_on_the_unclipped_error():
    maps = _maps(6, peak=0.05, floor=0.002, seed=1)  # ~40 counts on 48 x 48: mostly 0 and 1
    assert maps.max() <= 3
    out, report = auto_denoise(maps, candidates=["noisy", "gaussian-val"], repeats=2)
    rows = {r["method"]: r for r in report.rows}
    assert rows["noisy"]["nmse_mean"] > rows["gaussian-val"]["nmse_mean"]
    assert report.method == "gaussian-val"
    np.testing.assert_allclose(out.sum(axis=(1, 2)), maps.sum(axis=(1, 2)), rtol=1e-5)


def test_background_sets_the_total_and_a_failing_candidate_fails_its_row():
    maps = _maps(4)

    def broken(c):
        raise ValueError("no luck")

    out, report = auto_denoise(maps, candidates=["noisy", broken], background=100.0)
    np.testing.assert_allclose(out.sum(axis=(1, 2)), maps.sum(axis=(1, 2)) - 100, rtol=1e-5)
    rows = {r["method"]: r for r in report.rows}
    assert rows["broken"]["status"].startswith("failed") and report.method == "noisy"


def test_auto_refuses_bad_input():
    maps = _maps(3)
    with pytest.raises(ConfigError, match="oracle"):
        auto_denoise(maps, candidates=["gaussian-oracle"])
    with pytest.raises(ConfigError, match="unknown denoiser 'wiener'"):
        auto_denoise(maps, candidates=["wiener"])
    with pytest.raises(ConfigError, match="at most 0 counts"):
        auto_denoise(np.zeros((2, 8, 8), int), candidates=["noisy"])
    with pytest.raises(ConfigError, match="repeats"):
        auto_denoise(maps, candidates=["noisy"], repeats=0)
    with pytest.raises(ConfigError, match="folds"):
        auto_denoise(maps, candidates=["noisy"], folds=1)
    assert default_candidates() == ["gaussian-val", "unet", "unet-multidose"]


def test_the_cli_spells_auto_defaults_as_auto_does():
    from nanoedx_models import cli
    from nanoedx_models.evaluation import auto

    assert cli.AUTO_CANDIDATES == auto.DEFAULT_CANDIDATES and cli.FOLDS == auto.FOLDS


def test_each_element_is_chosen_on_its_own_maps():
    data = np.stack([_maps(3), _maps(3, peak=0.3, seed=2)])
    series = Series(data, ["Au", "Ag"], np.array([-30.0, 0.0, 30.0]))
    out, reports = auto_series(series, ["noisy", "gaussian-val"], background=[10.0, 20.0],
                               progress=False)
    assert set(reports) == {"Au", "Ag"} and out.data.shape == data.shape
    np.testing.assert_allclose(out.data.sum(axis=(2, 3)),
                               data.sum(axis=(2, 3)) - np.array([[10.0], [20.0]]), rtol=1e-5)
    assert out.metadata["denoised_with"]["Au"]["method"] == reports["Au"].method


def test_cli_auto_writes_the_output_and_refuses_overwriting(tmp_path, capsys):
    src = tmp_path / "maps.h5"
    write_series(src, Series(_maps(6)[None], ["Au"], np.arange(-75.0, 76.0, 30.0)))
    out, report = tmp_path / "den.npy", tmp_path / "scores.json"
    args = ["denoise", str(src), "--method", "auto", "--candidates", "noisy,gaussian-val"]
    assert main([*args, "-o", str(out), "--report", str(report)]) == 0
    captured = capsys.readouterr()
    assert "picked gaussian-val" in captured.err and "| flat |" in captured.err
    assert str(out) in captured.out
    scores = json.loads(report.read_text())["Au"]
    assert scores["method"] == "gaussian-val" and len(scores["rows"]) == 3
    assert np.load(out).shape == (6, N, N)
    before = out.read_bytes()
    assert main([*args, "-o", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err and out.read_bytes() == before
    assert main([*args, "-o", str(src), "--overwrite"]) == 2  # never over the input
    assert "input" in capsys.readouterr().err
    assert read_series(src).data.shape[-3:] == (6, N, N)
    assert main([*args, "-o", str(out), "--overwrite"]) == 0
    assert main(["denoise", str(src), "--method", "gaussian-val", "-o", str(tmp_path / "g.npy")]
                ) == 0
    assert "picked gaussian-val" in capsys.readouterr().err


@pytest.mark.parametrize("extra,match", [
    (["--method", "auto", "--candidates", "gaussian-oracle"], "oracle"),
    (["--method", "auto", "--model", "unet-multidose"], "--model runs that U-net alone"),
    (["--model", "unet-multidose", "--candidates", "noisy"], "--candidates is for --method auto"),
    (["--model", "unet-multidose", "--folds", "3"], "--folds is for --method auto"),
    (["--folds", "1"], "--folds must be 0 (none) or at least 2"),
    (["--device", "cuda"], "--device cuda is for one U-net alone"),
    (["--method", "noisy", "--candidates", "noisy"], "--candidates is for --method auto"),
    (["--method", "auto", "--report", "r.txt"], "must be a .json"),
])
def test_cli_auto_bad_options_write_nothing(tmp_path, capsys, extra, match):
    src = tmp_path / "maps.npy"
    np.save(src, _maps(2).astype(np.uint16))
    out = tmp_path / "den.npy"
    assert main(["denoise", str(src), "-o", str(out), *extra]) == 2
    assert match in capsys.readouterr().err and not out.exists()


def test_the_full_maps_get_a_parameter_cross_validated_near_their_own_dose():
    """The hold-out chooses the Gaussian's width at a lower dose (wider than the full maps'
    optimum); the K-fold choice lands nearer the width that minimizes the error against the
    truth at the full dose."""
    from scipy.optimize import minimize_scalar

    from nanoedx_models.denoisers import denoiser

    n = 64
    yy, xx = np.mgrid[:n, :n]
    lam = (0.05 + 1.0 * ((yy - 30) ** 2 + (xx - 34) ** 2 < 15**2)
           + 0.8 * ((yy - 14) ** 2 / 9 + (xx - 14) ** 2 / 30 < 1))
    d = denoiser("gaussian-val")
    for seed in range(3):
        maps = np.random.default_rng(seed).poisson(np.broadcast_to(lam, (6, n, n)))

        def mse(logp, maps=maps):
            return np.mean([np.mean((d(m, 0.0, np.exp(logp)) - lam) ** 2) for m in maps])

        best = np.exp(minimize_scalar(mse, bounds=np.log((0.3, 20)), method="bounded").x)
        out, report = auto_denoise(maps, candidates=["gaussian-val"], seed=seed,
                                   select_maps=None)
        assert report.folds == 5 and report.holdout_parameter > best
        assert abs(np.log(report.parameter / best)) < abs(np.log(report.holdout_parameter / best))
        assert report.parameter == pytest.approx(best, rel=0.12)
        np.testing.assert_allclose(out[1], d(maps[1], 0.0, report.parameter), rtol=1e-5)
        _, kept = auto_denoise(maps, candidates=["gaussian-val"], seed=seed, select_maps=None,
                               folds=None)
        assert kept.folds is None and kept.parameter == kept.holdout_parameter
        assert kept.parameter == report.holdout_parameter


def test_cli_denoise_defaults_to_auto_and_model_runs_the_unet_alone(tmp_path, capsys):
    from nanoedx_models import denoise

    src = tmp_path / "maps.npy"
    maps = _maps(4)
    np.save(src, maps.astype(np.uint16))
    assert main(["denoise", str(src), "--candidates", "noisy,gaussian-val", "--folds", "0",
                 "-o", str(tmp_path / "a.npy")]) == 0
    err = capsys.readouterr().err
    assert "picked gaussian-val" in err and "cross-validated" not in err
    assert main(["denoise", str(src), "--model", "unet-multidose", "-o",
                 str(tmp_path / "u.npy")]) == 0
    assert "picked" not in capsys.readouterr().err
    np.testing.assert_allclose(np.load(tmp_path / "u.npy"), denoise(maps, "unet-multidose",
                                                                    device="cpu"), rtol=1e-4)


def test_an_empty_tilt_is_denoised_but_not_scored():
    maps = _maps(5)
    maps[2] = 0  # e.g. a tilt where the beam was blanked
    maps[3] = 0
    maps[3, 20, 20] = 3  # nearly empty
    out, report = auto_denoise(maps, candidates=["noisy", "gaussian-val"], repeats=2)
    assert report.method == "gaussian-val" and "2, 3" in report.note
    assert report.counts == pytest.approx(0.5 * np.delete(maps, [2, 3], 0).sum(axis=(1, 2)).min())
    np.testing.assert_array_equal(out[2], 0)  # nothing made up where nothing was counted
    assert out[3].sum() == pytest.approx(3, rel=1e-5)  # its counts conserved
    np.testing.assert_allclose(out.sum(axis=(1, 2)), maps.sum(axis=(1, 2)), rtol=1e-5)
