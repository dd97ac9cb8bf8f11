"""torch Datasets over a nanoedx database: 2D map pairs for training, tilt series for 3D.

Both read one map or series at a time from the HDF5 files (opened lazily in each process, so
``DataLoader(num_workers>0)`` works) and never load a whole file. Noise comes either from a
stored level (``noise="c1000_b100"``, the paper's fixed pairs) or is drawn afresh from the clean
projection (``counts=C`` or a range ``counts=(lo, hi)``, log-uniform), seeded by
``(seed, epoch, item)`` so that every epoch sees new noise and any run can be repeated exactly.
On-the-fly noise follows the noise model of the file's config (a mass-thickness background and
a probe blur, :class:`~nanoedx_dataset.simulate.noise.NoiseModel`), and the target of every map
is that model's signal (blurred by the probe where the config blurs).

Normalization (invertible): a raw count map ``x`` is divided by its mean count per pixel,
``k = mean(x)``; the target is the expected signal divided by the same ``k``. A network's output
``y`` is turned back into expected counts as ``y * k`` (:func:`normalize`, :func:`denormalize`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from nanoedx_dataset.errors import ConfigError
from nanoedx_dataset.release.load import resolve
from nanoedx_dataset.simulate.noise import NoiseModel, check_dose
from nanoedx_dataset.store import schema
from nanoedx_dataset.store.reader import Database, check_split
from nanoedx_dataset.store.schema import present_elements

from .context import channels, check_context
from .scale import MIN_SCALE, denormalize, normalize

__all__ = ["EDXMaps", "MIN_SCALE", "TiltSeries", "denormalize", "normalize"]
OTHER_MAPS = 10**9  # item key offset of the maps drawn around an item's map (EDXMaps.series)


class _Base(Dataset):
    def __init__(self, source, split, noise, counts, background, background_fraction, seed,
                 version, cache_dir):
        check_split(split)
        if noise is not None and counts is not None:
            raise ConfigError("give either a stored noise level (noise=) or counts= to draw "
                              "noise on the fly, not both")
        sources = list(source) if isinstance(source, (list, tuple)) else [source]
        self.files = [Database(p) for src in sources for p in resolve(src, version, cache_dir)]
        self.models = [NoiseModel.from_config(db.attrs.get(schema.ATTR_CONFIG, "{}"))
                       for db in self.files]
        self.seed, self.epoch = int(seed), 0
        self.noise, self.counts = noise, counts
        if counts is None:
            self.noise = self.files[0].level(noise)
            for db in self.files:
                if db.level(self.noise) is None:
                    raise ConfigError(f"{db.path.name} has no noise level: pass counts= to draw "
                                      "noise on the fly or add one with `nanoedx renoise`")
        else:
            lo, hi = (counts, counts) if np.isscalar(counts) else counts
            check_dose(lo, background or 0.0)
            check_dose(hi, 0.0)
            if hi < lo:
                raise ConfigError(f"counts range must be (low, high), got {counts}")
            self.counts_range = (float(lo), float(hi))
            if background is not None and background_fraction is not None:
                raise ConfigError("give background= or background_fraction=, not both")
            if background_fraction is not None and not np.isscalar(background_fraction):
                flo, fhi = background_fraction
                if not 0 < flo <= fhi:
                    raise ConfigError("background_fraction range must be (low, high) with "
                                      f"0 < low <= high, got {background_fraction}")
            self.background, self.background_fraction = background, background_fraction
        self.split = split

    @property
    def dose(self) -> tuple[float, float] | None:
        """Signal and background counts per map: the stored level's, or the fixed on-the-fly
        dose (None for a range of doses)."""
        if self.counts is None:
            level = self.files[0].levels[self.noise]
            return float(level["counts"]), float(level["background"])
        lo, hi = self.counts_range
        return None if hi > lo else self._dose(None)

    def describe(self) -> dict:
        """The files read and their dataset and generator versions."""
        attrs = self.files[0].attrs
        return {"files": [db.path.name for db in self.files],
                "dataset_version": attrs.get(schema.ATTR_DATASET_VERSION, ""),
                "generator_version": attrs.get(schema.ATTR_GENERATOR_VERSION, "")}

    def set_epoch(self, epoch: int) -> None:
        """Draw the on-the-fly noise of ``epoch`` (call before iterating an epoch)."""
        self.epoch = int(epoch)

    def _rng(self, item: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([self.seed, self.epoch, item]))

    def _dose(self, rng: np.random.Generator) -> tuple[float, float]:
        lo, hi = self.counts_range
        c = float(np.exp(rng.uniform(np.log(lo), np.log(hi)))) if hi > lo else lo
        if self.background_fraction is not None:
            f = self.background_fraction
            if not np.isscalar(f):  # a range: log-uniform
                f = float(np.exp(rng.uniform(np.log(f[0]), np.log(f[1]))))
            return c, c * f
        return c, float(self.background if self.background is not None else 0.1 * c)

    def _maps(self, fi: int, sample: int, element: int, angles, item: int):
        """Raw counts, expected signal (float32) and the dose of some maps of one sample."""
        db, model = self.files[fi], self.models[fi]
        proj = db.projection(sample, element, angles)
        if self.counts is None:
            level = db.levels[self.noise]
            c, b = float(level["counts"]), float(level["background"])
            raw = db.counts(self.noise, sample, element, angles)
        else:
            rng = self._rng(item)
            c, b = self._dose(rng)
            mass = (db.projection(sample, slice(None), angles).sum(axis=0)
                    if model.mass_background > 0 else None)
            raw = model.sample(proj, c, b, rng, mass=mass)
        return raw.astype(np.float32), model.signal(proj, c), c, b

    def _present(self, fi: int, s: int) -> tuple[int, ...]:
        return present_elements(self.files[fi].catalogue[schema.KIND][s])

    def _haadf(self, fi: int, s: int) -> np.ndarray | None:
        """Sample ``s``'s HAADF images (float32), or None for a file without them."""
        db = self.files[fi]
        return db.haadf(s).astype(np.float32) if db.has_haadf else None

    def _check_haadf(self) -> None:
        lacking = [db.path.name for db in self.files if not db.has_haadf]
        if lacking:
            raise ConfigError(f"{', '.join(lacking)} holds no HAADF images, which the haadf "
                              "context needs; generate a database with `nanoedx generate "
                              "--haadf`")

    def _samples(self):
        for fi, db in enumerate(self.files):
            for s, (split, kind) in enumerate(zip(db.catalogue[schema.SPLIT], db.catalogue[schema.KIND])):
                if self.split is None or split == self.split:
                    yield fi, s, present_elements(kind)


