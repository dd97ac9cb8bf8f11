"""Spectrum images to elemental count maps: a tilt series of EDX spectrum images in, maps out.

Each file (Velox ``.emd``, Bruker ``.bcf``, HyperSpy ``.hspy``) is read by HyperSpy through
RosettaSciIO; its EDS spectrum image becomes an exspy EDS signal, and each X-ray line is
integrated over a window of twice the line's FWHM at the detector's resolution
(``EDSSpectrum.get_lines_intensity``): whole counts, the continuum under the line included,
never rescaled, since every denoiser here needs counts. With ``background=True`` exspy's
background windows beside each line (``estimate_background_windows``) estimate that continuum;
it is *not* subtracted from the maps (that would leave non-counts) but reported as the
background counts of each whole map, which is what ``nanoedx denoise --background`` takes. An
estimate near or above a map's own counts means other peaks fall in the windows: the command
line warns of it.

One file per tilt, or one file whose spectrum image has a third navigation axis (the tilt,
first in the array). The tilt angle comes from the metadata
(``Acquisition_instrument.TEM.Stage.tilt_alpha``, or a navigation axis in degrees) when it is
there, else from ``angles``. The HAADF (or ADF, or the one other image) recorded with each
spectrum image is kept, on the maps' pixels, for :func:`~nanoedx_models.reconstruction.align.
align_series`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from nanoedx_dataset.errors import ConfigError

from .tiltio import HYPERSPY, Series, hyperspy_import, read_angles

TILT = "Acquisition_instrument.TEM.Stage.tilt_alpha"
IMAGE_TITLES = ("HAADF", "ADF", "DF")  # preferred, in this order, as the image of each tilt


@dataclass
class SpectrumMaps:
    """What :func:`spectrum_maps` made: the maps and the images recorded with them."""

    series: Series
    haadf: np.ndarray | None  # (angle, row, col) or None
    haadf_title: str | None


def _apis():
    """HyperSpy, with exspy's EDS signal types registered."""
    hyperspy_import("exspy", "reading spectrum images")
    return hyperspy_import("hyperspy.api", "reading spectrum images")


def _is_spectrum(s) -> bool:
    return (s.axes_manager.signal_dimension == 1
            and str(s.axes_manager.signal_axes[0].units).lower() in ("kev", "ev"))


def _pick_image(images, shape):
    """The HAADF-like image of a tilt (on the maps' pixels), and its title."""
    if not images:
        return None, None
    titled = {str(i.metadata.General.title): i for i in images}
    for key in IMAGE_TITLES:
        hit = [t for t in titled if key.lower() in t.lower()]
        if hit:
            return _on_pixels(titled[hit[0]].data, shape), hit[0]
    if len(images) == 1:
        return _on_pixels(images[0].data, shape), str(images[0].metadata.General.title)
    return None, None


def _on_pixels(image, shape) -> np.ndarray:
    img = np.asarray(image, np.float64)
    if img.shape[-2:] == tuple(shape):
        return img
    from skimage.transform import resize

    return resize(img, img.shape[:-2] + tuple(shape), order=1, anti_aliasing=True)


def _load(path: Path):
    """The EDS spectrum image of a file and its images."""
    hs = _apis()
    if path.suffix.lower() not in HYPERSPY:
        raise ConfigError(f"{path.name}: spectrum images are read from {', '.join(HYPERSPY)} "
                          "files")
    if not path.is_file():
        raise ConfigError(f"no input file {path}")
    try:
        loaded = hs.load(path)
    except Exception as err:  # noqa: BLE001 -- any reader failure is the file's
        raise ConfigError(f"cannot read {path.name} ({type(err).__name__}: "
                          f"{str(err).splitlines()[0][:200] if str(err) else ''}): the file "
                          "is damaged or not a spectrum image; export it again") from err
    signals = loaded if isinstance(loaded, list) else [loaded]
    spectra = [s for s in signals if _is_spectrum(s)]
    if len(spectra) != 1:
        titles = ", ".join(str(s.metadata.General.title) for s in signals) or "none"
        raise ConfigError(f"{path.name} holds {len(spectra)} EDS spectrum images (signals: "
                          f"{titles}); give files of one spectrum image each")
    eds = spectra[0]
    if not eds.metadata.Signal.signal_type.startswith("EDS"):
        eds.set_signal_type("EDS_TEM")
    images = [s for s in signals if s.axes_manager.signal_dimension == 2]
    return eds, images


def _line_energy(line: str) -> float:
    from exspy.material import elements

    element, _, name = line.partition("_")
    try:
        return float(elements[element]["Atomic_properties"]["Xray_lines"][name]["energy (keV)"])
    except (KeyError, AttributeError, TypeError):
        raise ConfigError(f"unknown X-ray line {line!r}: give lines as Element_Line, e.g. "
                          "Au_La,Ag_La,Cu_Ka") from None


def _check_lines(eds, lines, name: str) -> None:
    axis = eds.axes_manager.signal_axes[0]
    scale = 1e-3 if str(axis.units).lower() == "ev" else 1.0
    lo, hi = float(axis.axis[0]) * scale, float(axis.axis[-1]) * scale
    for line in lines:
        e = _line_energy(line)
        if not lo < e < hi:
            raise ConfigError(f"{name}: no {line} ({e:g} keV) in its spectra, which span "
                              f"{lo:g}-{hi:g} keV; choose lines in that range")


