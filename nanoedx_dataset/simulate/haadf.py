"""The HAADF-STEM image recorded with every EDX map.

A high-angle annular dark-field detector counts the electrons that the specimen scatters to
high angles; for a thin specimen that signal grows with the projected amount of each element
times its atomic number to a power ``gamma`` of about 1.7 (Z-contrast; Pennycook & Jesson 1991,
Krivanek et al. 2010). For the clean projections ``p_e`` of the elements at one tilt the
expected image is

    lam = G * (k * (sum_e Z_e**gamma * p_e + s * max(m) / cos(theta)))

with ``m = sum_e Z_e**gamma * p_e``: ``k`` scales the brightest pixel of the series' particle to
``peak`` detected electrons, ``s`` is the signal of the amorphous support film (plus stray
scattering) as a share of that peak, thicker along the beam by ``1 / cos(theta)`` when the film
is tilted, and ``G`` is the probe's Gaussian blur. The recorded image is
``Poisson(lam) + N(0, read_noise**2)``, rounded and clipped to the uint16 counts it is stored
as. Its dose is far higher than EDX's: tens to thousands of electrons at the particle against a
fraction of a count per pixel in an EDX map.

Each sample draws its own element identities (``Z`` of element A and B from
:data:`ELEMENTS`, distinct), peak dose, support, blur and read noise
(:func:`draw_params`, stored as the sample's ``haadf_params`` JSON), so that a denoiser that
uses the image must use its shapes, not its absolute contrast. The draws use their own random
stream: a file with HAADF images holds exactly the EDX arrays of the same config without them.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import ConfigError
from ..store.schema import HAADF_DTYPE
from . import blur

# Elements of nanoparticles studied by EDX tomography: symbol and atomic number.
ELEMENTS: tuple[tuple[str, int], ...] = (
    ("S", 16), ("Ti", 22), ("Fe", 26), ("Co", 27), ("Ni", 28), ("Cu", 29), ("Zn", 30),
    ("Se", 34), ("Pd", 46), ("Ag", 47), ("Cd", 48), ("Te", 52), ("Pt", 78), ("Au", 79),
)
MAX_COUNT = int(np.iinfo(HAADF_DTYPE).max)
STREAM = 5  # spawn key of the HAADF draws (specs use 0 and 1, noise 2, splits 3, scenes 4)


def _range(name: str, value, lo_bound: float) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"haadf {name} must be a (low, high) pair, got {value!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < lo_bound or hi < lo:
        raise ConfigError(f"haadf {name} must be (low, high) with {lo_bound} <= low <= high, "
                          f"got {value!r}")
    return lo, hi


@dataclass(frozen=True)
class HaadfOptions:
    """Ranges the HAADF image of each sample is drawn from.

    Attributes
    ----------
    gamma : float
        Exponent of the atomic number in the Z-contrast (1.7).
    peak : (float, float)
        Detected electrons at the brightest particle pixel, log-uniform (50-5000: a peak
        signal-to-noise ratio of 7-70).
    support : (float, float)
        Signal of the support film and stray scattering at 0 deg, as a share of the peak,
        uniform.
    blur : (float, float)
        Gaussian sigma of the probe, pixels, uniform.
    read_noise : (float, float)
        Gaussian sigma of the detector's read noise, counts, uniform.
    """

    gamma: float = 1.7
    peak: tuple[float, float] = (50.0, 5000.0)
    support: tuple[float, float] = (0.02, 0.2)
    blur: tuple[float, float] = (0.3, 1.2)
    read_noise: tuple[float, float] = (0.0, 3.0)

    def validate(self) -> "HaadfOptions":
        """The options with types normalized, or raise :class:`ConfigError`."""
        gamma = float(self.gamma)
        if not np.isfinite(gamma) or not 0 < gamma <= 3:
            raise ConfigError(f"haadf gamma must be in (0, 3], got {self.gamma!r}")
        peak = _range("peak", self.peak, 1e-9)
        if peak[1] > MAX_COUNT / 4:
            raise ConfigError(f"haadf peak must stay below {MAX_COUNT // 4} counts, the uint16 "
                              f"images' headroom, got {self.peak!r}")
        return HaadfOptions(gamma, peak, _range("support", self.support, 0.0),
                            _range("blur", self.blur, 0.0),
                            _range("read_noise", self.read_noise, 0.0))

    @classmethod
    def from_dict(cls, d: dict) -> "HaadfOptions":
        try:
            return cls(**{k: tuple(v) if isinstance(v, list) else v
                          for k, v in d.items()}).validate()
        except TypeError as err:
            raise ConfigError(f"haadf options: {err}") from None

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def rng(seed: int, index: int) -> np.random.Generator:
    """The generator of sample ``index``'s HAADF draws (its own stream of the config's seed)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(STREAM, index)))


