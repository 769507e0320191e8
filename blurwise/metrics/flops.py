"""Compute accounting: MACs/FLOPs via ``torch.utils.flop_counter.FlopCounterMode`` and params.

Convention: FLOPs = 2 x MACs, always reported with the input size they were measured at.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class Compute:
    """MACs, FLOPs and parameters of one forward pass at a given input size."""

    macs: int
    flops: int
    params: int
    input_shape: tuple[int, ...]

    def __str__(self) -> str:
        shape = "x".join(str(s) for s in self.input_shape)
        return (
            f"{self.macs / 1e9:.2f} GMACs ({self.flops / 1e9:.2f} GFLOPs) at input {shape}, "
            f"{self.params / 1e3:.1f}K params"
        )


def count_flops(model: nn.Module, input_shape: tuple[int, ...], *extra: torch.Tensor) -> int:
    """FLOPs (2 x MACs) of one forward pass of ``model`` on a zero tensor of ``input_shape``."""
    p = next(iter(model.parameters()), None)
    dev = p.device if p is not None else torch.device("cpu")
    x = torch.zeros(input_shape, device=dev)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(x, *extra)
    return int(counter.get_total_flops())


def count_macs(model: nn.Module, input_shape: tuple[int, ...], *extra: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass (FLOPs / 2)."""
    return count_flops(model, input_shape, *extra) // 2


def compute(model: nn.Module, input_shape: tuple[int, ...]) -> Compute:
    """MACs, FLOPs and parameter count at ``input_shape`` (NCHW)."""
    from blurwise.models.registry import count_params

    flops = count_flops(model, input_shape)
    return Compute(macs=flops // 2, flops=flops, params=count_params(model), input_shape=tuple(input_shape))
