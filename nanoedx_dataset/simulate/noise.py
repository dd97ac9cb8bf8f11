"""The EDX map noise model (DESIGN.md, the paper's Methods).

For a clean projection ``p`` of one element the expected signal is ``s = C * p / sum(p)``: C
counts per map on average, whatever the particle's size. A spatially uniform background adds B
counts per map on average, and the detector counts are Poisson:
``noisy ~ Poisson(s + B / n_pixels)``. The ground truth of a map is ``s`` alone, so a denoiser
must remove the background too. A map whose element is absent (``sum(p) == 0``) holds background
counts only.

Two options make maps look like real fields (:class:`NoiseModel`; both off by default, and then
the counts are exactly those of :func:`add_noise`):

* **Mass-thickness background.** A fraction ``f`` (``mass_background``) of the B background
  counts follows the local mass thickness ``m`` (the sum of the projections of all elements at
  the map's angle: bremsstrahlung under the line grows with the matter the beam crosses); the
  rest stays uniform: ``b = B * ((1 - f) / n_pixels + f * m / sum(m))``. Its mean is still
  ``B / n_pixels``; a map whose mass thickness is empty gets a uniform background.
* **Probe blur.** The probe spreads what it excites over neighbouring pixels: the expected
  counts are blurred by a Gaussian of ``probe_blur`` pixels (sigma) before the Poisson draw,
  ``noisy ~ Poisson(G * (s + b))``, with reflecting borders so that each map keeps its total.
  The ground truth of such a map is the blurred signal ``G * s`` (:meth:`NoiseModel.signal`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from ..store.schema import COUNT_DTYPE, noise_tag
from . import blur

__all__ = ["COUNT_DTYPE", "NoiseModel", "add_noise", "blur_maps", "check_dose",
           "downsample_counts", "expected_signal", "mass_background", "noise_tag"]
# most counts a pixel may expect: a Poisson draw then stays below uint16's 65535
MAX_COUNTS_PER_PIXEL = MAX_EXPECTED = 60000


def check_dose(counts: float, background: float) -> tuple[float, float]:
    """Validate a noise level: ``counts > 0`` and ``background >= 0`` (finite numbers)."""
    counts, background = float(counts), float(background)
    if not np.isfinite(counts) or counts <= 0:
        raise ConfigError(f"counts must be a positive number of counts per map, got {counts}")
    if not np.isfinite(background) or background < 0:
        raise ConfigError(f"background must be >= 0 counts per map, got {background}")
    return counts, background


def expected_signal(projection: np.ndarray, counts: float) -> np.ndarray:
    """Ground truth of the maps: ``counts * p / sum(p)`` per map over its last two axes.

    Parameters
    ----------
    projection : ndarray, shape (..., row, col)
        Clean line integrals (voxel units), non-negative.
    counts : float
        Signal counts per map on average.

    Returns
    -------
    ndarray, same shape, float32
        Expected signal counts; zero for an empty map.
    """
    p = np.asarray(projection, dtype=np.float64)
    total = p.sum(axis=(-2, -1), keepdims=True)
    scale = np.divide(counts, total, out=np.zeros_like(total), where=total > 0)
    return (p * scale).astype(np.float32)


def add_noise(projection: np.ndarray, counts: float, background: float,
              rng: np.random.Generator) -> np.ndarray:
    """Noisy EDX count maps of clean projections.

    Parameters
    ----------
    projection : ndarray, shape (..., row, col)
        Clean line integrals, non-negative.
    counts, background : float
        Signal counts and background counts per map on average.
    rng : numpy.random.Generator

    Returns
    -------
    ndarray, same shape, uint16
        Counts ``Poisson(counts * p / sum(p) + background / n_pixels)``.
    """
    counts, background = check_dose(counts, background)
    p = np.asarray(projection)
    if np.any(p < 0):
        raise ConfigError("projections must be non-negative to be turned into counts")
    npix = p.shape[-1] * p.shape[-2]
    lam = expected_signal(p, counts).astype(np.float64) + background / npix
    return _draw(lam, rng)


def _draw(lam: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if lam.max(initial=0.0) > MAX_COUNTS_PER_PIXEL:
        raise ConfigError(
            f"a pixel expects {lam.max():.0f} counts, too many for the uint16 count maps; "
            "use fewer counts per map"
        )
    return rng.poisson(lam).astype(COUNT_DTYPE)


def downsample_counts(maps, counts: float = 1000.0, seed=None) -> np.ndarray:
    """Low-dose version of measured count maps: ``Poisson(x * counts / sum(x))`` per map.

    The paper's way of simulating a short exposure from a long one (Methods), so that a
    denoiser can be tried on a user's own high-dose data. Thinning only lowers a dose: a map
    holding fewer than ``counts`` counts is refused, and so are maps whose thinned pixels
    would not fit the uint16 counts returned.

    Parameters
    ----------
    maps : array-like, shape (..., row, col)
        Measured counts (non-negative).
    counts : float
        Counts per map on average after thinning; at most each (non-empty) map's counts.
    seed : int, numpy.random.Generator or None
        Seed (or generator) of the Poisson draws; None draws fresh entropy.

    Returns
    -------
    ndarray, same shape, uint16

    Raises
    ------
    ConfigError
        Negative or non-finite maps, ``counts`` above a map's own counts, or a pixel that
        would expect more counts than uint16 holds.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    counts, _ = check_dose(counts, 0.0)
    x = np.asarray(maps, dtype=np.float64)
    if x.ndim < 2:
        raise ConfigError(f"count maps must have (row, col) as their last axes, got shape "
                          f"{x.shape}")
    if np.any(x < 0) or not np.all(np.isfinite(x)):
        raise ConfigError("count maps must be finite and non-negative")
    totals = x.sum(axis=(-2, -1)).ravel()
    held = totals[totals > 0]
    if held.size and counts > held.min():
        raise ConfigError(f"a map holds only {held.min():.6g} counts, fewer than the "
                          f"{counts:g} asked for: thinning can only lower the dose; choose "
                          f"counts <= {held.min():.6g}")
    lam = expected_signal(x, counts)
    if lam.max(initial=0.0) > MAX_EXPECTED:
        raise ConfigError(f"a thinned pixel would expect {lam.max():.0f} counts, more than the "
                          f"uint16 count maps hold (about {MAX_EXPECTED}); choose fewer counts")
    return rng.poisson(lam).astype(COUNT_DTYPE)


