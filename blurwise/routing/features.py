"""Per-patch features of an LR image and its defocus map: what the learned router sees.

The defocus map says *why* a patch may be cheap (its content is blurred); the luminance statistics say
*how much* the heavy model could add there (fine texture and strong edges gain most, flat areas
nothing whether in focus or not). :func:`patch_features` pools both on the routing grid of
:mod:`blurwise.routing.plan` (patches grown by the blend margin), plus a wider window for context.
Plain numpy (no scipy import in a routing process): cheap next to any SR model (~1 ms per 100K LR pixels per
feature).
"""

from __future__ import annotations

import numpy as np

from blurwise.errors import UsageError
from blurwise.routing.plan import DEFAULT_PATCH, _grad_energy, _laplace, _luma, _pool, _pool_means

# Order of the feature channels (the router's input); sigma values in HR pixels (sigma_LR x scale).
FEATURES = (
    "map_min",  # least blur in the window: any in-focus pixel
    "map_p35",  # the robust low statistic the map-threshold rule uses
    "map_mean",
    "map_max",
    "map_wide",  # mean blur over the wide window (context)
    "grad_mean",  # log10 mean squared Sobel gradient of the luma (ClassSR-style texture energy)
    "grad_max",  # log10 of its largest value: one strong edge
    "lap_mean",  # log10 mean squared Laplacian: fine texture
    "y_mean",
    "y_std",
    "grad_wide",  # log10 mean squared gradient over the wide window
)
EPS = 1e-6  # floor of the log10 energies (flat 8-bit content)


def patch_features(
    lr: np.ndarray,
    sigma_lr: np.ndarray,
    *,
    scale: int,
    patch: int = DEFAULT_PATCH,
    margin: int = 1,
    wide: int = 4,
) -> np.ndarray:
    """Features of every routing patch: float32 (rows, cols, len(FEATURES)).

    ``lr`` is float HWC (or HW) in [0, 1], ``sigma_lr`` the defocus map in LR pixels of the same
    size; each patch's window is the patch grown by ``margin`` pixels (``wide`` for the context
    features), as :func:`blurwise.routing.defocus_scores` pools it.
    """
    sig = np.nan_to_num(np.asarray(sigma_lr, dtype=np.float32), nan=0.0) * float(scale)
    y = _luma(lr)
    if sig.shape != y.shape:
        raise UsageError(f"the sigma map {sig.shape} does not match the image {y.shape}")
    grad = _grad_energy(y)
    lap = _laplace(y)
    mean_y = _pool(y, patch, margin, "mean")
    var_y = np.maximum(_pool(y * y, patch, margin, "mean") - mean_y.astype(np.float64) ** 2, 0.0)
    sig_mean, sig_wide = _pool_means(sig, patch, (margin, wide))  # one summed-area table for both windows
    grad_mean, grad_wide = _pool_means(grad, patch, (margin, wide))
    cols = [
        _pool(sig, patch, margin, "min"),
        _pool(sig, patch, margin, 35.0),
        sig_mean,
        _pool(sig, patch, margin, "max"),
        sig_wide,
        np.log10(grad_mean + EPS),
        np.log10(_pool(grad, patch, margin, "max") + EPS),
        np.log10(_pool(lap * lap, patch, margin, "mean") + EPS),
        mean_y,
        np.sqrt(var_y),
        np.log10(grad_wide + EPS),
    ]
    return np.stack(cols, axis=-1).astype(np.float32)
