"""Small NAFNet-style deblurring baseline (after Chen et al., ECCV 2022), width 16.

U-Net of NAF blocks: layer norm, 1x1 expand, depthwise 3x3, SimpleGate (split channels, multiply),
simplified channel attention (global pool + 1x1), 1x1 project; then a gated 1x1 feed-forward.
Strided 2x2 convs go down, 1x1 conv + pixel shuffle go up, skips are added; a global residual
adds the input. Input is padded to a multiple of ``2 ** len(enc_blocks)`` and the output cropped.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from blurwise.models.registry import ArchSpec, Variant, register_arch, register_variant
from blurwise.models.safmn import LayerNorm2d


class SimpleGate(nn.Module):
    """Split the channels in two halves and multiply them (a nonlinearity without activation)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return a * b


class NAFBlock(nn.Module):
    """Nonlinear-activation-free block: gated depthwise conv with channel attention, then a gated FFN."""

    def __init__(self, c: int, expand: int = 2) -> None:
        super().__init__()
        d = c * expand
        self.norm1 = LayerNorm2d(c)
        self.conv1 = nn.Conv2d(c, d, 1)
        self.dw = nn.Conv2d(d, d, 3, padding=1, groups=d)
        self.gate = SimpleGate()
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(d // 2, d // 2, 1))
        self.conv2 = nn.Conv2d(d // 2, c, 1)
        self.norm2 = LayerNorm2d(c)
        self.ffn1 = nn.Conv2d(c, d, 1)
        self.ffn2 = nn.Conv2d(d // 2, c, 1)
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.gate(self.dw(self.conv1(self.norm1(x))))
        x = x + self.conv2(y * self.sca(y)) * self.beta
        return x + self.ffn2(self.gate(self.ffn1(self.norm2(x)))) * self.gamma


class NAFNet(nn.Module):
    """Encoder-decoder of NAF blocks with additive skips and a global residual."""

    def __init__(
        self,
        width: int = 16,
        enc_blocks: tuple[int, ...] = (1, 1, 2),
        middle_blocks: int = 2,
        dec_blocks: tuple[int, ...] = (1, 1, 1),
    ) -> None:
        super().__init__()
        if len(enc_blocks) != len(dec_blocks):
            raise ValueError("enc_blocks and dec_blocks must have the same length")
        self.in_channels = 3
        self.out_channels = 3
        self.scale = 1
        self.multiple = 2 ** len(enc_blocks)
        self.intro = nn.Conv2d(3, width, 3, padding=1)
        self.ending = nn.Conv2d(width, 3, 3, padding=1)
        self.encoders, self.downs, self.ups, self.decoders = (nn.ModuleList() for _ in range(4))
        c = width
        for n in enc_blocks:
            self.encoders.append(nn.Sequential(*[NAFBlock(c) for _ in range(n)]))
            self.downs.append(nn.Conv2d(c, 2 * c, 2, stride=2))
            c *= 2
        self.middle = nn.Sequential(*[NAFBlock(c) for _ in range(middle_blocks)])
        for n in dec_blocks:
            self.ups.append(nn.Sequential(nn.Conv2d(c, 2 * c, 1, bias=False), nn.PixelShuffle(2)))
            c //= 2
            self.decoders.append(nn.Sequential(*[NAFBlock(c) for _ in range(n)]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = self.multiple
        ph, pw = (m - h % m) % m, (m - w % m) % m
        inp = F.pad(x, (0, pw, 0, ph), mode="replicate")  # no branch: keeps export shapes dynamic
        f = self.intro(inp)
        skips = []
        for enc, down in zip(self.encoders, self.downs, strict=True):
            f = enc(f)
            skips.append(f)
            f = down(f)
        f = self.middle(f)
        for dec, up, skip in zip(self.decoders, self.ups, reversed(skips), strict=True):
            f = dec(up(f) + skip)
        return (self.ending(f) + inp)[..., :h, :w]


register_arch(ArchSpec("nafnet", NAFNet, task="deblur", defaults={"width": 16}))
register_variant(
    Variant(
        "nafnet16",
        "nafnet",
        {"width": 16, "enc_blocks": (1, 1, 2), "middle_blocks": 2, "dec_blocks": (1, 1, 1)},
        task="deblur",
        weights="nafnet16.safetensors",
        description="Small NAFNet-style U-Net baseline, width 16",
    )
)