class EDXMaps(_Base):
    """Pairs of (noisy, target) 2D maps, normalized, as float tensors of shape (C, H, W) and
    (1, H, W): the map alone (C = 1), or with ``context`` channels beside it.

    Parameters
    ----------
    source : str or path-like, or a list of them
        A release name, a database file or a folder of shards (a list: their maps together).
    split : {"train", "val", "test"} or None
        Samples of one split (None: all).
    noise : str, optional
        Stored noise level tag; default the file's first level (unless ``counts`` is given).
    counts : float or (float, float), optional
        Draw noise on the fly with this many signal counts per map, or log-uniformly in a range.
    background, background_fraction : float, optional
        Background counts per map for on-the-fly noise, absolute or as a fraction of the
        counts (default: 10 % of the counts); ``background_fraction=(lo, hi)`` draws the
        fraction log-uniformly per map.
    per_structure : bool
        One map per structure (a random present element and angle, fixed by ``seed``), as in
        the paper; otherwise every angle of every present element.
    seed : int
    context : sequence of str
        Context channels beside each map (:data:`~nanoedx_models.data.context.CONTEXTS`:
        ``haadf``, ``elements``, ``tilts``); ``haadf`` needs files that hold HAADF images.
    version, cache_dir
        Passed to the release loader.

    Notes
    -----
    Maps whose clean projection is empty (the absent core of a solid particle) are skipped.
    ``dataset.scale(i)`` is not needed to invert: the scale is the noisy map's mean count.
    """

    def __init__(self, source, split: str | None = "train", *, noise: str | None = None,
                 counts=None, background: float | None = None,
                 background_fraction: float | None = None, per_structure: bool = True,
                 seed: int = 0, context=(), version: str = "latest", cache_dir=None):
        super().__init__(source, split, noise, counts, background, background_fraction, seed,
                         version, cache_dir)
        self.context = check_context(context)
        if "haadf" in self.context:
            self._check_haadf()
        self.items: list[tuple[int, int, int, int]] = []
        for fi, s, elements in self._samples():
            db = self.files[fi]
            n_angles = len(db.angles)
            if per_structure:
                # a shard of a sharded run draws as the run's one file would: by global index
                key = [0, db.first + s] if db.sharded else [fi, s]
                rng = np.random.default_rng(np.random.SeedSequence([self.seed, *key]))
                self.items.append((fi, s, int(rng.choice(elements)), int(rng.integers(n_angles))))
            else:
                self.items += [(fi, s, e, a) for e in elements for a in range(n_angles)]

    def __len__(self) -> int:
        return len(self.items)

    def raw(self, i: int) -> tuple[np.ndarray, np.ndarray, float, float]:
        """Item ``i`` unnormalized: counts (float32), expected signal, counts and background."""
        fi, s, e, a = self.items[i]
        return self._maps(fi, s, e, a, i)

    def series(self, i: int) -> dict:
        """The particle's tilt series around item ``i``'s map, for a denoiser with context.

        Returns a dict: ``noisy`` (present element, angle, row, col) raw counts whose map
        ``[element, angle]`` is exactly :meth:`raw`'s, ``element`` and ``angle`` (that map's
        position), ``haadf`` (angle, row, col) or None, ``background``. With on-the-fly noise
        the other maps are drawn from their own stream.
        """
        fi, s, e, a = self.items[i]
        present = self._present(fi, s)
        noisy, _, _, b = self._maps(fi, s, list(present), slice(None), OTHER_MAPS + i)
        raw = self.raw(i)[0]
        noisy[present.index(e), a] = raw
        return {"noisy": noisy, "element": present.index(e), "angle": a, "background": b,
                "haadf": self._haadf(fi, s)}

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.context:
            raw, signal, _, _ = self.raw(i)
            x, k = normalize(raw)
            return torch.from_numpy(x)[None], torch.from_numpy(signal / np.float32(k))[None]
        fi, s, e, a = self.items[i]
        present = self._present(fi, s)
        noisy, signal, _, _ = self._maps(fi, s, list(present), slice(None), i)
        pos = present.index(e)
        image = self._haadf(fi, s) if "haadf" in self.context else None  # read when used
        x, k = channels(noisy, pos, a, self.context, image)
        return torch.from_numpy(x), torch.from_numpy(signal[pos, a] / np.float32(k))[None]


