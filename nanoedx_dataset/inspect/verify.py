"""``verify``: a database's schema and internal consistency, every problem listed.

Everything is checked against the one definition of the format (:mod:`..store.schema`):
variables, dtypes, dimensions and sizes (:func:`..store.reader.layout_problems`: the angles
match the maps, the catalogue the samples), then the content, sample by sample. A part of the
file that cannot be read (a damaged chunk, a string that is not UTF-8) is a problem in the
list, not a crash.
"""

from __future__ import annotations

import json

import h5py
import numpy as np

from ..errors import SchemaError
from ..simulate import shapes
from ..simulate.scenes import SceneSpec
from ..simulate.specs import ParticleSpec
from ..store import reader, schema
from ..store.schema import (KINDS, MESH_FAMILY, NOISY, NOISY_ATTRS, PARTIAL_PREFIX,
                            ROOT_ATTRS, SCENE, SPLITS, VOLUME_SCALE, present_elements)
from .info import info

UNREADABLE = (OSError, KeyError, ValueError, TypeError)  # what h5py raises for damaged data
LISTED = 20  # problems named in the error (their count is always given)


def _unreadable(what: str, err: BaseException) -> str:
    text = (str(err).strip().splitlines() or [""])[0][:120]
    return f"{what} cannot be read ({type(err).__name__}: {text}): the file is damaged"


def problems(f: h5py.File) -> list[str]:
    """Everything wrong with an open database (schema and internal consistency); [] if none."""
    out = [f"root attribute {a!r} is missing" for a in ROOT_ATTRS if a not in f.attrs]
    try:
        reader.config(f)
    except (KeyError, ValueError, TypeError) as err:
        out.append(_unreadable("the config attribute (JSON)", err))
    layout = reader.layout_problems(f)
    if layout:
        return out + layout  # the content cannot be checked against a wrong layout
    try:
        angles = f[schema.ANGLE][:]
        if not np.all(np.isfinite(angles)) or np.any(np.abs(angles) >= 90):
            out.append(f"angle holds values outside (-90, 90) degrees: {angles.tolist()}")
        if np.any(f[schema.WRITTEN][:] != 1):
            out.append(f"{int((f[schema.WRITTEN][:] != 1).sum())} samples were never written")
    except UNREADABLE as err:
        out.append(_unreadable("angle or written", err))
    cols = {}
    for col in schema.CATALOGUE:
        try:
            cols[col] = reader.strings(f[col])
        except UNREADABLE as err:
            out.append(_unreadable(f"the catalogue column {col}", err))
    if len(cols) == len(schema.CATALOGUE):
        out += _catalogue_problems(cols, reader.first_sample(f))
    levels = [(tag, grp) for tag, grp in f.get(NOISY, {}).items()]
    out += _level_problems(f, levels)
    kinds = cols.get(schema.KIND)
    for i in range(f[schema.VOLUME].shape[0]):
        out += _sample_problems(f, i, kinds[i] if kinds else None,
                                [tag for tag, _ in levels if not tag.startswith(PARTIAL_PREFIX)])
    return out


def _catalogue_problems(cols: dict, first: int) -> list[str]:
    out = []
    families = (*shapes.FAMILIES, MESH_FAMILY, SCENE)
    kinds = (*KINDS, SCENE)
    for col, valid in ((schema.FAMILY, families), (schema.KIND, kinds), (schema.SPLIT, SPLITS)):
        bad = set(cols[col]) - set(valid)
        if bad:
            out.append(f"{col} holds unknown values {sorted(bad)}; valid: {', '.join(valid)}")
    for i, raw in enumerate(cols[schema.PARAMS]):
        if cols[schema.FAMILY][i] == MESH_FAMILY:
            if "mesh" not in _json_object(raw):
                out.append(f"sample {i}: a mesh sample's params do not name its mesh file")
            continue
        try:
            spec = (SceneSpec if cols[schema.FAMILY][i] == SCENE else ParticleSpec).from_json(raw)
        except (ValueError, TypeError, KeyError) as err:
            out.append(f"sample {i}: params is not a spec ({type(err).__name__}: {err})")
            continue
        fam, spec_fam = cols[schema.FAMILY][i], getattr(spec, "family", SCENE)
        if spec_fam != fam or spec.index != first + i:
            out.append(f"sample {i}: params (family {spec_fam}, index {spec.index}) "
                       f"disagree with the catalogue (family {fam})")
    return out


