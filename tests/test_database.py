import json
import os

import h5py
import numpy as np
import pytest
import xarray as xr

from nanoedx_dataset import (ConfigError, DatasetNotFoundError, OutputExistsError, ParticleSpec,
                             SchemaError, generate, info, renoise, verify, voxelize)
from nanoedx_dataset.generation import sample, single
from nanoedx_dataset.store import schema
from nanoedx_dataset.simulate.noise import NoiseModel

from conftest import TINY, fail_at_sample


def test_xarray_shows_the_named_dimensions(tiny_db):
    ds = xr.open_dataset(tiny_db, engine="h5netcdf")
    assert ds["volume"].dims == ("sample", "element", "z", "y", "x")
    assert ds["projection"].dims == ("sample", "element", "angle", "row", "col")
    assert ds.sizes["sample"] == 12 and ds.sizes["z"] == 32 and ds.sizes["angle"] == 16
    vol = ds["volume"].values
    assert vol.dtype == np.float32 and vol.min() == 0 and vol.max() == pytest.approx(1.0)
    assert list(ds["element"].values) == ["A", "B"]
    np.testing.assert_allclose(ds["angle"].values, np.arange(-75, 76, 10))
    assert set(ds["family"].values) >= {"sphere", "cube", "capped_rod"}
    assert ds.attrs["format_name"] == "nanoedx" and ds.attrs["complete"] == 1
    noisy = xr.open_dataset(tiny_db, engine="h5netcdf", group="noisy/c1000_b100")
    assert noisy["counts"].dtype == np.uint16
    assert noisy["counts"].dims == ds["projection"].dims
    assert noisy.attrs["counts"] == 1000 and noisy.attrs["background"] == 100


def test_verify_and_info_on_a_fresh_database(tiny_db):
    summary = verify(tiny_db)
    assert summary["samples"] == 12 and summary["size"] == 32
    assert sum(summary["family"].values()) == 12 and len(summary["family"]) == 12
    assert summary["split"] == {"train": 8, "val": 2, "test": 2}
    assert list(summary["noise_levels"]) == ["c1000_b100"]
    assert summary["config"]["seed"] == TINY["seed"]


def test_splits_are_70_15_15_and_fixed_by_the_seed():
    s = sample.splits(1000, 0)
    assert [int((s == k).sum()) for k in schema.SPLITS] == [700, 150, 150]
    np.testing.assert_array_equal(s, sample.splits(1000, 0))
    assert not np.array_equal(s, sample.splits(1000, 1))


def test_stored_spec_rebuilds_the_stored_volume(tiny_db):
    with h5py.File(tiny_db) as f:
        for i in (0, 5, 11):
            spec = ParticleSpec.from_json(f["params"][i].decode())
            rebuilt = np.rint(voxelize(spec, 32) * 255).astype(np.uint8)
            np.testing.assert_array_equal(rebuilt, f["volume"][i])


def _arrays(path):
    with h5py.File(path) as f:
        return {k: f[k][:] for k in ("volume", "projection", "noisy/c1000_b100/counts", "params")}


def test_same_seed_gives_bit_identical_arrays_with_any_workers(tmp_path, tiny_db):
    again = generate(tmp_path / "again.h5", None, workers=2, progress=False, **TINY)
    a, b = _arrays(tiny_db), _arrays(again)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    other = _arrays(generate(tmp_path / "other.h5", None, n=2, size=32, seed=8, progress=False))
    assert not np.array_equal(other["volume"], a["volume"][:2])


