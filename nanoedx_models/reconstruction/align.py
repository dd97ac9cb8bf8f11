"""Align a tilt series: the drift between tilts, the tilt axis's column and its in-plane rotation.

A measured series drifts: every tilt is the projection of DESIGN.md's geometry (tilt axis along
the rows, at column ``c = (n - 1) / 2``) moved by an unknown translation. :func:`align_series`
finds and undoes it in three steps, on images that show the object at every tilt: the HAADF
images recorded with the maps when there are any, else the sum of the elemental maps (both
smoothed a little, so that sparse counts correlate):

1. **Translation.** Starting from the tilt nearest 0 deg and walking outwards in angle, each tilt
   is registered to its neighbour by cross-correlation (``skimage.registration.
   phase_cross_correlation``, zero-padded, sub-pixel), and the steps are added up. A step larger
   than ``max_shift`` or a neighbour that correlates less than ``min_correlation`` after its
   shift is an error (:class:`AlignmentError`), never a silent shift by a spurious peak.
2. **Tilt-axis column.** Step 1 leaves the series consistent with a tilt axis at some column
   ``a``, not necessarily the centre. ``a`` is found where EM reconstructions from all but every
   third tilt best predict the tilts left out (:func:`find_axis`; or, for one object wholly in
   the field, from its centre of mass, which moves as ``u(theta) = a + X cos(theta) -
   Z sin(theta)``). The whole series is then moved by ``c - a`` along the columns, which puts the
   axis at the centre column that the reconstruction assumes. Optionally (``refine``), rounds of
   projection matching follow: each tilt registered to the projection of a reconstruction
   from the aligned series. Along the rows there is nothing to fix: the tilt that
   the others were registered to keeps its rows.
3. **In-plane rotation** (``rotation=True``). The sum of a projection over its columns, a
   profile along the tilt axis, does not change with the tilt; if the axis is rotated by ``phi``
   in the image, it does. The angle that makes the profiles of the translation-aligned images
   most alike across the tilts is found (bounded search, ``max_rotation``) and undone about the
   image centre, and steps 1-2 are run again on the rotated images.

The maps are moved by the shifts found: raw counts by whole pixels (zeros come in at the edge),
so that they stay whole counts for the denoisers, which need them; non-integer data (e.g.
denoised maps) or ``subpixel=True`` by linear interpolation. A rotation always interpolates.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage
from scipy.optimize import minimize_scalar

from nanoedx_dataset.errors import ConfigError

from ..data.tiltio import Series

SMOOTH = {"haadf": 1.0, "maps": 2.0}  # Gaussian sigma (pixels) of the images that are registered
UPSAMPLE = 20  # sub-pixel precision of the registration: 1/20 pixel
MIN_CORRELATION = 0.3
MAX_ROTATION = 10.0  # degrees
AXIS_WIDTH, AXIS_FOLDS = 128, 3  # the tilt axis by reprojection (find_axis): binning, folds
AXIS_ITERATIONS = 10  # EM iterations of each of its reconstructions


class AlignmentError(ConfigError):
    """A series that does not align: a tilt that matches no neighbour, or a shift too large."""


@dataclass
class Alignment:
    """What :func:`align_series` found and applied.

    Attributes
    ----------
    shifts : ndarray, shape (angle, 2)
        The (row, col) shift applied to each map, in pixels, in the series' order (translation,
        then the move of the axis to the centre column).
    applied : ndarray, shape (angle, 2)
        The shifts as applied: ``shifts`` rounded to whole pixels for raw counts.
    axis_column : float
        Where the tilt axis was in the translation-aligned series (column index).
    rotation : float
        In-plane rotation of the tilt axis found and undone, degrees (0 if not asked).
    source : str
        ``"haadf"`` or ``"maps"``: the images that were registered.
    correlation : ndarray, shape (angle,)
        Correlation of each registered image with its neighbour after its shift (1 for the
        reference tilt).
    reference : int
        Index of the tilt the others were registered to (the one nearest 0 deg).
    misfit_before, misfit_after : float
        :func:`consistency` of the registered images as given and as aligned: the fraction of
        the held-out tilts' variance that reconstructions from the other tilts leave
        unexplained (lower is better; noise alone keeps it above 0).
    """

    shifts: np.ndarray
    applied: np.ndarray
    axis_column: float
    rotation: float
    source: str
    correlation: np.ndarray
    reference: int
    misfit_before: float
    misfit_after: float

    def to_dict(self) -> dict:
        """JSON-ready."""
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v)
                for k, v in asdict(self).items()}

    def table(self, angles) -> str:
        """One line per tilt: angle, shift and correlation."""
        lines = [f"tilt axis found at column {self.axis_column:.2f} (moved to the centre); "
                 f"in-plane rotation {self.rotation:+.2f} deg; registered on the {self.source}; "
                 f"held-out tilts' misfit {self.misfit_before:.3f} as given, "
                 f"{self.misfit_after:.3f} aligned",
                 "angle  row shift  col shift  correlation"]
        for a, (dy, dx), r in zip(angles, self.shifts, self.correlation):
            lines.append(f"{a:6.1f}  {dy:+9.2f}  {dx:+9.2f}  {r:11.3f}")
        return "\n".join(lines) + "\n"


def _prepare(images: np.ndarray, source: str) -> np.ndarray:
    """Float images for registration: smoothed, their floor (the HAADF's vacuum level, the
    maps' background) taken off, so that zero padding adds no edge."""
    x = np.asarray(images, np.float64)
    x = ndimage.gaussian_filter(x, (0, SMOOTH[source], SMOOTH[source]))
    return np.maximum(x - np.percentile(x, 5, axis=(1, 2), keepdims=True), 0.0)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else 0.0


def _register(ref: np.ndarray, mov: np.ndarray, pad: int) -> tuple[np.ndarray, float]:
    """The (row, col) shift that moves ``mov`` onto ``ref``, and their correlation after it.

    Plain cross-correlation (the phase normalization whitens the spectrum, which on sparse
    counts is mostly noise) of the images padded with ``pad`` zeros, so that it does not wrap.
    """
    from skimage.registration import phase_cross_correlation

    a, b = (np.pad(v, pad) for v in (ref, mov))
    shift = phase_cross_correlation(a, b, upsample_factor=UPSAMPLE, normalization=None)[0]
    moved = ndimage.shift(b, shift, order=1, mode="constant")
    inner = (slice(pad, pad + ref.shape[0]), slice(pad, pad + ref.shape[1]))
    return np.asarray(shift, np.float64), _correlation(ref, moved[inner])


def find_shifts(images, angles, max_shift: float | None = None,
                min_correlation: float = MIN_CORRELATION) -> tuple[np.ndarray, np.ndarray, int]:
    """Translations that register every image to the one nearest 0 deg (step 1 of the module).

    Parameters
    ----------
    images : array-like, shape (angle, row, col)
        Prepared images (smooth, non-negative), in any order of angle.
    angles : sequence of float
        Their tilt angles (degrees).
    max_shift : float, optional
        Largest step between neighbouring tilts, pixels (default: a quarter of the smaller side).
    min_correlation : float

    Returns
    -------
    shifts : ndarray, shape (angle, 2)
    correlation : ndarray, shape (angle,)
    reference : int
    """
    x = np.asarray(images, np.float64)
    a = np.asarray(angles, np.float64)
    limit = min(x.shape[1:]) / 4 if max_shift is None else float(max_shift)
    order = np.argsort(a)
    ref = int(np.argmin(np.abs(a)))
    pos = int(np.flatnonzero(order == ref)[0])
    shifts = np.zeros((len(a), 2))
    corr = np.ones(len(a))
    for path in (order[pos:], order[pos::-1]):  # outwards on each side of the reference
        for prev, k in zip(path[:-1], path[1:]):
            step, r = _register(x[prev], x[k], int(np.ceil(min(limit, max(x.shape[1:])))))
            if np.abs(step).max() > limit:
                raise AlignmentError(
                    f"tilt {k} ({a[k]:g} deg) is {np.abs(step).max():.1f} px from its neighbour "
                    f"at {a[prev]:g} deg, beyond max_shift {limit:g} px: check that the angles "
                    "belong to the maps in this order, or raise max_shift (--max-shift)")
            if r < min_correlation:
                raise AlignmentError(
                    f"tilt {k} ({a[k]:g} deg) does not match its neighbour at {a[prev]:g} deg "
                    f"(correlation {r:.2f} < {min_correlation:g} after the best shift): the "
                    "maps hold too few counts to register, or the angles are wrong; register "
                    "on the HAADF images (--haadf) or lower --min-correlation")
            shifts[k] = shifts[prev] + step
            corr[k] = r
    return shifts, corr, ref


def _misfit(images, angles, offset: float, folds: int) -> float:
    """Error of the held-out tilts predicted by EM from the others, the images moved by
    ``offset`` columns: the fraction of their variance left (each prediction scaled)."""
    from .em import reconstruct, reproject

    x = ndimage.shift(images, (0, 0, offset), order=1, mode="constant")
    order = np.argsort(angles)
    err = total = 0.0
    for j in range(folds):
        test = np.zeros(len(angles), bool)
        test[order[j::folds]] = True
        vol = reconstruct(x[~test], angles[~test], iterations=AXIS_ITERATIONS)
        for p, q in zip(x[test], reproject(vol, angles[test])):
            s = float((p * q).sum() / max(float((q * q).sum()), 1e-12))
            err += float(((p - s * q) ** 2).sum())
            total += float(((p - p.mean()) ** 2).sum())
    return err / max(total, 1e-12)


def _axis_by_reprojection(x: np.ndarray, angles: np.ndarray) -> float:
    b, f = _binned(x)
    folds = min(AXIS_FOLDS, len(angles) // 2)
    reach = b.shape[2] // 4
    grid = np.arange(-reach, reach + 1, 2.0)
    scores = [_misfit(b, angles, d, folds) for d in grid]
    best = float(grid[int(np.argmin(scores))])
    res = minimize_scalar(lambda d: _misfit(b, angles, d, folds), bounds=(best - 2, best + 2),
                          method="bounded", options={"xatol": 0.05})
    centre = (b.shape[2] - 1) / 2
    return float((centre - res.x) * f + (f - 1) / 2)


def _binned(x: np.ndarray) -> tuple[np.ndarray, int]:
    """Images binned by a whole factor to about ``AXIS_WIDTH`` columns, and the factor."""
    f = max(1, x.shape[2] // AXIS_WIDTH)
    rows, cols = x.shape[1] // f * f, x.shape[2] // f * f
    return x[:, :rows, :cols].reshape(len(x), rows // f, f, cols // f, f).sum(axis=(2, 4)), f


def consistency(images, angles) -> float:
    """How well the series fits one object: the fraction of the held-out tilts' variance that
    EM reconstructions from the other tilts leave unexplained (every third tilt held out in
    turn; 0 is perfect). Lower after alignment means the alignment helped."""
    b, _ = _binned(np.asarray(images, np.float64))
    a = np.asarray(angles, np.float64)
    return _misfit(b, a, 0.0, min(AXIS_FOLDS, len(a) // 2))


def refine_shifts(images, angles, shifts, rounds: int = 3,
                  max_step: float = 2.0) -> np.ndarray:
    """Projection matching: reconstruct (EM) from the shifted images, register each tilt to
    the reconstruction's projection, and take the correction; ``rounds`` times. Corrections of
    more than ``max_step`` pixels per round are capped (a drifting solution is not followed).
    The mean correction is taken out, so the series as a whole does not move."""
    from .em import reconstruct, reproject

    x = np.asarray(images, np.float64)
    a = np.asarray(angles, np.float64)
    out = np.array(shifts, np.float64)
    for _ in range(rounds):
        moved, f = _binned(shift_maps(x, out, whole=False))
        model = reproject(reconstruct(moved, a, iterations=AXIS_ITERATIONS), a)
        step = np.array([_register(m, p, int(np.ceil(max_step)) + 1)[0]
                         for m, p in zip(model, moved)]) * f
        step = np.clip(step - step.mean(axis=0), -max_step, max_step)
        out += step
        if np.abs(step).max() < 0.05:
            break
    return out


def find_axis(images, angles, method: str = "reprojection") -> float:
    """The tilt axis's column in translation-aligned images (step 2 of the module).

    ``method="reprojection"`` (the default): the column offset at which EM reconstructions from
    all but every third tilt best predict the tilts left out (the images binned to about
    ``AXIS_WIDTH`` columns; searched over a quarter of the width each way); it holds for fields
    that objects enter and leave. ``"com"``: the fit of the centre of mass, for one object wholly inside the
    field at every tilt.
    """
    x = np.asarray(images, np.float64)
    a = np.asarray(angles, np.float64)
    if method not in ("reprojection", "com"):
        raise ConfigError(f"axis method must be reprojection or com, got {method!r}")
    t = np.deg2rad(a)
    if np.ptp(np.cos(t)) < 0.05 or len(a) < 4:
        raise AlignmentError(f"{len(a)} tilts spanning {np.rad2deg(np.ptp(t)):.0f} deg: too "
                             "few to place the tilt axis; give a wider tilt range")
    if method == "reprojection":
        return _axis_by_reprojection(x, a)
    mass = x.sum(axis=(1, 2))
    if np.any(mass <= 0):
        raise AlignmentError("an image is empty: the tilt axis cannot be placed")
    u = (x.sum(axis=1) * np.arange(x.shape[2])).sum(axis=1) / mass
    design = np.stack([np.ones_like(t), np.cos(t), -np.sin(t)], axis=1)
    return float(np.linalg.lstsq(design, u, rcond=None)[0][0])


def _rotate(images: np.ndarray, degrees: float) -> np.ndarray:
    if degrees == 0.0:
        return images
    return ndimage.rotate(images, degrees, axes=(2, 1), reshape=False, order=1, mode="constant")


def find_rotation(images, max_rotation: float = MAX_ROTATION) -> float:
    """In-plane rotation (degrees) of the tilt axis (step 3 of the module): the rotation that,
    undone, makes the profiles along the axis of all tilts most alike."""
    x = np.asarray(images, np.float64)

    def spread(deg: float) -> float:
        prof = _rotate(x, -deg).sum(axis=2)
        prof = prof / np.maximum(prof.sum(axis=1, keepdims=True), 1e-12)
        return float(((prof - prof.mean(axis=0)) ** 2).sum())

    res = minimize_scalar(spread, bounds=(-max_rotation, max_rotation), method="bounded",
                          options={"xatol": 0.02})
    return float(res.x)


def shift_maps(data: np.ndarray, shifts: np.ndarray, whole: bool) -> np.ndarray:
    """Move each map (..., angle, row, col) by its (row, col) shift; zeros come in at the edge.

    ``whole``: by whole pixels (no interpolation: counts stay counts), else linearly.
    """
    out = np.zeros(data.shape, data.dtype if whole else np.float32)
    for k, s in enumerate(shifts):
        if whole:
            dy, dx = (int(v) for v in np.rint(s))
            rows, cols = data.shape[-2:]
            src = data[..., k, max(0, -dy) : rows - max(0, dy), max(0, -dx) : cols - max(0, dx)]
            out[..., k, max(0, dy) : max(0, dy) + src.shape[-2],
                max(0, dx) : max(0, dx) + src.shape[-1]] = src
        else:
            lead = data.ndim - 3
            out[..., k, :, :] = ndimage.shift(np.asarray(data[..., k, :, :], np.float64),
                                              (0,) * lead + tuple(s), order=1, mode="constant")
    return out


def apply_alignment(data, alignment: Alignment) -> np.ndarray:
    """The moves of an alignment applied to maps (..., angle, row, col): the rotation undone,
    then ``alignment.applied`` (whole pixels, no interpolation, when those are whole and there
    is no rotation: counts stay counts)."""
    x = np.asarray(data)
    if x.shape[-3] != len(alignment.applied):
        raise ConfigError(f"{x.shape[-3]} maps for an alignment of {len(alignment.applied)} "
                          "tilts")
    whole = alignment.rotation == 0.0 and np.array_equal(alignment.applied,
                                                         np.rint(alignment.applied))
    if alignment.rotation:
        flat = _rotate(np.asarray(x, np.float64).reshape((-1,) + x.shape[-2:]),
                       -alignment.rotation)
        x = flat.reshape(x.shape)
    return shift_maps(x, alignment.applied, whole=whole)


def align_series(series: Series, haadf=None, use: str = "auto", rotation: bool = False,
                 axis: str = "reprojection", refine: int = 0,
                 subpixel: bool | None = None, max_shift: float | None = None,
                 min_correlation: float = MIN_CORRELATION,
                 max_rotation: float = MAX_ROTATION) -> tuple[Series, Alignment]:
    """Align a tilt series: translations, the tilt axis at the centre column, optionally the
    axis's in-plane rotation; the same moves for every element (module docstring).

    Parameters
    ----------
    series : Series
        Maps (element, angle, row, col) with their tilt angles.
    haadf : array-like, shape (angle, row, col), optional
        The HAADF image recorded with each map (same pixels).
    use : {"auto", "haadf", "maps"}
        Register on the HAADF images (``auto``: when given) or on the summed maps.
    rotation : bool
        Also find and undo an in-plane rotation of the tilt axis (up to ``max_rotation`` deg).
    axis : {"reprojection", "com"}
        How the tilt axis's column is found (:func:`find_axis`).
    refine : int
        Rounds of projection matching after that (:func:`refine_shifts`; 0: none).
    subpixel : bool, optional
        Move the maps by sub-pixel shifts (interpolating); default: only when the maps are not
        whole numbers, so that raw counts stay counts.
    max_shift, min_correlation
        As :func:`find_shifts`.

    Returns
    -------
    aligned : Series
        The moved maps; the metadata record the alignment.
    alignment : Alignment
    """
    if series.angles is None:
        raise ConfigError("the tilt angles are unknown: give them with --angles START:STOP:STEP "
                          "or a file of angles (one per map); alignment walks the tilts in angle")
    if use not in ("auto", "haadf", "maps"):
        raise ConfigError(f"use must be auto, haadf or maps, got {use!r}")
    if use == "haadf" and haadf is None:
        raise ConfigError("registering on the HAADF images (--use haadf) needs them: give "
                          "--haadf FILE (one image per tilt), or --use maps")
    data = np.asarray(series.data)
    if haadf is not None and use != "maps":
        h = np.asarray(haadf, np.float64)
        if h.shape != data.shape[1:]:
            raise ConfigError(f"the HAADF images have shape {h.shape}, the maps "
                              f"{data.shape[1:]} (angle, row, col): give one HAADF image per "
                              "tilt, of the maps' pixels")
        source, raw = "haadf", h
    else:
        source, raw = "maps", data.sum(axis=0, dtype=np.float64)
    if not np.all(np.isfinite(raw)):
        raise ConfigError(f"the {source} hold NaN or infinite values")
    images = given = _prepare(raw, source)
    shifts, corr, ref = find_shifts(images, series.angles, max_shift, min_correlation)
    phi = 0.0
    if rotation:  # on the translation-aligned images; then register the rotated ones again
        phi = find_rotation(shift_maps(images, shifts, whole=False), max_rotation)
        images = _rotate(images, -phi)
        shifts, corr, ref = find_shifts(images, series.angles, max_shift, min_correlation)
    whole = (bool(np.all(data == np.rint(data))) if subpixel is None else not subpixel) \
        and phi == 0.0
    column = find_axis(shift_maps(images, shifts, whole=False), series.angles, axis)
    shifts[:, 1] += (data.shape[-1] - 1) / 2 - column
    if refine:
        shifts = refine_shifts(images, series.angles, shifts, refine)
    before = consistency(given, series.angles)  # as given: not rotated, not shifted
    after = consistency(shift_maps(images, shifts, whole=False), series.angles)
    applied = np.rint(shifts) if whole else shifts.copy()
    found = Alignment(shifts, applied, column, phi, source, corr, ref, before, after)
    out = apply_alignment(data, found)
    meta = dict(series.metadata, alignment=found.to_dict())
    return Series(out, series.elements, series.angles, meta, series.format), found


__all__ = ["Alignment", "AlignmentError", "align_series", "apply_alignment", "consistency",
           "find_axis", "find_rotation", "find_shifts", "refine_shifts", "shift_maps"]
