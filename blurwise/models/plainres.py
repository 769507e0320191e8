"""Plain ResNet deblurrer: the equal-MACs baseline for LPRN (no recursion, no weight sharing, no attention).

Same building blocks and the same pixel-unshuffle front end as LPRN's default, with ``blocks``
chosen so the MACs per pixel match LPRN (T=6, 32 channels, 4 blocks) within ~2%; it has about
5x LPRN's parameters. Output size equals input size for any (odd) size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from blurwise.models.lprn import ResBlock
from blurwise.models.registry import ArchSpec, Variant, register_arch, register_variant


class PlainResNet(nn.Module):
    """conv -> ``blocks`` residual blocks -> conv predicting a residual added to the (unshuffled) input."""

    def __init__(self, channels: int = 32, blocks: int = 28, unshuffle: int = 2) -> None:
        super().__init__()
        self.in_channels = 3
        self.out_channels = 3
        self.scale = 1
        self.unshuffle = unshuffle
        c_img = 3 * unshuffle * unshuffle
        self.conv_in = nn.Conv2d(c_img, channels, 3, padding=1)
        self.blocks = nn.Sequential(*[ResBlock(channels) for _ in range(blocks)])
        self.conv_out = nn.Conv2d(channels, c_img, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        u = self.unshuffle
        ph, pw = (u - h % u) % u, (u - w % u) % u
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")  # no branch: keeps ONNX/export shapes dynamic
        z = F.pixel_unshuffle(x, u) if u > 1 else x
        z = z + self.conv_out(self.blocks(F.relu(self.conv_in(z))))
        y = F.pixel_shuffle(z, u) if u > 1 else z
        return y[..., :h, :w]


register_arch(ArchSpec("plainres", PlainResNet, task="deblur", defaults={"channels": 32, "blocks": 28}))
register_variant(
    Variant(
        "plainres",
        "plainres",
        {},
        task="deblur",
        weights="plainres.safetensors",
        description="Plain ResNet baseline with LPRN's MACs (28 blocks, 32 ch, no weight sharing)",
    )
)
