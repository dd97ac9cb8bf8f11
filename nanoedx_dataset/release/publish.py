"""``publish``: turn generated files into a versioned release.

It verifies the files, hashes them, writes the release's entry into the registry that
:func:`nanoedx_dataset.load_dataset` reads, fills the dataset card's table of versions, writes
Zenodo metadata next to the files and, with ``upload=True``, deposits them on Zenodo (a new
deposition, or a new version of the release's previous one) and records the DOI.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections import Counter
from datetime import datetime
from pathlib import Path

from ..generation.config import OPTIONAL, PRESETS
from ..errors import ConfigError, DatasetNotFoundError
from ..simulate.haadf import HaadfOptions
from ..inspect.verify import verify
from ..store import index as shard_index
from ..store.files import atomic_output, sha256
from . import card
from . import registry as release_registry
from .zenodo import SANDBOX_API, TOKEN_ENV, ZENODO_API, Zenodo

PAPER_DOI = "10.1039/d1nr03232a"
VERSIONS_BLOCK = "versions"
EMBED_LIMIT = 10_000_000  # bytes a release may weigh to ship inside the package
_SEMVER = re.compile(r"^\d+\.\d+\.\d+$")


def _write_json(path: Path, data: dict) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _preset_of(cfg: dict, exact: bool) -> str | None:
    """The preset a config (as :meth:`GenerationConfig.to_json` writes it) starts from: one
    with the same options that the command line cannot set (mass background, probe blur,
    scene), or with ``exact`` the same config up to the dataset version and the HAADF images
    (``--haadf``)."""
    keys = ((set(cfg) | set(OPTIONAL)) - {"dataset_version"} if exact else set(OPTIONAL)) - {"haadf"}
    for name, p in PRESETS.items():
        base = json.loads(p.to_json())
        if all(base.get(k) == cfg.get(k) for k in keys):
            return name
    return None


def regenerate_command(summary: dict, out: str, shard_size: int | None = None) -> str:
    """The exact ``nanoedx generate`` command that rewrites a file (or, with ``shard_size``,
    a folder of shards) byte for byte."""
    cfg = summary["config"]
    base = _preset_of(cfg, exact=False)
    if base is None:
        raise ConfigError(f"{summary['path']}: its noise model or scene options match no preset "
                          f"({', '.join(PRESETS)}), so no command can regenerate it; start it "
                          "from a preset")
    image = cfg.get("haadf")
    if image is not None and image != HaadfOptions().to_dict():
        raise ConfigError(f"{summary['path']}: its HAADF options differ from `--haadf`'s "
                          "defaults, so no command can regenerate it")
    epoch = int(datetime.fromisoformat(summary["created"]).timestamp())
    angles = ",".join(f"{a:g}" for a in cfg["angles"])
    sharded = f"--shard-size {shard_size} " if shard_size else ""
    return (f"SOURCE_DATE_EPOCH={epoch} nanoedx generate --preset {base} --n {cfg['n']} "
            f"--size {cfg['size']} --counts {cfg['counts']:g} --background "
            f"{cfg['background']:g} --angles={angles} --seed {cfg['seed']} "
            f"--backend {cfg['backend']} {'--haadf ' if image else ''}--dataset-version "
            f"{cfg['dataset_version']} {sharded}--out {out}  # nanoedx "
            f"{summary['generator_version']}")


def _commands(summaries: list[dict], directory: Path) -> str:
    """How to rebuild the files: one sharded command for a sharded run, else one per file."""
    index = shard_index.read_index(directory)
    if index is not None:
        return regenerate_command(summaries[0], directory.name, index["shard_size"])
    return " && ".join(regenerate_command(s, Path(s["path"]).name) for s in summaries)


def _release_name(summary: dict) -> str:
    return _preset_of(summary["config"], exact=True) or "custom"


def version_table(registry: dict) -> str:
    """Markdown table of every registered release version (for the dataset card)."""
    rows = ["| release | version | files | samples | size | families | kinds | noise levels "
            "| MB | generator | download |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, versions in registry.items():
        for version in sorted(versions, key=release_registry.semver):
            e = versions[version]
            fams = ", ".join(f"{k} {v}" for k, v in sorted(e["family"].items()))
            kinds = ", ".join(f"{k} {v}" for k, v in sorted(e["kind"].items()))
            where = "embedded" if e.get("embedded") else (e.get("url") or "regenerate")
            rows.append(f"| {name} | {version} | {len(e['files'])} | {e['samples']} | "
                        f"{e['size']}³ | {fams} | {kinds} | {', '.join(e['noise_levels'])} | "
                        f"{e['bytes'] / 1e6:.1f} | {e['generator_version']} | {where} |")
    return "\n".join(rows)


def zenodo_metadata(name: str, version: str, entry: dict) -> dict:
    """Deposition metadata of a release (Zenodo's legacy deposit schema)."""
    return {
        "upload_type": "dataset",
        "title": f"nanoedx {name} database: simulated nanoparticles for low-dose EDX tomography",
        "creators": [{"name": "nanoedx developers"}],
        "description": (
            f"Release {version} of the nanoedx '{name}' database: {entry['samples']} randomized "
            f"nanoparticles ({len(entry['family'])} shape families; solid, core-shell and hollow) "
            f"on a "
            f"{entry['size']}^3 grid, with per-element occupancy volumes, parallel-beam tilt "
            f"series and Poisson-noised EDX maps ({', '.join(entry['noise_levels'])}), after "
            "Skorikov et al., Nanoscale 13, 12242 (2021). Load with "
            f"`nanoedx_dataset.load_dataset('{name}', version='{version}')`; regenerate with "
            f"`{entry['command']}`."),
        "license": "cc-by-4.0",
        "version": version,
        "keywords": ["EDX", "EDS", "electron tomography", "denoising", "nanoparticles",
                     "simulation", "deep learning"],
        "related_identifiers": [{"identifier": PAPER_DOI, "relation": "isSupplementTo",
                                 "scheme": "doi"}],
    }


def default_registry() -> Path:
    """The package's registry (``releases.json``)."""
    return release_registry.registry_path()


def publish(directory, version: str, *, name: str | None = None, registry=None, card_path=None,
            embed: bool = False, upload: bool = False, sandbox: bool = False,
            token: str | None = None, api: str | None = None) -> dict:
    """Make a release of the database files in ``directory``.

    Parameters
    ----------
    directory : path-like
        Folder holding the release's ``.h5`` files (one file, or one per shard).
    version : str
        Semantic version ``X.Y.Z`` of the release.
    name : str, optional
        Release name; by default the preset the files match (``mini``, ``standard``,
        ``paper``) or ``custom``.
    registry : path-like, optional
        The registry to update (default: the package's ``releases.json``).
    card_path : path-like, optional
        A dataset card whose ``versions`` block to rewrite.
    embed : bool
        Copy the files into the package (``data/``) so the release loads offline; at most
        10 MB in all.
    upload, sandbox : bool
        Deposit on Zenodo (or its sandbox) with the token in ``ZENODO_TOKEN``.
    token, api : str, optional
        Override the token and the API root (tests use a local server).

    Returns
    -------
    dict
        The registry entry written.
    """
    directory = Path(directory)
    if not _SEMVER.match(version):
        raise ConfigError(f"version must look like X.Y.Z (semantic versioning), got {version!r}")
    files = sorted(directory.glob("*.h5")) if directory.is_dir() else []
    if not files:
        raise DatasetNotFoundError(f"no .h5 files in {directory}; generate them with "
                                   "`nanoedx generate --out DIR/FILE.h5`")
    shard_index.check_complete(directory)
    token = token if token is not None else os.environ.get(TOKEN_ENV, "")
    if upload and not token:
        raise ConfigError(f"--upload needs a Zenodo token in {TOKEN_ENV} (Zenodo > "
                          "Applications > Personal access tokens, scopes deposit:write and "
                          "deposit:actions)")
    summaries = [verify(p) for p in files]
    first = summaries[0]
    for s in summaries[1:]:
        if (s["size"], s["angles"]) != (first["size"], first["angles"]):
            raise ConfigError(f"{s['path']} differs from {first['path']} in size or angles; "
                              "a release holds files of one grid and tilt series")
    name = name or _release_name(first)
    total = lambda key: dict(sum((Counter(s[key]) for s in summaries), Counter()))  # noqa: E731
    entry = {
        "files": {p.name: release_registry.spell_hash(sha256(p)) for p in files},
        "samples": sum(s["samples"] for s in summaries),
        "size": first["size"],
        "angles": first["angles"],
        "family": total("family"),
        "kind": total("kind"),
        "split": total("split"),
        "noise_levels": sorted(set().union(*(s["noise_levels"] for s in summaries))),
        "bytes": sum(p.stat().st_size for p in files),
        "generator_version": first["generator_version"],
        "command": _commands(summaries, directory),
        "url": None,
        "embedded": embed,
    }
    if embed and entry["bytes"] > EMBED_LIMIT:
        raise ConfigError(f"{entry['bytes'] / 1e6:.1f} MB is too large to embed (limit "
                          f"{EMBED_LIMIT / 1e6:.0f} MB); publish it for download instead")
    card_text = Path(card_path).read_text() if card_path else None
    if card_text is not None:
        card.replace_block(card_text, VERSIONS_BLOCK, "")  # fail now, before writing anything

    reg_path = Path(registry) if registry else default_registry()
    reg = json.loads(reg_path.read_text()) if reg_path.exists() else {}
    previous = reg.get(name, {})
    metadata = zenodo_metadata(name, version, entry)
    _write_json(directory / "zenodo.json", {"metadata": metadata})
    if upload:
        last = max(previous, key=release_registry.semver) if previous else None
        prev_id = previous[last].get("zenodo", {}).get("id") if last else None
        client = Zenodo(token, api or (SANDBOX_API if sandbox else ZENODO_API))
        record = client.deposit(files, metadata, previous=prev_id)
        entry["zenodo"] = record
        if record.get("doi"):
            entry["url"] = f"doi:{record['doi']}/"
    if embed:
        data = release_registry.data_dir()
        data.mkdir(exist_ok=True)
        for p in files:
            with atomic_output(data / p.name) as tmp:
                shutil.copyfile(p, tmp)
    reg.setdefault(name, {})[version] = entry
    _write_json(reg_path, reg)
    release_registry.releases.cache_clear()
    if card_text is not None:
        with atomic_output(Path(card_path)) as tmp:
            tmp.write_text(card.replace_block(card_text, VERSIONS_BLOCK, version_table(reg)))
    return entry