def test_interrupted_run_leaves_no_complete_file_and_resume_finishes_it(tmp_path, monkeypatch,
                                                                       tiny_db):
    out = tmp_path / "cut.h5"
    real = single.make_sample
    fail_at_sample(monkeypatch, 5, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        generate(out, None, progress=False, **TINY)
    partial = tmp_path / "cut.h5.partial"
    assert not out.exists() and partial.exists()
    with pytest.raises(SchemaError, match="unfinished"):
        verify(partial)
    with pytest.raises(OutputExistsError, match="--resume"):
        generate(out, None, progress=False, **TINY)
    with pytest.raises(ConfigError, match="another config"):
        generate(out, None, progress=False, resume=True, **{**TINY, "seed": 99})

    monkeypatch.setattr(single, "make_sample", real)
    done = []
    monkeypatch.setattr(single, "make_sample", lambda c, i: done.append(i) or real(c, i))
    generate(out, None, progress=False, resume=True, **TINY)
    assert done == list(range(5, 12))  # only the missing samples were computed
    assert not partial.exists()
    a, b = _arrays(tiny_db), _arrays(out)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    verify(out)


def _interrupted(tmp_path, monkeypatch, at: int):
    """A run of TINY cut (KeyboardInterrupt) when it computes sample ``at``."""
    out = tmp_path / "cut.h5"
    fail_at_sample(monkeypatch, at, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        generate(out, None, progress=False, **TINY)
    monkeypatch.undo()
    return out, tmp_path / "cut.h5.partial", tmp_path / "cut.h5.partial.journal"


def _resume_counting(monkeypatch, out) -> list[int]:
    real, done = single.make_sample, []
    monkeypatch.setattr(single, "make_sample", lambda c, i: done.append(i) or real(c, i))
    generate(out, None, progress=False, resume=True, **TINY)
    monkeypatch.undo()
    return done


def test_resume_redoes_the_samples_that_do_not_read_back(tmp_path, monkeypatch, tiny_db):
    out, partial, journal = _interrupted(tmp_path, monkeypatch, 6)
    assert len(journal.read_text().splitlines()) == 1 + 6  # header and samples 0-5
    with h5py.File(partial, "r+") as f:  # what a kill can leave: flagged, but not the data
        f["volume"][2] = 0
        f["written"][7] = 1
    with open(journal, "a") as f:
        f.write('{"sample": 8, "sha')  # a line cut short
    report = single.check_interrupted(partial, single.resolve_config(None, **TINY))
    assert report["readable"] and report["recorded"] == 6 and report["flagged"] == 7
    assert report["intact"] == [0, 1, 3, 4, 5]
    assert _resume_counting(monkeypatch, out) == [2, 6, 7, 8, 9, 10, 11]
    a, b = _arrays(tiny_db), _arrays(out)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    verify(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.h5"]


def test_resume_starts_over_a_file_hdf5_cannot_open(tmp_path, monkeypatch, tiny_db, caplog):
    out, partial, journal = _interrupted(tmp_path, monkeypatch, 4)
    partial.write_bytes(partial.read_bytes()[:96])  # cut inside HDF5's first writes
    with caplog.at_level("WARNING"):
        assert _resume_counting(monkeypatch, out) == list(range(12))
    assert "cannot be continued: HDF5 cannot open it" in caplog.text
    for k, v in _arrays(tiny_db).items():
        np.testing.assert_array_equal(v, _arrays(out)[k])


def test_resume_checks_nothing_without_a_journal(tmp_path, monkeypatch):
    out, partial, journal = _interrupted(tmp_path, monkeypatch, 4)
    journal.unlink()  # e.g. a file left by an older nanoedx: its flags cannot be checked
    assert _resume_counting(monkeypatch, out) == list(range(12))
    verify(out)


def test_a_second_run_on_one_output_is_refused(tmp_path):
    from nanoedx_dataset.store.lock import lock_path, output_lock

    out = tmp_path / "x.h5"
    with output_lock(out):
        owner = json.loads(lock_path(out).read_text())
        assert owner["pid"] == os.getpid() and owner["host"]
        with pytest.raises(OutputExistsError, match=rf"another run: pid {os.getpid()} on "):
            generate(out, None, n=1, size=16, progress=False)
    assert not lock_path(out).exists() and not out.exists()
    with pytest.raises(ConfigError, match="does not exist; create it first"):
        generate(tmp_path / "missing" / "x.h5", None, n=1, size=16, progress=False)


def test_without_os_locks_the_recorded_owner_decides(tmp_path, monkeypatch):
    import socket
    import subprocess

    from nanoedx_dataset.store import lock

    monkeypatch.setattr(lock, "_flock", lambda fd: None)  # e.g. a file system without flock
    out = tmp_path / "x.h5"
    host = socket.gethostname()
    lock.lock_path(out).write_text(json.dumps({"pid": os.getppid(), "host": host}))
    with pytest.raises(OutputExistsError, match=f"another run: pid {os.getppid()} on {host}"):
        with lock.output_lock(out):
            pass
    dead = subprocess.Popen(["true"])
    dead.wait()
    lock.lock_path(out).write_text(json.dumps({"pid": dead.pid, "host": host}))
    with lock.output_lock(out):  # its owner has exited: taken over
        assert json.loads(lock.lock_path(out).read_text())["pid"] == os.getpid()
    assert not lock.lock_path(out).exists()


def test_killed_renoise_work_never_touches_the_file(tmp_path, monkeypatch, tiny_db):
    path = tmp_path / "r.h5"
    path.write_bytes(tiny_db.read_bytes())
    real, calls = NoiseModel.sample_elements, []

    def third_fails(*args):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")
        return real(*args)

    monkeypatch.setattr(NoiseModel, "sample_elements", third_fails)
    with pytest.raises(OSError, match="disk full"):
        renoise(path, 100, 10, progress=False)
    assert path.read_bytes() == tiny_db.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.h5"]


def test_renoise_adds_a_level_and_touches_nothing_else(tmp_path, tiny_db):
    path = tmp_path / "renoise.h5"
    path.write_bytes(tiny_db.read_bytes())
    before = _arrays(path)
    tag = renoise(path, 100, 10, progress=False)
    assert tag == "c100_b10"
    after = _arrays(path)
    for k in before:
        np.testing.assert_array_equal(before[k], after[k])
    ds = xr.open_dataset(path, engine="h5netcdf", group="noisy/c100_b10")
    totals = ds["counts"].values.astype(float).sum(axis=(-2, -1))
    with h5py.File(path) as f:
        present = f["projection"][:].sum(axis=(-2, -1)) > 0
    assert totals[present].mean() == pytest.approx(110, rel=0.05)
    assert totals[~present].mean() == pytest.approx(10, rel=0.2)
    assert set(info(path)["noise_levels"]) == {"c1000_b100", "c100_b10"}
    with pytest.raises(OutputExistsError, match="already has noise level c100_b10"):
        renoise(path, 100, 10, progress=False)
    again = tmp_path / "again.h5"
    again.write_bytes(tiny_db.read_bytes())
    renoise(again, 100, 10, progress=False)
    np.testing.assert_array_equal(ds["counts"].values,
                                  xr.open_dataset(again, engine="h5netcdf",
                                                  group="noisy/c100_b10")["counts"].values)
    verify(path)


def test_renoise_refuses_bad_levels_without_touching_the_file(tmp_path, tiny_db):
    path = tmp_path / "r.h5"
    path.write_bytes(tiny_db.read_bytes())
    with pytest.raises(ConfigError, match="counts must be a positive"):
        renoise(path, 0, 10)
    with pytest.raises(ConfigError, match="background must be >= 0"):
        renoise(path, 100, -1)
    assert path.read_bytes() == tiny_db.read_bytes()


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(size=8), ConfigError, "size must be at least 16"),
    (dict(counts=0), ConfigError, "counts must be a positive"),
    (dict(background=-1), ConfigError, "background must be >= 0"),
    (dict(angles=[0, 95]), ConfigError, "strictly between -90 and 90"),
    (dict(n=0), ConfigError, "n must be at least 1"),
    (dict(backend="povray"), ConfigError, "unknown backend 'povray'.*analytic"),
])
def test_bad_generation_options_leave_no_file(tmp_path, kwargs, error, match):
    out = tmp_path / "bad.h5"
    with pytest.raises(error, match=match):
        generate(out, "mini", progress=False, **{"n": 2, "size": 16, **kwargs})
    assert list(tmp_path.iterdir()) == []


