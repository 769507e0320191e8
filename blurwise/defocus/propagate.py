"""From sparse edge estimates to a dense defocus map.

* ``dgs_propagate`` (depth/segmentation-guided, ours): one robust blur level per region (weighted
  median of the edge estimates inside it; edges on region boundaries count less, as they belong to
  whichever side occludes), regions without edges take the level of their most similar neighbours
  (colour and depth similarity, filled in waves over the region adjacency graph) and are reported as
  flat, then a guided filter (He et al. 2010) so the map follows object boundaries. A region whose
  edges say it is not one blur level (it reads in focus, yet a clear share of its edges, spread over
  several places, read defocused; or the segmentation is a single region and its edges disagree) is
  first split by colour superpixels (:func:`mixed_regions`, :func:`split_regions`): with a constant or
  ramp depth map the depth segmenter gives one or a few huge regions, whose low quantile would
  otherwise flatten a defocused background to the sharp foreground's 0.
* ``zhuo_sim_propagate`` (the classical baseline): the matting-Laplacian interpolation of Zhuo & Sim
  2011, ``(L + lam D) d = lam D d_sparse`` solved sparsely, or a normalised guided-filter
  interpolation (``method="guided"``) when the matting solve is too slow for the image size.
"""

from __future__ import annotations

import numpy as np

from blurwise.defocus.edge import EdgeEstimate, to_gray


def box_filter(a: np.ndarray, r: int) -> np.ndarray:
    """Mean over the (2r+1)^2 window clipped to the image (O(1) per pixel via cumulative sums)."""
    a64 = np.asarray(a, dtype=np.float64)
    h, w = a64.shape[:2]

    def along(x: np.ndarray, axis: int, n: int) -> np.ndarray:
        c = np.cumsum(x, axis=axis)
        c = np.concatenate([np.zeros_like(np.take(c, [0], axis=axis)), c], axis=axis)
        idx = np.arange(n)
        hi = np.minimum(idx + r + 1, n)
        lo = np.maximum(idx - r, 0)
        return np.take(c, hi, axis=axis) - np.take(c, lo, axis=axis)

    s = along(along(a64, 0, h), 1, w)
    ny = (np.minimum(np.arange(h) + r + 1, h) - np.maximum(np.arange(h) - r, 0)).astype(np.float64)
    nx = (np.minimum(np.arange(w) + r + 1, w) - np.maximum(np.arange(w) - r, 0)).astype(np.float64)
    norm = ny[:, None] * nx[None, :]
    if s.ndim == 3:
        norm = norm[..., None]
    return s / norm


def guided_filter(guide: np.ndarray, src: np.ndarray, r: int, eps: float) -> np.ndarray:
    """Edge-aware smoothing of ``src`` (HW) following ``guide`` (HW grey or HWx3 colour); He et al.

    The output is locally a linear function of the guide, so it only changes where the guide does:
    region levels spread across flat areas but stop at object boundaries.
    """
    p = np.asarray(src, dtype=np.float64)
    g = np.asarray(guide, dtype=np.float64)
    if g.ndim == 2:
        mi, mp = box_filter(g, r), box_filter(p, r)
        cov = box_filter(g * p, r) - mi * mp
        var = box_filter(g * g, r) - mi * mi
        a = cov / (var + eps)
        b = mp - a * mi
        return (box_filter(a, r) * g + box_filter(b, r)).astype(np.float32)
    # Colour guide: a per-window 3x3 linear model (closed-form inverse of the regularised covariance).
    mi = box_filter(g, r)
    mp = box_filter(p, r)
    cov_ip = box_filter(g * p[..., None], r) - mi * mp[..., None]
    gg = {}
    for i in range(3):
        for j in range(i, 3):
            gg[i, j] = box_filter(g[..., i] * g[..., j], r) - mi[..., i] * mi[..., j] + (eps if i == j else 0.0)
    s00, s01, s02, s11, s12, s22 = gg[0, 0], gg[0, 1], gg[0, 2], gg[1, 1], gg[1, 2], gg[2, 2]
    i00 = s11 * s22 - s12 * s12
    i01 = s02 * s12 - s01 * s22
    i02 = s01 * s12 - s02 * s11
    i11 = s00 * s22 - s02 * s02
    i12 = s01 * s02 - s00 * s12
    i22 = s00 * s11 - s01 * s01
    det = s00 * i00 + s01 * i01 + s02 * i02
    c0, c1, c2 = cov_ip[..., 0], cov_ip[..., 1], cov_ip[..., 2]
    a0 = (i00 * c0 + i01 * c1 + i02 * c2) / det
    a1 = (i01 * c0 + i11 * c1 + i12 * c2) / det
    a2 = (i02 * c0 + i12 * c1 + i22 * c2) / det
    b = mp - a0 * mi[..., 0] - a1 * mi[..., 1] - a2 * mi[..., 2]
    q = box_filter(a0, r) * g[..., 0] + box_filter(a1, r) * g[..., 1] + box_filter(a2, r) * g[..., 2]
    return (q + box_filter(b, r)).astype(np.float32)


