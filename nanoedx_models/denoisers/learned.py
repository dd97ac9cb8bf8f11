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


register("unet")(PretrainedUNet("default"))
register("unet-paper")(PretrainedUNet("unet-paper"))
register("unet-multidose")(PretrainedUNet("unet-multidose"))
register("unet-small")(PretrainedUNet("unet-small"))
register_factory("unet:", lambda name, path: Denoiser(name, PretrainedUNet(path), "fixed"))
