import json
import shutil

import dask.array
import h5py
import numpy as np
import pytest

from nanoedx_dataset import (ConfigError, DatasetNotFoundError, SchemaError, generate,
                             load_dataset, publish)
from nanoedx_dataset.release import fetch
from nanoedx_dataset.release import registry as release_registry
from nanoedx_dataset.store.files import sha256
from nanoedx_models.cli import main
from nanoedx_dataset.release.zenodo import ZenodoError

from servers import fake_zenodo, file_server


@pytest.fixture(scope="module")
def release_dir(tmp_path_factory):
    """A one-file release of 6 samples at 24^3."""
    d = tmp_path_factory.mktemp("release")
    generate(d / "nanoedx-tiny-1.0.0.h5", None, n=6, size=24, seed=2, progress=False)
    return d


@pytest.fixture
def registry(monkeypatch, release_dir):
    """The package registry plus a release 'tiny' whose files live on a loopback server."""
    fname = "nanoedx-tiny-1.0.0.h5"
    entry = {"files": {fname: "sha256:" + sha256(release_dir / fname)},
             "url": "http://127.0.0.1:9/not-used", "command": "nanoedx generate --n 6 ..."}
    reg = {**release_registry.releases(), "tiny": {"1.0.0": entry}}
    monkeypatch.setattr(release_registry, "releases", lambda: reg)
    return reg


def test_embedded_mini_loads_offline_and_lazily(monkeypatch):
    monkeypatch.setenv(fetch.URL_ENV, "http://127.0.0.1:9")  # nothing listens: no network
    ds = load_dataset("mini")
    assert isinstance(ds["volume"].data, dask.array.Array)  # lazy
    assert ds.sizes["sample"] == 64 and ds.sizes["z"] == 64 and ds.sizes["angle"] == 16
    assert set(ds["family"].values) == set(release_registry.releases()["mini"]["0.1.0"]["family"])
    assert ds["noisy"].attrs["tag"] == "c1000_b100"
    test = load_dataset("mini", split="test")
    assert set(test["split"].values) == {"test"} and test.sizes["sample"] < 64
    assert float(test["volume"].isel(sample=0).max()) == pytest.approx(1.0)


def test_local_file_and_folder_of_shards(tmp_path, release_dir):
    ds = load_dataset(release_dir / "nanoedx-tiny-1.0.0.h5")
    assert ds.sizes["sample"] == 6
    shards = tmp_path / "shards"
    shards.mkdir()
    shutil.copy(release_dir / "nanoedx-tiny-1.0.0.h5", shards / "part-0.h5")
    generate(shards / "part-1.h5", None, n=3, size=24, seed=5, progress=False)
    joined = load_dataset(shards)
    assert joined.sizes["sample"] == 9
    np.testing.assert_array_equal(joined["sample"].values, np.arange(9))
    assert isinstance(joined["projection"].data, dask.array.Array)
    with h5py.File(shards / "part-1.h5") as f:
        np.testing.assert_allclose(joined["volume"].isel(sample=7).values * 255,
                                   f["volume"][1].astype(float), atol=1e-4)
    with pytest.raises(ConfigError, match="no noise level 'c5_b1'.*c1000_b100"):
        load_dataset(shards, noise="c5_b1")
    with pytest.raises(ConfigError, match="unknown split 'dev'"):
        load_dataset(shards, split="dev")


def test_download_verify_and_reuse_the_cache_offline(tmp_path, monkeypatch, registry,
                                                     release_dir):
    cache = tmp_path / "cache"
    with file_server(release_dir) as (server, url):
        monkeypatch.setenv(fetch.URL_ENV, url)
        ds = load_dataset("tiny", cache_dir=cache)
        assert server.requests == ["/nanoedx-tiny-1.0.0.h5"]
        assert ds.sizes["sample"] == 6
        assert (cache / "nanoedx-tiny-1.0.0.h5").read_bytes() == \
            (release_dir / "nanoedx-tiny-1.0.0.h5").read_bytes()
    # the server is gone: the cached, hash-checked file is used without a network call
    ds = load_dataset("tiny", version="1.0.0", cache_dir=cache)
    assert ds.sizes["sample"] == 6
    monkeypatch.setenv(fetch.CACHE_ENV, str(cache))
    assert load_dataset("tiny").sizes["sample"] == 6  # NANOEDX_DATA_DIR moves the cache


def test_corrupt_download_is_refused_and_not_kept(tmp_path, monkeypatch, registry, release_dir):
    registry["tiny"]["1.0.0"]["files"]["nanoedx-tiny-1.0.0.h5"] = "sha256:" + "ab" * 32
    cache = tmp_path / "cache"
    with file_server(release_dir) as (server, url):
        monkeypatch.setenv(fetch.URL_ENV, url)
        with pytest.raises(SchemaError, match="nanoedx-tiny-1.0.0.h5.*abab.*but got"):
            load_dataset("tiny", cache_dir=cache)
    assert not (cache / "nanoedx-tiny-1.0.0.h5").exists()


