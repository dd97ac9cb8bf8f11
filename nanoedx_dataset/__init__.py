"""nanoedx_dataset: the simulated nanoparticle EDX tomography database.

Make, store and read the database of Skorikov et al., Nanoscale 2021: randomized nanoparticle
shapes, their voxel volumes, parallel-beam tilt series and Poisson-noised EDX maps.

Public entry points: :func:`generate`, :func:`generate_from_mesh`, :func:`renoise`,
:func:`verify`, :func:`info`, :func:`preview`, :func:`load_dataset`, :func:`publish`, plus the
building blocks :func:`draw_spec`, :func:`voxelize`, :func:`project` and :func:`add_noise`
(and :func:`voxelize_mesh` for a mesh file; the ``blender`` extra).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("nanoedx")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+unknown"

from .errors import (  # noqa: E402
    ConfigError, DatasetNotFoundError, MissingExtraError, NanoEDXError, OutputExistsError,
    SchemaError,
)
from .generator import generate, generate_from_mesh, renoise  # noqa: E402
from .meshes import voxelize_mesh  # noqa: E402
from .report import info, verify  # noqa: E402
from .noise import add_noise, downsample_counts, expected_signal  # noqa: E402
from .figures import preview  # noqa: E402
from .load import load_dataset  # noqa: E402
from .release import publish  # noqa: E402
from .project import project  # noqa: E402
from .specs import ParticleSpec, draw_spec  # noqa: E402
from .voxelize import voxelize  # noqa: E402

__all__ = [
    "ConfigError", "DatasetNotFoundError", "MissingExtraError", "NanoEDXError",
    "OutputExistsError", "ParticleSpec", "SchemaError", "__version__", "add_noise",
    "downsample_counts", "draw_spec", "expected_signal", "generate", "generate_from_mesh", "info",
    "load_dataset", "preview", "project", "publish", "renoise", "verify", "voxelize",
    "voxelize_mesh",
]
