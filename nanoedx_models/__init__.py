"""nanoedx_models: denoisers, training, reconstruction and benchmarks on the nanoedx database.

Consumes the database written by :mod:`nanoedx_dataset` (never the other way round). The torch
Datasets, the U-net, EM reconstruction and the benchmark arrive with their issues.
"""

from nanoedx_dataset import __version__

__all__ = ["__version__"]