def test_no_network_and_no_cache_says_what_to_do(tmp_path, monkeypatch, registry):
    monkeypatch.setenv(fetch.URL_ENV, "http://127.0.0.1:9")
    with pytest.raises(DatasetNotFoundError,
                       match="not in the cache.*NANOEDX_DATA_URL.*nanoedx generate"):
        load_dataset("tiny", cache_dir=tmp_path / "empty")


def test_unpublished_release_points_to_regeneration(monkeypatch, tmp_path):
    monkeypatch.delenv(fetch.URL_ENV, raising=False)
    entry = release_registry.releases()["standard"]
    if entry[max(entry)]["url"]:
        pytest.skip("standard is published for download")
    with pytest.raises(DatasetNotFoundError, match="not published.*--preset mini --n 1000"):
        load_dataset("standard", cache_dir=tmp_path)


def test_unknown_release_or_version_lists_the_known_ones():
    with pytest.raises(DatasetNotFoundError,
                       match=r"unknown release .huge.*known releases: mini \(0.1.0, 0.1.1\)"):
        load_dataset("huge")
    with pytest.raises(DatasetNotFoundError, match="no version '9.9.9'.*0.1.0"):
        load_dataset("mini", version="9.9.9")


def test_truncated_or_foreign_files_are_refused(tmp_path, release_dir):
    data = (release_dir / "nanoedx-tiny-1.0.0.h5").read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(SchemaError, match="not an HDF5 file"):
        load_dataset(cut)
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.ones(3)
    with pytest.raises(SchemaError, match="not a nanoedx database"):
        load_dataset(foreign)


def _card(tmp_path):
    card = tmp_path / "CARD.md"
    card.write_text("# card\n<!-- versions:start -->\nold\n<!-- versions:end -->\nrest\n")
    return card


def test_publish_writes_registry_card_and_zenodo_metadata(tmp_path, release_dir):
    reg, card = tmp_path / "releases.json", _card(tmp_path)
    entry = publish(release_dir, "1.0.0", name="tiny", registry=reg, card_path=card)
    stored = json.loads(reg.read_text())["tiny"]["1.0.0"]
    assert stored == json.loads(json.dumps(entry))
    assert stored["files"]["nanoedx-tiny-1.0.0.h5"] == \
        "sha256:" + sha256(release_dir / "nanoedx-tiny-1.0.0.h5")
    assert stored["samples"] == 6 and stored["noise_levels"] == ["c1000_b100"]
    assert sum(stored["family"].values()) == 6
    text = card.read_text()
    assert "| tiny | 1.0.0 | 1 | 6 | 24³ |" in text and "old" not in text and "rest" in text
    meta = json.loads((release_dir / "zenodo.json").read_text())["metadata"]
    assert meta["upload_type"] == "dataset" and meta["version"] == "1.0.0"
    assert meta["license"] and meta["creators"] and meta["keywords"] and meta["title"]
    assert meta["related_identifiers"][0]["identifier"] == "10.1039/d1nr03232a"