class TiltSeries(_Base):
    """One item per (sample, present element): the whole noisy tilt series, for 3D work.

    Items are dicts of numpy arrays: ``noisy`` (angle, row, col) raw counts, ``target`` the
    expected signal counts, ``angles`` (degrees), ``reference`` the reference volume
    (z, y, x) = occupancy * counts / sum(occupancy), ``haadf`` (angle, row, col) or None, and
    ``counts``, ``background``, ``sample``, ``element``. Parameters as :class:`EDXMaps` (without ``per_structure``).
    """

    def __init__(self, source, split: str | None = "test", *, noise: str | None = None,
                 counts=None, background: float | None = None,
                 background_fraction: float | None = None, seed: int = 0,
                 version: str = "latest", cache_dir=None):
        super().__init__(source, split, noise, counts, background, background_fraction, seed,
                         version, cache_dir)
        self.items = [(fi, s, e) for fi, s, elements in self._samples() for e in elements]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        fi, s, e = self.items[i]
        raw, signal, c, b = self._maps(fi, s, e, slice(None), i)
        db = self.files[fi]
        vol = db.volume(s, e)
        return {"noisy": raw, "target": signal, "angles": db.angles,
                "reference": (vol * c / vol.sum()).astype(np.float32), "counts": c,
                "background": b, "sample": s, "element": db.elements[e],
                "haadf": self._haadf(fi, s)}
