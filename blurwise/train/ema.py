"""Exponential moving average of model weights, the copy that validation and export use."""

from __future__ import annotations

import copy

import torch
from torch import nn


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """``ema <- decay * ema + (1 - decay) * model`` for float parameters and buffers; other buffers copied."""
    src = model.state_dict()
    for name, dst in ema.state_dict().items():
        s = src[name].detach()
        if dst.is_floating_point():
            dst.mul_(decay).add_(s.to(dst.dtype), alpha=1.0 - decay)
        else:
            dst.copy_(s)


def ema_decay(decay: float, step: int) -> float:
    """Warm-up of the decay, ``min(decay, (1 + step) / (10 + step))``: early averages forget the init fast."""
    return min(decay, (1.0 + step) / (10.0 + step))


class EMA:
    """A frozen copy of ``model`` tracking its weights with :func:`ema_update` (call :meth:`update` per step)."""

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    def update(self, model: nn.Module, step: int) -> None:
        """Fold the current weights of ``model`` in, with the warmed-up decay for ``step``."""
        ema_update(self.module, model, ema_decay(self.decay, step))

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights (same keys as the model's state dict)."""
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore averaged weights (from a checkpoint)."""
        self.module.load_state_dict(state)
