"""Generation config: presets, validation and the angle syntax of the command line."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace

import numpy as np

from ..errors import ConfigError
from ..simulate import project
from ..simulate.haadf import HaadfOptions
from ..simulate.noise import NoiseModel, check_dose
from ..simulate.scenes import SceneOptions
from ..simulate.voxelizers import check_backend

MIN_SIZE = 16
# Options added after the first releases, left out of the config's JSON at these defaults so
# that every earlier config keeps its exact JSON (it is part of the file's bytes).
OPTIONAL = {"mass_background": 0.0, "probe_blur": 0.0, "scene": None, "haadf": None}


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
    mass_background : float
        Share in [0, 1] of the background that follows the maps' mass thickness (the rest is
        uniform); 0: all uniform. See :class:`~nanoedx_dataset.simulate.noise.NoiseModel`.
    probe_blur : float
        Gaussian sigma (pixels) of the probe's blur of the expected counts; the maps' ground
        truth is then the blurred signal. 0: none.
    scene : SceneOptions or None
        Draw each sample as a field of several particles, supports and phases
        (:mod:`nanoedx_dataset.simulate.scenes`; family and kind ``scene``); None: one
        particle per sample (:func:`~nanoedx_dataset.simulate.specs.draw_spec`).
    haadf : HaadfOptions or None
        Also simulate and store the HAADF-STEM image recorded with every tilt
        (:mod:`nanoedx_dataset.simulate.haadf`; a file of format 1.1); None: no images. The
        EDX arrays are the same either way.
    """

    n: int
    size: int
    angles: tuple[float, ...] = project.DEFAULT_ANGLES
    counts: float = 1000.0
    background: float = 100.0
    seed: int = 0
    backend: str = "analytic"
    dataset_version: str = "0.1.0"
    mass_background: float = 0.0
    probe_blur: float = 0.0
    scene: SceneOptions | None = None
    haadf: HaadfOptions | None = None

    @property
    def noise_model(self) -> NoiseModel:
        """The noise of the maps (:class:`~nanoedx_dataset.simulate.noise.NoiseModel`)."""
        return NoiseModel(self.mass_background, self.probe_blur)

    def validate(self) -> "GenerationConfig":
        """Return the config with types normalized, or raise :class:`ConfigError`."""
        if int(self.n) < 1:
            raise ConfigError(f"n must be at least 1 sample, got {self.n}")
        if int(self.size) < MIN_SIZE:
            raise ConfigError(f"size must be at least {MIN_SIZE} voxels, got {self.size}")
        scene = self.scene
        if scene is not None:
            if self.backend != "analytic":
                raise ConfigError(f"scenes are voxelized with the analytic backend, not "
                                  f"{self.backend!r}; drop --backend or the scene options")
            scene = (SceneOptions.from_dict(scene) if isinstance(scene, dict)
                     else scene.validate())
        image = self.haadf
        if image is not None:
            image = (HaadfOptions.from_dict(image) if isinstance(image, dict)
                     else image.validate())
        check_backend(self.backend)
        counts, background = check_dose(self.counts, self.background)
        angles = tuple(float(a) for a in project.check_angles(self.angles))
        model = self.noise_model
        return replace(self, n=int(self.n), size=int(self.size), angles=angles, counts=counts,
                       background=background, seed=int(self.seed),
                       mass_background=model.mass_background, probe_blur=model.probe_blur,
                       scene=scene, haadf=image)

    def to_json(self) -> str:
        """The config as JSON; options at their :data:`OPTIONAL` defaults are left out."""
        d = asdict(self)
        for key, default in OPTIONAL.items():
            if d[key] == default:
                del d[key]
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "GenerationConfig":
        d = json.loads(text)
        d["angles"] = tuple(d["angles"])
        if d.get("scene") is not None:
            d["scene"] = SceneOptions.from_dict(d["scene"])
        if d.get("haadf") is not None:
            d["haadf"] = HaadfOptions.from_dict(d["haadf"])
        return cls(**d)


PRESETS: dict[str, GenerationConfig] = {
    "mini": GenerationConfig(n=64, size=64),
    "standard": GenerationConfig(n=1000, size=128),
    "paper": GenerationConfig(n=1000, size=256),
    # Fields like real ones: 1-12 particles, supports and phases, half the background
    # following the mass thickness, a probe blur of 1 pixel; one stored dose (500 counts and
    # 150 background per map), train over 16-16000 counts per map drawn on the fly.
    "fields": GenerationConfig(n=1000, size=128, counts=500.0, background=150.0,
                               mass_background=0.5, probe_blur=1.0, scene=SceneOptions()),
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
