import json

import numpy as np
import pytest

from nanoedx_dataset import ConfigError
from nanoedx_models.evaluation.benchmark import benchmark
from nanoedx_models.cli import main
from nanoedx_models.denoisers import DENOISERS, register

GOOD = ["noisy", "gaussian-oracle", "gaussian-val"]
BROKEN = {"broken-shape": "returned shape", "broken-nan": "NaN", "broken-raises": "ValueError"}


@pytest.fixture(scope="module")
def broken():
    """Three registered denoisers that fail in different ways; removed afterwards."""
    register("broken-shape")(lambda x, p, b: x[1:])
    register("broken-nan")(lambda x, p, b: x * np.nan)

    def raises(x, p, b):
        raise ValueError("no luck")

    register("broken-raises")(raises)
    yield list(BROKEN)
    for name in BROKEN:
        DENOISERS.pop(name)


@pytest.fixture(scope="module")
def board(tiny_db, broken, tmp_path_factory):
    out = tmp_path_factory.mktemp("board")
    return benchmark(tiny_db, methods=GOOD + broken, out=out, figures=True, progress=False), out


def test_runner_writes_both_files_and_figures(board):
    result, out = board
    on_disk = json.loads((out / "leaderboard.json").read_text())
    assert on_disk["rows"] == result["rows"]
    for key in ("dataset_version", "source"):
        assert key in on_disk["data"]
    assert on_disk["counts"] == 1000 and on_disk["background"] == 100
    assert on_disk["seed"] == 0 and on_disk["package_version"]
    for row in on_disk["rows"]:
        assert set(row) >= {"method", "nmae2d_mean", "nmae2d_std", "nmae3d_mean", "nmae3d_std",
                            "bias2d_mean", "bias2d_std", "bias3d_mean", "bias3d_std",
                            "bias2d", "bias3d", "seconds_per_map"}
    table = (out / "leaderboard.md").read_text()
    assert table.count("| ok |") == len(GOOD) and table.count("failed") == len(BROKEN)
    for name in ("leaderboard_2d", "leaderboard_3d", "leaderboard_maps",
                 "leaderboard_orthoslices"):
        assert (out / f"{name}.png").read_bytes()[:4] == b"\x89PNG"


def test_scores_rank_the_methods(board):
    rows = {r["method"]: r for r in board[0]["rows"]}
    assert board[0]["n_maps_2d"] == 2 and board[0]["n_structures_3d"] == 2
    for name in GOOD:
        r = rows[name]
        assert r["status"] == "ok" and len(r["nmae2d"]) == 2 and len(r["nmae3d"]) == 2
        assert r["nmae3d_mean"] > 0 and r["seconds_per_map"] >= 0
    for dim in ("2d", "3d"):
        assert rows["gaussian-oracle"][f"nmae{dim}_mean"] < rows["noisy"][f"nmae{dim}_mean"]
    assert rows["gaussian-val"]["parameter"] > 0.05


def test_bias_columns_are_signed_totals_near_zero_for_conserving_methods(board, tiny_db):
    from nanoedx_models import EDXMaps
    from nanoedx_models.evaluation.metrics import MEASURES, bias

    rows = {r["method"]: r for r in board[0]["rows"]}
    maps = EDXMaps(tiny_db, "test")
    for name in GOOD:  # every output sums to its counts less the background
        r = rows[name]
        assert len(r["bias2d"]) == 2 and len(r["bias3d"]) == 2
        assert r["bias2d_mean"] == pytest.approx(np.mean(r["bias2d"]))
        for b, i in zip(r["bias2d"], range(len(maps))):  # the Poisson noise of the total only
            x, truth, _, _ = maps.raw(i)
            assert abs(b) < 5 * 100 * np.sqrt(x.sum()) / truth.sum() + 1
        assert abs(r["bias3d_mean"]) < 10
    assert bias([2.0, 2.0], [1.0, 2.0]) == pytest.approx(100 / 3)
    assert bias([0.5, 1.0], [1.0, 2.0]) == pytest.approx(-50)
    assert MEASURES["bias"].key(-3.0) == MEASURES["bias"].key(3.0) > MEASURES["bias"].key(-1)
    assert MEASURES["nmae"].best == "lower" and MEASURES["bias"].best == "zero"
    table = (board[1] / "leaderboard.md").read_text()
    assert "| 2D bias | 3D bias |" in table and "best at 0" in table
    assert f"{rows['noisy']['bias2d_mean']:+.1f} ±" in table


def test_failed_denoisers_are_reported_in_their_rows(board):
    rows = {r["method"]: r for r in board[0]["rows"]}
    for name, reason in BROKEN.items():
        assert rows[name]["status"].startswith("failed") and reason in rows[name]["status"]
        assert rows[name]["nmae2d_mean"] is None and rows[name]["nmae3d_mean"] is None
    assert [r["status"] == "ok" for r in board[0]["rows"]] == [True] * 3 + [False] * 3


def test_same_inputs_same_numbers_with_any_number_of_workers(board, tiny_db, broken):
    again = benchmark(tiny_db, methods=GOOD + broken, workers=2, progress=False)
    strip = lambda b: [{k: v for k, v in r.items() if k != "seconds_per_map"} for r in b["rows"]]
    assert strip(again) == strip(board[0])


def test_another_dose_draws_noise_on_the_fly(board, tiny_db):
    low = benchmark(tiny_db, methods=["noisy"], counts=100, dims=["2d"], progress=False)
    assert low["counts"] == 100 and low["background"] == 10 and low["noise"] == "on the fly"
    stored = {r["method"]: r for r in board[0]["rows"]}["noisy"]["nmae2d_mean"]
    assert low["rows"][0]["nmae2d_mean"] > stored  # fewer counts, noisier maps


def test_cli_prints_the_table(tiny_db, tmp_path, capsys):
    out = tmp_path / "lb"
    assert main(["benchmark", "--data", str(tiny_db), "--methods", "noisy,gaussian-oracle",
                 "--dims", "2d", "--no-figures", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| 1 | gaussian-oracle |" in printed and "| 2 | noisy |" in printed
    assert sorted(p.name for p in out.iterdir()) == ["leaderboard.json", "leaderboard.md",
                                                    "leaderboard_examples.npz"]


@pytest.mark.parametrize("args,match", [
    (["--methods", "noisy,wiener"], "unknown denoiser 'wiener'"),
    (["--dims", "4d"], "dims must be"),
    (["--split", "holdout"], "split"),
    (["--counts", "-5"], "counts"),
])
def test_cli_bad_input_writes_nothing(tiny_db, tmp_path, capsys, args, match):
    out = tmp_path / "lb"
    assert main(["benchmark", "--data", str(tiny_db), "--out", str(out)] + args) == 2
    assert match in capsys.readouterr().err and not out.exists()


def test_api_checks_workers(tiny_db):
    with pytest.raises(ConfigError, match="workers"):
        benchmark(tiny_db, workers=0)
