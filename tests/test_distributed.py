"""Data-parallel training: torchrun with 2 Gloo processes follows single-process training."""

import os
import random
import socket
import subprocess
import sys

import pytest
import torch

from nanoedx_dataset import ConfigError
from nanoedx_models import train
from nanoedx_models.training.distributed import DealtSampler, World
from nanoedx_models.denoisers.modelfile import load_model

KW = dict(preset="tiny", epochs=2, batch_size=4, device="cpu", seed=3)


def test_dealt_shares_make_up_the_global_batches():
    order = random.Random(0).sample(range(11), 11)
    b, size = 2, 3  # per-process batch, processes: global batch 6
    shares = [list(DealtSampler(order, World(rank, size))) for rank in range(size)]
    assert [len(s) for s in shares] == [3, 3, 3]  # 11 trimmed to 9, equally
    for step in range(2):
        together = sorted(i for s in shares for i in s[step * b:(step + 1) * b])
        assert together == sorted(order[:9][step * b * size:(step + 1) * b * size])


def test_global_batch_must_divide_among_processes(tiny_db, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ConfigError, match="give --batch-size a multiple of 2"):
        train(tiny_db, tmp_path / "m.pt", **{**KW, "batch_size": 3})
    assert not (tmp_path / "m.pt").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _states(path):
    blob = torch.load(path, map_location="cpu", weights_only=True)
    return blob.get("state_dict", blob.get("model"))


def test_torchrun_two_gloo_processes_match_one_process(tiny_db, tmp_path):
    one = train(tiny_db, tmp_path / "one.pt", progress=False, **KW)  # 8 train maps: 2 steps
    ddp = tmp_path / "ddp.pt"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node",
           "2", "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
           "-m", "nanoedx_models.cli", "train", str(tiny_db), "-o", str(ddp),
           "--preset", "tiny", "--epochs", "2", "--batch-size", "4", "--device", "cpu",
           "--seed", "3"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.splitlines().count(str(ddp)) == 1  # printed by rank 0 only
    model, meta = load_model(ddp)  # the same model file format
    ref_model, ref_meta = load_model(one)
    assert meta["processes"] == 2 and ref_meta["processes"] == 1
    for a, b in zip(ref_meta["history"], meta["history"]):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert b["val_nmae"] == pytest.approx(a["val_nmae"], rel=1e-4)
    for path_a, path_b in ((one, ddp), (f"{one}.ckpt", f"{ddp}.ckpt")):
        sa, sb = _states(path_a), _states(path_b)
        assert sa.keys() == sb.keys()
        for k in sa:
            torch.testing.assert_close(sb[k], sa[k], rtol=1e-4, atol=1e-5)
    assert not list(tmp_path.glob("*.partial*"))