def _level_problems(f: h5py.File, levels) -> list[str]:
    out = []
    for tag, grp in levels:
        if tag.startswith(PARTIAL_PREFIX):
            out.append(f"noise level {tag!r} was never finished; rerun `nanoedx renoise`")
            continue
        missing = [a for a in NOISY_ATTRS if a not in grp.attrs]
        if missing:
            out.append(f"noise level {tag!r} lacks attributes {missing}")
            continue
        try:
            counts, background = (float(np.ravel(grp.attrs[a])[0])
                                  for a in ("counts", "background"))
        except UNREADABLE + (IndexError,) as err:
            out.append(_unreadable(f"noise level {tag!r}'s attributes", err))
            continue
        if tag != schema.noise_tag(counts, background):
            out.append(f"noise level {tag!r} has attributes counts={counts:g} and "
                       f"background={background:g}, which name another level")
    return out


def _sample_problems(f: h5py.File, i: int, kind: str | None, tags: list[str]) -> list[str]:
    """Problems of sample ``i``: readable arrays, the elements of its kind, projections that
    conserve the volume's mass, and counts that are whole, non-negative numbers."""
    out = []
    try:
        vol = f[schema.VOLUME][i].astype(np.float64).sum(axis=(1, 2, 3)) * VOLUME_SCALE
        proj = f[schema.PROJECTION][i].astype(np.float64)
    except UNREADABLE as err:
        return [_unreadable(f"sample {i}'s volume or projections", err)]
    if not np.all(np.isfinite(proj)) or np.any(proj < 0):
        out.append(f"sample {i}: projections hold negative, NaN or infinite values")
        return out
    held = set(np.flatnonzero(vol > 0).tolist())
    if kind in KINDS and held != set(present_elements(kind)):
        out.append(f"sample {i}: a {kind} particle holds elements {sorted(held)}")
    sums = proj.sum(axis=(2, 3))  # (element, angle)
    rel = np.abs(sums - vol[:, None]) / np.maximum(vol[:, None], 1.0)
    if rel.max() > 0.005:
        out.append(f"sample {i}: a projection's sum differs from the volume's by "
                   f"{100 * rel.max():.2f} % (limit 0.5 %)")
    if schema.HAADF in f:
        try:
            image = f[schema.HAADF][i]
            params = _json_object(f[schema.HAADF_PARAMS].asstr()[i])
        except UNREADABLE as err:
            out.append(_unreadable(f"sample {i}'s HAADF images", err))
        else:
            if len(params.get("z", ())) != vol.size:
                out.append(f"sample {i}: haadf_params does not name the Z of its "
                           f"{vol.size} elements")
            if not image.any():
                out.append(f"sample {i}: its HAADF images are empty")
    for tag in tags:
        try:
            counts = f[schema.counts_path(tag)][i]
        except UNREADABLE as err:
            out.append(_unreadable(f"sample {i}'s counts of noise level {tag!r}", err))
            continue
        if counts.dtype.kind not in "ui" and (not np.all(np.isfinite(counts))
                                              or not np.array_equal(counts, np.round(counts))):
            out.append(f"sample {i}: noise level {tag!r} holds fractional or non-finite "
                       "counts; counts are whole numbers")
        elif np.any(counts < 0):
            out.append(f"sample {i}: noise level {tag!r} holds negative counts")
    return out


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def verify(path) -> dict:
    """Check a database's schema and internal consistency.

    Checks the root attributes and config, every variable's presence, dtype and shape
    against the schema (with the noise levels' counts: the angles must match the maps and the
    catalogue the samples), that every sample was written and can be read, that the catalogue
    holds known families, kinds and splits and matches each sample's spec, that every
    projection is finite and conserves its volume's mass (0.5 %), and that each noise level
    is finished, names its attributes and holds whole, non-negative counts.

    Returns
    -------
    dict
        :func:`info` of the file when it passes.

    Raises
    ------
    SchemaError
        Listing every problem found (on one line, the first 20 named).
    """
    with reader.open_database(path, check=False) as f:
        found = problems(f)
    if found:
        more = f"; and {len(found) - LISTED} more" if len(found) > LISTED else ""
        raise SchemaError(f"{path} failed verification ({len(found)} problem"
                          f"{'s' if len(found) > 1 else ''}): " + "; ".join(found[:LISTED])
                          + more)
    return info(path)
