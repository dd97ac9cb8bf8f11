"""Scenes (several particles, supports, phases) and the noise of real fields."""

import json
from importlib import resources

import h5py
import numpy as np
import pytest
from scipy import ndimage

from nanoedx_dataset import generate
from nanoedx_dataset.errors import ConfigError
from nanoedx_dataset.generation.config import GenerationConfig, preset
from nanoedx_dataset.inspect.verify import verify
from nanoedx_dataset.simulate import scenes, shapes
from nanoedx_dataset.simulate.noise import NoiseModel, add_noise, blur_maps, mass_background
from nanoedx_dataset.simulate.project import project
from nanoedx_dataset.simulate.scenes import SceneOptions, SceneSpec, draw_scene, voxelize_scene
from nanoedx_dataset.simulate.specs import (FIELD_RADIUS, ParticleSpec, draw_spec, rounded,
                                            world_hull)
from nanoedx_dataset.store import schema
from nanoedx_dataset.store.reader import Database


def _extent(p: ParticleSpec) -> float:
    return p.scale * shapes.family(p.family).build(p.params).diameter()


@pytest.fixture(scope="module")
def fields_db(tmp_path_factory):
    out = tmp_path_factory.mktemp("fields") / "fields.h5"
    return generate(out, "fields", n=4, size=32, progress=False)


def test_same_seed_and_index_give_the_same_scene_and_voxels():
    a, b = draw_scene(3, 7), draw_scene(3, 7)
    assert a.to_json() == b.to_json()
    assert SceneSpec.from_json(a.to_json()) == a
    np.testing.assert_array_equal(voxelize_scene(a, 32), voxelize_scene(b, 32))
    assert draw_scene(3, 8).to_json() != a.to_json()
    assert draw_scene(4, 7).to_json() != a.to_json()


@pytest.mark.parametrize("seed", [0, 9])
def test_particle_count_and_sizes_respect_the_options(seed):
    opt = SceneOptions(particles=(2, 6), extent=(0.08, 0.5), similar=0.5)
    counts = set()
    for index in range(12):
        scene = draw_scene(seed, index, opt)
        counts.add(len(scene.particles))
        assert 2 <= len(scene.particles) <= 6
        for entry, p in zip(scene.particles, scene.particle_specs()):
            assert 0.08 - 1e-9 <= _extent(p) <= 0.5 + 1e-9
            pts, r = world_hull(p)
            r += entry["rough"]["amplitude"] * _extent(p) if entry["rough"] else 0.0
            assert np.all(np.hypot(pts[:, 0], pts[:, 2]) + r <= FIELD_RADIUS + 1e-9)
            assert np.all(np.abs(pts[:, 1]) + r <= FIELD_RADIUS + 1e-9)
    assert len(counts) > 2  # the count is drawn, not fixed


def test_default_scenes_span_one_to_twelve_particles_and_5_to_90_percent():
    specs = [draw_scene(0, i) for i in range(60)]
    n = [len(s.particles) for s in specs]
    assert min(n) >= 1 and max(n) <= 12 and len(set(n)) >= 8
    ext = [_extent(p) for s in specs for p in s.particle_specs()]
    assert min(ext) >= 0.05 - 1e-9 and max(ext) <= 0.9 + 1e-9
    assert min(ext) < 0.1 and max(ext) > 0.6  # very different sizes
    assert any(s.support for s in specs) and any(s.phase for s in specs)
    entries = [e for s in specs for e in s.particles]
    for key in ("pores", "rough", "gradient"):
        assert any(e[key] for e in entries), key
    assert all(s.elements() == {0, 1} for s in specs)


def test_crowded_touching_scenes_keep_occupancy_in_range_and_conserve_mass():
    opt = SceneOptions(particles=(10, 12), extent=(0.2, 0.6), touching=1.0, porous=0.5,
                       irregular=0.5, gradient=0.5, support=1.0, phase=1.0)
    for index in range(3):
        occ = voxelize_scene(draw_scene(1, index, opt), 32)
        assert occ.shape == (2, 32, 32, 32) and occ.dtype == np.float32
        assert occ.min() >= 0 and occ.max() <= 1
        stored = np.rint(occ / schema.VOLUME_SCALE).astype(np.int64)
        assert stored.sum(0).max() <= 255  # A + B <= 1 in the stored volume too
        vol = stored * schema.VOLUME_SCALE
        proj = project(vol.astype(np.float32))
        mass = vol.sum(axis=(1, 2, 3))
        np.testing.assert_allclose(proj.sum(axis=(2, 3)), mass[:, None] * np.ones(16),
                                   rtol=2e-3)


def test_composition_gradient_mixes_the_elements_inside_a_particle():
    opt = SceneOptions(particles=(1, 1), extent=(0.7, 0.8), gradient=1.0, porous=0.0,
                       irregular=0.0, support=0.0, phase=0.0, swap=0.0)
    for index in range(12):
        scene = draw_scene(2, index, opt)
        if scene.particles[0]["particle"]["kind"] == "solid":
            break
    occ = voxelize_scene(scene, 32)
    full = occ.sum(0) > 0.99
    x = occ[1][full] / occ.sum(0)[full]  # fraction of B where the particle is full
    lo, hi = sorted((scene.particles[0]["gradient"]["from"], scene.particles[0]["gradient"]["to"]))
    assert 0 < x.min() and x.max() < 1  # both elements everywhere, not 0/1 occupancy
    assert x.max() - x.min() > 0.5 * (hi - lo)  # and it varies inside the particle


