"""Spectrum images to elemental maps, on spectrum images made here from simulated maps."""

import numpy as np
import pytest

from nanoedx_dataset import ConfigError, draw_spec, project, voxelize
from nanoedx_models.cli import main
from nanoedx_models.data.spectra import spectrum_maps
from nanoedx_models.data.tiltio import read_series

hs = pytest.importorskip("hyperspy.api")  # the test extra installs it: this runs in CI
exspy = pytest.importorskip("exspy")

N, CHANNELS, STEP = 32, 2048, 0.01  # pixels, energy channels, keV per channel
LINES = {"Au_La": 9.713, "Ag_La": 2.984}
ANGLES = (-40.0, 0.0, 40.0)
WIDTH = 0.02  # keV, the lines' sigma: far inside exspy's window (2 x FWHM at 130 eV)


@pytest.fixture(scope="module")
def truth():
    """Expected counts per pixel of each line (line, angle, row, col): core Au, shell Ag."""
    vol = voxelize(draw_spec(11, 0, family="sphere", kind="core_shell"), N)
    proj = project(vol, ANGLES)
    return 4.0 * proj / proj.max()


def _spectrum_image(counts_by_line, continuum, rng, tilt=None, haadf=True):
    """An EDS_TEM spectrum image (row, col, energy): each line's counts spread over its
    Gaussian profile, plus a flat continuum of ``continuum`` counts per channel."""
    energy = np.arange(CHANNELS) * STEP
    spectra = rng.poisson(continuum, (N, N, CHANNELS)).astype(np.int64)
    for (line, e0), n in zip(LINES.items(), counts_by_line):
        profile = np.exp(-0.5 * ((energy - e0) / WIDTH) ** 2)
        profile /= profile.sum()
        for (r, c), k in np.ndenumerate(n):
            if k:
                spectra[r, c] += rng.multinomial(k, profile)
    s = exspy.signals.EDSTEMSpectrum(spectra.astype(np.uint16))
    e = s.axes_manager.signal_axes[0]
    e.scale, e.offset, e.units, e.name = STEP, 0.0, "keV", "Energy"
    for ax in s.axes_manager.navigation_axes:
        ax.scale, ax.units = 0.5, "nm"
    s.metadata.set_item("Acquisition_instrument.TEM.beam_energy", 200.0)
    s.metadata.set_item("Acquisition_instrument.TEM.Detector.EDS.energy_resolution_MnKa", 130.0)
    s.metadata.set_item("Sample.xray_lines", list(LINES))
    if tilt is not None:
        s.metadata.set_item("Acquisition_instrument.TEM.Stage.tilt_alpha", tilt)
    return s


def _files(tmp_path, truth, continuum=0.0, seed=0, tilts=True):
    rng = np.random.default_rng(seed)
    drawn, paths = [], []
    for k, angle in enumerate(ANGLES):
        n = rng.poisson(truth[:, k])
        drawn.append(n)
        s = _spectrum_image(n, continuum, rng, angle if tilts else None)
        path = tmp_path / f"tilt{k}.hspy"
        s.save(path, overwrite=True)
        paths.append(path)
    return paths, np.stack(drawn, axis=1)  # (line, angle, row, col)


def test_line_counts_are_recovered_exactly_as_counts(tmp_path, truth):
    paths, drawn = _files(tmp_path, truth)
    made = spectrum_maps(paths, progress=False)
    s = made.series
    assert s.elements == ["Au", "Ag"] and s.metadata["lines"] == list(LINES)
    assert s.data.dtype == np.int64
    np.testing.assert_array_equal(s.data, drawn)  # every event of a line is in its window
    np.testing.assert_allclose(s.angles, ANGLES)  # from Stage.tilt_alpha
    assert s.metadata["pixel_size"] == {"scale": 0.5, "units": "nm"}


def test_the_continuum_is_reported_as_background_not_subtracted(tmp_path, truth):
    paths, drawn = _files(tmp_path, truth, continuum=0.02, seed=1)
    plain = spectrum_maps(paths, progress=False).series
    made = spectrum_maps(paths, background=True, progress=False).series
    np.testing.assert_array_equal(made.data, plain.data)  # still raw counts
    assert np.all(made.data >= drawn)  # the continuum under each line is in the map
    b = np.asarray(made.metadata["background_counts"])
    assert b.shape == (2, len(ANGLES))
    net = made.data.sum(axis=(2, 3)) - b  # what the lines gave, within Poisson noise
    line = drawn.sum(axis=(2, 3))
    assert np.all(np.abs(net - line) < 4 * np.sqrt(made.data.sum(axis=(2, 3))) + 5)


def test_one_file_of_the_whole_series_and_its_haadf(tmp_path, truth):
    rng = np.random.default_rng(2)
    stack = [_spectrum_image(rng.poisson(truth[:, k]), 0.0, rng) for k in range(len(ANGLES))]
    s = hs.stack(stack, axis=None)  # a third navigation axis: the tilt
    tilt = s.axes_manager.navigation_axes[-1]
    tilt.name, tilt.units, tilt.offset, tilt.scale = "tilt", "deg", -40.0, 40.0
    s.save(tmp_path / "series.hspy", overwrite=True)
    made = spectrum_maps(tmp_path / "series.hspy", progress=False)
    assert made.series.data.shape == (2, 3, N, N)
    np.testing.assert_allclose(made.series.angles, ANGLES)


def test_cli_maps_then_align_and_denoise(tmp_path, truth, capsys):
    paths, drawn = _files(tmp_path, truth * 6, seed=3)
    out = tmp_path / "maps.h5"
    assert main(["maps", *map(str, paths), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "Au (Au_La)" in err
    back = read_series(out)
    assert back.elements == ["Au", "Ag"]
    np.testing.assert_array_equal(back.data, drawn)
    assert main(["denoise", str(out), "--method", "gaussian-val", "-o",
                 str(tmp_path / "d.h5")]) == 0
    assert main(["maps", *map(str, paths), "-o", str(out)]) == 2  # no silent overwrite
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.parametrize("extra,match", [
    (["--lines", "Au_Ka"], "no Au_Ka"),  # 68.8 keV: beyond the spectra
    (["--lines", "Xx_La"], "unknown X-ray line"),
])
def test_cli_maps_bad_lines(tmp_path, truth, capsys, extra, match):
    paths, _ = _files(tmp_path, truth)
    out = tmp_path / "maps.h5"
    assert main(["maps", *map(str, paths), *extra, "-o", str(out)]) == 2
    assert match in capsys.readouterr().err and not out.exists()


def test_maps_bad_series(tmp_path, truth, hide_modules, capsys):
    paths, _ = _files(tmp_path, truth, tilts=False)
    with pytest.raises(ConfigError, match="every tilt the angle"):
        spectrum_maps(paths, progress=False)
    made = spectrum_maps(paths, angles="-40:40:40", progress=False)
    np.testing.assert_allclose(made.series.angles, ANGLES)
    small = _spectrum_image(np.zeros((2, N, N), int), 0.0, np.random.default_rng(0), 0.0)
    small = small.inav[:16, :16]
    small.save(tmp_path / "small.hspy", overwrite=True)
    with pytest.raises(ConfigError, match="same pixels"):
        spectrum_maps([paths[0], tmp_path / "small.hspy"], progress=False)
    hide_modules("exspy")
    out = tmp_path / "m.h5"
    assert main(["maps", *map(str, paths), "--angles=-40:40:40", "-o", str(out)]) == 2
    assert 'pip install "nanoedx[hyperspy]"' in capsys.readouterr().err and not out.exists()
