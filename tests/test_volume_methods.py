"""Methods of the reconstruction domain (scope "volume"): the benchmark's plumbing, conservation
of totals, em-bm4d-val and n2i against plain EM, determinism."""

import numpy as np
import pytest

from nanoedx_dataset import ConfigError
from nanoedx_models import TiltSeries
from nanoedx_models.denoisers import DENOISERS, denoiser, register
from nanoedx_models.denoisers.classical import remove_background
from nanoedx_models.denoisers.volume import N2I, binomial_halves
from nanoedx_models.evaluation.benchmark import benchmark
from nanoedx_models.evaluation.leaderboard import markdown
from nanoedx_models.reconstruction.em import reconstruct

TOYS = ("toy-volume", "toy-volume-raises", "toy-volume-shape")


@pytest.fixture(scope="module")
def toys():
    """A volume method (EM of the raw maps, scaled by 3) and two that fail; removed after."""
    def em_times_three(series, angles, p, background, iterations, threads):
        return 3 * reconstruct(remove_background(series, background), angles, iterations,
                               threads=threads)

    def raises(series, angles, p, background, iterations, threads):
        raise ValueError("no luck")

    register("toy-volume", scope="volume")(em_times_three)
    register("toy-volume-raises", scope="volume")(raises)
    register("toy-volume-shape", scope="volume")(lambda s, a, p, b, i, t: np.ones((2, 2, 2)))
    yield list(TOYS)
    for name in TOYS:
        DENOISERS.pop(name)


@pytest.fixture(scope="module")
def item(tiny_db):
    return TiltSeries(tiny_db, "test")[0]


def test_a_volume_method_has_a_3d_score_only_and_a_failing_one_fails_its_row(tiny_db, toys,
                                                                             tmp_path):
    board = benchmark(tiny_db, methods=["noisy", *toys], out=tmp_path, progress=False)
    rows = {r["method"]: r for r in board["rows"]}
    toy, noisy = rows["toy-volume"], rows["noisy"]
    assert toy["status"] == "ok" and toy["nmae2d_mean"] is None and toy["nmae2d"] == []
    assert len(toy["nmae3d"]) == 2 and toy["nmae3d_mean"] > 0 and toy["seconds_per_map"] > 0
    assert abs(toy["bias3d_mean"]) < 10  # rescaled to the maps' total: the factor 3 is gone
    assert toy["nmae3d_mean"] == pytest.approx(noisy["nmae3d_mean"], rel=0.05)
    assert "ValueError: no luck" in rows["toy-volume-raises"]["status"]
    assert "returned shape (2, 2, 2)" in rows["toy-volume-shape"]["status"]
    assert [r["method"] for r in board["rows"]][:2] == ["noisy", "toy-volume"]
    table = (tmp_path / "leaderboard.md").read_text()
    assert f"| 2 | toy-volume | – | {toy['nmae3d_mean']:.1f} ±" in table
    assert table.count("| ok |") == 2 and table.count("failed") == 2
    assert markdown(board) == table


def test_a_3d_only_board_ranks_by_3d(tiny_db, toys):
    board = benchmark(tiny_db, methods=["toy-volume", "noisy", "gaussian-oracle"], dims=["3d"],
                      progress=False)
    values = [r["nmae3d_mean"] for r in board["rows"]]
    assert values == sorted(values) and board["rows"][0]["method"] == "gaussian-oracle"


def test_scopes_are_checked_and_errors_name_the_fix(item):
    with pytest.raises(ConfigError, match="scope must be one of"):
        register("x", scope="slices")
    with pytest.raises(ConfigError, match="cannot be an oracle"):
        register("x", mode="oracle", scope="volume")
    with pytest.raises(ConfigError, match=r"call\s+its .reconstruct"):
        denoiser("n2i")(item["noisy"][0], item["background"])
    with pytest.raises(ConfigError, match="denoises one map at a time"):
        denoiser("noisy").reconstruct(item["noisy"], item["angles"], item["background"])
    with pytest.raises(ConfigError, match="needs its parameter"):
        denoiser("em-bm4d-val").reconstruct(item["noisy"], item["angles"], item["background"])


@pytest.mark.parametrize("name,p", [("em-bm4d-val", 5.0), ("n2i", None)])
def test_volumes_conserve_the_mean_total_less_the_background(item, name, p, monkeypatch):
    monkeypatch.setitem(N2I, "steps", 60)  # the total does not depend on the training
    series, b = item["noisy"].astype(np.float64), item["background"]
    v = denoiser(name).reconstruct(series, item["angles"], b, p, iterations=5, threads=1)
    n = series.shape[-1]
    assert v.shape == (n, series.shape[1], n) and v.min() >= 0
    assert v.sum() == pytest.approx(series.sum() / len(series) - b, rel=1e-9)


def test_binomial_halves_are_exact_splits():
    x = np.random.default_rng(1).poisson(3.0, (4, 8, 8)).astype(np.float64)
    a, b = binomial_halves(x, np.random.default_rng(0))
    assert np.array_equal(a + b, x) and a.min() >= 0 and b.min() >= 0
    assert 0.4 < a.sum() / x.sum() < 0.6
    with pytest.raises(ConfigError, match="raw counts"):
        binomial_halves(x - 5, np.random.default_rng(0))


@pytest.fixture(scope="module")
def volume_board(tiny_db):
    return benchmark(tiny_db, methods=["noisy", "em-bm4d-val", "n2i"], dims=["3d"],
                     progress=False)


def test_em_bm4d_and_n2i_beat_plain_em(volume_board):
    rows = {r["method"]: r for r in volume_board["rows"]}
    for name in ("em-bm4d-val", "n2i"):
        assert rows[name]["status"] == "ok"
        assert rows[name]["nmae3d_mean"] < 0.9 * rows["noisy"]["nmae3d_mean"]
    lo, hi = DENOISERS["em-bm4d-val"].bounds
    assert lo <= rows["em-bm4d-val"]["parameter"] <= hi and rows["n2i"]["parameter"] is None
    assert 1 <= volume_board["fit_structures"] <= 6


def test_volume_methods_give_the_same_numbers_with_any_number_of_workers(volume_board,
                                                                         tiny_db):
    again = benchmark(tiny_db, methods=["noisy", "em-bm4d-val", "n2i"], dims=["3d"], workers=2,
                      progress=False)
    strip = lambda b: [{k: v for k, v in r.items() if k != "seconds_per_map"} for r in b["rows"]]
    assert strip(again) == strip(volume_board)
