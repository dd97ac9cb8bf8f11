"""Denoisers: the registry (:mod:`.registry`), classical methods (:mod:`.classical`), the
U-net (:mod:`.unet`), model files (:mod:`.modelfile`), pretrained models (:mod:`.pretrained`),
``denoise`` (:mod:`.inference`), the learned methods (:mod:`.learned`) and the methods of the
reconstruction domain (:mod:`.volume`). Importing the package registers every method; torch is
imported only when a U-net runs.
"""

from . import classical, learned, volume  # noqa: F401  (register the methods)
from .classical import anscombe, inverse_anscombe
from .registry import DENOISERS, Denoiser, denoiser, register

__all__ = ["DENOISERS", "Denoiser", "anscombe", "denoiser", "inverse_anscombe", "register"]
