"""The learned denoisers: pretrained U-nets (by name, or a model file) as registered methods.

Each loads its network on first use and pickles by name only, so worker processes load their
own copy; torch is imported only then.
"""

from __future__ import annotations

import numpy as np

from .registry import Denoiser, register, register_factory


class PretrainedUNet:
    """A pretrained U-net (name or model file) as a denoiser function, loaded on first use.

    Pickles by name only, so that worker processes load their own copy.
    """

    def __init__(self, name: str):
        self.name, self.net = name, None

    def __getstate__(self) -> dict:
        return {"name": self.name, "net": None}

    def __call__(self, counts, p, background):
        from .inference import denoise
        from .pretrained import load_pretrained

        if self.net is None:
            self.net = load_pretrained(self.name)[0]
        return denoise(counts, model=self.net, device="cpu",
                       background=background).astype(np.float64)


class ContextUNet(PretrainedUNet):
    """A pretrained context U-net (:func:`~.inference.denoise_context`) as a series denoiser:
    ``fn(series, p, background, haadf, which)``."""

    def __call__(self, series, p, background, haadf, which):
        from .inference import denoise_context
        from .pretrained import load_pretrained

        if self.net is None:
            self.net, self.meta = load_pretrained(self.name)
        return denoise_context(series, self.net, haadf, device="cpu", background=background,
                               which=which, context=tuple(self.meta.get("context") or ()))


def reads_haadf(d: Denoiser) -> bool:
    """Whether a registered denoiser reads HAADF images (a pretrained context U-net whose
    registry entry names the haadf context)."""
    from .pretrained import registry

    return (isinstance(d.fn, ContextUNet)
            and "haadf" in registry().get(d.fn.name, {}).get("context", ()))


register("unet")(PretrainedUNet("default"))
register("unet-paper")(PretrainedUNet("unet-paper"))
register("unet-multidose")(PretrainedUNet("unet-multidose"))
register("unet-small")(PretrainedUNet("unet-small"))
# beside each map: the HAADF image; the other elements and the neighbouring tilts; all three
for _name in ("unet-haadf", "unet-joint", "unet-context"):
    register(_name, scope="series")(ContextUNet(_name))
register_factory("unet:", lambda name, path: Denoiser(name, PretrainedUNet(path), "fixed"))
register_factory("unet-context:", lambda name, path: Denoiser(name, ContextUNet(path), "fixed",
                                                              scope="series"))