def test_pores_remove_about_the_asked_fraction():
    base = SceneOptions(particles=(1, 1), extent=(0.85, 0.9), porous=0.0, irregular=0.0,
                        gradient=0.0, support=0.0, phase=0.0)
    plain = draw_scene(5, 0, base)
    porous = SceneSpec(5, 0, [{**plain.particles[0], "pores": {"seed": 1, "length": 0.08,
                                                               "fraction": 0.3}}])
    full, holed = voxelize_scene(plain, 48).sum(), voxelize_scene(porous, 48).sum()
    assert 0.5 < holed / full < 0.9


def test_smooth_field_is_resolution_independent():
    coarse = np.linspace(-0.5, 0.5, 5)
    fine = np.linspace(-0.5, 0.5, 9)  # holds every coarse point
    a = scenes.smooth_field(11, 0.1, (coarse, coarse, coarse))
    b = scenes.smooth_field(11, 0.1, (fine, fine, fine))[::2, ::2, ::2]
    np.testing.assert_allclose(a, b, atol=1e-12)
    n = 20  # and it is the lattice's cubic-spline interpolation
    lattice = ndimage.gaussian_filter(np.random.default_rng(11).standard_normal((n,) * 3),
                                      0.1 * n, mode="wrap")
    lattice /= lattice.std()
    pts = np.stack(np.meshgrid(coarse, coarse, coarse, indexing="ij")).reshape(3, -1) * n
    ref = ndimage.map_coordinates(lattice, pts, order=3, mode="grid-wrap").reshape(a.shape)
    np.testing.assert_allclose(a, ref, atol=1e-12)


def _stored(version: str) -> tuple[str, list[str]]:
    mini = resources.files("nanoedx_dataset") / "data" / f"nanoedx-mini-{version}.h5"
    with resources.as_file(mini) as path, h5py.File(path, "r") as f:
        stored = f.attrs[schema.ATTR_CONFIG]
        stored = stored.decode() if isinstance(stored, bytes) else str(stored)
        params = [p.decode() if isinstance(p, bytes) else p for p in f[schema.PARAMS][:]]
    return stored, params


def test_old_configs_keep_their_json_and_specs():
    stored, params = _stored("0.1.1")
    assert preset("mini").validate().to_json().replace("0.1.0", "0.1.1") == stored
    assert GenerationConfig.from_json(stored).to_json() == stored
    assert "scene" not in stored and "probe_blur" not in stored
    for name in ("standard", "paper"):
        assert set(json.loads(preset(name).validate().to_json())) == set(json.loads(stored))
    assert [draw_spec(0, i).to_json() for i in range(len(params))] == params
    # the specs of nanoedx 0.1.0 are today's, before their floats were rounded
    stored, old = _stored("0.1.0")
    assert preset("mini").validate().to_json() == stored
    assert [ParticleSpec(**rounded(json.loads(p))).to_json() for p in old] == params
    assert old != params


def test_fields_config_round_trips_through_json():
    cfg = preset("fields").validate()
    again = GenerationConfig.from_json(cfg.to_json())
    assert again == cfg and isinstance(again.scene, SceneOptions)
    d = json.loads(cfg.to_json())
    assert d["mass_background"] == 0.5 and d["probe_blur"] == 1.0
    assert d["scene"]["particles"] == [1, 12] and d["scene"]["extent"] == [0.05, 0.9]
    assert (d["n"], d["size"], len(d["angles"])) == (1000, 128, 16)


def test_verify_accepts_a_tiny_fields_database(fields_db):
    verify(fields_db)
    db = Database(fields_db)
    assert set(db.catalogue[schema.FAMILY]) == {schema.SCENE}
    assert set(db.catalogue[schema.KIND]) == {schema.SCENE}
    for i, raw in enumerate(db.catalogue[schema.PARAMS]):
        assert SceneSpec.from_json(raw).index == i
    assert NoiseModel.from_config(db.attrs[schema.ATTR_CONFIG]) == NoiseModel(0.5, 1.0)


def test_verify_rejects_a_scene_whose_params_are_not_a_scene(tmp_path, fields_db):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(fields_db.read_bytes())
    with h5py.File(bad, "r+") as f:
        f[schema.PARAMS][1] = '{"index": 1}'
    with pytest.raises(ValueError, match="sample 1: params is not a spec.*not a scene spec"):
        verify(bad)


