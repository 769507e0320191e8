"""EDSR (Lim et al., CVPRW 2017): residual blocks without batch norm, global skip, pixel-shuffle tail.

``edsr-baseline`` is the published 64-channel, 16-block model (~1.37M params at x4); ``edsr-s``
is a narrower variant sized so it can be trained on a CPU, which is what blurwise ships as the
heavy SR route until GPU-trained weights exist. The state-dict keys follow the published layout
(``head.0``, ``body.N.body.{0,2}``, ``body.M``, ``tail.0.{0,2}``, ``tail.1``) so user ``.pth`` files
map onto it (see ``foreign.py``); the mean shift is a buffer (``sub_mean``/``add_mean``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from blurwise.models.registry import ArchSpec, Variant, register_arch, register_variant

RGB_MEAN = (0.4488, 0.4371, 0.4040)  # DIV2K mean used by EDSR


class MeanShift(nn.Conv2d):
    """Fixed 1x1 conv subtracting (sign=-1) or adding (sign=+1) the dataset mean, as in EDSR."""

    def __init__(self, sign: int, rgb_range: float = 1.0) -> None:
        super().__init__(3, 3, kernel_size=1)
        self.weight.data = torch.eye(3).view(3, 3, 1, 1)
        self.bias.data = sign * rgb_range * torch.tensor(RGB_MEAN)
        for p in self.parameters():
            p.requires_grad = False


class ResBlock(nn.Module):
    """conv-ReLU-conv with a scaled identity skip."""

    def __init__(self, n_feats: int, res_scale: float = 1.0) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(n_feats, n_feats, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(n_feats, n_feats, 3, padding=1),
        )
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            return x + self.body(x) * self.res_scale
        # Inference: the same sum in place, without the multiply at res_scale 1 (~2% of the CPU time of a
        # forward pass; bit-identical output). Autograd needs the out-of-place form above.
        y = self.body(x)
        return (y if self.res_scale == 1.0 else y.mul_(self.res_scale)).add_(x)


class Upsampler(nn.Sequential):
    """Pixel-shuffle upsampler: x2 stages for powers of two, one x3 stage for scale 3."""

    def __init__(self, scale: int, n_feats: int) -> None:
        layers: list[nn.Module] = []
        if scale in (2, 4, 8):
            for _ in range(int(math.log2(scale))):
                layers += [nn.Conv2d(n_feats, 4 * n_feats, 3, padding=1), nn.PixelShuffle(2)]
        elif scale == 3:
            layers += [nn.Conv2d(n_feats, 9 * n_feats, 3, padding=1), nn.PixelShuffle(3)]
        else:
            raise ValueError(f"EDSR supports scales 2, 3, 4 and 8, not {scale}")
        super().__init__(*layers)


class EDSR(nn.Module):
    """Enhanced deep residual network for single-image super-resolution (input and output in [0, 1])."""

    def __init__(self, scale: int = 4, n_feats: int = 64, n_resblocks: int = 16, res_scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale
        self.in_channels = 3
        self.out_channels = 3
        self.sub_mean = MeanShift(-1)
        self.add_mean = MeanShift(+1)
        self.head = nn.Sequential(nn.Conv2d(3, n_feats, 3, padding=1))
        self.body = nn.Sequential(
            *[ResBlock(n_feats, res_scale) for _ in range(n_resblocks)],
            nn.Conv2d(n_feats, n_feats, 3, padding=1),
        )
        self.tail = nn.Sequential(Upsampler(scale, n_feats), nn.Conv2d(n_feats, 3, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.sub_mean(x))
        x = x + self.body(x) if torch.is_grad_enabled() else self.body(x).add_(x)
        return self.add_mean(self.tail(x))


register_arch(ArchSpec("edsr", EDSR, task="sr", defaults={"scale": 4, "n_feats": 64, "n_resblocks": 16}))

for _s in (2, 3, 4):
    register_variant(
        Variant(
            f"edsr-baseline-x{_s}",
            "edsr",
            {"scale": _s, "n_feats": 64, "n_resblocks": 16},
            task="sr",
            scale=_s,
            weights=f"edsr-baseline-x{_s}.safetensors",
            description="EDSR-baseline (64 ch, 16 blocks), the published configuration",
        )
    )
    register_variant(
        Variant(
            f"edsr-s-x{_s}",
            "edsr",
            {"scale": _s, "n_feats": 48, "n_resblocks": 12},
            task="sr",
            scale=_s,
            weights=f"edsr-s-x{_s}.safetensors",
            default=True,
            description="EDSR, 48 ch, 12 blocks: sized for CPU training; the shipped heavy SR model",
        )
    )
