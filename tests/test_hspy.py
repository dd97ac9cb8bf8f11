"""HyperSpy-native files: series and volumes written as .hspy signals and read back."""

import numpy as np
import pytest

from nanoedx_models.cli import main
from nanoedx_models.data.tiltio import Series, read_series, write_array, write_series

hs = pytest.importorskip("hyperspy.api")  # the test extra installs it: this runs in CI

ANGLES = np.array([-60.0, -30.0, 0.0, 30.0, 60.0])


def _series(n_elements=2, angles=ANGLES):
    data = np.random.default_rng(0).poisson(3.0, (n_elements, len(angles), 24, 24))
    return Series(data.astype(np.uint16), ["Au", "Ag"][:n_elements], angles,
                  {"pixel_size": {"scale": 0.35, "units": "nm"}, "operator": "x"})


def test_a_series_round_trips_with_its_axes(tmp_path):
    s = _series()
    path = write_series(tmp_path / "s.hspy", s)
    back = read_series(path)
    assert back.elements == ["Au", "Ag"] and back.data.dtype == np.uint16
    np.testing.assert_array_equal(back.data, s.data)
    np.testing.assert_allclose(back.angles, ANGLES)
    assert back.metadata == s.metadata
    sig = hs.load(path)  # what a HyperSpy user sees
    assert sig.axes_manager.navigation_shape == (5, 2)
    tilt = sig.axes_manager["tilt"]
    assert tilt.units == "deg" and np.allclose(tilt.axis, ANGLES)
    assert sig.axes_manager["x"].scale == pytest.approx(0.35)
    assert sig.axes_manager["x"].units == "nm"
    assert list(sig.metadata.Sample.elements) == ["Au", "Ag"]
    one = read_series(path, ["Ag"])  # one element of the file, by name
    assert one.elements == ["Ag"]
    np.testing.assert_array_equal(one.data[0], s.data[1])


def test_uneven_tilt_steps_and_one_element(tmp_path):
    uneven = np.array([-70.0, -45.0, 0.0, 20.0, 65.0])
    path = write_series(tmp_path / "u.hspy", _series(1, uneven))
    back = read_series(path)
    assert back.elements == ["Au"] and back.data.shape == (1, 5, 24, 24)
    np.testing.assert_allclose(back.angles, uneven)


def test_denoise_and_reconstruct_write_hspy(tmp_path):
    src = write_series(tmp_path / "s.h5", _series())
    den = tmp_path / "d.hspy"
    assert main(["denoise", str(src), "--method", "gaussian-val", "-o", str(den)]) == 0
    assert read_series(den).data.shape == (2, 5, 24, 24)
    vol = tmp_path / "v.hspy"
    assert main(["reconstruct", str(den), "--iterations", "2", "-o", str(vol)]) == 0
    sig = hs.load(vol)
    assert sig.data.shape == (2, 24, 24, 24) and sig.axes_manager["z"].navigate
    for name in ("z", "y", "x"):  # voxels of the input's pixel size
        assert sig.axes_manager[name].scale == pytest.approx(0.35)
        assert sig.axes_manager[name].units == "nm"


def test_a_volume_is_a_signal_navigated_along_z(tmp_path):
    vol = np.random.default_rng(1).random((8, 8, 8)).astype(np.float32)
    write_array(tmp_path / "v.hspy", vol, {"dims": "z,y,x", "elements": ["Au"]})
    sig = hs.load(tmp_path / "v.hspy")
    np.testing.assert_array_equal(sig.data, vol)
    assert sig.axes_manager.navigation_axes[0].name == "z"


def test_writing_hspy_without_hyperspy_names_the_install(tmp_path, capsys, hide_modules):
    src = write_series(tmp_path / "s.h5", _series())
    hide_modules("hyperspy")
    out = tmp_path / "d.hspy"
    assert main(["denoise", str(src), "--method", "noisy", "-o", str(out)]) == 2
    assert 'pip install "nanoedx[hyperspy]"' in capsys.readouterr().err and not out.exists()