def test_on_the_fly_maps_follow_the_files_noise_model(fields_db):
    from nanoedx_models.data.datasets import EDXMaps

    ds = EDXMaps(fields_db, split=None, counts=(16.0, 16000.0), background_fraction=0.3)
    db = Database(fields_db)
    for i in range(len(ds)):
        raw, target, c, b = ds.raw(i)
        fi, s, e, a = ds.items[i]
        proj = db.projection(s, e, a)
        np.testing.assert_allclose(target, blur_maps(NoiseModel().signal(proj, c), 1.0),
                                   rtol=1e-5, atol=1e-6)
        assert abs(float(target.sum()) - c) < 1e-3 * c  # the blur keeps the signal's total
        assert 16 <= c <= 16000 and b == pytest.approx(0.3 * c)


def test_mass_background_is_non_negative_with_the_asked_mean():
    rng = np.random.default_rng(0)
    mass = rng.uniform(0, 5, (3, 20, 24)) * (rng.random((3, 20, 24)) < 0.3)
    mass[2] = 0.0  # an empty map: uniform
    for f in (0.0, 0.4, 1.0):
        b = mass_background(mass, 150.0, f)
        assert b.min() >= 0
        np.testing.assert_allclose(b.mean(axis=(1, 2)), 150.0 / (20 * 24))
        np.testing.assert_allclose(b[2], 150.0 / (20 * 24))
    full = mass_background(mass, 150.0, 1.0)
    np.testing.assert_allclose(full[0], 150.0 * mass[0] / mass[0].sum())
    assert np.all(full[0][mass[0] == 0] == 0)


def test_probe_blur_keeps_each_maps_total():
    rng = np.random.default_rng(1)
    maps = rng.uniform(0, 10, (2, 3, 17, 23))
    maps[..., 0, :] = 50.0  # mass on the border too
    for sigma in (0.5, 1.0, 3.0):
        out = blur_maps(maps, sigma)
        np.testing.assert_allclose(out.sum(axis=(-2, -1)), maps.sum(axis=(-2, -1)), rtol=1e-12)
        assert out.std() < maps.std()
    np.testing.assert_allclose(blur_maps(np.full((9, 9), 2.0), 1.5), 2.0)


def test_noise_model_defaults_are_exactly_add_noise():
    proj = project(voxelize_scene(draw_scene(0, 1), 24))
    a = NoiseModel().sample(proj, 900.0, 90.0, np.random.default_rng(4))
    b = add_noise(proj, 900.0, 90.0, np.random.default_rng(4))
    np.testing.assert_array_equal(a, b)
    model = NoiseModel(0.5, 1.0)
    lam = model.expected(proj, 900.0, 90.0, mass=proj.sum(0, keepdims=True))
    present = proj.sum(axis=(-2, -1)) > 0
    np.testing.assert_allclose(lam.sum(axis=(-2, -1))[present], 990.0, rtol=1e-6)
    noisy = model.sample(proj, 900.0, 90.0, np.random.default_rng(4),
                         mass=proj.sum(0, keepdims=True))
    assert noisy.dtype == np.uint16 and noisy.shape == proj.shape


def test_bad_options_name_the_fix():
    with pytest.raises(ConfigError, match="scene particles must be a range"):
        SceneOptions(particles=(3, 1)).validate()
    with pytest.raises(ConfigError, match="scene extent"):
        SceneOptions(extent=(0.05, 1.5)).validate()
    with pytest.raises(ConfigError, match=r"probabilities must lie in \[0, 1\].*touching"):
        SceneOptions(touching=2.0).validate()
    with pytest.raises(ConfigError, match="unknown scene options.*valid: particles"):
        SceneOptions.from_dict({"particle": [1, 2]})
    with pytest.raises(ConfigError, match="mass_background must be a share"):
        NoiseModel(mass_background=1.5)
    with pytest.raises(ConfigError, match="probe_blur must be"):
        NoiseModel(probe_blur=-1)
    with pytest.raises(ConfigError, match="needs the maps' mass thickness"):
        NoiseModel(0.5).sample(np.ones((4, 4)), 10.0, 1.0, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="analytic backend"):
        GenerationConfig(n=2, size=32, scene=SceneOptions(), backend="blender").validate()
    with pytest.raises(ConfigError, match="not a scene spec"):
        SceneSpec.from_json('{"index": 1}')


def test_renoise_of_a_fields_file_follows_its_noise_model(tmp_path):
    """``renoise`` draws with the file's noise model (mass background, probe blur): at the
    file's own dose and seed it redraws exactly the counts ``generate`` wrote."""
    from nanoedx_dataset import renoise

    path = generate(tmp_path / "f.h5", "fields", n=2, size=24, progress=False)
    tag, more = schema.noise_tag(500.0, 150.0), schema.noise_tag(2000.0, 150.0)
    with h5py.File(path, "r") as f:
        before = f[schema.counts_path(tag)][()]
    renoise(path, 500.0, 150.0, overwrite=True, progress=False)
    renoise(path, 2000.0, 150.0, progress=False)
    with h5py.File(path, "r") as f:
        assert np.array_equal(f[schema.counts_path(tag)][()], before)
        counts, proj = f[schema.counts_path(more)][0], f[schema.PROJECTION][0]
    lam = NoiseModel(0.5, 1.0).expected(proj, 2000.0, 150.0, mass=proj.sum(0, keepdims=True))
    assert abs(counts.sum() - lam.sum()) < 5 * np.sqrt(lam.sum())
