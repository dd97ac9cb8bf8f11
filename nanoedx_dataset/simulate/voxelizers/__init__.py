"""Voxelization: a particle spec to per-element occupancy fractions on a cubic grid.

Backends are registered here as data, by name (:data:`BACKENDS`): the module that implements
each one (a function ``voxelize_spec(spec, size, mesh_dir=None)``), the optional packages it
needs and whether it builds meshes. A backend's module is imported only when it is first used,
and its availability is checked without importing it, so the core never imports an optional
backend. ``analytic`` (:mod:`.analytic`, exact signed distances) is the default; ``blender``
(:mod:`.blender`) is the paper's path, Blender meshes voxelized with VTK (:mod:`.meshes`), an
optional extra. Every backend turns the occupancies of a particle's parts into elements with the
same :func:`~.compose.compose`, so the core-shell interface is blurred identically. A new
backend is one module and one :func:`register_backend` line.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ...errors import ConfigError, MissingExtraError
from ..specs import ParticleSpec

VoxelizeFn = Callable[..., np.ndarray]  # fn(spec, size, mesh_dir=None) -> (element, z, y, x)


@dataclass(frozen=True)
class Backend:
    """A voxelization backend, as data.

    Attributes
    ----------
    name : str
    module : str
        Module defining ``voxelize_spec(spec, size, mesh_dir=None)``; imported on first use.
    requires : tuple of str
        Packages it needs (checked with ``importlib.util.find_spec``, not imported).
    note : str
        What they are (shown when they are missing).
    extra : str
        How to install them.
    meshes : bool
        It builds meshes, and saves them in ``mesh_dir`` when given one.
    """

    name: str
    module: str
    requires: tuple[str, ...] = ()
    note: str = ""
    extra: str = ""
    meshes: bool = False

    def load(self) -> VoxelizeFn:
        """The backend's function (imports its module)."""
        return importlib.import_module(self.module).voxelize_spec


BLENDER_EXTRA = 'pip install "nanoedx[blender]"'
BACKENDS: dict[str, Backend] = {}


def register_backend(name: str, module: str, requires: tuple[str, ...] = (), note: str = "",
                     extra: str = "", meshes: bool = False) -> Backend:
    """Register the backend ``name`` implemented by ``module`` (see :class:`Backend`)."""
    BACKENDS[name] = Backend(name, module, tuple(requires), note, extra, meshes)
    return BACKENDS[name]


register_backend("analytic", f"{__name__}.analytic")
register_backend("blender", f"{__name__}.blender", requires=("bpy", "vtk"), meshes=True,
                 note="the blender extra: bpy, vtk; Python 3.11, numpy < 2", extra=BLENDER_EXTRA)


def check_backend(name: str) -> None:
    """Raise :class:`ConfigError` for an unknown backend, or :class:`MissingExtraError` when
    the packages it needs are not installed."""
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}")
    b = BACKENDS[name]
    missing = [m for m in b.requires if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingExtraError(f"the {name} backend needs {' and '.join(missing)} "
                                f"({b.note}); install it with: {b.extra}")


def check_mesh_backend(name: str) -> None:
    """Refuse to save meshes with a backend that builds none."""
    check_backend(name)
    if not BACKENDS[name].meshes:
        raise ConfigError(f"the {name} backend builds no meshes to save; a mesh folder needs "
                          f"one of: {', '.join(n for n, b in BACKENDS.items() if b.meshes)} (--backend blender)")


def voxelize(spec: ParticleSpec, size: int, backend: str = "analytic",
             mesh_dir=None) -> np.ndarray:
    """Occupancy of each element of a particle on a ``size``^3 grid.

    Parameters
    ----------
    spec : ParticleSpec
        The particle (see :func:`nanoedx_dataset.simulate.specs.draw_spec`).
    size : int
        Voxels along each axis; the grid spans the field of view.
    backend : str
        A name of :data:`BACKENDS`: ``"analytic"`` (the default, exact signed distances) or
        ``"blender"`` (the paper's Blender meshes voxelized with VTK; needs
        ``pip install "nanoedx[blender]"``).
    mesh_dir : path-like, optional
        With a mesh backend, also save the particle's meshes there (see
        :func:`nanoedx_dataset.simulate.voxelizers.blender.save_meshes`).

    Returns
    -------
    ndarray, shape (2, size, size, size), float32
        Occupancy fraction in [0, 1] of elements :data:`~nanoedx_dataset.store.schema.ELEMENTS`, axes
        (element, z, y, x). The two elements never sum to more than 1 in a voxel.
    """
    if mesh_dir is None:
        check_backend(backend)
    else:
        check_mesh_backend(backend)
    return BACKENDS[backend].load()(spec, size, mesh_dir=mesh_dir)