def default_radius(shape: tuple[int, ...]) -> int:
    """Guided-filter radius for an image: ~1/40 of the short side, 2..16 px."""
    return int(np.clip(round(min(shape[:2]) / 40), 2, 16))


def _boundary_mask(labels: np.ndarray) -> np.ndarray:
    """Pixels with a 4-neighbour of another region (both sides of every region boundary)."""
    b = np.zeros(labels.shape, dtype=bool)
    dx = labels[:, 1:] != labels[:, :-1]
    dy = labels[1:, :] != labels[:-1, :]
    b[:, 1:] |= dx
    b[:, :-1] |= dx
    b[1:, :] |= dy
    b[:-1, :] |= dy
    return b


def weighted_median_by_label(
    labels: np.ndarray, values: np.ndarray, weights: np.ndarray, n: int, q: float = 0.5
) -> np.ndarray:
    """Weighted median (or ``q`` quantile) of ``values`` per label (0..n-1); NaN for labels with no weight."""
    out = np.full(n, np.nan, dtype=np.float64)
    if len(values) == 0:
        return out
    order = np.lexsort((values, labels))
    lab, val, wt = labels[order], values[order], weights[order].astype(np.float64)
    cw = np.cumsum(wt)
    tot = np.bincount(lab, wt, minlength=n)
    first = np.searchsorted(lab, np.arange(n))
    base = np.where(first > 0, cw[np.maximum(first - 1, 0)], 0.0)
    has = tot > 0
    idx = np.searchsorted(cw, base[has] + q * tot[has])
    out[has] = val[np.minimum(idx, len(val) - 1)]
    return out


