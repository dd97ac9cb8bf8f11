"""nanoedx_dataset: the simulated nanoparticle EDX tomography database.

Make, store and read the database of Skorikov et al., Nanoscale 2021: randomized nanoparticle
shapes, their voxel volumes, parallel-beam tilt series and Poisson-noised EDX maps.

Public entry points: :func:`generate`, :func:`generate_from_mesh`, :func:`renoise`,
:func:`verify`, :func:`info`, :func:`preview`, :func:`load_dataset`, :func:`publish`, plus the
building blocks :func:`draw_spec`, :func:`voxelize`, :func:`project` and :func:`add_noise`
(and :func:`voxelize_mesh` for a mesh file; the ``blender`` extra).

The package is laid out by stage, the file contract at the bottom:

* ``store`` -- the HDF5 schema and its vocabulary, writer, reader, atomic files, shard index;
* ``simulate`` -- shapes, specs, voxelizers (one module per backend), projection, noise;
* ``generation`` -- config, one sample, the executor, one file, shards;
* ``release`` -- registry, fetch, ``load_dataset``, ``publish``, Zenodo, the dataset card;
* ``inspect`` -- ``info``, ``verify``, ``preview``.

Names are imported on first use, so ``load_dataset`` does not import the generator.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("nanoedx")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+unknown"

from .errors import (  # noqa: E402,F401
    ConfigError, DatasetNotFoundError, MissingExtraError, NanoEDXError, OutputExistsError,
    SchemaError,
)
from .lazy import exports  # noqa: E402

# public name -> the module that defines it (imported when the name is first used)
_PUBLIC = {
    "generate": "generation.api", "renoise": "generation.api", "generate_from_mesh": "generation.single",
    "voxelize_mesh": "simulate.voxelizers.meshes", "info": "inspect.info",
    "verify": "inspect.verify", "preview": "inspect.preview", "load_dataset": "release.load",
    "publish": "release.publish", "project": "simulate.project", "add_noise": "simulate.noise",
    "downsample_counts": "simulate.noise", "expected_signal": "simulate.noise",
    "ParticleSpec": "simulate.specs", "draw_spec": "simulate.specs",
    "voxelize": "simulate.voxelizers",
}

__getattr__, __dir__, __all__ = exports(__name__, _PUBLIC, eager=(
    "ConfigError", "DatasetNotFoundError", "MissingExtraError", "NanoEDXError",
    "OutputExistsError", "SchemaError", "__version__"))
