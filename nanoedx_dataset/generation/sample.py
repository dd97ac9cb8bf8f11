"""One sample, computed: spec -> occupancy -> uint8 volume -> projections -> noisy maps.

A sample is one particle (:func:`~nanoedx_dataset.simulate.specs.draw_spec`), or with the
config's ``scene`` options a whole field (:func:`~nanoedx_dataset.simulate.scenes.draw_scene`,
family and kind ``scene``, its :class:`~nanoedx_dataset.simulate.scenes.SceneSpec` in params).

Every random draw depends only on the generation seed and the sample's index (and a noise
level's seed), so the same config gives bit-identical arrays in any process, pool or shard.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import h5py
import numpy as np

from ..simulate import haadf
from ..simulate.project import project
from ..simulate.scenes import draw_scene, voxelize_scene
from ..simulate.specs import draw_spec
from ..simulate.voxelizers import voxelize
from ..store import reader, schema, writer
from ..store.schema import ELEMENTS, noise_tag
from .config import GenerationConfig


@dataclass
class Sample:
    """The arrays of one sample, as written to the file."""

    index: int
    spec_json: str
    family: str
    kind: str
    volume: np.ndarray  # (element, z, y, x) uint8
    projection: np.ndarray  # (element, angle, row, col) float32
    noisy: np.ndarray  # (element, angle, row, col) uint16
    seconds: dict
    haadf: np.ndarray | None = None  # (angle, row, col) uint16, with the config's HAADF options
    haadf_params: str | None = None  # their JSON


def noise_seed(seed: int, counts: float, background: float) -> int:
    """Default seed of a noise level: derived from the generation seed and the level's tag."""
    digest = hashlib.sha256(f"{seed}/{noise_tag(counts, background)}".encode()).hexdigest()
    return int(digest[:8], 16)


def noise_rng(seed: int, index: int) -> np.random.Generator:
    """The generator that draws sample ``index``'s counts of a noise level with ``seed``."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2, index)))


def splits(n: int, seed: int) -> np.ndarray:
    """Split of each sample: 70 % train, 15 % val, 15 % test, in an order fixed by the seed."""
    order = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(3,))).permutation(n)
    n_train, n_val = round(0.7 * n), round(0.15 * n)
    out = np.empty(n, dtype=object)
    out[order[:n_train]] = "train"
    out[order[n_train : n_train + n_val]] = "val"
    out[order[n_train + n_val :]] = "test"
    return out


def make_sample(cfg: GenerationConfig, index: int, mesh_dir=None) -> Sample:
    """Compute every array of sample ``index`` (no I/O but the meshes saved in ``mesh_dir``)."""
    t0 = time.perf_counter()
    if cfg.scene is not None:
        spec = draw_scene(cfg.seed, index, cfg.scene)
        occ = voxelize_scene(spec, cfg.size)
        family = kind = schema.SCENE
    else:
        spec = draw_spec(cfg.seed, index)
        occ = voxelize(spec, cfg.size, backend=cfg.backend, mesh_dir=mesh_dir)
        family, kind = spec.family, spec.kind
    seconds = time.perf_counter() - t0
    s = sample_from_occupancy(cfg, index, occ, spec.to_json(), family, kind)
    s.seconds = {"voxelize": seconds, **s.seconds}
    return s


def sample_from_occupancy(cfg: GenerationConfig, index: int, occ: np.ndarray, params: str,
                          family: str, kind: str) -> Sample:
    """Quantize an occupancy (element, z, y, x), project it and noise the projections."""
    t1 = time.perf_counter()
    volume = np.rint(occ / schema.VOLUME_SCALE).astype(np.uint8)
    # Project the stored (quantized) occupancy, so projections and volume agree exactly.
    # An absent element (the core of a solid particle) projects to zeros: skip it.
    proj = np.zeros((len(ELEMENTS), len(cfg.angles), cfg.size, cfg.size), np.float32)
    present = np.flatnonzero(volume.any(axis=(1, 2, 3)))
    if present.size:
        proj[present] = project(volume[present], cfg.angles, scale=schema.VOLUME_SCALE)
    t2 = time.perf_counter()
    rng = noise_rng(noise_seed(cfg.seed, cfg.counts, cfg.background), index)
    noisy = cfg.noise_model.sample_elements(proj, cfg.counts, cfg.background, rng)
    t3 = time.perf_counter()
    seconds = {"project": t2 - t1, "noise": t3 - t2}
    image = image_params = None
    if cfg.haadf is not None:
        image, image_params = haadf.simulate(proj, cfg.angles, cfg.haadf, cfg.seed, index)
        seconds["haadf"] = time.perf_counter() - t3
    return Sample(index, params, family, kind, volume, proj, noisy, seconds, image,
                  image_params)


def catalogue(s: Sample) -> dict:
    """A sample's catalogue row, as the writer takes it (the split is the file's)."""
    row = {schema.FAMILY: s.family, schema.KIND: s.kind, schema.PARAMS: s.spec_json}
    if s.haadf_params is not None:
        row[schema.HAADF_PARAMS] = s.haadf_params
    return row


def write(f: h5py.File, counts_ds: h5py.Dataset, s: Sample, first: int = 0) -> None:
    """Write one sample into an open file whose first sample is the global index ``first``."""
    writer.write_sample(f, counts_ds, s.index - first, catalogue(s), s.volume, s.projection,
                        s.noisy, s.haadf)


@dataclass
class Encoded:
    """A sample as a worker hands it to the writer: its catalogue row, its digest and its
    chunks compressed as the file stores them (:func:`.writer.encode_sample`), or the sample
    itself where this HDF5 compresses differently (:func:`.writer.precompressed`)."""

    index: int
    digest: str
    catalogue: dict
    chunks: dict | None
    sample: Sample | None = None


def encode(s: Sample) -> Encoded:
    """What :func:`write_encoded` writes of ``s``: the file :func:`write` would write."""
    chunks = (writer.encode_sample(s.volume, s.projection, s.noisy, s.haadf)
              if writer.precompressed() else None)
    return Encoded(s.index, digest(s), catalogue(s), chunks, None if chunks else s)


def write_encoded(f: h5py.File, counts_ds: h5py.Dataset, e: Encoded, first: int = 0) -> None:
    """:func:`write` of an encoded sample (the parent only writes bytes)."""
    if e.chunks is None:
        write(f, counts_ds, e.sample, first)
    else:
        writer.write_chunks(f, counts_ds, e.index - first, e.catalogue, e.chunks)


def digest(s: Sample) -> str:
    """SHA-256 of a sample as :func:`write` writes it (see :func:`.writer.sample_digest`)."""
    return writer.sample_digest(catalogue(s), s.volume, s.projection, s.noisy, s.haadf)


def stored(f: h5py.File, counts_ds: h5py.Dataset, index: int, first: int = 0) -> Sample:
    """Sample ``index`` (global) as stored in an open file (HDF5's errors pass through)."""
    cat, volume, projection, noisy, image = reader.read_sample(f, counts_ds, index - first)
    return Sample(index, cat[schema.PARAMS], cat[schema.FAMILY], cat[schema.KIND], volume,
                  projection, noisy, {}, image, cat.get(schema.HAADF_PARAMS))
