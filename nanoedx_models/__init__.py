"""nanoedx_models: denoisers, training and benchmarks on the nanoedx database.

Consumes the database written by :mod:`nanoedx_dataset` (never the other way round):
torch Datasets (:class:`EDXMaps`, :class:`TiltSeries`), the U-net (:class:`UNet`),
:func:`train`, :func:`denoise`, :func:`load_pretrained`, and the ground-truth-free scores of
denoisers on a user's own maps (:func:`evaluate_holdout`, :func:`evaluate_methods`).
"""

from nanoedx_dataset import __version__

from .datasets import EDXMaps, TiltSeries, denormalize, normalize
from .holdout import evaluate_holdout, evaluate_methods
from .inference import denoise
from .metrics import nmae
from .modelfile import load_model, save_model
from .pretrained import load_pretrained
from .reconstruct import reconstruct
from .training import train
from .unet import UNet

__all__ = ["EDXMaps", "TiltSeries", "UNet", "__version__", "denoise", "denormalize",
           "evaluate_holdout", "evaluate_methods", "load_model", "load_pretrained", "nmae",
           "normalize", "reconstruct", "save_model", "train"]
