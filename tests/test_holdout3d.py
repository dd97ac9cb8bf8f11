import json

import numpy as np
import pytest

from nanoedx_dataset import ConfigError
from nanoedx_models import TiltSeries
from nanoedx_models.cli import main
from nanoedx_models.data.tiltio import Series, write_series
from nanoedx_models.denoisers import Denoiser
from nanoedx_models.denoisers.classical import gaussian
from nanoedx_models.evaluation.holdout import SINGLE_EVENT_NOTE
from nanoedx_models.evaluation.holdout3d import evaluate_pipelines, table

WIDE = Denoiser("gaussian-12", gaussian, "fixed", default=12.0)  # blurs the particle away


@pytest.fixture(scope="module")
def item():
    return TiltSeries("mini", "test", counts=3000, background=300, seed=0)[1]


@pytest.fixture(scope="module")
def rows(item):
    return evaluate_pipelines(item["noisy"], item["angles"], ["noisy", "gaussian-val", WIDE,
                                                              "auto"],
                              background=item["background"])


def test_pipelines_are_ranked_by_the_left_out_tilts(rows, item):
    by = {r["method"]: r for r in rows}
    assert [r["method"] for r in rows] == ["noisy", "gaussian-val", "gaussian-12", "auto"]
    assert all(r["status"] == "ok" for r in rows)
    assert len(by["noisy"]["nmse"]) == len(item["angles"])  # every tilt left out once
    # smoothing at the chosen width beats the raw counts and a far too wide blur, beyond noise
    g = by["gaussian-val"]
    for worse in ("noisy", "gaussian-12"):
        assert by[worse]["diff"] - g["diff"] > 2 * by[worse]["diff_se"]
    assert by["noisy"]["rel"] == pytest.approx(1.0) and g["rel"] < 0.8
    assert len(g["parameter"]) == 3 and all(p > 0 for p in g["parameter"])  # one per fold
    assert min(rows, key=lambda r: r["nmse_mean"])["diff"] == 0.0
    assert "gaussian-val" in table(rows)


def test_thinning_scores_the_pipelines_at_a_lower_dose(item):
    full = evaluate_pipelines(item["noisy"], item["angles"], ["noisy"])
    low = evaluate_pipelines(item["noisy"], item["angles"], ["noisy"], counts=300)
    assert low[0]["nmse_mean"] > full[0]["nmse_mean"]  # fewer counts: a noisier prediction


def test_bad_input_is_refused(item):
    x, a = item["noisy"], item["angles"]
    with pytest.raises(ConfigError, match="folds"):
        evaluate_pipelines(x, a, ["noisy"], folds=1)
    with pytest.raises(ConfigError, match="angles for"):
        evaluate_pipelines(x, a[:-1], ["noisy"])
    with pytest.raises(ConfigError, match="too few"):
        evaluate_pipelines(x[:4], a[:4], ["noisy"], folds=2)
    with pytest.raises(ConfigError, match="oracle"):
        evaluate_pipelines(x, a, ["gaussian-oracle"])
    failed = evaluate_pipelines(x, a, [Denoiser("broken", lambda c, p, b: 1 / 0, "fixed")])
    assert failed[0]["status"].startswith("failed: ZeroDivisionError")


def test_cli_evaluate_3d(tmp_path, item, capsys):
    src = tmp_path / "s.h5"
    write_series(src, Series(item["noisy"][None], ["Au"], item["angles"]))
    out = tmp_path / "e.json"
    assert main(["evaluate", str(src), "--3d", "--methods", "noisy,gaussian-val", "-o",
                 str(out)]) == 0
    report = json.loads(out.read_text())
    assert [r["method"] for r in report["elements"]["Au"]] == ["noisy", "gaussian-val"]
    assert "left-out tilts" in capsys.readouterr().out
    assert main(["evaluate", str(src), "--angles=-75:75:10", "-o", str(tmp_path / "x.json")]
                ) == 2
    assert "--3d" in capsys.readouterr().err and not (tmp_path / "x.json").exists()
    bare = tmp_path / "bare.npy"
    np.save(bare, item["noisy"])
    assert main(["evaluate", str(bare), "--3d", "-o", str(tmp_path / "y.json")]) == 2
    assert "needs the tilt angles" in capsys.readouterr().err
    binary = tmp_path / "binary.npy"
    np.save(binary, np.minimum(item["noisy"], 1))
    assert main(["evaluate", str(binary), "--3d", "--angles=-75:75:10", "--methods",
                 "noisy"]) == 0
    assert SINGLE_EVENT_NOTE in capsys.readouterr().out