def draw_params(options: HaadfOptions, rng: np.random.Generator, n_elements: int = 2) -> dict:
    """One sample's HAADF parameters: element symbols and Z, gamma, peak, support, blur, read
    noise (the ``haadf_params`` JSON)."""
    picks = rng.choice(len(ELEMENTS), size=n_elements, replace=False)
    lo, hi = (math.log(v) for v in options.peak)  # the C library's: the same on every CPU
    return {"elements": [ELEMENTS[i][0] for i in picks],
            "z": [int(ELEMENTS[i][1]) for i in picks],
            "gamma": float(options.gamma),
            "peak": math.exp(rng.uniform(lo, hi)),
            "support": float(rng.uniform(*options.support)),
            "blur": float(rng.uniform(*options.blur)),
            "read_noise": float(rng.uniform(*options.read_noise))}


def expected_image(projection: np.ndarray, angles, params: dict) -> np.ndarray:
    """Expected HAADF counts of a tilt series, before the detector's noise.

    Parameters
    ----------
    projection : ndarray, shape (element, angle, row, col)
        Clean line integrals of each element (voxels).
    angles : array-like, shape (angle,)
        Tilt angles, degrees.
    params : dict
        One sample's :func:`draw_params`.

    Returns
    -------
    ndarray, shape (angle, row, col), float64
    """
    p = np.asarray(projection, np.float64)
    z = np.asarray(params["z"], np.float64)[: p.shape[0]]
    if z.size != p.shape[0]:
        raise ConfigError(f"haadf params name {z.size} elements for {p.shape[0]} projections")
    weight = np.array([math.pow(v, params["gamma"]) for v in z.tolist()])  # as `peak`
    m = np.tensordot(weight, p, axes=(0, 0))
    top = float(m.max(initial=0.0))
    top = top if top > 0 else 1.0
    film = params["support"] * top / np.cos(np.deg2rad(np.asarray(angles, np.float64)))
    lam = (m + film[:, None, None]) * (params["peak"] / top)
    if params["blur"] > 0:
        lam = blur.gaussian(lam, (0, params["blur"], params["blur"]), mode="reflect")
    return lam


def record(projection: np.ndarray, angles, params: dict, rng: np.random.Generator) -> np.ndarray:
    """The recorded HAADF images of a tilt series (uint16 counts; see the module's notes)."""
    lam = expected_image(projection, angles, params)
    counts = rng.poisson(lam).astype(np.float64)
    if params["read_noise"] > 0:
        counts += rng.normal(0.0, params["read_noise"], counts.shape)
    return np.clip(np.rint(counts), 0, MAX_COUNT).astype(HAADF_DTYPE)


def simulate(projection: np.ndarray, angles, options: HaadfOptions, seed: int,
             index: int) -> tuple[np.ndarray, str]:
    """Sample ``index``'s HAADF images and their parameters as JSON (what the file stores)."""
    r = rng(seed, index)
    params = draw_params(options, r, projection.shape[0])
    return record(projection, angles, params, r), json.dumps(params, sort_keys=True)
