"""Training losses: L1 / Charbonnier, SSIM and frequency terms, per-stage sums, distillation fallback."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def charbonnier(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Charbonnier (smooth L1) loss ``mean(sqrt((pred - target)^2 + eps^2))``."""
    return torch.sqrt((pred - target).pow(2) + eps * eps).mean()


def _gauss_window(channels: int, device: torch.device, dtype: torch.dtype, size: int = 11, sigma: float = 1.5):
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim_torch(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Differentiable mean SSIM over channels (11x11 Gaussian, sigma 1.5, valid region), NCHW in [0, 1]."""
    c = pred.shape[1]
    w = _gauss_window(c, pred.device, pred.dtype)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, w, groups=c)

    mu_x, mu_y = blur(pred), blur(target)
    sxx = blur(pred * pred) - mu_x**2
    syy = blur(target * target) - mu_y**2
    sxy = blur(pred * target) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2)
    return (num / den).mean()


def frequency_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 distance between the real 2-D FFTs (real and imaginary parts), as in MIMO-UNet's FFT loss."""
    fp = torch.fft.rfft2(pred.float(), norm="ortho")
    ft = torch.fft.rfft2(target.float(), norm="ortho")
    return (torch.view_as_real(fp) - torch.view_as_real(ft)).abs().mean()


def pixel_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    kind: str = "l1",
    eps: float = 1e-3,
    ssim: float = 0.0,
    freq: float = 0.0,
) -> torch.Tensor:
    """The configured image loss: L1, Charbonnier or L2 (MSE), plus ``ssim * (1 - SSIM)`` and ``freq * FFT-L1``."""
    pred = pred.float()
    target = target.float()
    if kind == "l1":
        loss = (pred - target).abs().mean()
    elif kind == "l2":
        loss = (pred - target).square().mean()
    else:
        loss = charbonnier(pred, target, eps)
    if ssim > 0 and min(pred.shape[-2:]) >= 11:
        loss = loss + ssim * (1.0 - ssim_torch(pred, target))
    if freq > 0:
        loss = loss + freq * frequency_loss(pred, target)
    return loss


def stage_loss(outputs: list[torch.Tensor], target: torch.Tensor, weights: list[float] | None = None, **kw):
    """Weighted mean of :func:`pixel_loss` over every stage's output (equal weights by default)."""
    n = len(outputs)
    w = list(weights) if weights else [1.0] * n
    if len(w) < n:  # a shorter list weights the last stages; earlier ones get the first weight
        w = [w[0]] * (n - len(w)) + w
    w = w[-n:]
    total = sum(w) or 1.0
    return sum(wi * pixel_loss(o, target, **kw) for wi, o in zip(w, outputs, strict=True)) / total


def distill_fallback(
    student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor, *, w_teacher=1.0, w_target=1.0, w_band=0.0
) -> torch.Tensor:
    """L1 to the teacher's output + L1 to the defocused HR target (+ FFT-L1 to the teacher).

    Used when ``blurwise.models.ebmsr.distill_loss`` is not available. Zero when student == teacher == target.
    """
    s = student.float()
    loss = w_teacher * (s - teacher.float()).abs().mean() + w_target * (s - target.float()).abs().mean()
    if w_band > 0:
        loss = loss + w_band * frequency_loss(s, teacher)
    return loss
