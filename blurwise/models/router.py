"""Patch router: predicts, per routing patch, what sending it to the light model costs in quality.

Input: the grid of per-patch features of :func:`blurwise.routing.features.patch_features`
(``in_channels`` = len(FEATURES): defocus-map statistics and luma texture statistics), as a
``(N, F, rows, cols)`` tensor. Output: ``(N, 1, rows, cols)``, the predicted ``asinh(dMSE / 2)``,
where dMSE is the light model's mean squared Y error minus the heavy model's on that patch (8-bit
scale): below zero the light model is as good, large where the heavy model's detail matters.
A 3x3 first layer lets each patch see its neighbours' features; the rest are 1x1 layers. About
4K MACs per patch (~260 per LR pixel at 4 px patches): free next to the SR models.
"""

from __future__ import annotations

import torch
from torch import nn

from blurwise.models.registry import ArchSpec, Variant, register_arch, register_variant
from blurwise.routing.features import FEATURES


class PatchRouter(nn.Module):
    """Small CNN over the patch-feature grid; input features are standardised by stored statistics."""

    def __init__(self, in_channels: int = len(FEATURES), hidden: int = 32, depth: int = 2) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = 1
        self.scale = 1
        # feature standardisation, set from the training data (saved with the weights)
        self.register_buffer("mean", torch.zeros(1, in_channels, 1, 1))
        self.register_buffer("std", torch.ones(1, in_channels, 1, 1))
        layers: list[nn.Module] = [nn.Conv2d(in_channels, hidden, 3, padding=1, padding_mode="replicate"), nn.ReLU()]
        for _ in range(depth - 1):
            layers += [nn.Conv2d(hidden, hidden, 1), nn.ReLU()]
        layers.append(nn.Conv2d(hidden, 1, 1))
        self.body = nn.Sequential(*layers)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.body((f - self.mean) / self.std)


register_arch(
    ArchSpec(
        "patch-router",
        PatchRouter,
        task="router",
        defaults={"in_channels": len(FEATURES), "hidden": 32, "depth": 2},
        in_channels=len(FEATURES),
    )
)
for _s in (2, 4):
    register_variant(
        Variant(
            f"router-x{_s}",
            "patch-router",
            {"in_channels": len(FEATURES), "hidden": 32, "depth": 2},
            task="router",
            scale=_s,
            weights=f"router-x{_s}.safetensors",
            description=f"learned patch router of routed SR x{_s}: light-route quality loss from map + texture",
        )
    )
