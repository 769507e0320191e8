"""LPRN: lightweight progressive residual network for fast deblurring (after the seed abstract).

A shallow residual network (input conv on ``concat(blurred, previous estimate)``, ``blocks`` residual
blocks at ``channels`` channels, output conv predicting a residual added to the previous estimate)
is applied ``stages`` times **with shared weights**. A feature recalibration module fuses features
of the blurred input (one conv, computed once) with each stage's features: squeeze-excitation
channel weighting over the concatenation (``channel``), then a learned per-pixel softmax choosing
between the two (``spatial``); ``recalib = none | channel | spatial | both``.

``unshuffle=2`` runs every stage on a pixel-unshuffled (half-resolution, 4x channels) image: 4x
fewer MACs per pixel and a 2x larger receptive field, which is what makes 1280x720 fast on a CPU.
``shared=False`` is the unrolled ablation (same MACs, ``stages`` x the parameters).
Output size equals input size for any (odd) size: the input is padded to the unshuffle multiple.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from blurwise.models.registry import ArchSpec, Variant, register_arch, register_variant

if TYPE_CHECKING:
    from blurwise.tiling import Tiler

RECALIB = ("none", "channel", "spatial", "both")


class ResBlock(nn.Module):
    """conv-ReLU-conv with identity skip (no normalisation)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class Recalibration(nn.Module):
    """Fuse input-image features ``a`` with stage features ``b``: SE over concat(a, b), then per-pixel selection."""

    def __init__(self, c: int, mode: str = "both", reduction: int = 4) -> None:
        super().__init__()
        if mode not in RECALIB:
            raise ValueError(f"recalib must be one of {RECALIB}, not {mode!r}")
        self.channel = mode in ("channel", "both")
        self.spatial = mode in ("spatial", "both")
        if self.channel:
            self.se = nn.Sequential(
                nn.AdaptiveAvgPool2d(1),
                nn.Conv2d(2 * c, 2 * c // reduction, 1),
                nn.ReLU(inplace=True),
                nn.Conv2d(2 * c // reduction, 2 * c, 1),
                nn.Sigmoid(),
            )
        if self.spatial:
            self.select = nn.Conv2d(2 * c, 2, 3, padding=1)

    def gate(self, z_mean: torch.Tensor) -> torch.Tensor:
        """The channel weights (N, 2c, 1, 1) of concat(a, b) from its whole-image mean ``z_mean`` (N, 2c, 1, 1)."""
        return self.se[1:](z_mean)

    def forward(self, a: torch.Tensor, b: torch.Tensor, gate: torch.Tensor | None = None) -> torch.Tensor:
        """Fused features; ``gate`` replaces the channel weights pooled from ``a`` and ``b`` (tiled inference)."""
        z = torch.cat([a, b], dim=1)
        if self.channel:
            z = z * (self.se(z) if gate is None else gate)
        za, zb = z.chunk(2, dim=1)
        if not self.spatial:
            return za + zb
        w = torch.softmax(self.select(z), dim=1)
        return za * w[:, :1] + zb * w[:, 1:]


class Stage(nn.Module):
    """One progressive step: features of concat(blurred, estimate) -> res blocks -> recalib -> residual."""

    def __init__(self, c_img: int, c: int, blocks: int, recalib: str) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(2 * c_img, c, 3, padding=1)
        self.blocks = nn.Sequential(*[ResBlock(c) for _ in range(blocks)])
        self.recalib = Recalibration(c, recalib)
        self.conv_out = nn.Conv2d(c, c_img, 3, padding=1)

    def features(self, blurred: torch.Tensor, est: torch.Tensor) -> torch.Tensor:
        """The stage's features of concat(blurred, estimate), before recalibration."""
        return self.blocks(F.relu(self.conv_in(torch.cat([blurred, est], dim=1))))

    def forward(
        self, blurred: torch.Tensor, est: torch.Tensor, f_img: torch.Tensor, gate: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The next estimate; ``gate``: the recalibration's channel weights, if computed beforehand (tiles)."""
        return est + self.conv_out(self.recalib(f_img, self.features(blurred, est), gate))


class _StageIO(nn.Module):
    """One stage as a local module of concat(blurred, estimate) (unshuffled), for :class:`blurwise.tiling.Tiler`:
    the fused features concat(f_img, f) when ``gate`` is None and ``features`` is set, else the next estimate."""

    def __init__(self, feat_img: nn.Module, stage: Stage, gate: torch.Tensor | None, features: bool) -> None:
        super().__init__()
        self.feat_img, self.stage, self.gate, self.features = feat_img, stage, gate, features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blurred, est = x.chunk(2, dim=1)
        f_img = F.relu(self.feat_img(blurred))
        if self.features:
            return torch.cat([f_img, self.stage.features(blurred, est)], dim=1)
        gate = None if self.gate is None else self.gate.to(x.dtype)
        return self.stage(blurred, est, f_img, gate)


class LPRN(nn.Module):
    """Progressive residual deblurring network; ``forward(x, stages=None, return_all=False)``."""

    def __init__(
        self,
        stages: int = 6,
        channels: int = 32,
        blocks: int = 4,
        recalib: str = "both",
        shared: bool = True,
        unshuffle: int = 2,
    ) -> None:
        super().__init__()
        self.in_channels = 3
        self.out_channels = 3
        self.scale = 1
        self.stages = stages
        self.shared = shared
        self.unshuffle = unshuffle
        c_img = 3 * unshuffle * unshuffle
        self.feat_img = nn.Conv2d(c_img, channels, 3, padding=1)  # input-image features, computed once
        self.body = nn.ModuleList(Stage(c_img, channels, blocks, recalib) for _ in range(1 if shared else stages))

    def forward(
        self, x: torch.Tensor, stages: int | None = None, return_all: bool = False
    ) -> torch.Tensor | list[torch.Tensor]:
        """Deblur ``x`` (N3HW in [0, 1]) with ``stages`` steps (default: all); ``return_all`` gives every step."""
        k = self._stage_count(stages)
        h, w = x.shape[-2:]
        u = self.unshuffle
        blurred = self._unshuffled(x)
        f_img = F.relu(self.feat_img(blurred))
        est = blurred
        outs = []
        for t in range(k):
            est = self.body[0 if self.shared else t](blurred, est, f_img)
            if return_all or t == k - 1:
                y = F.pixel_shuffle(est, u) if u > 1 else est
                outs.append(y[..., :h, :w])
        return outs if return_all else outs[-1]

    def _stage_count(self, stages: int | None) -> int:
        k = self.stages if stages is None else int(stages)
        if k < 1 or (not self.shared and k > self.stages):
            raise ValueError(f"stages must be in 1..{self.stages}, not {k}")
        return k

    def _unshuffled(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` padded (replicate) to the unshuffle multiple and pixel-unshuffled."""
        h, w = x.shape[-2:]
        u = self.unshuffle
        ph, pw = (u - h % u) % u, (u - w % u) % u
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")  # no branch: keeps ONNX/export shapes dynamic
        return F.pixel_unshuffle(x, u) if u > 1 else x

    def tiled_forward(self, x: torch.Tensor, tiler: Tiler, stages: int | None = None) -> torch.Tensor:
        """``forward(x, stages)`` for ``x`` [1, 3, H, W] computed in ``tiler``'s tiles (what ``run_tiled`` calls).

        The recalibration's squeeze-excitation pools over the whole image, so tiling the network as a whole would
        give every tile its own channel weights (the shipped lprn: up to 104/255 off the untiled output on a
        1280x720 frame at 64 px tiles). Here each stage is tiled on its own: a first pass sums the fused features
        over the tiles' cores into the whole-image mean that sets the channel weights, a second computes the next
        estimate with them. The tiles overlap by at least a stage's receptive field (``2 * (3 + 2 * blocks)``
        unshuffled pixels: 44 input pixels for lprn), so the output equals ``forward``'s up to float rounding. The
        price is work: two passes per stage (one without a channel part) over overlapping windows, 5-7x the
        untiled CPU time for lprn at 1280x720 with 64-256 px tiles; tiles are for memory, not speed.
        """
        k = self._stage_count(stages)
        h, w = x.shape[-2:]
        u = self.unshuffle
        radius = 3 + 2 * len(self.body[0].blocks)  # 3x3 convs on a stage's longest path: feat/conv_in, blocks, out
        t = tiler.scaled(u)
        t = replace(t, pad=max(t.pad, 2 * radius))
        blurred = self._unshuffled(x)
        est = blurred
        for i in range(k):
            stage = self.body[0 if self.shared else i]
            inp = torch.cat([blurred, est], dim=1)
            gate = None
            if stage.recalib.channel:
                z_mean = t.mean(_StageIO(self.feat_img, stage, None, features=True), inp)
                gate = stage.recalib.gate(z_mean)
            est = t.map(_StageIO(self.feat_img, stage, gate, features=False), inp)
        y = F.pixel_shuffle(est, u) if u > 1 else est
        return y[..., :h, :w]


register_arch(ArchSpec("lprn", LPRN, task="deblur", defaults={"stages": 6, "channels": 32, "blocks": 4}))


def _lprn(name: str, desc: str, default: bool = False, **cfg: object) -> None:
    weights = f"{name}.safetensors"
    register_variant(Variant(name, "lprn", dict(cfg), "deblur", weights=weights, default=default, description=desc))


_lprn("lprn", "LPRN, 6 shared stages, recalibration channel+spatial (shipped default)", True, stages=6, recalib="both")
for _t in (5, 7):
    _lprn(f"lprn-t{_t}", f"LPRN ablation: {_t} stages", stages=_t, recalib="both")
for _r in ("none", "channel", "spatial"):
    _lprn(f"lprn-recal-{_r}", f"LPRN ablation: recalibration {_r}", stages=6, recalib=_r)
_lprn("lprn-unrolled", "LPRN ablation: 6 stages without weight sharing (same MACs, 6x params)", stages=6, shared=False)