def mass_background(mass: np.ndarray, background: float, fraction: float) -> np.ndarray:
    """Expected background counts per pixel, partly uniform and partly following mass thickness.

    Parameters
    ----------
    mass : ndarray, shape (..., row, col)
        Mass thickness of each map: the sum over elements of the clean projections at its
        angle (voxel units), non-negative.
    background : float
        Background counts per map on average (B).
    fraction : float
        Share ``f`` in [0, 1] of the background that follows the mass thickness.

    Returns
    -------
    ndarray, same shape, float64
        ``B * ((1 - f) / n_pixels + f * m / sum(m))`` per map; ``B / n_pixels`` everywhere in
        a map whose mass thickness sums to zero. Each map totals B.
    """
    m = np.asarray(mass, dtype=np.float64)
    npix = m.shape[-1] * m.shape[-2]
    total = m.sum(axis=(-2, -1), keepdims=True)
    share = np.divide(m, total, out=np.full_like(m, 1.0 / npix), where=total > 0)
    return background * ((1.0 - fraction) / npix + fraction * share)


def blur_maps(maps: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur (``sigma`` pixels) of each map over its last two axes.

    Borders reflect (``mode="reflect"``, the half-sample mirror), so each map keeps its total
    (to rounding) and a uniform map stays uniform.

    Parameters
    ----------
    maps : ndarray, shape (..., row, col)
    sigma : float
        Standard deviation in pixels; 0 returns the maps unchanged (as float64).

    Returns
    -------
    ndarray, same shape, float64
    """
    m = np.asarray(maps, dtype=np.float64)
    if sigma <= 0:
        return m
    lead = (0.0,) * (m.ndim - 2)
    return blur.gaussian(m, (*lead, sigma, sigma), mode="reflect", truncate=4.0)


@dataclass(frozen=True)
class NoiseModel:
    """The noise of a database's maps: :func:`add_noise` with the options of real fields.

    Attributes
    ----------
    mass_background : float
        Share in [0, 1] of the background that follows the local mass thickness
        (:func:`mass_background`); 0 (the default): uniform, as :func:`add_noise`.
    probe_blur : float
        Gaussian sigma (pixels) of the probe blur of the expected counts (:func:`blur_maps`);
        0 (the default): none.

    With both 0, :meth:`sample` returns exactly :func:`add_noise`'s counts and :meth:`signal`
    exactly :func:`expected_signal`.
    """

    mass_background: float = 0.0
    probe_blur: float = 0.0

    def __post_init__(self) -> None:
        f, s = float(self.mass_background), float(self.probe_blur)
        if not np.isfinite(f) or not 0.0 <= f <= 1.0:
            raise ConfigError(f"mass_background must be a share of the background in [0, 1], "
                              f"got {self.mass_background}")
        if not np.isfinite(s) or s < 0:
            raise ConfigError(f"probe_blur must be a Gaussian sigma >= 0 pixels, "
                              f"got {self.probe_blur}")
        object.__setattr__(self, "mass_background", f)
        object.__setattr__(self, "probe_blur", s)

    @classmethod
    def from_config(cls, config) -> "NoiseModel":
        """The model of a generation config: a dict, its JSON (the file's ``config``
        attribute) or a :class:`~nanoedx_dataset.generation.config.GenerationConfig`; keys
        it lacks take their defaults."""
        if isinstance(config, (str, bytes)):
            config = json.loads(config)
        get = config.get if isinstance(config, dict) else lambda k, d: getattr(config, k, d)
        return cls(get("mass_background", 0.0), get("probe_blur", 0.0))

    @property
    def uniform(self) -> bool:
        """True when this is :func:`add_noise`'s model (no mass background, no blur)."""
        return self.mass_background == 0.0 and self.probe_blur == 0.0

    def signal(self, projection: np.ndarray, counts: float) -> np.ndarray:
        """Ground truth of the maps: :func:`expected_signal`, blurred by the probe.

        Returns
        -------
        ndarray, same shape as ``projection``, float32
            ``G * (counts * p / sum(p))``; exactly :func:`expected_signal` without blur.
        """
        s = expected_signal(projection, counts)
        return s if self.probe_blur == 0 else blur_maps(s, self.probe_blur).astype(np.float32)

    def expected(self, projection: np.ndarray, counts: float, background: float,
                 mass: np.ndarray | None = None) -> np.ndarray:
        """Expected counts per pixel ``G * (s + b)`` (float64, the shape of ``projection``).

        ``mass``: the mass thickness of each map (see :func:`mass_background`), broadcastable
        to ``projection``; needed when ``mass_background > 0``.
        """
        counts, background = check_dose(counts, background)
        p = np.asarray(projection)
        if np.any(p < 0):
            raise ConfigError("projections must be non-negative to be turned into counts")
        npix = p.shape[-1] * p.shape[-2]
        if self.mass_background > 0:
            if mass is None:
                raise ConfigError("a mass-thickness background needs the maps' mass thickness "
                                  "(mass=, the sum of the projections of all elements)")
            m = np.broadcast_to(np.asarray(mass), p.shape)
            b = mass_background(m, background, self.mass_background)
        else:
            b = background / npix
        lam = expected_signal(p, counts).astype(np.float64) + b
        return blur_maps(lam, self.probe_blur)

    def sample(self, projection: np.ndarray, counts: float, background: float,
               rng: np.random.Generator, mass: np.ndarray | None = None) -> np.ndarray:
        """Noisy count maps (uint16, the shape of ``projection``): ``Poisson(G * (s + b))``.

        Without mass background and blur, exactly ``add_noise(projection, counts,
        background, rng)``.
        """
        if self.uniform:
            return add_noise(projection, counts, background, rng)
        return _draw(self.expected(projection, counts, background, mass), rng)

    def sample_elements(self, projection: np.ndarray, counts: float, background: float,
                        rng: np.random.Generator) -> np.ndarray:
        """:meth:`sample` of all of one sample's maps, ``projection`` of shape (element,
        angle, row, col): the mass thickness of each map is the sum of the elements'
        projections at its angle."""
        p = np.asarray(projection)
        mass = p.sum(axis=0, keepdims=True) if self.mass_background > 0 else None
        return self.sample(p, counts, background, rng, mass=mass)
