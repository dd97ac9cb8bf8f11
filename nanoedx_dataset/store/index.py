"""The index of a sharded database: ``index.json`` beside the shard files.

A sharded database is a folder holding ``shard-00000.h5``, ``shard-00001.h5``, ... and
``index.json``. Each shard is a complete database of the run's global samples ``start`` to
``stop - 1`` (root attribute ``first_sample = start``). The index lists the run's config, the
shard size, and each shard's file, range, size and SHA-256 (null until the shard is finished).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import SchemaError
from .files import atomic_output, sha256

INDEX = "index.json"
INDEX_FORMAT = "nanoedx-shards"
SHARD_NAME = re.compile(r"shard-\d+\.h5")


@dataclass(frozen=True)
class Shard:
    """One shard: its file name in the folder and its global sample range [start, stop)."""

    file: str
    start: int
    stop: int

    @property
    def samples(self) -> int:
        return self.stop - self.start


def plan(n: int, shard_size: int) -> list[Shard]:
    """The shards of ``n`` samples, ``shard_size`` each (the last one may be shorter)."""
    count = -(-n // shard_size)
    width = max(5, len(str(count - 1)))
    return [Shard(f"shard-{k:0{width}d}.h5", k * shard_size, min(n, (k + 1) * shard_size))
            for k in range(count)]


def read_index(directory) -> dict | None:
    """The index of a sharded folder, or None when it has none."""
    path = Path(directory) / INDEX
    if not path.is_file():
        return None
    try:
        index = json.loads(path.read_text())
    except ValueError as err:
        raise SchemaError(f"{path} is not valid JSON ({err}); rerun the generate command with "
                          "--overwrite") from err
    if index.get("format") != INDEX_FORMAT:
        raise SchemaError(f"{path} is not a nanoedx shard index (format "
                          f"{index.get('format')!r}, expected {INDEX_FORMAT!r})")
    return index


def write_index(directory: Path, index: dict) -> None:
    """Write ``index`` (atomically), marked complete when every shard has its hash."""
    done = all(s["sha256"] for s in index["shards"])
    with atomic_output(directory / INDEX) as tmp:
        tmp.write_text(json.dumps({**index, "complete": done}, indent=1) + "\n")


def missing(directory) -> list[str]:
    """Shards an index lists as unfinished or whose file is gone ([] without an index)."""
    directory = Path(directory)
    index = read_index(directory)
    if index is None:
        return []
    return [s["file"] for s in index["shards"]
            if not s["sha256"] or not (directory / s["file"]).is_file()]


def check_complete(directory) -> None:
    """Refuse a sharded folder whose run has not finished (named in the error)."""
    gone = missing(directory)
    if gone:
        total = len(read_index(directory)["shards"])
        raise SchemaError(f"{directory} is an unfinished sharded database: {len(gone)} of "
                          f"{total} shards missing ({', '.join(gone[:3])}"
                          f"{', ...' if len(gone) > 3 else ''}); rerun the generate command "
                          "to finish it")


def record(path: Path, shard: Shard) -> dict:
    """A finished shard's index record: its range, size in bytes and SHA-256."""
    return {**asdict(shard), "bytes": path.stat().st_size, "sha256": sha256(path)}
