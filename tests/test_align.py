import json

import numpy as np
import pytest
from scipy import ndimage

from nanoedx_dataset import ConfigError, draw_spec, project, voxelize
from nanoedx_models.cli import main
from nanoedx_models.data.tiltio import Series, read_series, write_series
from nanoedx_models.reconstruction.align import (AlignmentError, _rotate, align_series,
                                                 apply_alignment)

N = 64
ANGLES = np.arange(-60.0, 61.0, 15.0)


@pytest.fixture(scope="module")
def clean():
    """Projections (element, angle, row, col) of a core-shell particle, axis at the centre."""
    vol = voxelize(draw_spec(11, 3, family="cube", kind="core_shell"), N)
    return project(vol, ANGLES).astype(np.float64)


@pytest.fixture(scope="module")
def drift():
    """Known random shifts per tilt (row, col), plus an offset of the whole series' columns
    (the tilt axis off the centre)."""
    d = np.random.default_rng(0).uniform(-4, 4, (len(ANGLES), 2))
    d[:, 1] += 3.3
    return d


def _moved(clean, drift, rotation=0.0):
    out = np.stack([[ndimage.shift(c[k], drift[k], order=3, mode="constant")
                     for k in range(len(ANGLES))] for c in clean])
    return np.stack([_rotate(m, rotation) for m in out]) if rotation else out


def _counts(lam, per_map=6000, seed=1):
    lam = np.maximum(lam, 0)
    return np.random.default_rng(seed).poisson(lam / lam.sum(axis=(2, 3), keepdims=True)
                                               * per_map)


def _residual(found, drift):
    """What is left of the drift after the shifts found, less what a correct alignment may
    keep: along the rows one common offset (no axis there); along the columns the motion
    ``X cos - Z sin`` of an object at (X, Z) about the centred axis (the tilt axis through
    the object instead of through its original place), but no common offset."""
    err = found + drift
    rows = err[:, 0] - err[:, 0].mean()
    t = np.deg2rad(ANGLES)
    design = np.stack([np.cos(t), -np.sin(t)], axis=1)
    cols = err[:, 1] - design @ np.linalg.lstsq(design, err[:, 1], rcond=None)[0]
    return np.abs(rows).max(), np.abs(cols).max()


def test_known_drift_and_axis_offset_are_recovered_within_half_a_pixel(clean, drift):
    maps = _counts(_moved(clean, drift))
    out, found = align_series(Series(maps, ["Au", "Ag"], ANGLES))
    rows, cols = _residual(found.shifts, drift)
    assert rows < 0.5 and cols < 0.5
    assert found.source == "maps" and found.reference == int(np.argmin(np.abs(ANGLES)))
    assert found.misfit_after < found.misfit_before  # the aligned series fits one object better
    # raw counts move by whole pixels: still whole counts of the input's dtype, none created
    assert out.data.dtype == maps.dtype and np.array_equal(found.applied, np.rint(found.shifts))
    assert np.all(out.data.sum(axis=(2, 3)) <= maps.sum(axis=(2, 3)))
    k = 2  # every element gets the same move
    dy, dx = found.applied[k].astype(int)
    np.testing.assert_array_equal(out.data[:, k, 10:50, 10:50],
                                  maps[:, k, 10 - dy:50 - dy, 10 - dx:50 - dx])
    assert out.metadata["alignment"]["shifts"] == found.shifts.tolist()
    assert "misfit" in found.table(ANGLES)
    json.dumps(found.to_dict())


def test_centre_of_mass_axis_and_haadf_source(clean, drift):
    maps = _counts(_moved(clean, drift), per_map=800)  # too sparse to register well alone
    haadf = _moved(clean, drift).sum(axis=0) + 5.0  # a HAADF image with a vacuum level
    out, found = align_series(Series(maps, ["Au", "Ag"], ANGLES), haadf=haadf, axis="com")
    assert found.source == "haadf"
    assert max(_residual(found.shifts, drift)) < 0.5
    _, by_maps = align_series(Series(maps, ["Au", "Ag"], ANGLES), haadf=haadf, use="maps")
    assert by_maps.source == "maps"


def test_an_in_plane_rotation_of_the_axis_is_found_and_undone(clean, drift):
    lam = _moved(clean, drift, rotation=3.0)
    out, found = align_series(Series(lam, ["Au", "Ag"], ANGLES), rotation=True)
    assert found.rotation == pytest.approx(3.0, abs=0.3)
    assert out.data.dtype == np.float32  # a rotation interpolates
    np.testing.assert_allclose(apply_alignment(lam, found), out.data, rtol=1e-5, atol=1e-5)


def test_projection_matching_keeps_the_alignment(clean, drift):
    maps = _counts(_moved(clean, drift))
    _, found = align_series(Series(maps, ["Au", "Ag"], ANGLES), refine=2)
    assert max(_residual(found.shifts, drift)) < 0.6


def test_a_series_that_does_not_align_is_an_error():
    rng = np.random.default_rng(2)
    noise = rng.poisson(0.3, (1, len(ANGLES), N, N))  # nothing in common between tilts
    with pytest.raises(AlignmentError, match="does not match its neighbour"):
        align_series(Series(noise, ["Au"], ANGLES))
    maps = rng.poisson(1.0, (1, len(ANGLES), N, N))
    with pytest.raises(ConfigError, match="angles are unknown"):
        align_series(Series(maps, ["Au"]))
    with pytest.raises(ConfigError, match="needs them"):
        align_series(Series(maps, ["Au"], ANGLES), use="haadf")
    with pytest.raises(ConfigError, match="one HAADF image per tilt"):
        align_series(Series(maps, ["Au"], ANGLES), haadf=np.ones((3, N, N)))


def test_a_jump_beyond_max_shift_is_an_error(clean, drift):
    big = drift.copy()
    big[0] += (0, 15)
    with pytest.raises(AlignmentError, match="beyond max_shift"):
        align_series(Series(_counts(_moved(clean, big)), ["Au", "Ag"], ANGLES), max_shift=6)


def test_cli_align_writes_the_series_figure_and_report(tmp_path, clean, drift, capsys):
    src = tmp_path / "s.h5"
    write_series(src, Series(_counts(_moved(clean, drift)).astype(np.uint16), ["Au", "Ag"],
                             ANGLES))
    out, report = tmp_path / "a.h5", tmp_path / "a.json"
    assert main(["align", str(src), "-o", str(out), "--report", str(report)]) == 0
    assert "tilt axis found" in capsys.readouterr().err
    aligned = read_series(out)
    assert aligned.elements == ["Au", "Ag"] and aligned.data.dtype == np.uint16
    assert (tmp_path / "a.png").stat().st_size > 10_000
    assert len(json.loads(report.read_text())["shifts"]) == len(ANGLES)
    before = out.read_bytes()
    assert main(["align", str(src), "-o", str(out)]) == 2  # no silent overwrite
    assert "--overwrite" in capsys.readouterr().err and out.read_bytes() == before
    assert main(["align", str(src), "-o", str(src), "--overwrite"]) == 2  # never the input
    bad = tmp_path / "bad.npy"
    np.save(bad, np.random.default_rng(3).poisson(0.3, (len(ANGLES), N, N)))
    assert main(["align", str(bad), "--angles=-60:60:15", "-o", str(tmp_path / "b.h5")]) == 2
    err = capsys.readouterr().err
    assert "does not match its neighbour" in err and not (tmp_path / "b.h5").exists()
    assert not (tmp_path / "b.png").exists()
    assert main(["align", str(src), "--use", "haadf", "-o", str(tmp_path / "c.h5")]) == 2
    assert "--haadf" in capsys.readouterr().err
