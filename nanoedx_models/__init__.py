"""nanoedx_models: denoisers, training and benchmarks on the nanoedx database.

Consumes the database written by :mod:`nanoedx_dataset` (never the other way round):
torch Datasets (:class:`EDXMaps`, :class:`TiltSeries`), the U-net (:class:`UNet`),
:func:`train`, :func:`denoise`, :func:`load_pretrained`, :func:`reconstruct`,
:func:`benchmark`, the ground-truth-free scores of denoisers on a user's own maps
(:func:`evaluate_holdout`, :func:`evaluate_methods`; whole denoise + EM pipelines:
:func:`evaluate_pipelines`), the denoiser they choose there (:func:`auto_denoise`),
:func:`adapt`, which fine-tunes a U-net on them without ground truth, and the steps before:
:func:`spectrum_maps` (spectrum images to count maps) and :func:`align_series`.

Laid out by stage: ``data`` (torch Datasets, a user's files), ``denoisers`` (registry,
classical, U-net, model files, pretrained models, inference), ``training``, ``reconstruction``
(EM / SIRT), ``evaluation`` (metrics, benchmark, hold-out, leaderboard, figures); ``cli`` is
the ``nanoedx`` program. Names are imported on first use (torch only when it is needed).
"""

from nanoedx_dataset import __version__  # noqa: F401
from nanoedx_dataset.lazy import exports

# public name -> the module that defines it (imported when the name is first used)
_PUBLIC = {
    "EDXMaps": "data.datasets", "TiltSeries": "data.datasets", "normalize": "data.scale",
    "denormalize": "data.scale", "evaluate_holdout": "evaluation.holdout",
    "evaluate_methods": "evaluation.holdout", "benchmark": "evaluation.benchmark",
    "auto_denoise": "evaluation.auto",
    "nmae": "evaluation.metrics", "denoise": "denoisers.inference",
    "load_model": "denoisers.modelfile", "save_model": "denoisers.modelfile",
    "load_pretrained": "denoisers.pretrained", "UNet": "denoisers.unet",
    "reconstruct": "reconstruction.em", "train": "training.loop", "adapt": "training.adapt",
    "align_series": "reconstruction.align", "spectrum_maps": "data.spectra",
    "evaluate_pipelines": "evaluation.holdout3d",
}

__getattr__, __dir__, __all__ = exports(__name__, _PUBLIC, eager=("__version__",))
