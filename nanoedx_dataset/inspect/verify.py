"""``verify``: a database's schema and internal consistency, every problem listed."""

from __future__ import annotations

import json

import h5py
import numpy as np

from ..errors import SchemaError
from ..simulate import shapes
from ..simulate.scenes import SceneSpec
from ..simulate.specs import ParticleSpec
from ..store import reader, schema
from ..store.schema import (FIELDS, KINDS, MESH_FAMILY, NOISY, NOISY_ATTRS, NOISY_FIELD,
                            PARTIAL_PREFIX, ROOT_ATTRS, SCENE, SPLITS, STR, VOLUME_SCALE,
                            present_elements)
from .info import info


def problems(f: h5py.File) -> list[str]:
    """Everything wrong with an open database (schema and internal consistency); [] if none."""
    out: list[str] = []
    for a in ROOT_ATTRS:
        if a not in f.attrs:
            out.append(f"root attribute {a!r} is missing")
    for fld in FIELDS:
        if fld.name not in f:
            out.append(f"variable {fld.name!r} is missing")
            continue
        ds = f[fld.name]
        if ds.dtype != np.dtype(fld.dtype) and not (fld.dtype is STR and ds.dtype.kind == "O"):
            out.append(f"{fld.name} has dtype {ds.dtype}, expected {np.dtype(fld.dtype)}")
        if ds.ndim != len(fld.dims):
            out.append(f"{fld.name} has {ds.ndim} dimensions, expected {fld.dims}")
    if out:
        return out
    n, n_el, n_ang, size = f[schema.VOLUME].shape[0], *f[schema.PROJECTION].shape[1:4]
    if f[schema.PROJECTION].shape != (n, n_el, n_ang, size, size):
        out.append(f"projection shape {f[schema.PROJECTION].shape} does not match volume "
                   f"{f[schema.VOLUME].shape} and {n_ang} angles")
    if not np.all(f[schema.WRITTEN][:] == 1):
        out.append(f"{int((f[schema.WRITTEN][:] != 1).sum())} samples were never written")
    cols = {col: reader.strings(f[col]) for col in schema.CATALOGUE}
    families = (*shapes.FAMILIES, MESH_FAMILY, SCENE)
    kinds = (*KINDS, SCENE)
    for col, valid in ((schema.FAMILY, families), (schema.KIND, kinds), (schema.SPLIT, SPLITS)):
        bad = set(cols[col]) - set(valid)
        if bad:
            out.append(f"{col} holds unknown values {sorted(bad)}; valid: {', '.join(valid)}")
    first = reader.first_sample(f)
    for i, raw in enumerate(cols[schema.PARAMS]):
        if cols[schema.FAMILY][i] == MESH_FAMILY:
            if "mesh" not in _json_object(raw):
                out.append(f"sample {i}: a mesh sample's params do not name its mesh file")
            continue
        try:
            spec = (SceneSpec if cols[schema.FAMILY][i] == SCENE else ParticleSpec).from_json(raw)
        except ValueError as err:
            out.append(f"sample {i}: params is not a spec ({err})")
            continue
        fam, spec_fam = cols[schema.FAMILY][i], getattr(spec, "family", SCENE)
        if spec_fam != fam or spec.index != first + i:
            out.append(f"sample {i}: params (family {spec_fam}, index {spec.index}) "
                       f"disagree with the catalogue (family {fam})")
    for i in range(n):
        vol = f[schema.VOLUME][i].astype(np.float64).sum(axis=(1, 2, 3)) * VOLUME_SCALE
        proj = f[schema.PROJECTION][i].astype(np.float64).sum(axis=(2, 3))  # (element, angle)
        kind = cols[schema.KIND][i]
        held = set(np.flatnonzero(vol > 0).tolist())
        if kind in KINDS and held != set(present_elements(kind)):
            out.append(f"sample {i}: a {kind} particle holds elements {np.flatnonzero(vol > 0)}")
        rel = np.abs(proj - vol[:, None]) / np.maximum(vol[:, None], 1.0)
        if rel.max() > 0.005:
            out.append(f"sample {i}: a projection's sum differs from the volume's by "
                       f"{100 * rel.max():.2f} % (limit 0.5 %)")
    for tag, grp in f.get(NOISY, {}).items():
        if tag.startswith(PARTIAL_PREFIX):
            out.append(f"noise level {tag!r} was never finished; rerun `nanoedx renoise`")
            continue
        missing = [a for a in NOISY_ATTRS if a not in grp.attrs]
        if missing:
            out.append(f"noise level {tag!r} lacks attributes {missing}")
        if NOISY_FIELD.name not in grp:
            out.append(f"noise level {tag!r} has no {NOISY_FIELD.name!r} variable")
        elif grp[NOISY_FIELD.name].shape != f[schema.PROJECTION].shape:
            out.append(f"noise level {tag!r} has shape {grp[NOISY_FIELD.name].shape}, "
                       f"expected {f[schema.PROJECTION].shape}")
    return out


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def verify(path) -> dict:
    """Check a database's schema and internal consistency.

    Checks every variable's presence, dtype and shape, that every sample was written, that the
    catalogue holds known families, kinds and splits and matches each sample's spec, that every
    projection conserves its volume's mass (0.5 %), and each noise level's attributes and shape.

    Returns
    -------
    dict
        :func:`info` of the file when it passes.

    Raises
    ------
    SchemaError
        Listing every problem found.
    """
    with reader.open_database(path) as f:
        found = problems(f)
    if found:
        raise SchemaError(f"{path} failed verification:\n- " + "\n- ".join(found))
    return info(path)