def _tilt(eds) -> float | None:
    value = eds.metadata.get_item(TILT)
    return None if value is None else float(value)


def _names(lines: list[str]) -> list[str]:
    """Element symbols as names, the line names where an element has several lines."""
    symbols = [line.partition("_")[0] for line in lines]
    return [s if symbols.count(s) == 1 else line for s, line in zip(symbols, lines)]


def spectrum_maps(paths, lines=None, background: bool = False, angles=None,
                  progress: bool = True) -> SpectrumMaps:
    """Elemental count maps of a tilt series of EDX spectrum images (module docstring).

    Parameters
    ----------
    paths : path or sequence of paths
        One spectrum image per tilt, or one file with the tilt as a third navigation axis.
    lines : sequence of str, optional
        X-ray lines (``"Au_La"``); default: the first file's ``metadata.Sample.xray_lines``.
    background : bool
        Estimate each map's continuum with exspy's background windows (reported as
        ``metadata["background_counts"]``, counts per whole map; the maps stay raw counts).
    angles : str, path or sequence of float, optional
        Tilt angles in degrees; default: from the files' metadata.

    Returns
    -------
    SpectrumMaps
        ``series`` (element, angle, row, col) int64 counts with angles, element names and
        metadata (``lines``, ``sources``, ``pixel_size``, ``background_counts`` if asked), and
        the HAADF images (angle, row, col) if every file had one.
    """
    paths = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    if not paths:
        raise ConfigError("no spectrum image given")
    maps, bgs, tilts, haadf, title, shape, pixel = [], [], [], [], None, None, None
    for path in tqdm(paths, desc="line intensities", disable=not progress or len(paths) < 2):
        eds, images = _load(path)
        if lines is None:
            given = eds.metadata.get_item("Sample.xray_lines")
            if not given:
                raise ConfigError(f"{path.name} names no X-ray lines: give them with --lines "
                                  "Au_La,Ag_La")
            lines = [str(v) for v in given]
        lines = list(lines)
        _check_lines(eds, lines, path.name)
        nav = eds.axes_manager.navigation_dimension
        if nav not in (2, 3) or (nav == 3 and len(paths) > 1):
            raise ConfigError(f"{path.name}: a spectrum image has 2 navigation axes (y, x), or 3 "
                              f"in a single file of the whole series (tilt, y, x); got {nav}")
        raw = eds.get_lines_intensity(xray_lines=lines)
        counts = np.stack([np.rint(r.data).astype(np.int64) for r in raw])  # (line, [t,] y, x)
        if nav == 2:
            counts = counts[:, None]
        here = counts.shape[-2:]
        if shape is not None and here != shape:
            raise ConfigError(f"{path.name} has {here[0]} x {here[1]} pixels, the first file "
                              f"{shape[0]} x {shape[1]}: every tilt must have the same pixels")
        shape = here
        maps.append(counts)
        if background:
            windows = eds.estimate_background_windows(xray_lines=lines)
            net = eds.get_lines_intensity(xray_lines=lines, background_windows=windows)
            bg = counts.sum(axis=(-2, -1)) - np.stack(
                [np.asarray(n.data, np.float64).reshape(counts.shape[1:]).sum(axis=(-2, -1))
                 for n in net])
            bgs.append(np.maximum(bg, 0.0))  # above the map's counts: peaks in the windows
        if nav == 3:
            t = eds.axes_manager.navigation_axes[-1]  # the slowest: first in the array
            tilts += (list(t.axis) if str(t.units).lower() in ("deg", "degree", "degrees", "°")
                      else [None] * counts.shape[1])
        else:
            tilts.append(_tilt(eds))
        img, img_title = _pick_image(images, shape)
        haadf.append(img)
        title = title or img_title
        sig = eds.axes_manager.navigation_axes[0]
        if pixel is None and str(sig.units) not in ("", "<undefined>"):
            pixel = {"scale": float(sig.scale), "units": str(sig.units)}
    data = np.concatenate(maps, axis=1)
    if angles is not None:
        a = read_angles(angles)
    elif len(tilts) > 1 and all(t is not None for t in tilts) and len(set(tilts)) == 1:
        raise ConfigError(f"the metadata give every tilt the angle {tilts[0]:g} (HyperSpy's "
                          "default when none was recorded): give the angles with --angles "
                          "START:STOP:STEP or a file of angles")
    elif all(t is not None for t in tilts):
        a = np.asarray(tilts, np.float64)
    elif data.shape[1] == 1:
        a = None
    else:
        missing = [p.name for p, t in zip(paths, tilts) if t is None] or [paths[0].name]
        raise ConfigError(f"no tilt angle in the metadata of {', '.join(missing[:3])}: give "
                          "the angles with --angles START:STOP:STEP or a file of angles")
    meta = {"lines": lines, "sources": [p.name for p in paths]}
    if pixel:
        meta["pixel_size"] = pixel
    if background:
        meta["background_counts"] = np.concatenate(bgs, axis=1).tolist()
    have = all(h is not None for h in haadf)
    if have and len(paths) == 1 and np.ndim(haadf[0]) == 3:
        stack = np.asarray(haadf[0])
    else:
        stack = np.stack(haadf) if have else None
    series = Series(data, _names(lines), a, meta, "hdf5")
    if stack is not None and stack.shape != data.shape[1:]:
        stack = None
    return SpectrumMaps(series, stack, title if stack is not None else None)


__all__ = ["SpectrumMaps", "spectrum_maps"]
