"""The U-net of Ronneberger et al. (2015) with 1-pixel padding on every convolution.

As in Skorikov et al. (ESI Fig. S5): each level is two 3x3 convolutions with ReLU, 2x2 max
pooling down, 2x2 transposed convolutions up, skip connections by concatenation, and a final
1x1 convolution; the padding keeps the image size. ``depth`` levels below the top and the
``base`` width (doubled per level) are parameters; presets name the paper's configuration and
smaller, faster ones. ``in_channels`` > 1 feeds context beside the map (the HAADF image, the
other elements, the neighbouring tilts: :mod:`nanoedx_models.data.context`); the output is
always the one denoised map. Any input size works: the image is padded (reflect) to a multiple of
``2**depth`` and cropped back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nanoedx_dataset.errors import ConfigError

PRESETS: dict[str, dict] = {
    "paper": {"depth": 4, "base": 64},  # 64-128-256-512-1024, as in the paper
    "small": {"depth": 4, "base": 16},  # the default shipped model
    "tiny": {"depth": 2, "base": 8},  # tests and quick experiments
}


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """U-net mapping a normalized noisy map (N, C, H, W) to its denoised map (N, 1, H, W).

    Parameters
    ----------
    depth : int
        Number of poolings (levels below the top).
    base : int
        Channels of the top level; level k has ``base * 2**k``.
    in_channels : int
        Input channels: the map, then its context channels.
    """

    def __init__(self, depth: int = 4, base: int = 64, in_channels: int = 1):
        super().__init__()
        if depth < 1 or base < 1 or in_channels < 1:
            raise ConfigError(f"U-net needs depth, base and in_channels >= 1, got {depth}, "
                              f"{base}, {in_channels}")
        self.depth, self.base, self.in_channels = int(depth), int(base), int(in_channels)
        widths = [base * 2**k for k in range(depth + 1)]
        self.down = nn.ModuleList([_block(self.in_channels, widths[0])] +
                                  [_block(widths[k - 1], widths[k]) for k in range(1, depth + 1)])
        self.up = nn.ModuleList([nn.ConvTranspose2d(widths[k], widths[k - 1], 2, stride=2)
                                 for k in range(depth, 0, -1)])
        self.merge = nn.ModuleList([_block(2 * widths[k - 1], widths[k - 1])
                                    for k in range(depth, 0, -1)])
        self.out = nn.Conv2d(widths[0], 1, 1)

    @property
    def config(self) -> dict:
        """The constructor's arguments (``in_channels`` only when it is not 1, so that a
        single-channel U-net's config is the one model files have always held)."""
        extra = {"in_channels": self.in_channels} if self.in_channels != 1 else {}
        return {"depth": self.depth, "base": self.base, **extra}

    @classmethod
    def from_preset(cls, name: str, in_channels: int = 1) -> "UNet":
        if name not in PRESETS:
            raise ConfigError(f"unknown U-net preset {name!r}; choose one of: {', '.join(PRESETS)}")
        return cls(**PRESETS[name], in_channels=in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ConfigError(f"U-net input must be (N, {self.in_channels}, H, W), got "
                              f"{tuple(x.shape)}")
        h, w = x.shape[-2:]
        m = 2**self.depth
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            mode = "reflect" if min(h, w) > max(ph, pw) else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        skips = []
        for k, block in enumerate(self.down):
            x = block(x if k == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for up, merge in zip(self.up, self.merge):
            x = merge(torch.cat([skips.pop(), up(x)], dim=1))
        return self.out(x)[..., :h, :w]
