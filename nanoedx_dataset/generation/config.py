"""Generation config: presets, validation and the angle syntax of the command line."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace

import numpy as np

from ..errors import ConfigError
from ..simulate import project
from ..simulate.noise import check_dose
from ..simulate.voxelizers import check_backend

MIN_SIZE = 16


@dataclass(frozen=True)
class GenerationConfig:
    """Everything that determines a database's arrays (with the package version).

    Attributes
    ----------
    n : int
        Number of samples (particles).
    size : int
        Voxels per axis of the volume; projections are ``size`` x ``size``.
    angles : tuple of float
        Tilt angles, degrees, each in (-90, 90).
    counts, background : float
        The noise level written at generation (signal and background counts per map).
    seed : int
        Seed of the specs, splits and noise.
    backend : str
        Voxelization backend.
    dataset_version : str
        Semantic version given to the database.
    """

    n: int
    size: int
    angles: tuple[float, ...] = project.DEFAULT_ANGLES
    counts: float = 1000.0
    background: float = 100.0
    seed: int = 0
    backend: str = "analytic"
    dataset_version: str = "0.1.0"

    def validate(self) -> "GenerationConfig":
        """Return the config with types normalized, or raise :class:`ConfigError`."""
        if int(self.n) < 1:
            raise ConfigError(f"n must be at least 1 sample, got {self.n}")
        if int(self.size) < MIN_SIZE:
            raise ConfigError(f"size must be at least {MIN_SIZE} voxels, got {self.size}")
        check_backend(self.backend)
        counts, background = check_dose(self.counts, self.background)
        angles = tuple(float(a) for a in project.check_angles(self.angles))
        return replace(self, n=int(self.n), size=int(self.size), angles=angles, counts=counts,
                       background=background, seed=int(self.seed))

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "GenerationConfig":
        d = json.loads(text)
        d["angles"] = tuple(d["angles"])
        return cls(**d)


PRESETS: dict[str, GenerationConfig] = {
    "mini": GenerationConfig(n=64, size=64),
    "standard": GenerationConfig(n=1000, size=128),
    "paper": GenerationConfig(n=1000, size=256),
}


def preset(name: str) -> GenerationConfig:
    """A preset by name; the error lists the valid ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}") from None


def parse_angles(text: str) -> tuple[float, ...]:
    """Angles from ``START:STOP:STEP`` (STOP included when on the grid) or ``a,b,c`` (degrees)."""
    try:
        if ":" in text:
            start, stop, step = (float(v) for v in text.split(":"))
            if step <= 0 or stop < start:
                raise ConfigError(f"angles {text!r}: need STEP > 0 and STOP >= START")
            count = int(np.floor((stop - start) / step + 1e-9)) + 1
            values = start + step * np.arange(count)
        else:
            values = np.array([float(v) for v in text.split(",") if v.strip()])
    except ValueError as err:
        raise ConfigError(
            f"cannot read angles {text!r}: use START:STOP:STEP (e.g. -75:75:10) or a,b,c"
        ) from err
    return tuple(float(a) for a in project.check_angles(np.round(values, 9)))
