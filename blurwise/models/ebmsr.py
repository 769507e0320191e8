"""EBM-SR (Efficient Blur-Matching SR): the light SR route for defocused regions.

Input: 4 channels, the RGB LR image and the defocus sigma map in LR pixels (``in_channels = 4``).
Output: bicubic upsampling of the RGB plus a learned residual from a tiny pixel-shuffle net whose
features are modulated per pixel by the sigma map (SFT: ``f * (1 + gamma(sigma)) + beta(sigma)``),
so the same weights can add detail where the image is sharp and stay smooth where it is blurred.
About 3% of the MACs per pixel of the ``edsr-s`` teacher it is distilled from (see ``distill_loss``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from blurwise.metrics.imresize import bicubic_phase_taps
from blurwise.models.registry import ArchSpec, Variant, register_arch, register_variant


class SFT(nn.Module):
    """Spatial feature transform: per-pixel scale and shift of features predicted from a condition."""

    def __init__(self, channels: int, cond_channels: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(cond_channels, 2 * channels, 1)

    def forward(self, f: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.proj(cond).chunk(2, dim=1)
        return f * (1 + gamma) + beta


class SFTBlock(nn.Module):
    """Residual block ``f + act(conv(SFT(f, cond)))``."""

    def __init__(self, channels: int, cond_channels: int) -> None:
        super().__init__()
        self.sft = SFT(channels, cond_channels)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.act = nn.LeakyReLU(0.1, inplace=True)

    def forward(self, f: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return f + self.act(self.conv(self.sft(f, cond)))


class BicubicPhases(nn.Conv2d):
    """Fixed grouped conv (not trained, not in the state dict): bicubic upsampling of ``channels`` by
    ``scale`` as ``s*s`` sub-pixel channels per input channel, ready for a pixel shuffle, equal to
    ``F.interpolate(mode="bicubic", align_corners=False)`` (2 px replicate pad). It shares the tail's pixel
    shuffle instead of filtering the HR image and adding two HR images (a third of EBM-SR's CPU time at x4).
    A conv module, so the MAC counters see its cost."""

    def __init__(self, scale: int, channels: int = 3) -> None:
        s2 = scale * scale
        super().__init__(channels, channels * s2, 5, padding=2, padding_mode="replicate", groups=channels, bias=False)
        del self.weight
        taps = bicubic_phase_taps(scale, a=-0.75).float()  # PyTorch's bicubic kernel
        self.register_buffer("weight", taps.repeat(channels, 1, 1, 1), persistent=False)


SIGMA_MAX_HR = 6.0  # largest Gaussian sigma (HR px) of the defocused-SR training renders (max CoC ~25 px)


class EBMSR(nn.Module):
    """Bicubic + a sigma-conditioned residual predicted at LR and pixel-shuffled to HR."""

    def __init__(
        self,
        scale: int = 4,
        channels: int = 24,
        n_blocks: int = 3,
        cond_channels: int = 16,
        sigma_max: float | None = None,
        out_gain: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.scale = scale
        self.in_channels = 4
        self.out_channels = 3
        # The sigma input is clamped to the blur range of the training renders (sigma_HR <= SIGMA_MAX_HR):
        # beyond it the conditioning is out of distribution (an over-estimated map made the output
        # 2.7 dB worse on a real photo), while the content there is so blurred that SR is easy anyway.
        self.sigma_max = float(sigma_max) if sigma_max is not None else SIGMA_MAX_HR / scale
        self.cond = nn.Sequential(
            nn.Conv2d(1, cond_channels, 1),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(cond_channels, cond_channels, 1),
            nn.LeakyReLU(0.1, inplace=True),
        )
        self.head = nn.Conv2d(4, channels, 3, padding=1)
        self.blocks = nn.ModuleList(SFTBlock(channels, cond_channels) for _ in range(n_blocks))
        self.tail = nn.Sequential(nn.Conv2d(channels, 3 * scale * scale, 3, padding=1), nn.PixelShuffle(scale))
        self.bicubic = BicubicPhases(scale)  # fixed LR filters, shares the tail's pixel shuffle
        # Per-channel output gain measured after training (``set_output_gain``; kept in the config, not the weights).
        self.out_gain: tuple[float, float, float] | None = None
        if out_gain is not None:
            self.set_output_gain(out_gain)
        with torch.no_grad():  # start close to plain bicubic
            self.tail[0].weight.mul_(0.1)
            self.tail[0].bias.zero_()

    def shift_output_(self, offset: Sequence[float]) -> None:
        """Add a constant per RGB channel (in [0, 1] units) to every output pixel, via the tail's bias.

        Folds a measured mean error into the weights (``python -m blurwise.train.router debias``): a
        uniform offset costs most where the image is defocused and both models are otherwise nearly exact.
        """
        if len(offset) != 3:
            raise ValueError(f"offset needs one value per RGB channel, got {len(offset)}")
        s2 = self.scale * self.scale
        with torch.no_grad():
            for c, v in enumerate(offset):
                self.tail[0].bias[c * s2 : (c + 1) * s2] += float(v)

    def set_output_gain(self, gain: Sequence[float]) -> None:
        """Multiply every output pixel by a constant per RGB channel (a measured contrast correction).

        Stored in the model's config (``out_gain``) rather than its state dict, so weights files without one
        load unchanged; ``shift_output_`` adds the offset that goes with it.
        """
        if len(gain) != 3:
            raise ValueError(f"gain needs one value per RGB channel, got {len(gain)}")
        self.out_gain = tuple(float(g) for g in gain)  # type: ignore[assignment]
        self.register_buffer("gain", torch.tensor(self.out_gain).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != 4:
            raise ValueError(f"EBM-SR expects 4 input channels (RGB + sigma map), got {x.shape[1]}")
        rgb = x[:, :3]
        sigma = x[:, 3:].clamp(0.0, self.sigma_max)
        cond = self.cond(sigma)
        f = self.head(torch.cat([rgb, sigma], dim=1))
        if torch.is_grad_enabled():
            for blk in self.blocks:
                f = blk(f, cond)
            out = self.tail[1](self.tail[0](f) + self.bicubic(rgb))  # one pixel shuffle for residual and bicubic
            return out if self.out_gain is None else out * self.gain
        # Inference: the same arithmetic in place. At 24 channels the element-wise ops are memory-bound, and
        # every fresh feature-sized tensor costs more to allocate and touch than to compute (10-20% of the
        # model's CPU time on routed tiles). Autograd needs the out-of-place form above. The one exception is the
        # modulated input of each conv: ``beta`` is a channel slice of the projection, so modulating it in place
        # would hand the conv a strided view that it copies first; a fresh tensor is written once instead
        # (2-6% faster, same numbers).
        for blk in self.blocks:
            gamma, beta = blk.sft.proj(cond).chunk(2, dim=1)
            f.add_(F.leaky_relu_(blk.conv(torch.addcmul(beta, f, gamma.add_(1.0))), blk.act.negative_slope))
        out = self.tail[1](self.tail[0](f).add_(self.bicubic(rgb)))
        return out if self.out_gain is None else out.mul_(self.gain)


def grow_blocks(model: EBMSR, n_blocks: int) -> EBMSR:
    """A copy of ``model`` with ``n_blocks`` SFT blocks, the new ones spread evenly after the trained ones and
    initialised as exact identities (zero conv and modulation): the same output, with more capacity to
    fine-tune where the student has levelled off (``python -m blurwise.train.light_tune --blocks N``)."""
    old = list(model.blocks)
    if n_blocks < len(old):
        raise ValueError(f"grow_blocks adds blocks: the model has {len(old)}, asked for {n_blocks}")
    channels, cond = old[0].conv.in_channels, old[0].sft.proj.in_channels
    blocks: list[nn.Module] = []
    added, per = 0, (n_blocks - len(old)) / len(old)
    for i, blk in enumerate(old):
        blocks.append(blk)
        for _ in range(round((i + 1) * per) - added):
            new = SFTBlock(channels, cond).to(blk.conv.weight.device)
            for conv in (new.conv, new.sft.proj):
                nn.init.zeros_(conv.weight)
                nn.init.zeros_(conv.bias)
            blocks.append(new)
            added += 1
    return _with_blocks(model, blocks)


def drop_block(model: EBMSR, index: int) -> EBMSR:
    """A copy of ``model`` without SFT block ``index`` (to trim a student back under a MACs budget)."""
    old = list(model.blocks)
    if len(old) < 2 or not 0 <= index < len(old):
        raise ValueError(f"no block {index} to drop from a model of {len(old)} blocks (one must stay)")
    return _with_blocks(model, [b for i, b in enumerate(old) if i != index])


def _with_blocks(model: EBMSR, blocks: list[nn.Module]) -> EBMSR:
    """A deep copy of ``model`` with these SFT blocks (copied too)."""
    keep, model.blocks = model.blocks, nn.ModuleList()
    try:
        out = copy.deepcopy(model)
    finally:
        model.blocks = keep
    out.blocks = nn.ModuleList(copy.deepcopy(b) for b in blocks)
    return out


# --------------------------------------------------------------------------- distillation loss


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with reflect padding (radius 3 sigma), any channel count."""
    r = max(1, int(3.0 * sigma + 0.5))
    t = torch.arange(-r, r + 1, device=x.device, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum()).to(x.dtype)
    c = x.shape[1]
    x = F.pad(x, (r, r, r, r), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


DISTILL_WEIGHTS = {"teacher": 1.0, "target": 0.5, "band": 1.0, "band_sigma": 1.0}


def distill_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    target: torch.Tensor,
    sigma: torch.Tensor | None = None,
    weights: Mapping[str, float] | None = None,
) -> torch.Tensor:
    """Blur-keeping distillation loss for EBM-SR (all images NCHW at HR, in [0, 1]).

    ``teacher * L1(student, teacher) + target * L1(student, defocused HR target)`` plus a band term:
    L1 between the Gaussian high-pass (``x - G_band_sigma * x``) of student and teacher, weighted per
    pixel by ``1 + sigma`` (``sigma``: the defocus map N1hw at any resolution, resized here). In
    defocused regions the teacher's high band is what the blur leaves, so this term penalises both
    sharpening artefacts and extra smoothing there. Zero when student == teacher == target.
    """
    w = {**DISTILL_WEIGHTS, **(weights or {})}
    loss = w["teacher"] * F.l1_loss(student, teacher) + w["target"] * F.l1_loss(student, target)
    if w["band"] > 0:
        band_s = student - _gaussian_blur(student, w["band_sigma"])
        band_t = teacher - _gaussian_blur(teacher, w["band_sigma"])
        diff = (band_s - band_t).abs()
        if sigma is not None:
            if sigma.dim() == 3:
                sigma = sigma.unsqueeze(1)
            sig = F.interpolate(sigma.to(diff.dtype), size=diff.shape[-2:], mode="bilinear", align_corners=False)
            diff = diff * (1.0 + sig.clamp_min(0.0))
        loss = loss + w["band"] * diff.mean()
    return loss


register_arch(
    ArchSpec(
        "ebmsr",
        EBMSR,
        task="ebmsr",
        defaults={"scale": 4, "channels": 24, "n_blocks": 3, "cond_channels": 16},
        in_channels=4,
    )
)

for _s in (2, 4):
    register_variant(
        Variant(
            f"ebmsr-x{_s}",
            "ebmsr",
            {"scale": _s},
            task="ebmsr",
            scale=_s,
            weights=f"ebmsr-x{_s}.safetensors",
            default=True,
            teacher=f"edsr-s-x{_s}",
            description=f"EBM-SR: sigma-conditioned light SR distilled from edsr-s-x{_s} (~3% of its MACs)",
        )
    )
