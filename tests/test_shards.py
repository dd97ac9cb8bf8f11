"""Sharded generation: same arrays as one file, on a pool or a dask cluster; fault tolerance."""

import hashlib
import json
import os
import sys

import numpy as np
import pytest

from nanoedx_dataset import (ConfigError, OutputExistsError, SchemaError, generate, load_dataset,
                             publish, renoise, verify)
from nanoedx_dataset.generation import executor, single
from nanoedx_dataset.generation import shards
from nanoedx_dataset.store import index as shard_index
from nanoedx_dataset.store.files import sha256
from nanoedx_models import cli
from nanoedx_dataset.errors import GenerationError, MissingExtraError, SchedulerError

from conftest import fail_at_sample

SMALL = dict(n=7, size=24, seed=3)


def _digest(path, noise=None) -> dict:
    """SHA-256 of every array (and the catalogue) of a database, file or folder."""
    ds = load_dataset(path, noise=noise)
    out = {k: hashlib.sha256(np.ascontiguousarray(ds[k].values).tobytes()).hexdigest()
           for k in ("volume", "projection", "noisy")}
    for k in ("params", "split", "family"):
        out[k] = hashlib.sha256("\n".join(map(str, ds[k].values)).encode()).hexdigest()
    ds.close()
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The SMALL config as one file, in one process, with a second noise level."""
    path = generate(tmp_path_factory.mktemp("one") / "one.h5", None, progress=False, **SMALL)
    renoise(path, 100, 10, progress=False)
    return path


@pytest.fixture(scope="module")
def reference_digest(reference):
    return _digest(reference), _digest(reference, noise="c100_b10")


@pytest.fixture(scope="module")
def client():
    """A dask cluster of 2 worker processes on 127.0.0.1 (one thread each)."""
    distributed = pytest.importorskip("distributed")
    environ = dict(os.environ)  # a nanny sets its workers' variables here too: restore them
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        with distributed.Client(cluster) as c:
            yield c
    os.environ.clear()
    os.environ.update(environ)


def _mtimes(directory) -> dict:
    return {p.name: p.stat().st_mtime_ns for p in sorted(directory.glob("*.h5"))}


@pytest.mark.parametrize("shard_size, workers", [(3, 1), (5, 2), (7, 1)])
def test_shards_hold_the_arrays_of_one_file(tmp_path, reference_digest, shard_size, workers):
    out = generate(tmp_path / "db", None, shard_size=shard_size, workers=workers,
                   progress=False, **SMALL)
    index = shard_index.read_index(out)
    assert index["complete"] and index["shard_size"] == shard_size
    assert [(s["start"], s["stop"]) for s in index["shards"]] == [
        (a, min(7, a + shard_size)) for a in range(0, 7, shard_size)]
    for s in index["shards"]:
        summary = verify(out / s["file"])  # each shard is a valid database of its range
        assert (summary["first_sample"], summary["samples"]) == (s["start"], s["stop"] - s["start"])
        assert s["sha256"] == sha256(out / s["file"])
    assert _digest(out) == reference_digest[0]
    renoise(out, 100, 10, workers=workers, progress=False)
    assert _digest(out, noise="c100_b10") == reference_digest[1]
    assert shard_index.read_index(out)["shards"][0]["sha256"] == sha256(out / "shard-00000.h5")


def test_cluster_gives_the_same_arrays_and_renoises_shard_by_shard(tmp_path, client,
                                                                  reference_digest):
    out = generate(tmp_path / "db", None, shard_size=2, client=client, progress=False, **SMALL)
    assert len(list(out.glob("*.h5"))) == 4
    assert _digest(out) == reference_digest[0]
    assert renoise(out, 100, 10, client=client, progress=False) == "c100_b10"
    assert _digest(out, noise="c100_b10") == reference_digest[1]
    with pytest.raises(OutputExistsError, match="already has noise level c100_b10"):
        renoise(out, 100, 10, client=client, progress=False)


def _arm_kill(marker: str, index: int) -> None:
    """In a worker: exit the process, once, right after writing sample ``index``."""
    real = single.write_encoded

    def write_then_die(f, counts_ds, s, first=0):
        real(f, counts_ds, s, first)
        if s.index == index and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)

    single.write_encoded = write_then_die


def test_killed_worker_leaves_no_finished_shard_and_rerun_redoes_only_the_missing(
        tmp_path, client, reference_digest):
    scheduler = client.cluster.scheduler
    allowed, scheduler.allowed_failures = scheduler.allowed_failures, 0  # no retry by dask
    try:
        marker = tmp_path / "killed"
        client.run(_arm_kill, str(marker), 4)  # sample 4: in shard-00002.h5 (samples 4, 5)
        out = tmp_path / "db"
        with pytest.raises(GenerationError, match="rerun the same command"):
            generate(out, None, shard_size=2, client=client, progress=False, **SMALL)
    finally:
        scheduler.allowed_failures = allowed
    assert marker.exists()
    assert not (out / "shard-00002.h5").exists()  # the temporary file is not a finished shard
    assert (out / "shard-00002.h5.partial").exists()
    missing = shard_index.missing(out)
    assert "shard-00002.h5" in missing and len(missing) < 4
    assert not shard_index.read_index(out)["complete"]
    with pytest.raises(SchemaError, match="unfinished sharded database"):
        load_dataset(out)
    before = _mtimes(out)
    assert len(before) == 4 - len(missing)

    generate(out, None, shard_size=2, client=client, progress=False, **SMALL)  # same command
    after = _mtimes(out)
    assert {k: after[k] for k in before} == before  # finished shards untouched
    assert set(after) - set(before) == set(missing)  # only the missing ones redone
    assert not list(out.glob("*.partial*")) and shard_index.read_index(out)["complete"]
    assert _digest(out) == reference_digest[0]


def test_dask_reruns_the_task_of_a_killed_worker_itself(tmp_path, client, reference_digest):
    marker = tmp_path / "killed"
    client.run(_arm_kill, str(marker), 1)
    out = generate(tmp_path / "db", None, shard_size=3, client=client, progress=False, **SMALL)
    assert marker.exists()  # a worker died mid-shard, and the run still completed
    assert _digest(out) == reference_digest[0]


def test_interrupted_local_run_is_finished_by_the_same_call(tmp_path, monkeypatch,
                                                            reference_digest):
    out = tmp_path / "db"
    fail_at_sample(monkeypatch, 5, RuntimeError("disk full"))
    with pytest.raises(GenerationError, match=r"1 of 4 shards failed: shard-00002.h5 "
                                              r"\(RuntimeError: disk full\)"):
        generate(out, None, shard_size=2, progress=False, **SMALL)
    assert shard_index.missing(out) == ["shard-00002.h5"]
    with pytest.raises(SchemaError, match="1 of 4 shards missing"):
        publish(out, "1.0.0", registry=tmp_path / "reg.json")
    with pytest.raises(SchemaError, match="unfinished"):
        renoise(out, 100, 10, progress=False)
    monkeypatch.undo()
    before = _mtimes(out)
    (out / "shard-00001.h5").write_bytes(b"not hdf5")  # a damaged shard is redone as well
    generate(out, None, shard_size=2, progress=False, **SMALL)
    after = _mtimes(out)
    assert after["shard-00000.h5"] == before["shard-00000.h5"]
    assert after["shard-00003.h5"] == before["shard-00003.h5"]
    assert _digest(out) == reference_digest[0]
    again = _mtimes(generate(out, None, shard_size=2, progress=False, **SMALL))
    assert again == after  # a finished run: nothing to do


def test_publish_a_sharded_release_that_regenerates_byte_for_byte(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1795737600")
    out = generate(tmp_path / "db", None, shard_size=4, progress=False, **SMALL)
    entry = publish(out, "1.0.0", name="tiny", registry=tmp_path / "reg.json")
    assert sorted(entry["files"]) == ["shard-00000.h5", "shard-00001.h5"]
    assert entry["samples"] == 7 and sum(entry["split"].values()) == 7
    assert "--n 7 " in entry["command"] and "--shard-size 4 --out db" in entry["command"]
    index = shard_index.read_index(out)
    assert entry["files"]["shard-00001.h5"] == "sha256:" + index["shards"][1]["sha256"]
    again = generate(tmp_path / "again", None, shard_size=4, workers=2, progress=False, **SMALL)
    assert {p.name: "sha256:" + sha256(p) for p in again.glob("*.h5")} == entry["files"]


def test_sharded_errors(tmp_path):
    with pytest.raises(ConfigError, match="shard size must be a whole number of samples >= 1"):
        generate(tmp_path / "a", None, shard_size=0, progress=False, **SMALL)
    with pytest.raises(ConfigError, match="give shard_size"):
        generate(tmp_path / "a", None, client="tcp://127.0.0.1:1", progress=False, **SMALL)
    assert not (tmp_path / "a").exists()
    out = generate(tmp_path / "db", None, shard_size=4, progress=False, n=4, size=24, seed=3)
    with pytest.raises(OutputExistsError, match="another config or shard size"):
        generate(out, None, shard_size=2, progress=False, n=4, size=24, seed=3)
    with pytest.raises(OutputExistsError, match="another config"):
        generate(out, None, shard_size=4, progress=False, n=4, size=24, seed=4)
    generate(out, None, shard_size=2, overwrite=True, progress=False, n=4, size=24, seed=3)
    assert len(shard_index.read_index(out)["shards"]) == 2 and len(list(out.glob("*.h5"))) == 2
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.h5").write_bytes(b"")
    with pytest.raises(OutputExistsError, match="not a sharded nanoedx run"):
        generate(tmp_path / "other", None, shard_size=2, progress=False, **SMALL)
    with pytest.raises(OutputExistsError, match=r"not shards \(x.h5\)"):
        generate(tmp_path / "other", None, shard_size=2, overwrite=True, progress=False, **SMALL)


def test_cli_shard_errors_exit_2_and_write_nothing(tmp_path, capsys, monkeypatch):
    base = ["generate", "--preset", "mini", "--n", "4", "--size", "24"]
    out = tmp_path / "db"
    assert cli.main([*base, "--shard-size", "0", "--out", str(out)]) == 2
    assert "shard size must be a whole number" in capsys.readouterr().err
    monkeypatch.setattr(executor, "CONNECT_TIMEOUT", 1.0)
    assert cli.main([*base, "--shard-size", "2", "--scheduler", "tcp://127.0.0.1:9",
                     "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "cannot reach a dask scheduler at 'tcp://127.0.0.1:9'" in err and "dask worker" in err
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if the extra were missing
    assert cli.main([*base, "--shard-size", "2", "--scheduler", "tcp://127.0.0.1:9",
                     "--out", str(out)]) == 2
    assert 'pip install "nanoedx[distributed]"' in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(MissingExtraError):
        executor.connect("tcp://127.0.0.1:9")
    monkeypatch.undo()
    with pytest.raises(SchedulerError):
        executor.connect("tcp://127.0.0.1:9", timeout=1)


def test_cli_generates_and_renoises_shards(tmp_path, capsys):
    out = tmp_path / "db"
    assert cli.main(["generate", "--preset", "mini", "--n", "3", "--size", "24", "--shard-size",
                     "2", "--workers", "2", "--out", str(out)]) == 0
    assert cli.main(["renoise", str(out), "--counts", "100", "--background", "10"]) == 0
    index = json.loads((out / "index.json").read_text())
    assert index["complete"] and [s["file"] for s in index["shards"]] == [
        "shard-00000.h5", "shard-00001.h5"]
    assert load_dataset(out, noise="c100_b10").sizes["sample"] == 3


def test_training_maps_of_shards_are_those_of_one_file(tmp_path, reference):
    from nanoedx_models.data.datasets import EDXMaps

    out = generate(tmp_path / "db", None, shard_size=3, progress=False, **SMALL)
    for kw in ({}, {"counts": 500}):
        one, sharded = EDXMaps(reference, "train", **kw), EDXMaps(out, "train", **kw)
        assert len(one) == len(sharded) > 0
        for i in range(len(one)):
            for a, b in zip(one[i], sharded[i]):
                assert np.array_equal(a.numpy(), b.numpy())


def test_interrupted_renoise_keeps_every_shard_whole_and_rerun_finishes(tmp_path, monkeypatch,
                                                                       reference_digest):
    out = generate(tmp_path / "db", None, shard_size=3, progress=False, **SMALL)
    before = shard_index.read_index(out)["shards"]
    real = shards.renoise_shard

    def second_fails(directory, shard, *args):
        if shard.start == 3:
            raise OSError("disk full")
        return real(directory, shard, *args)

    monkeypatch.setattr(shards, "renoise_shard", second_fails)
    with pytest.raises(GenerationError, match="renoise of 1 of 3 shards failed"):
        renoise(out, 100, 10, progress=False)
    monkeypatch.undo()
    after = shard_index.read_index(out)["shards"]
    assert after[1] == before[1] and after[0]["sha256"] != before[0]["sha256"]
    assert [r["sha256"] for r in after] == [sha256(out / r["file"]) for r in after]
    assert not list(out.glob("*.partial"))
    mtime = (out / "shard-00000.h5").stat().st_mtime_ns
    renoise(out, 100, 10, progress=False)  # only the shards without the level
    assert (out / "shard-00000.h5").stat().st_mtime_ns == mtime
    assert _digest(out, noise="c100_b10") == reference_digest[1]


def test_failed_overwrite_keeps_the_old_database_and_rerun_swaps(tmp_path, monkeypatch):
    out = generate(tmp_path / "db", None, shard_size=4, progress=False, **SMALL)
    (out / "notes.txt").write_text("mine")
    old = {p.name: sha256(p) for p in out.glob("*.h5")}
    new_kw = dict(SMALL, seed=4)
    fail_at_sample(monkeypatch, 5, RuntimeError("disk full"))
    with pytest.raises(GenerationError, match="1 of 4 shards failed"):
        generate(out, None, shard_size=2, overwrite=True, progress=False, **new_kw)
    monkeypatch.undo()
    assert {p.name: sha256(p) for p in out.glob("*.h5")} == old  # the old database, whole
    verify(out / "shard-00000.h5")
    building = tmp_path / "db.partial"
    assert shard_index.missing(building) == ["shard-00002.h5"]
    kept = _mtimes(building)
    generate(out, None, shard_size=2, overwrite=True, progress=False, **new_kw)  # same command
    assert {k: v for k, v in _mtimes(out).items() if k in kept} == kept  # continued, not redone
    assert (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db"]
    fresh = generate(tmp_path / "fresh", None, shard_size=2, progress=False, **new_kw)
    assert _digest(out) == _digest(fresh)


def test_a_folder_swap_cut_between_its_renames_is_undone(tmp_path, monkeypatch):
    from nanoedx_dataset.store import files

    out = generate(tmp_path / "db", None, shard_size=4, progress=False, **SMALL)
    old = _mtimes(out)
    monkeypatch.setattr(files, "_exchange", lambda a, b: False)  # as where renameat2 is missing
    real = files.os.rename
    calls = []

    def second_dies(src, dst):
        calls.append(src)
        if len(calls) == 2:
            raise KeyboardInterrupt  # a kill between the two renames
        real(src, dst)

    monkeypatch.setattr(files.os, "rename", second_dies)
    with pytest.raises(KeyboardInterrupt):
        generate(out, None, shard_size=2, overwrite=True, progress=False, **SMALL)
    monkeypatch.setattr(files.os, "rename", real)
    assert not out.exists() and (tmp_path / "db.old").is_dir()
    generate(out, None, shard_size=4, progress=False, **SMALL)  # puts the old run back first
    assert _mtimes(out) == old and not (tmp_path / "db.old").exists()
    generate(out, None, shard_size=2, overwrite=True, progress=False, **SMALL)
    assert len(shard_index.read_index(out)["shards"]) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db"]