def region_adjacency(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique pairs (a, b), both directions, of 4-adjacent regions."""
    n = int(labels.max()) + 1
    a = np.concatenate([labels[:, :-1].ravel(), labels[:-1, :].ravel()]).astype(np.int64)
    b = np.concatenate([labels[:, 1:].ravel(), labels[1:, :].ravel()]).astype(np.int64)
    m = a != b
    lo, hi = np.minimum(a[m], b[m]), np.maximum(a[m], b[m])
    codes = np.unique(lo * n + hi)
    lo, hi = codes // n, codes % n
    return np.r_[lo, hi], np.r_[hi, lo]


def region_levels(
    sparse: EdgeEstimate,
    labels: np.ndarray,
    *,
    boundary_weight: float = 0.3,
    min_weight: float = 1.0,
    q: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """(level per region, support per region): weighted median of the edge estimates in each region.

    Weights are the edge contrasts, reduced by ``boundary_weight`` on region boundaries. Regions
    whose total weight (in units of a contrast-0.1 edge pixel) is below ``min_weight`` get NaN.
    Only edge pixels with an estimate count (``mask`` and finite; NaN elsewhere). An estimate of 0 is
    a measurement, not a missing value: the edge is at least as sharp as the law resolves (the
    re-blur ratio saturates) or calibrates to the in-focus end of the table.
    """
    n = int(labels.max()) + 1
    m = sparse.mask & np.isfinite(sparse.sigma)
    w = sparse.weight * np.where(_boundary_mask(labels), boundary_weight, 1.0)
    lab = labels[m]
    lev = weighted_median_by_label(lab, sparse.sigma[m].astype(np.float64), w[m], n, q)
    support = np.bincount(lab, w[m], minlength=n) / 0.1
    lev[support < min_weight] = np.nan
    return lev, support


def fill_regions(
    levels: np.ndarray,
    labels: np.ndarray,
    features: np.ndarray,
    *,
    tau: float = 0.1,
    default: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Fill NaN region levels from similar neighbours, in waves over the adjacency graph.

    ``features`` (n_regions x k) are the regions' mean colour (and depth); a neighbour's weight is
    ``exp(-|f_a - f_b|^2 / (2 tau^2))``. Regions no wave reaches take ``default`` (the median of
    the known levels). Returns (filled levels, flat flags: True where the level was not measured).
    """
    lev = levels.astype(np.float64).copy()
    flat = ~np.isfinite(lev)
    if not flat.any():
        return lev, flat
    if (~flat).sum() == 0:
        return np.full_like(lev, 0.0 if default is None else default), flat
    a, b = region_adjacency(labels)
    diff = features[a] - features[b]
    sim = np.exp(-np.sum(diff * diff, axis=1) / (2.0 * tau * tau)) + 1e-6
    known = ~flat
    for _ in range(len(lev)):
        kb = known[b]
        num = np.bincount(a, sim * np.where(kb, np.nan_to_num(lev[b]), 0.0), minlength=len(lev))
        den = np.bincount(a, sim * kb, minlength=len(lev))
        new = ~known & (den > 0)
        if not new.any():
            break
        lev[new] = num[new] / den[new]
        known = known | new
    fallback = float(np.nanmedian(levels)) if default is None else default
    lev[~known] = fallback
    return lev, flat


def smooth_levels(
    levels: np.ndarray,
    support: np.ndarray,
    labels: np.ndarray,
    features: np.ndarray,
    *,
    lam: float = 4.0,
    tau: float = 0.1,
    iters: int = 30,
) -> np.ndarray:
    """Regularise region levels on the adjacency graph: each region's level is a support-weighted blend
    of its own measurement and its similar neighbours' levels (Jacobi iterations of a graph Laplacian
    system). Regions measured from few or weak edges lean on their neighbours; well-measured ones
    keep their level. ``levels`` must be filled (no NaN); ``support`` is 0 for unmeasured regions.
    """
    a, b = region_adjacency(labels)
    if len(a) == 0 or lam <= 0:
        return levels
    diff = features[a] - features[b]
    w = lam * np.exp(-np.sum(diff * diff, axis=1) / (2.0 * tau * tau))
    n = len(levels)
    wsum = np.bincount(a, w, minlength=n)
    own = np.maximum(support, 0.0)
    meas = np.nan_to_num(levels)
    x = levels.astype(np.float64).copy()
    for _ in range(iters):
        nb = np.bincount(a, w * x[b], minlength=n)
        x_new = (own * meas + nb) / np.maximum(own + wsum, 1e-12)
        x = np.where(own + wsum > 1e-12, x_new, x)
    return x


def region_features(image: np.ndarray, labels: np.ndarray, depth_norm: np.ndarray | None) -> np.ndarray:
    """Mean colour per region (and mean normalised disparity, weighted x2, when depth is given)."""
    n = int(labels.max()) + 1
    img = np.asarray(image, dtype=np.float64)
    if img.ndim == 2:
        img = img[..., None]
    cnt = np.maximum(np.bincount(labels.ravel(), minlength=n), 1)
    cols = [np.bincount(labels.ravel(), img[..., c].ravel(), minlength=n) / cnt for c in range(img.shape[2])]
    if depth_norm is not None:
        cols.append(2.0 * np.bincount(labels.ravel(), depth_norm.ravel().astype(np.float64), minlength=n) / cnt)
    return np.stack(cols, 1)


def normalised_disparity(depth: np.ndarray, depth_kind: str = "depth") -> np.ndarray:
    """Depth mapped to [0, 1] disparity (robust range), the domain where blur is linear."""
    d = np.asarray(depth, dtype=np.float64)
    v = 1.0 / np.maximum(d, 1e-9) if depth_kind == "depth" else d
    lo, hi = np.percentile(v, [0.5, 99.5])
    return np.clip((v - lo) / max(hi - lo, 1e-12), 0.0, 1.0)


def mixed_regions(
    sparse: EdgeEstimate,
    labels: np.ndarray,
    *,
    q: float = 0.3,
    sharp: float = 0.5,
    floor: float = 1.0,
    ratio: float = 2.0,
    share: float = 0.1,
    single_floor: float = 0.5,
    single_share: float = 0.1,
    min_pieces: int = 4,
    boundary_px: int = 2,
) -> np.ndarray:
    """Regions (bool per label) whose edge estimates hold clearly different blur levels.

    Each region is cut into pieces by a grid of tiles (two default superpixel sides); a piece's level
    is the weighted ``q`` quantile of its edge estimates, like the region's. Levels ``a`` and ``b``
    differ clearly when ``(a + floor) / (b + floor) > ratio`` (``floor`` px keeps sub-pixel noise near
    0 from counting). Edges within ``boundary_px`` of a region boundary are left out: they belong to
    whichever side occludes. A region is mixed when

    * its level reads in focus (``<= sharp`` px) while pieces reading clearly blurrier hold at least
      ``share`` of its edge weight and number at least ``min_pieces`` (the low quantile of a region
      that holds a sharp subject and a defocused background is the subject's 0), or
    * it is the only region (the segmentation found no boundary, e.g. a constant depth map) and
      pieces clearly different from its level, either way and with the finer ``single_floor``, hold
      at least ``single_share`` of its weight: one level for the whole frame must be borne out.

    Why no plain spread test: with a real depth map, the edge estimates inside one depth level spread
    (texture, soft shading, blur already in the photo) as widely as true levels differ, so splitting
    every region whose estimates disagree throws away the pooling that makes depth-guided DGS
    accurate. Only the two cases above, where one low quantile would stand for a sharp and a
    defocused part alike, are split.
    Regions under 4 superpixels are never mixed.
    """
    from scipy import ndimage

    from blurwise.defocus.segment import region_size

    h, w = labels.shape
    n = int(labels.max()) + 1
    out = np.zeros(n, dtype=bool)
    sp_area = h * w / region_size((h, w))
    area = np.bincount(labels.ravel(), minlength=n)
    m = sparse.mask & np.isfinite(sparse.sigma)
    if boundary_px > 0 and n > 1:
        m &= ~ndimage.binary_dilation(_boundary_mask(labels), iterations=boundary_px)
    if not m.any():
        return out
    t = int(np.clip(round(2.0 * np.sqrt(sp_area)), 4, 256))
    ys, xs = np.nonzero(m)
    tile = (ys // t) * ((w + t - 1) // t) + xs // t
    nt = int(tile.max()) + 1
    lab = labels[ys, xs].astype(np.int64)
    val = sparse.sigma[ys, xs].astype(np.float64)
    wt = sparse.weight[ys, xs].astype(np.float64)
    level = weighted_median_by_label(lab, val, wt, n, q)
    pieces, inv = np.unique(lab * nt + tile, return_inverse=True)
    plev = weighted_median_by_label(inv, val, wt, len(pieces), q)
    psup = np.bincount(inv, wt, minlength=len(pieces)) / 0.1  # in contrast-0.1 edge pixels
    preg = pieces // nt
    rel = (plev + floor) / (level[preg] + floor)
    ok = psup >= 2.0
    total = np.maximum(np.bincount(preg, psup, minlength=n), 1e-12)
    up = ok & (rel > ratio)
    up_share = np.bincount(preg[up], psup[up], minlength=n) / total
    up_count = np.bincount(preg[up], minlength=n)
    out |= (area >= 4 * sp_area) & (level <= sharp) & (up_share >= share) & (up_count >= min_pieces)
    if n == 1:
        rel = (plev + single_floor) / (level[preg] + single_floor)
        diff = ok & ((rel > ratio) | (rel < 1.0 / ratio))
        out |= np.bincount(preg[diff], psup[diff], minlength=n) / total >= single_share
    return out


def split_regions(image: np.ndarray, labels: np.ndarray, which: np.ndarray) -> np.ndarray:
    """``labels`` with the regions flagged in ``which`` cut by colour superpixels (SLIC), consecutive int32.

    Other regions keep their pixels (and label order); a cut piece is a region x superpixel overlap.
    """
    from blurwise.defocus.segment import _relabel, slic_labels

    if not which.any():
        return labels
    sp = slic_labels(image).astype(np.int64)
    k = int(sp.max()) + 2
    lab = labels.astype(np.int64)
    combined = lab * k + np.where(which[labels], sp + 1, 0)
    return _relabel(combined)


def dgs_propagate(
    image: np.ndarray,
    sparse: EdgeEstimate,
    labels: np.ndarray,
    *,
    depth: np.ndarray | None = None,
    depth_kind: str = "depth",
    radius: int | None = None,
    eps: float = 1e-3,
    boundary_weight: float = 1.0,
    colour_guide: bool = False,
    smooth: float = 0.0,
    prior_weight: float = 0.0,
    q: float = 0.3,
    split_mixed: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Dense sigma map (float32 HW) and flat mask (bool HW) by segment-guided propagation.

    A region's level is the weighted ``q`` quantile of its edge estimates (0.3: blur estimates err
    upwards more often than downwards: noise in the gradient ratio near 1 and blurred neighbours'
    edges on region boundaries both inflate them). ``smooth`` is the neighbour weight of the
    region-graph regularisation (:func:`smooth_levels`, in units of the support of one contrast-0.1
    edge pixel; 0 = off); ``prior_weight`` shrinks weakly supported regions toward the guided
    Zhuo & Sim interpolation (0 = off). Both trade patch F1 for MAE on defocus-sr, so they are off.
    ``split_mixed``: regions whose edges hold clearly different blur levels (:func:`mixed_regions`)
    are cut by colour superpixels first, so one level is not forced on, e.g., the whole frame of a
    constant depth map; the flat mask refers to the cut regions.
    """
    if split_mixed:
        labels = split_regions(image, labels, mixed_regions(sparse, labels, q=q))
    lev, support = region_levels(sparse, labels, boundary_weight=boundary_weight, q=q)
    dn = normalised_disparity(depth, depth_kind) if depth is not None else None
    feats = region_features(image, labels, dn)
    filled, flat = fill_regions(lev, labels, feats)
    if smooth > 0:
        filled = smooth_levels(filled, np.where(flat, 0.0, support), labels, feats, lam=smooth)
    if prior_weight > 0:
        # Shrink weakly supported regions toward a smooth global interpolation of the same estimates.
        prior = zhuo_sim_propagate(image, sparse, method="guided")
        n = len(filled)
        cnt = np.maximum(np.bincount(labels.ravel(), minlength=n), 1)
        pri = np.bincount(labels.ravel(), prior.ravel().astype(np.float64), minlength=n) / cnt
        sup = np.where(flat, 0.0, support)
        filled = (sup * filled + prior_weight * pri) / (sup + prior_weight)
    dense = filled[labels].astype(np.float32)
    r = radius if radius is not None else default_radius(labels.shape)
    guide = np.asarray(image, dtype=np.float32) if colour_guide and np.ndim(image) == 3 else to_gray(image)
    out = guided_filter(guide, dense, r, eps)
    return np.maximum(out, 0.0).astype(np.float32), flat[labels]


def refine_dense(
    image: np.ndarray,
    dense: np.ndarray,
    labels: np.ndarray,
    *,
    radius: int | None = None,
    eps: float = 1e-3,
) -> np.ndarray:
    """Segment-guided refinement of a dense map (the learned estimator's): region medians + guided filter."""
    n = int(labels.max()) + 1
    lev = weighted_median_by_label(labels.ravel(), dense.ravel().astype(np.float64), np.ones(dense.size), n)
    lev = np.nan_to_num(lev, nan=float(np.median(dense)))
    r = radius if radius is not None else default_radius(labels.shape)
    out = guided_filter(to_gray(image), lev[labels].astype(np.float32), r, eps)
    return np.maximum(out, 0.0).astype(np.float32)


# --------------------------------------------------------------------------- Zhuo & Sim baseline


def matting_laplacian(image: np.ndarray, eps: float = 1e-7, r: int = 1):
    """Levin et al.'s closed-form matting Laplacian (scipy CSR, N x N) with (2r+1)^2 windows."""
    import scipy.sparse as sp

    img = np.asarray(image, dtype=np.float64)
    if img.ndim == 2:
        img = img[..., None]
    h, w, c = img.shape
    k = 2 * r + 1
    nw = k * k
    idx = np.arange(h * w).reshape(h, w)
    from numpy.lib.stride_tricks import sliding_window_view

    win_idx = sliding_window_view(idx, (k, k)).reshape(-1, nw)  # (n_win, nw)
    x = img.reshape(-1, c)[win_idx]  # (n_win, nw, c)
    mu = x.mean(axis=1, keepdims=True)
    xc = x - mu
    cov = np.einsum("nki,nkj->nij", xc, xc) / nw + (eps / nw) * np.eye(c)[None]
    inv = np.linalg.inv(cov)
    g = (1.0 + np.einsum("nki,nij,nlj->nkl", xc, inv, xc)) / nw  # (n_win, nw, nw)
    vals = (np.eye(nw)[None] - g).ravel()
    rows = np.repeat(win_idx, nw, axis=1).ravel()
    cols = np.tile(win_idx, (1, nw)).ravel()
    return sp.csr_matrix((vals, (rows, cols)), shape=(h * w, h * w))


def zhuo_sim_propagate(
    image: np.ndarray,
    sparse: EdgeEstimate,
    *,
    lam: float = 1e-3,
    method: str = "matting",
    radius: int | None = None,
    eps: float = 1e-4,
    rtol: float = 1e-6,
    maxiter: int = 1500,
) -> np.ndarray:
    """Zhuo & Sim's full-map interpolation of sparse edge estimates (float32 HW sigma).

    ``matting``: minimise ``d^T L d + lam (d - d_sparse)^T D (d - d_sparse)`` with the matting
    Laplacian ``L`` (conjugate gradients to ``rtol``; seconds per 10K px, so meant for small
    images). ``guided``: normalised guided-filter interpolation ``GF(D d_sparse) / GF(D)``, linear time.
    """
    m = sparse.mask & np.isfinite(sparse.sigma)
    d_sparse = np.where(m, sparse.sigma, 0.0).astype(np.float64)
    if not m.any():
        return np.zeros(m.shape, dtype=np.float32)
    if method == "guided":
        r = radius if radius is not None else default_radius(m.shape)
        gray = to_gray(image)
        num = guided_filter(gray, d_sparse, r, eps)
        den = guided_filter(gray, m.astype(np.float64), r, eps)
        # Where no edge is near, widen the search until every pixel is covered.
        out = np.where(den > 1e-3, num / np.maximum(den, 1e-3), np.nan)
        rr = r
        while np.isnan(out).any() and rr < max(m.shape):
            rr *= 2
            n2 = box_filter(d_sparse, rr)
            d2 = box_filter(m.astype(np.float64), rr)
            out = np.where(np.isnan(out) & (d2 > 1e-6), n2 / np.maximum(d2, 1e-12), out)
        return np.maximum(np.nan_to_num(out, nan=float(np.median(d_sparse[m]))), 0.0).astype(np.float32)
    if method != "matting":
        raise ValueError(f"unknown Zhuo & Sim propagation {method!r} (matting, guided)")
    import scipy.sparse as sp
    from scipy.sparse.linalg import cg

    lap = matting_laplacian(image)
    dvec = m.ravel().astype(np.float64)
    a = (lap + lam * sp.diags(dvec)).tocsr()
    b = lam * dvec * d_sparse.ravel()
    # Conjugate gradients (the system is symmetric positive definite), Jacobi-preconditioned and
    # warm-started from the guided-filter interpolation: same minimiser as a direct solve, ~10x faster.
    x0 = zhuo_sim_propagate(image, sparse, method="guided").ravel().astype(np.float64)
    sol, _ = cg(a, b, x0=x0, rtol=rtol, maxiter=maxiter, M=sp.diags(1.0 / a.diagonal()))
    return np.maximum(sol.reshape(m.shape), 0.0).astype(np.float32)
