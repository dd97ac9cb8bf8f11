"""Nothing lost: SIGKILL ``generate``, ``renoise``, a sharded run and ``train`` at many moments.

Every run is a child forked from one clean process that has imported the package (the
"zygote"), which kills it (SIGKILL) after a delay drawn uniformly over the run's length, so the
kills fall everywhere: computing, inside HDF5's writes and flushes, in the fsync and rename,
in a resumed run's rescue. After every kill each output must be the old file, intact, or the
new one, complete; rerunning (``--resume``) must give the arrays of an uninterrupted run.

The numbers (kills by stage, what held) are printed at the end of the module and, when
``NANOEDX_CRASH_REPORT`` names a file, written there as JSON. ``NANOEDX_CRASH_SCALE`` scales
the number of kills (default 1: a few hundred in all).
"""

import hashlib
import json
import logging
import multiprocessing
import os
import random
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections import Counter, defaultdict
from pathlib import Path

import h5py
import numpy as np
import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="kills and /proc: Linux")

SCALE = float(os.environ.get("NANOEDX_CRASH_SCALE", "1"))
EPOCH = "1700000000"  # SOURCE_DATE_EPOCH of every run: files comparable byte for byte
ONE = dict(n=8, size=16, seed=11)  # a single-file run
OLD = dict(n=8, size=16, seed=12)  # the database an --overwrite replaces
SHARDED = dict(n=7, size=16, seed=13)
STATS: dict = defaultdict(Counter)


# ---------------------------------------------------------------- the zygote
def _zygote(conn) -> None:
    """Fork one child per job, kill it (SIGKILL) after the job's delay, report its end."""
    os.environ["SOURCE_DATE_EPOCH"] = EPOCH
    import nanoedx_dataset.generation.api
    import nanoedx_models.training.loop

    assert nanoedx_dataset.generation.api and nanoedx_models.training.loop  # imported once
    import torch
    import torch._dynamo  # what Adam imports on first use
    from tqdm.auto import tqdm

    from nanoedx_models.denoisers.unet import UNet

    torch.set_num_threads(1)  # no OpenMP pool exists when the children fork
    net = UNet.from_preset("tiny")
    torch.optim.Adam(net.parameters()).zero_grad()
    net(torch.ones(1, 1, 16, 16)).sum().backward()  # torch's one-time set-up, done once

    while True:
        job = conn.recv()
        if job is None:
            return
        fn, args, kwargs, delay = job
        t0 = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            code = 0
            logging.getLogger("nanoedx_dataset").setLevel(logging.ERROR)  # counted here
            tqdm.set_lock(threading.RLock())  # not a semaphore a killed child would leak
            # a child of the (daemonic) zygote may start a pool of its own, as a run would
            multiprocessing.current_process()._config["daemon"] = False
            try:
                fn(*args, **kwargs)
            except Exception as err:  # noqa: BLE001 -- reported by the exit status
                print(f"{type(err).__name__}: {err}", file=sys.stderr)
                code = 3
            except BaseException:  # noqa: BLE001
                traceback.print_exc()
                code = 4
            os._exit(code)
        pidfd = os.pidfd_open(pid)
        killed, children = False, []
        if delay is not None and not select.select([pidfd], [], [], delay)[0]:
            children = _children(pid)
            os.kill(pid, signal.SIGKILL)  # safe: the child is not reaped before waitpid
            killed = True
        _, status = os.waitpid(pid, 0)
        os.close(pidfd)
        conn.send({"killed": killed, "status": status, "seconds": time.perf_counter() - t0,
                   "children": children})


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


class Zygote:
    def __init__(self):
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_zygote, args=(child,), daemon=True)
        self.proc.start()
        child.close()

    def submit(self, fn, *args, delay=None, **kwargs) -> None:
        """Start ``fn(*args, **kwargs)`` in a fresh child, SIGKILLed after ``delay`` seconds."""
        self.conn.send((fn, args, kwargs, delay))

    def run(self, fn, *args, delay=None, **kwargs) -> dict:
        """:meth:`submit`, then :meth:`result`."""
        self.submit(fn, *args, delay=delay, **kwargs)
        return self.result()

    def result(self) -> dict:
        """How the child started last ended: killed, exit status, seconds, its children."""
        if not self.conn.poll(120):
            raise TimeoutError("a child did not end within 120 s")
        end = self.conn.recv()
        end["ok"] = not end["killed"] and os.WIFEXITED(end["status"]) \
            and os.WEXITSTATUS(end["status"]) == 0
        return end

    def close(self):
        self.conn.send(None)
        self.proc.join(10)