def test_unknown_preset_lists_the_valid_ones(tmp_path):
    with pytest.raises(ConfigError, match="unknown preset 'huge'.*mini, standard, paper"):
        generate(tmp_path / "x.h5", "huge")


def test_existing_output_needs_overwrite(tmp_path, tiny_db):
    out = tmp_path / "x.h5"
    out.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        generate(out, None, n=1, size=16, progress=False)
    assert out.read_bytes() == b"keep me"
    generate(out, None, n=1, size=16, progress=False, overwrite=True)
    verify(out)


def test_files_that_are_not_databases_are_refused(tmp_path):
    text = tmp_path / "notes.h5"
    text.write_text("hello")
    with pytest.raises(SchemaError, match="not an HDF5 file"):
        info(text)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["data"] = np.zeros(3)
    for fn in (info, verify):
        with pytest.raises(SchemaError, match="not a nanoedx database"):
            fn(other)
    with pytest.raises(SchemaError, match="not a nanoedx database"):
        renoise(other, 100, 10)
    with pytest.raises(DatasetNotFoundError, match="no database file"):
        info(tmp_path / "missing.h5")


def test_verify_names_what_is_wrong(tmp_path, tiny_db):
    path = tmp_path / "broken.h5"
    path.write_bytes(tiny_db.read_bytes())
    with h5py.File(path, "r+") as f:
        f["projection"][3, 0, 2] *= 1.5
        f["family"][1] = "blob"
    with pytest.raises(SchemaError) as err:
        verify(path)
    assert "sample 3: a projection's sum differs" in str(err.value)
    assert "family holds unknown values ['blob']" in str(err.value)


def test_field_table_lists_every_variable():
    table = schema.field_table()
    for name in ("volume", "projection", "angle", "element", "family", "kind", "split",
                 "params", "noisy/c{C}_b{B}/counts"):
        assert f"`{name}`" in table


def test_dataset_card_holds_the_schema_table():
    from pathlib import Path

    card = (Path(__file__).parents[1] / "DATASET_CARD.md").read_text()
    assert schema.field_table() in card


@pytest.mark.parametrize("haadf", [False, True])
def test_workers_compress_and_the_file_is_the_one_hdf5_would_write(tmp_path, monkeypatch,
                                                                    haadf):
    # samples reach the writer as compressed chunks (compressed in the worker); the file is
    # byte for byte the one written through HDF5's own filters
    from nanoedx_dataset.simulate.haadf import HaadfOptions
    from nanoedx_dataset.store import files, writer

    kw = {**TINY, "n": 12, "haadf": HaadfOptions() if haadf else None}
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1795737600")  # the same creation time
    assert writer.precompressed()
    direct = generate(tmp_path / "direct.h5", None, progress=False, **kw)
    monkeypatch.setattr(writer, "precompressed", lambda: False)
    through = generate(tmp_path / "hdf5.h5", None, progress=False, **kw)
    assert files.sha256(direct) == files.sha256(through)


@pytest.mark.parametrize("dtype", ["u1", "u2", "f4"])
def test_a_compressed_chunk_decodes_to_its_array(dtype):
    from nanoedx_dataset.store import writer

    x = (np.random.default_rng(0).random((3, 5, 7)) * 200).astype(dtype)
    np.testing.assert_array_equal(writer.decode_chunk(writer.encode_chunk(x), dtype, x.shape), x)
