"""RRDBNet (ESRGAN / Real-ESRGAN generator), for loading users' published weights (see ``foreign.py``).

Residual-in-residual dense blocks (three 5-conv dense blocks per RRDB, residuals scaled by 0.2),
a trunk conv with a global skip, nearest x2 upsampling + conv stages, and two output convs.
Keys follow the BasicSR layout (``conv_first``, ``body.N.rdb1.conv1``, ``conv_body``, ``conv_up1``,
``conv_hr``, ``conv_last``); ``foreign.py`` maps the older ESRGAN names onto it. Real-ESRGAN's x2
and x1 models pixel-unshuffle the input first (``unshuffle`` = 2 or 4), which is reproduced here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from blurwise.models.registry import ArchSpec, register_arch


class DenseBlock(nn.Module):
    """Five densely connected 3x3 convs (growth ``gc``) with LeakyReLU; output scaled by 0.2 plus skip."""

    def __init__(self, nf: int = 64, gc: int = 32) -> None:
        super().__init__()
        for i in range(4):
            setattr(self, f"conv{i + 1}", nn.Conv2d(nf + i * gc, gc, 3, padding=1))
        self.conv5 = nn.Conv2d(nf + 4 * gc, nf, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for i in range(4):
            feats.append(F.leaky_relu(getattr(self, f"conv{i + 1}")(torch.cat(feats, 1)), 0.2))
        return x + 0.2 * self.conv5(torch.cat(feats, 1))


class RRDB(nn.Module):
    """Residual in residual dense block: three dense blocks, scaled (0.2) residual."""

    def __init__(self, nf: int = 64, gc: int = 32) -> None:
        super().__init__()
        self.rdb1, self.rdb2, self.rdb3 = DenseBlock(nf, gc), DenseBlock(nf, gc), DenseBlock(nf, gc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.2 * self.rdb3(self.rdb2(self.rdb1(x)))


class RRDBNet(nn.Module):
    """ESRGAN generator; ``scale`` = 2 ** n_up / unshuffle (input and output in [0, 1])."""

    def __init__(self, scale: int = 4, nf: int = 64, nb: int = 23, gc: int = 32, n_up: int = 2, unshuffle: int = 1):
        super().__init__()
        if 2**n_up != scale * unshuffle:
            raise ValueError(f"inconsistent RRDBNet config: 2**{n_up} upsampling with unshuffle {unshuffle}")
        self.scale = scale
        self.in_channels = 3
        self.out_channels = 3
        self.unshuffle = unshuffle
        self.n_up = n_up
        self.conv_first = nn.Conv2d(3 * unshuffle * unshuffle, nf, 3, padding=1)
        self.body = nn.Sequential(*[RRDB(nf, gc) for _ in range(nb)])
        self.conv_body = nn.Conv2d(nf, nf, 3, padding=1)
        for i in range(n_up):
            setattr(self, f"conv_up{i + 1}", nn.Conv2d(nf, nf, 3, padding=1))
        self.conv_hr = nn.Conv2d(nf, nf, 3, padding=1)
        self.conv_last = nn.Conv2d(nf, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        u = self.unshuffle
        if u > 1:  # pad to the unshuffle multiple (no shape branch: export stays dynamic), crop at the end
            x = F.pixel_unshuffle(F.pad(x, (0, (u - w % u) % u, 0, (u - h % u) % u), mode="replicate"), u)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        for i in range(self.n_up):
            up = F.interpolate(feat, scale_factor=2.0, mode="nearest")
            feat = F.leaky_relu(getattr(self, f"conv_up{i + 1}")(up), 0.2)
        out = self.conv_last(F.leaky_relu(self.conv_hr(feat), 0.2))
        return out[..., : h * self.scale, : w * self.scale] if u > 1 else out


register_arch(ArchSpec("rrdb", RRDBNet, task="sr", defaults={"scale": 4, "nf": 64, "nb": 23, "gc": 32, "n_up": 2}))
