"""SAFMN-style efficient SR (after Sun et al., ICCV 2023): spatially-adaptive feature modulation.

Each block normalises the features, splits the channels into ``levels`` groups and runs a depthwise
3x3 conv on each group at a different scale (full resolution, then max-pooled by 2, 4, 8 and
upsampled back); a 1x1 conv aggregates the groups into a GELU-activated modulation map that
multiplies the features. A convolutional channel mixer (3x3 expand, GELU, 1x1 project) follows.
The tail is a single 3x3 conv and a pixel shuffle. ~240K params at ``dim=36, n_blocks=8`` (x4).

Pooling uses ``ceil_mode`` and a nearest upsample cropped back, so any input size works; the layer
norm runs in float32 so the network is fp16/bf16-safe.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from blurwise.models.registry import ArchSpec, Variant, register_arch, register_variant


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of NCHW features, computed in float32 (fp16-safe)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        mu = xf.mean(1, keepdim=True)
        var = (xf - mu).pow(2).mean(1, keepdim=True)
        y = (xf - mu) / torch.sqrt(var + self.eps)
        return (y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)).to(x.dtype)


class SAFM(nn.Module):
    """Spatially-adaptive feature modulation: multi-scale depthwise branches -> modulation map."""

    def __init__(self, dim: int, levels: int = 4) -> None:
        super().__init__()
        if dim % levels:
            raise ValueError(f"dim {dim} must be divisible by levels {levels}")
        self.levels = levels
        c = dim // levels
        self.dw = nn.ModuleList(nn.Conv2d(c, c, 3, padding=1, groups=c) for _ in range(levels))
        self.aggr = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        outs = []
        for i, (xi, conv) in enumerate(zip(x.chunk(self.levels, dim=1), self.dw, strict=True)):
            if i == 0:
                outs.append(conv(xi))
                continue
            k = 2**i
            y = conv(F.max_pool2d(xi, k, k, ceil_mode=True))
            outs.append(F.interpolate(y, scale_factor=float(k), mode="nearest")[..., :h, :w])
        return x * F.gelu(self.aggr(torch.cat(outs, dim=1)))


class CCM(nn.Module):
    """Convolutional channel mixer: 3x3 conv expanding by ``ffn``, GELU, 1x1 conv back."""

    def __init__(self, dim: int, ffn: float = 2.0) -> None:
        super().__init__()
        hidden = int(dim * ffn)
        self.body = nn.Sequential(nn.Conv2d(dim, hidden, 3, padding=1), nn.GELU(), nn.Conv2d(hidden, dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class SAFMBlock(nn.Module):
    """Pre-norm residual block: x + SAFM(norm(x)), then x + CCM(norm(x))."""

    def __init__(self, dim: int, ffn: float = 2.0, levels: int = 4) -> None:
        super().__init__()
        self.norm1 = LayerNorm2d(dim)
        self.safm = SAFM(dim, levels)
        self.norm2 = LayerNorm2d(dim)
        self.ccm = CCM(dim, ffn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.safm(self.norm1(x))
        return x + self.ccm(self.norm2(x))


class SAFMN(nn.Module):
    """Efficient SR network: conv head, ``n_blocks`` SAFM blocks with a global skip, pixel-shuffle tail."""

    def __init__(self, scale: int = 4, dim: int = 36, n_blocks: int = 8, ffn: float = 2.0, levels: int = 4) -> None:
        super().__init__()
        if scale not in (1, 2, 3, 4, 8):
            raise ValueError(f"SAFMN supports scales 1, 2, 3, 4 and 8, not {scale}")
        self.scale = scale
        self.in_channels = 3
        self.out_channels = 3
        self.head = nn.Conv2d(3, dim, 3, padding=1)
        self.body = nn.Sequential(*[SAFMBlock(dim, ffn, levels) for _ in range(n_blocks)])
        self.tail = nn.Sequential(nn.Conv2d(dim, 3 * scale * scale, 3, padding=1), nn.PixelShuffle(scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.head(x)
        return self.tail(self.body(f) + f)


register_arch(ArchSpec("safmn", SAFMN, task="sr", defaults={"scale": 4, "dim": 36, "n_blocks": 8}))

for _s in (2, 3, 4):
    register_variant(
        Variant(
            f"safmn-x{_s}",
            "safmn",
            {"scale": _s, "dim": 36, "n_blocks": 8},
            task="sr",
            scale=_s,
            weights=f"safmn-x{_s}.safetensors",
            description="SAFMN-style efficient SR (36 ch, 8 blocks, ~230K params)",
        )
    )