@pytest.fixture(scope="module")
def zygote():
    z = Zygote()
    yield z
    z.close()
    _report()


def _report() -> None:
    if not STATS:
        return
    lines = ["", "kill test (SIGKILL at random moments):"]
    for scenario, counts in STATS.items():
        lines.append(f"  {scenario}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    print("\n".join(lines))
    target = os.environ.get("NANOEDX_CRASH_REPORT")
    if target:
        Path(target).write_text(json.dumps({k: dict(v) for k, v in STATS.items()}, indent=1,
                                           sort_keys=True) + "\n")


def _kills(n: int) -> int:
    return max(1, round(n * SCALE))


# ---------------------------------------------------------------- jobs (run in the children)
def _generate(out, kw, **options):
    from nanoedx_dataset import generate

    generate(out, None, progress=False, **kw, **options)


def _renoise(path, counts, background, **options):
    from nanoedx_dataset import renoise

    renoise(path, counts, background, progress=False, **options)


def _train(data, out, kw, **options):
    from nanoedx_models import train

    train(data, out, progress=False, **kw, **options)


# ---------------------------------------------------------------- checks
def _arrays(path) -> dict:
    with h5py.File(path, "r") as f:
        out = {k: f[k][:] for k in ("volume", "projection", "family", "kind", "split", "params",
                                    "written")}
        for tag in f["noisy"]:
            out[tag] = f[f"noisy/{tag}/counts"][:]
        out["complete"] = int(f.attrs["complete"])
    return out


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _delay(rng: random.Random, seconds: float) -> float:
    return rng.uniform(0, 1.1 * seconds)


def _flag_check(partial, ref: dict, stats: Counter) -> None:
    """Count the samples the file's ``written`` flag marks whose data is not the right one."""
    try:
        with h5py.File(partial, "r") as f:
            flagged = np.flatnonzero(f["written"][:] == 1)
            for i in flagged:
                try:
                    good = (np.array_equal(f["volume"][i], ref["volume"][i])
                            and np.array_equal(f["projection"][i], ref["projection"][i])
                            and f["params"][i] == ref["params"][i])
                except Exception:  # noqa: BLE001
                    good = False
                stats["flagged samples"] += 1
                stats["flagged samples wrong (an old resume would keep them)"] += not good
    except Exception:  # noqa: BLE001
        stats["flags unreadable"] += 1


def _check_generate_kill(out: Path, cfg, ref: dict, old_sha: str | None, stats: Counter):
    """After a kill of ``generate``: the old file intact or the new one complete."""
    from nanoedx_dataset.generation.single import RESCUE_SUFFIX, check_interrupted

    partial = out.with_name(out.name + ".partial")
    if out.exists():
        if old_sha is not None and _sha(out) == old_sha:
            stats["old file intact"] += 1
        else:
            got = _arrays(out)
            assert got["complete"] == 1 and _same(got, ref), f"{out} is neither old nor new"
            stats["new file complete"] += 1
            stats["stage: after the rename"] += 1
            return
    assert not out.exists() or old_sha is not None
    if not partial.exists():
        stats["stage: before the .partial existed"] += 1
        return
    report = check_interrupted(partial, cfg)
    if partial.with_name(partial.name + RESCUE_SUFFIX).exists():
        stats["stage: copying the checked samples (rescue)"] += 1
    elif not report["readable"]:
        stats["stage: creating the .partial"] += 1
    else:
        stats["stage: writing samples"] += 1
    if not report["readable"]:
        stats[".partial unreadable (restarted)"] += 1
        return
    stats["samples recorded"] += report["recorded"]
    stats["recorded samples damaged later (redone)"] += report["recorded"] - len(
        report["intact"])
    for i in report["intact"]:  # what the journal vouches for is right
        with h5py.File(partial, "r") as f:
            assert np.array_equal(f["volume"][i], ref["volume"][i])
            assert np.array_equal(f["noisy/c1000_b100/counts"][i], ref["c1000_b100"][i])
    _flag_check(partial, ref, stats)


def _finish_generate(zygote, out, kw, ref, stats, **options):
    done = out.exists()  # the last kill came after the rename: the rerun refuses, and tidies
    end = zygote.run(_generate, out, kw, resume=True, **options)
    assert end["ok"] or (done and os.WEXITSTATUS(end["status"]) == 3), end
    got = _arrays(out)
    assert _same(got, ref)
    assert not list(out.parent.glob(out.name + ".*")), "leftovers beside the output"
    stats["resumed to the uninterrupted arrays"] += 1


@pytest.fixture(scope="module")
def refs(tmp_path_factory):
    """Uninterrupted results, computed in this process."""
    from nanoedx_dataset import generate, renoise

    os.environ["SOURCE_DATE_EPOCH"] = EPOCH
    root = tmp_path_factory.mktemp("refs")
    one = generate(root / "one.h5", None, progress=False, **ONE)
    old = generate(root / "old.h5", None, progress=False, **OLD)
    renoised = root / "renoised.h5"
    shutil.copyfile(old, renoised)
    renoise(renoised, 100, 10, progress=False)
    over = root / "over.h5"  # the level replaced with another seed
    shutil.copyfile(renoised, over)
    renoise(over, 100, 10, seed=5, overwrite=True, progress=False)
    return {"one": one, "one_arrays": _arrays(one), "old": old, "old_sha": _sha(old),
            "renoised": renoised, "over": over}


# ---------------------------------------------------------------- generate (one file)
def _timed(zygote, fn, *args, **kwargs) -> float:
    end = zygote.run(fn, *args, **kwargs)
    assert end["ok"], end
    return end["seconds"]


@pytest.mark.slow
def test_killed_generate_resumes_to_the_uninterrupted_arrays(tmp_path, zygote, refs):
    from nanoedx_dataset.generation.single import resolve_config

    cfg = resolve_config(None, **ONE)
    stats = STATS["generate, one file, --resume"]
    rng = random.Random(1)
    seconds = _timed(zygote, _generate, tmp_path / "t.h5", ONE)
    chains, kills = 0, 0
    while kills < _kills(120):
        out = tmp_path / f"g{chains}.h5"
        chains += 1
        for _ in range(rng.randint(1, 6)):  # a chain of killed resumes, each checked
            end = zygote.run(_generate, out, ONE, resume=True, delay=_delay(rng, seconds))
            if not end["killed"]:
                assert end["ok"], end
                break
            kills += 1
            stats["kills"] += 1
            _check_generate_kill(out, cfg, refs["one_arrays"], None, stats)
            if out.exists():
                break
        _finish_generate(zygote, out, ONE, refs["one_arrays"], stats)
    assert stats["kills"] >= _kills(120)


@pytest.mark.slow
def test_killed_overwrite_keeps_the_old_file_or_gives_the_new(tmp_path, zygote, refs):
    from nanoedx_dataset.generation.single import resolve_config

    cfg = resolve_config(None, **ONE)
    stats = STATS["generate --overwrite of an existing file"]
    rng = random.Random(2)
    out = tmp_path / "db.h5"
    seconds = _timed(zygote, _generate, tmp_path / "t.h5", ONE)
    for _ in range(_kills(40)):
        shutil.copyfile(refs["old"], out)
        end = zygote.run(_generate, out, ONE, overwrite=True, delay=_delay(rng, seconds))
        stats["kills"] += end["killed"]
        _check_generate_kill(out, cfg, refs["one_arrays"], refs["old_sha"], stats)
        for p in tmp_path.glob("db.h5.*"):
            p.unlink()


# ---------------------------------------------------------------- renoise (one file)
@pytest.mark.slow
@pytest.mark.parametrize("start, expected, options", [
    ("old", "renoised", {}),  # a new level
    ("renoised", "over", {"seed": 5, "overwrite": True}),  # a level replaced
], ids=["new-level", "overwrite-level"])
def test_killed_renoise_leaves_the_original_or_the_new_file(tmp_path, zygote, refs, start,
                                                            expected, options):
    stats = STATS[f"renoise{' --overwrite' if options else ''}, one file"]
    rng = random.Random(3)
    before, after = _sha(refs[start]), _sha(refs[expected])
    path = tmp_path / "db.h5"
    shutil.copyfile(refs[start], path)
    seconds = _timed(zygote, _renoise, path, 100, 10, **options)
    for _ in range(_kills(50)):
        shutil.copyfile(refs[start], path)
        end = zygote.run(_renoise, path, 100, 10, delay=_delay(rng, seconds), **options)
        stats["kills"] += end["killed"]
        now = _sha(path)
        assert now in (before, after), "renoise damaged the database"
        stats["original intact" if now == before else "new file complete"] += 1
        if now == before:  # rerunning finishes the job
            end = zygote.run(_renoise, path, 100, 10, **options)
            assert end["ok"], end
            assert _sha(path) == after
            assert sorted(p.name for p in tmp_path.iterdir()) == ["db.h5"], "leftovers"
            stats["rerun gave the uninterrupted file"] += 1
        for p in tmp_path.glob("db.h5.*"):
            p.unlink()


# ---------------------------------------------------------------- sharded generate
def _shards(directory: Path) -> dict:
    return {p.name: _sha(p) for p in sorted(directory.glob("shard-*.h5"))}


def _index(directory: Path) -> dict | None:
    try:
        return json.loads((directory / "index.json").read_text())
    except FileNotFoundError:
        return None


@pytest.fixture(scope="module")
def sharded_refs(tmp_path_factory):
    from nanoedx_dataset import generate

    os.environ["SOURCE_DATE_EPOCH"] = EPOCH
    root = tmp_path_factory.mktemp("sharded")
    new = generate(root / "new", None, shard_size=2, progress=False, **SHARDED)
    old = generate(root / "old", None, shard_size=3, progress=False, **OLD)
    return {"new": new, "new_shards": _shards(new), "old": old, "old_shards": _shards(old)}


@pytest.mark.slow
def test_killed_sharded_run_keeps_finished_shards_and_rerun_completes(tmp_path, zygote,
                                                                     sharded_refs):
    stats = STATS["sharded generate (2 workers), rerun"]
    rng = random.Random(4)
    kw = dict(SHARDED, shard_size=2, workers=2)
    seconds = _timed(zygote, _generate, tmp_path / "t", kw)
    ref = sharded_refs["new_shards"]
    for k in range(_kills(20)):
        out = tmp_path / f"db{k}"
        end = zygote.run(_generate, out, kw, delay=_delay(rng, seconds))
        stats["kills"] += end["killed"]
        have = _shards(out) if out.is_dir() else {}
        assert all(ref[name] == sha for name, sha in have.items()), "a corrupt finished shard"
        stats["finished shards found"] += len(have)
        if len(have) == len(ref) and (_index(out) or {}).get("complete"):
            stats["run complete"] += 1
        end = zygote.run(_generate, out, kw)
        assert end["ok"], end
        assert _shards(out) == ref and _index(out)["complete"]
        assert not list(out.glob("*.partial*")) and not list(tmp_path.glob(f"db{k}.*"))
        stats["rerun gave the uninterrupted shards"] += 1


@pytest.mark.slow
def test_killed_sharded_overwrite_never_loses_the_old_database(tmp_path, zygote, sharded_refs):
    stats = STATS["sharded generate --overwrite of an existing folder"]
    rng = random.Random(5)
    kw = dict(SHARDED, shard_size=2, overwrite=True)
    out = tmp_path / "db"

    def fresh_old():
        for p in tmp_path.iterdir():
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        shutil.copytree(sharded_refs["old"], out)
        (out / "notes.txt").write_text("mine")

    fresh_old()
    seconds = _timed(zygote, _generate, out, kw)
    for _ in range(_kills(30)):
        fresh_old()
        end = zygote.run(_generate, out, kw, delay=_delay(rng, seconds))
        stats["kills"] += end["killed"]
        assert out.is_dir(), "the folder is gone"
        now = _shards(out)
        assert now in (sharded_refs["old_shards"], sharded_refs["new_shards"]), \
            "the folder holds neither the old database nor the new one"
        assert _index(out)["complete"] and (out / "notes.txt").read_text() == "mine"
        stats["old database intact" if now == sharded_refs["old_shards"]
              else "new database complete"] += 1
        end = zygote.run(_generate, out, kw)
        assert end["ok"], end
        assert _shards(out) == sharded_refs["new_shards"]
        assert (out / "notes.txt").read_text() == "mine"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["db"], "leftovers"
        stats["rerun gave the new database"] += 1


# ---------------------------------------------------------------- train
TRAIN = dict(preset="tiny", epochs=3, batch_size=4, counts=800.0, background=80.0)


def _train_reference(data, out, kw, record):
    """Train uninterrupted, recording every model state and checkpoint epoch written."""
    import torch

    from nanoedx_models.training import loop

    models, epochs = [], []
    real_save, real_ckpt = loop.save_model, loop._save_checkpoint

    def save(path, model, meta, **options):
        models.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return real_save(path, model, meta, **options)

    def ckpt(path, state):
        epochs.append(state["epoch"])
        return real_ckpt(path, state)

    loop.save_model, loop._save_checkpoint = save, ckpt
    loop.train(data, out, progress=False, **kw)
    torch.save({"models": models, "epochs": epochs}, record)


@pytest.fixture(scope="module")
def train_refs(tmp_path_factory, zygote):
    """An uninterrupted training run (in a child, like the killed ones), with every model
    file and checkpoint it wrote."""
    import torch

    from nanoedx_dataset import generate

    root = tmp_path_factory.mktemp("train")
    data = generate(root / "data.h5", None, n=12, size=16, seed=7, progress=False)
    end = zygote.run(_train_reference, data, root / "model.pt", TRAIN, root / "record.pt")
    assert end["ok"], end
    record = torch.load(root / "record.pt", weights_only=True)
    return {"data": data, "out": root / "model.pt", "seconds": end["seconds"], **record}


def _same_weights(a: dict, b: dict) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_killed_training_resumes_to_the_uninterrupted_weights(tmp_path, zygote, train_refs):
    import torch

    from nanoedx_models.denoisers.modelfile import load_model

    stats = STATS["train, --resume"]
    rng = random.Random(6)
    seconds = train_refs["seconds"]
    final, meta_final = load_model(train_refs["out"])
    for k in range(_kills(30)):
        out = tmp_path / f"m{k}.pt"
        ckpt = out.with_name(out.name + ".ckpt")
        for _ in range(3):
            end = zygote.run(_train, train_refs["data"], out, TRAIN, resume=ckpt.exists(),
                             delay=_delay(rng, seconds))
            if not end["killed"]:
                break
            stats["kills"] += 1
            if out.exists():  # the old model file or the new one, never a broken one
                weights = load_model(out)[0].state_dict()
                assert any(_same_weights(weights, m) for m in train_refs["models"])
                stats["model file whole"] += 1
            if ckpt.exists():
                state = torch.load(ckpt, weights_only=True)
                assert state["epoch"] in train_refs["epochs"]
                stats["checkpoint whole"] += 1
        end = zygote.run(_train, train_refs["data"], out, TRAIN, resume=ckpt.exists())
        assert end["ok"], end
        model, meta = load_model(out)
        assert _same_weights(model.state_dict(), final.state_dict())
        timeless = lambda h: [{k: v for k, v in e.items() if k != "seconds"} for e in h]  # noqa: E731
        assert timeless(meta["history"]) == timeless(meta_final["history"])
        stats["resumed to the uninterrupted weights"] += 1


# ---------------------------------------------------------------- orphans
def _running(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_workers_die_with_a_killed_parent(tmp_path, zygote, refs):
    stats = STATS["generate --workers 2, parent killed"]
    rng = random.Random(7)
    kw = dict(ONE, workers=2)
    seconds = _timed(zygote, _generate, tmp_path / "t.h5", kw)
    out = tmp_path / "db.h5"
    for _ in range(_kills(6)):
        end = zygote.run(_generate, out, kw, resume=True,
                         delay=rng.uniform(0.3 * seconds, 0.9 * seconds))
        if not end["killed"]:
            continue
        stats["kills"] += 1
        stats["workers seen"] += len(end["children"])
        deadline = time.monotonic() + 5
        alive = set(end["children"])
        while alive and time.monotonic() < deadline:
            alive = {p for p in alive if _running(p)}
            time.sleep(0.02)
        assert not alive, f"orphan workers {alive} outlived their killed parent"
        stats["orphans left"] += len(alive)
        if out.exists():
            break
    assert stats["workers seen"] > 0
    _finish_generate(zygote, out, kw, refs["one_arrays"], stats)


# ---------------------------------------------------------------- one run per output
def _hold(out, seconds):
    from nanoedx_dataset.store.lock import output_lock

    with output_lock(out):
        time.sleep(seconds)


def _owner(out: Path, timeout: float = 20) -> dict:
    """The owner recorded in the lock of ``out``, once a run has taken it."""
    lock = out.with_name(out.name + ".lock")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return json.loads(lock.read_text())
        except (FileNotFoundError, ValueError):
            time.sleep(0.005)
    raise TimeoutError(f"no run took {lock}")


def test_a_second_generate_is_refused_naming_the_first(tmp_path, zygote, refs):
    from nanoedx_dataset import OutputExistsError, generate

    out = tmp_path / "db.h5"
    big = dict(n=24, size=32, seed=11)
    zygote.submit(_generate, out, big)
    owner = _owner(out)
    with pytest.raises(OutputExistsError, match=rf"being written by another run: pid "
                                                rf"{owner['pid']} on {owner['host']}"):
        generate(out, None, overwrite=True, progress=False, **ONE)
    end = zygote.result()
    assert end["ok"], end
    with h5py.File(out) as f:  # the first run's data, not the second's
        assert f["volume"].shape[0] == 24 and f.attrs["complete"] == 1
    assert not out.with_name("db.h5.lock").exists()


@pytest.mark.parametrize("what", ["renoise", "train", "sharded", "cli"])
def test_renoise_train_and_sharded_runs_take_the_lock_too(tmp_path, zygote, refs, what):
    from nanoedx_dataset import OutputExistsError, generate, renoise
    from nanoedx_models import train

    out = {"renoise": tmp_path / "db.h5", "train": tmp_path / "m.pt",
           "sharded": tmp_path / "db", "cli": tmp_path / "db.h5"}[what]
    if what == "renoise":
        shutil.copyfile(refs["old"], out)
    zygote.submit(_hold, out, 30)
    owner = _owner(out)
    try:
        if what == "cli":
            r = subprocess.run([sys.executable, "-m", "nanoedx_models.cli", "generate", "--n",
                                "2", "--size", "16", "--out", str(out)], capture_output=True,
                               text=True, timeout=120)
            assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
            assert f"pid {owner['pid']}" in r.stderr and "another run" in r.stderr
            return
        with pytest.raises(OutputExistsError, match=f"another run: pid {owner['pid']}"):
            if what == "renoise":
                renoise(out, 100, 10, progress=False)
            elif what == "train":
                train(refs["one"], out, preset="tiny", epochs=1, progress=False)
            else:
                generate(out, None, shard_size=2, progress=False, **ONE)
    finally:
        os.kill(owner["pid"], signal.SIGKILL)
        zygote.result()
    if what == "renoise":
        assert _sha(out) == refs["old_sha"]


def _race(out, kw, at, record):
    """Two runs on one output, started at the same instant ``at``; each records its end."""
    pid = os.fork()
    while time.time() < at:
        pass
    try:
        _generate(out, kw)
        result = "ok"
    except Exception as err:  # noqa: BLE001
        result = f"{type(err).__name__}: {err}"
    Path(f"{record}.{os.getpid()}").write_text(result)
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)


def test_runs_started_at_the_same_instant_one_wins_one_is_told(tmp_path, zygote, refs):
    stats = STATS["two runs started at the same instant"]
    for k in range(_kills(6)):
        out = tmp_path / f"db{k}.h5"
        end = zygote.run(_race, out, ONE, time.time() + 0.3, tmp_path / f"r{k}")
        assert end["ok"], end
        results = sorted(p.read_text() for p in tmp_path.glob(f"r{k}.*"))
        assert len(results) == 2 and results[1] == "ok", results
        # the other is told: another run holds the output (or, came it late, the output exists)
        assert results[0].startswith("OutputExistsError: "), results
        assert _same(_arrays(out), refs["one_arrays"])
        stats["races"] += 1
        stats["refused with the other run named"] += "another run" in results[0]


def test_a_stale_lock_is_taken_over(tmp_path, refs):
    from nanoedx_dataset import generate

    out = tmp_path / "db.h5"
    dead = subprocess.Popen(["true"])
    dead.wait()
    lock = out.with_name("db.h5.lock")
    lock.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    generate(out, None, progress=False, **ONE)
    assert _same(_arrays(out), refs["one_arrays"]) and not lock.exists()