def test_regenerate_command_rebuilds_the_file_byte_for_byte(tmp_path, release_dir):
    entry = publish(release_dir, "1.0.0", name="tiny", registry=tmp_path / "r.json")
    cmd = entry["command"].split("  #")[0]
    env_part, args = cmd.split(" nanoedx ", 1)
    import os
    monkey_env = dict(os.environ, SOURCE_DATE_EPOCH=env_part.split("=")[1])
    import subprocess
    import sys
    out = tmp_path / "again.h5"
    argv = args.replace("--out nanoedx-tiny-1.0.0.h5", f"--out {out}").split()
    done = subprocess.run([sys.executable, "-m", "nanoedx_models.cli", *argv], env=monkey_env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert sha256(out) == sha256(release_dir / "nanoedx-tiny-1.0.0.h5")


def test_a_fields_release_is_named_and_regenerated_from_its_own_preset(tmp_path, monkeypatch):
    """A config with options the command line cannot set (scenes, mass background, probe
    blur) is rebuilt from the preset that has them, not from ``mini``'s."""
    import shlex

    folder = tmp_path / "rel"
    folder.mkdir()
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1795737600")
    generate(folder / "f.h5", "fields", n=2, size=24, dataset_version="1.0.0", progress=False)
    entry = publish(folder, "1.0.0", registry=tmp_path / "r.json")
    assert "custom" in json.loads((tmp_path / "r.json").read_text())
    assert "--preset fields --n 2 --size 24" in entry["command"]
    argv = shlex.split(entry["command"].split("  #")[0].partition(" nanoedx ")[2])
    monkeypatch.chdir(tmp_path)
    assert main([*argv[:-1], "again.h5"]) == 0
    assert sha256(tmp_path / "again.h5") == sha256(folder / "f.h5")


@pytest.mark.parametrize("schema", ["legacy", "current"])
def test_upload_new_deposition_then_new_version(tmp_path, release_dir, schema):
    reg = tmp_path / "releases.json"
    with fake_zenodo(schema) as (zen, api):
        first = publish(release_dir, "1.0.0", name="tiny", registry=reg, upload=True,
                        token="secret", api=api)
        dep = first["zenodo"]["id"]
        assert [m for m, _ in zen.requests] == ["POST", "PUT", "PUT", "POST"]
        assert zen.requests[0][1] == "/api/deposit/depositions"
        assert zen.uploads[f"{dep}/nanoedx-tiny-1.0.0.h5"] == \
            (release_dir / "nanoedx-tiny-1.0.0.h5").read_bytes()
        assert zen.depositions[dep]["metadata"]["version"] == "1.0.0"
        assert zen.depositions[dep]["published"]
        assert first["url"] == f"doi:10.5072/zenodo.{dep}/"
        assert set(zen.auth) == {"Bearer secret"}

        zen.requests.clear()
        second = publish(release_dir, "1.1.0", name="tiny", registry=reg, upload=True,
                         token="secret", api=api)
        new = second["zenodo"]["id"]
        assert new != dep
        calls = [f"{m} {p}" for m, p in zen.requests]
        assert calls[0] == f"POST /api/deposit/depositions/{dep}/actions/newversion"
        assert any(c.startswith(f"DELETE /api/deposit/depositions/{new}/files/") for c in calls)
        assert calls[-1] == f"POST /api/deposit/depositions/{new}/actions/publish"
        assert [f.get("filename", f.get("key")) for f in zen.depositions[new]["files"]] == \
            ["nanoedx-tiny-1.0.0.h5"]  # the inherited copy was removed, the new one uploaded
        assert set(json.loads(reg.read_text())["tiny"]) == {"1.0.0", "1.1.0"}


def test_failed_upload_publishes_nothing_and_keeps_the_registry(tmp_path, release_dir):
    reg = tmp_path / "releases.json"
    with fake_zenodo(corrupt=True) as (zen, api):
        with pytest.raises(ZenodoError, match="arrived corrupt"):
            publish(release_dir, "1.0.0", name="tiny", registry=reg, upload=True,
                    token="secret", api=api)
        assert not any(p.endswith("/actions/publish") for _, p in zen.requests)
    assert not reg.exists()


def test_upload_without_token_or_bad_version_is_refused(tmp_path, release_dir, monkeypatch,
                                                        capsys):
    monkeypatch.delenv("ZENODO_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="ZENODO_TOKEN"):
        publish(release_dir, "1.0.0", registry=tmp_path / "r.json", upload=True)
    with pytest.raises(ConfigError, match="X.Y.Z"):
        publish(release_dir, "1.0", registry=tmp_path / "r.json")
    assert main(["publish", str(release_dir), "--version", "1.0.0", "--registry",
                 str(tmp_path / "r.json"), "--upload"]) == 2
    assert "ZENODO_TOKEN" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_embedded_mini_regenerates_from_its_registry_command_byte_for_byte(tmp_path,
                                                                          monkeypatch):
    """The registry's command rebuilds the embedded release exactly: anything that changes a
    file's bytes (a description, an attribute, the writer) needs a new dataset version."""
    import shlex

    from nanoedx_models.cli import main

    version, entry = release_registry.release_entry("mini")
    (fname, expected), = entry["files"].items()
    env, _, argv = entry["command"].split("  #")[0].partition(" nanoedx ")
    key, _, value = env.partition("=")
    monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    assert main(shlex.split(argv)) == 0
    built = tmp_path / fname
    assert release_registry.spell_hash(sha256(built)) == expected, (
        "differs from the embedded file in: "
        + "; ".join(_differences(release_registry.data_dir() / fname, built)))


def _differences(a, b) -> list[str]:
    """What differs between two HDF5 files: attributes and datasets by path (values, dtypes,
    shapes), or, when every one is equal, the file layout only."""
    found = []

    def visit(ga, gb, path):
        for key in sorted(set(ga.attrs) | set(gb.attrs)):
            va, vb = ga.attrs.get(key), gb.attrs.get(key)
            if va is None or vb is None or not np.array_equal(np.asarray(va), np.asarray(vb)):
                found.append(f"attribute {path}@{key}: {str(va)[:80]!r} vs {str(vb)[:80]!r}")
        if not isinstance(ga, h5py.Group):
            va, vb = ga[()], gb[()]
            if va.shape != vb.shape or va.dtype != vb.dtype or not np.array_equal(va, vb):
                found.append(f"dataset {path} ({va.dtype}{va.shape} vs {vb.dtype}{vb.shape})")
            return
        for key in sorted(set(ga) | set(gb)):
            if key not in ga or key not in gb:
                found.append(f"{path}/{key} only in one file")
            else:
                visit(ga[key], gb[key], f"{path}/{key}")

    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        visit(fa, fb, "")
    return found or ["no attribute or dataset: the file layout (chunks, compression, order)"]
