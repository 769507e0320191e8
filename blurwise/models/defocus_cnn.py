"""DefocusCNN: a small fully convolutional network that predicts the defocus sigma map directly.

A three-level U-Net (full, 1/2, 1/4 resolution; 16/32/48 channels) so that each output pixel sees
~50 px of context: blur is only measurable at edges and textures, and the coarse levels carry the
estimate into the flat areas around them. A fourth ``channels`` entry adds a 1/8 level (residual on
the 1/4 one, ~100 px of context) for LR maps, where defocus fades slowly across a small image.
Input RGB in [0, 1] (optionally a 4th hint channel, e.g. a flat-region map), output one channel,
Gaussian sigma in pixels of the input image, >= 0 (softplus). Three levels: ~81K parameters, ~21K
MACs per pixel (about 1/45 of the heavy x4 SR model per LR pixel); four (64 ch): ~174K, ~24K.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from blurwise.models.registry import ArchSpec, Variant, register_arch, register_variant


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.LeakyReLU(0.1, inplace=True))


class DefocusCNN(nn.Module):
    """Per-pixel defocus sigma (px) from an image; any input size (padded to a multiple of 4 inside)."""

    def __init__(self, in_channels: int = 3, channels: tuple[int, ...] = (16, 32, 48)) -> None:
        super().__init__()
        if len(channels) not in (3, 4):
            raise ValueError(f"DefocusCNN takes 3 or 4 channel widths (levels), got {tuple(channels)}")
        c1, c2, c3 = channels[:3]
        self.in_channels = in_channels
        self.out_channels = 1
        self.scale = 1
        self.enc1 = nn.Sequential(_conv(in_channels, c1), _conv(c1, c1))
        self.enc2 = nn.Sequential(_conv(c1, c2, stride=2), _conv(c2, c2))
        self.enc3 = nn.Sequential(_conv(c2, c3, stride=2), _conv(c3, c3, stride=1))
        self.up3 = _conv(c3, c2)
        self.dec2 = _conv(c2, c2)
        self.up2 = _conv(c2, c1)
        self.dec1 = _conv(c1, c1)
        self.head = nn.Conv2d(c1, 1, 3, padding=1)
        self.multiple = 4
        if len(channels) == 4:  # 1/8 level, added to the 1/4 features (zero-initialised: a no-op at first)
            c4 = channels[3]
            self.enc4 = nn.Sequential(_conv(c3, c4, stride=2), _conv(c4, c4))
            self.up4 = nn.Conv2d(c4, c3, 3, padding=1)
            nn.init.zeros_(self.up4.weight)
            nn.init.zeros_(self.up4.bias)
            self.multiple = 8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.multiple, (-w) % self.multiple
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")  # unconditional: keeps ONNX shapes dynamic
        x = x - 0.5 if x.shape[1] == 3 else torch.cat([x[:, :3] - 0.5, x[:, 3:]], dim=1)
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        if self.multiple == 8:
            e3 = e3 + self.up4(F.interpolate(self.enc4(e3), scale_factor=2.0, mode="bilinear", align_corners=False))
        d2 = self.dec2(self.up3(F.interpolate(e3, scale_factor=2.0, mode="bilinear", align_corners=False)) + e2)
        d1 = self.dec1(self.up2(F.interpolate(d2, scale_factor=2.0, mode="bilinear", align_corners=False)) + e1)
        out = F.softplus(self.head(d1))
        return out[..., :h, :w]


register_arch(
    ArchSpec("defocus-cnn", DefocusCNN, task="defocus", defaults={"in_channels": 3, "channels": (16, 32, 48)})
)
register_variant(
    Variant(
        "defocus-cnn",
        "defocus-cnn",
        {"in_channels": 3, "channels": (16, 32, 48)},
        task="defocus",
        scale=1,
        weights="defocus-cnn.safetensors",
        default=True,
        description="learned defocus-map estimator (sigma px), < 100K params, trained on full-res and x2/x4 LR renders",
    )
)
for _s in (2, 4):  # per-scale estimators for routed SR (blurwise.defocus.learned --scale S)
    register_variant(
        Variant(
            f"defocus-cnn-x{_s}",
            "defocus-cnn",
            {"in_channels": 3, "channels": (16, 32, 48)},
            task="defocus",
            scale=1,
            weights=f"defocus-cnn-x{_s}.safetensors",
            description=f"defocus-cnn fine-tuned on LR x{_s} renders of training images: the map of routed SR x{_s}",
        )
    )
