"""Motion blur: random camera-shake kernels, uniform blur, GoPro-style frame averaging, noise and JPEG.

Kernels follow Boracchi & Foi (TIP 2012): a 2-D camera trajectory whose velocity keeps a constant
speed while its direction drifts with random acceleration (Gaussian term), is pulled back towards
the start (centripetal term) and sometimes turns abruptly (impulsive jerks); the first ``exposure``
fraction of it is rasterised with bilinear sub-pixel splatting into a ``size`` x ``size`` kernel
(odd, 7..65 px), centred on its centre of mass (so blurring does not shift the image) and
normalised to sum 1.

Frame averaging reproduces how the GoPro deblurring set was made (Nah et al. CVPR 2017): 7-13
consecutive 240 fps frames are averaged in linear light (camera response approximated by gamma
2.2) and the sharp target is the middle frame (index ``n // 2``, as in the shared GoPro pairs).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from blurwise.data.color import gamma_decode, gamma_encode, to_float
from blurwise.data.paths import data_path
from blurwise.errors import InputError, UsageError

MIN_KERNEL, MAX_KERNEL = 7, 65


def _rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def camera_trajectory(
    rng: np.random.Generator | int | None,
    *,
    n_steps: int = 500,
    length: float = 1.0,
    anxiety: float | None = None,
    centripetal: float | None = None,
    gaussian: float | None = None,
    jerk_freq: float | None = None,
) -> np.ndarray:
    """A random camera-shake path: complex array of ``n_steps`` positions, total path length ``length``.

    Unset parameters are drawn as in Boracchi & Foi: anxiety ~ U(0, 0.1) scales all random motion,
    centripetal ~ U(0, 0.7) pulls back to the origin, gaussian ~ U(0, 10) is the random acceleration,
    jerk_freq ~ U(0, 0.2) the rate of abrupt near-reversals.
    """
    rng = _rng(rng)
    anxiety = rng.uniform(0.0, 0.05) if anxiety is None else anxiety
    centripetal = rng.uniform(0.0, 0.7) if centripetal is None else centripetal
    gaussian = rng.uniform(0.0, 10.0) if gaussian is None else gaussian
    jerk_freq = rng.uniform(0.0, 0.2) if jerk_freq is None else jerk_freq
    step = length / (n_steps - 1)
    phi = rng.uniform(0.0, 2 * np.pi)
    v = complex(np.cos(phi), np.sin(phi)) * step
    x = np.zeros(n_steps, np.complex128)
    # draw all random numbers at once (fast, and the stream is fixed per call)
    jerk = rng.random(n_steps) < jerk_freq * anxiety
    turn = rng.random(n_steps) - 0.5
    noise = rng.standard_normal(n_steps) + 1j * rng.standard_normal(n_steps)
    for t in range(n_steps - 1):
        dv = 2.0 * v * np.exp(1j * (np.pi + turn[t])) if jerk[t] else 0.0
        dv = dv + anxiety * (gaussian * noise[t] - centripetal * x[t]) * step
        v = v + dv
        v = v / (abs(v) + 1e-12) * step
        x[t + 1] = x[t] + v
    return x


def rasterize_trajectory(
    traj: np.ndarray, size: int, *, exposure: float = 1.0, fill: float | None = None, samples: int = 4000
) -> np.ndarray:
    """Splat the first ``exposure`` fraction of a trajectory into a normalised ``size`` x ``size`` kernel.

    The path is resampled uniformly in time (``samples`` points, linear interpolation) and centred on
    its centre of mass; it is scaled so that its farthest point lies at ``fill`` x (the kernel's
    half-width - 1) (``None``: only shrunk if it would not fit). Each point adds bilinear weights to its
    four neighbouring pixels (sub-pixel accuracy).
    """
    if not 0.0 < exposure <= 1.0:
        raise UsageError("exposure must be in (0, 1]")
    n = len(traj)
    t_end = exposure * (n - 1)
    t = np.linspace(0.0, t_end, samples)
    pts = np.interp(t, np.arange(n), traj.real) + 1j * np.interp(t, np.arange(n), traj.imag)
    pts = pts - pts.mean()
    half = (size - 1) / 2.0
    reach = max(float(np.abs(pts.real).max()), float(np.abs(pts.imag).max()), 1e-9)
    if fill is not None:
        pts = pts * (min(max(fill, 0.0), 1.0) * (half - 1.0) / reach)
    elif reach > half - 1.0:
        pts = pts * ((half - 1.0) / reach)
    xs, ys = pts.real + half, pts.imag + half
    x0, y0 = np.floor(xs).astype(np.int64), np.floor(ys).astype(np.int64)
    fx, fy = xs - x0, ys - y0
    k = np.zeros(size * size, np.float64)
    for dy, dx, wgt in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        yy, xx = np.clip(y0 + dy, 0, size - 1), np.clip(x0 + dx, 0, size - 1)
        k += np.bincount(yy * size + xx, weights=wgt, minlength=size * size)
    k = k.reshape(size, size)
    return (k / k.sum()).astype(np.float32)


def motion_kernel(
    size: int, rng: np.random.Generator | int | None, *, exposure: float | None = None, length: float | None = None
) -> np.ndarray:
    """A random camera-shake kernel, float32 ``size`` x ``size`` (odd, 7..65), non-negative, sum 1.

    The blur's extent is set by ``size``: the exposed path is scaled so that its farthest point from
    the centre of mass reaches ``fill`` (default U(0.6, 1)) of the half-width. ``length``: path length
    before scaling (default 2 x size; only the shape matters); ``exposure``: fraction of the path the
    shutter sees (default U(0.3, 1): short exposures give straighter kernels).
    """
    if int(size) != size or size % 2 == 0 or not MIN_KERNEL <= size <= MAX_KERNEL:
        raise UsageError(f"kernel size must be odd and in {MIN_KERNEL}..{MAX_KERNEL}, got {size}")
    rng = _rng(rng)
    length = 2.0 * size if length is None else float(length)
    exposure = rng.uniform(0.3, 1.0) if exposure is None else float(exposure)
    fill = rng.uniform(0.6, 1.0)
    traj = camera_trajectory(rng, length=length)
    return rasterize_trajectory(traj, int(size), exposure=exposure, fill=fill)


def random_kernel_size(rng: np.random.Generator, lo: int = MIN_KERNEL, hi: int = MAX_KERNEL) -> int:
    """An odd kernel size in lo..hi, log-uniform (small shakes are more common than large ones)."""
    s = int(np.exp(rng.uniform(np.log(lo), np.log(hi + 1))))
    s = min(max(s | 1, lo), hi)
    return s if s % 2 else s - 1


def apply_kernel(img: np.ndarray, kernel: np.ndarray, *, linear: bool = False) -> np.ndarray:
    """Spatially uniform blur: convolve (true convolution) every channel with ``kernel``, reflective borders.

    Returns float32 HWC in [0, 1]. ``linear=True`` convolves in linear light (gamma 2.2), as a real
    exposure would; the default blurs the stored values, the convention of Levin's and most synthetic
    deblurring benchmarks.
    """
    from scipy import fft as sfft

    x = to_float(img)
    k = np.asarray(kernel, np.float32)
    if k.ndim != 2 or k.size == 0 or not np.isfinite(k).all() or k.min() < 0 or k.sum() <= 0:
        raise InputError("kernel must be a non-empty, non-negative 2-D array with a positive sum")
    k = k / k.sum()
    ph, pw = k.shape[0] // 2, k.shape[1] // 2
    if linear:
        x = gamma_decode(x)
    h, w = x.shape[:2]
    xp = np.pad(x, ((ph, k.shape[0] - 1 - ph), (pw, k.shape[1] - 1 - pw), (0, 0)), mode="symmetric")
    xp = np.ascontiguousarray(xp.transpose(2, 0, 1))
    # circular convolution of the padded image; the wrapped rows/columns fall in the discarded border
    fh, fw = sfft.next_fast_len(xp.shape[1], real=True), sfft.next_fast_len(xp.shape[2], real=True)
    spec = sfft.rfft2(xp, s=(fh, fw), workers=1) * sfft.rfft2(k, s=(fh, fw), workers=1)[None]
    full = sfft.irfft2(spec, s=(fh, fw), workers=1)
    out = full[:, k.shape[0] - 1 : k.shape[0] - 1 + h, k.shape[1] - 1 : k.shape[1] - 1 + w].transpose(1, 2, 0)
    out = np.clip(out, 0.0, 1.0).astype(np.float32)
    if linear:
        out = gamma_encode(out)
    if np.asarray(img).ndim == 2:
        out = out[:, :, 0]
    return out


def frame_average(frames: list[np.ndarray] | np.ndarray, gamma: float = 2.2) -> np.ndarray:
    """Average frames in linear light (``x ** gamma``, mean, ``** (1 / gamma)``): float32 [0, 1] (GoPro recipe)."""
    if len(frames) == 0:
        raise InputError("frame_average needs at least one frame")
    acc = None
    for f in frames:
        lin = gamma_decode(to_float(f), gamma)
        if acc is not None and lin.shape != acc.shape:
            raise InputError(f"frames differ in shape: {lin.shape} vs {acc.shape}")
        acc = lin.copy() if acc is None else acc + lin
    out = gamma_encode(acc / len(frames), gamma)
    if np.asarray(frames[0]).ndim == 2:
        out = out[:, :, 0]
    return out


def add_noise(img: np.ndarray, sigma: float, rng: np.random.Generator | int | None) -> np.ndarray:
    """Add white Gaussian noise of std ``sigma`` (in [0, 1] units), clip to [0, 1]; float32."""
    x = to_float(img)
    out = x + _rng(rng).standard_normal(x.shape).astype(np.float32) * np.float32(sigma)
    return np.clip(out, 0.0, 1.0).reshape(np.shape(img)).astype(np.float32)


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """Round-trip through Pillow's JPEG encoder at ``quality`` (1..95); float32 [0, 1]."""
    from PIL import Image

    from blurwise.data.color import to_uint8

    x = to_uint8(to_float(img))
    buf = io.BytesIO()
    Image.fromarray(x[:, :, 0] if x.shape[2] == 1 else x).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as im:
        out = np.asarray(im).astype(np.float32) / 255.0
    return out.reshape(np.shape(img)) if np.asarray(img).ndim == 2 else out.reshape(x.shape)


def gopro_sequences(root: str | Path | None = None) -> dict[str, list[Path]]:
    """Consecutive-frame sequences under ``root`` (default ``deblur/gopro_frames``): {name: sorted frame paths}."""
    root = Path(root) if root is not None else data_path("deblur", "gopro_frames")
    seqs = {}
    for d in sorted(p for p in root.glob("*") if p.is_dir()):
        frames = sorted(d.glob("*.png"))
        if frames:
            seqs[d.name] = frames
    return seqs


def levin_kernels(root: str | Path | None = None) -> dict[str, np.ndarray]:
    """Levin et al.'s 8 real camera-shake kernels (``deblur/levin/kernels``), float32, normalised to sum 1."""
    from PIL import Image

    root = Path(root) if root is not None else data_path("deblur", "levin", "kernels")
    out = {}
    for p in sorted(root.glob("kernel*.png"), key=lambda q: int("".join(c for c in q.stem if c.isdigit()) or 0)):
        with Image.open(p) as im:
            k = np.asarray(im.convert("L"), np.float32)
        out[p.stem] = k / k.sum()
    return out
