"""Defocus-aware routed super-resolution: the heavy SR model only where the image is in focus.

``upscale_routed`` estimates (or takes) the defocus map of the LR image, plans patch routes
(:mod:`blurwise.routing.plan`), runs each route batched over merged tiles and blends them seamlessly
(:mod:`blurwise.routing.execute`), and reports what it cost against running the heavy model on the
whole image. Everything in this package is plain functions; torch is imported only when used.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from blurwise.errors import ModelError, NotAvailableError, UsageError
from blurwise.routing.plan import (
    BICUBIC,
    DEFAULT_BICUBIC_THRESHOLD_HR,
    DEFAULT_CONTEXT,
    DEFAULT_MAX_TILE,
    DEFAULT_MIN_SAVING,
    DEFAULT_OVERLAP,
    DEFAULT_PATCH,
    DEFAULT_SIDE_CONTEXT,
    DEFAULT_THRESHOLD_HR,
    HEAVY,
    LIGHT,
    ROUTE_NAMES,
    RoutePlan,
    Tile,
    default_threshold,
    defocus_scores,
    grid_shape,
    merge_rectangles,
    plan_routes,
    random_scores,
    texture_scores,
)

__all__ = [
    "BICUBIC",
    "DEFAULT_BICUBIC_THRESHOLD_HR",
    "DEFAULT_CONTEXT",
    "DEFAULT_MIN_SAVING",
    "DEFAULT_OVERLAP",
    "DEFAULT_PATCH",
    "DEFAULT_SIDE_CONTEXT",
    "DEFAULT_THRESHOLD_HR",
    "HEAVY",
    "LIGHT",
    "ROUTE_NAMES",
    "RoutePlan",
    "RouteReport",
    "Tile",
    "default_threshold",
    "defocus_scores",
    "default_edges",
    "default_smooth",
    "default_stat",
    "default_threshold_hr",
    "estimate_lr_map",
    "lr_map_kwargs",
    "lr_map_macs",
    "execute_plan",
    "check_taught_by",
    "find_light_model",
    "grid_shape",
    "learned_scores",
    "merge_rectangles",
    "plan_routes",
    "random_scores",
    "resolve_models",
    "router_for",
    "routing_overlay",
    "taught_by",
    "texture_scores",
    "upscale_routed",
]

# The defocus-map estimator routed SR uses at each scale when the caller does not choose one (keyword
# arguments of ``blurwise.defocus.estimate_defocus``); other scales use the estimator's own default.
# Both scales use their per-scale learned estimator (defocus-cnn-x2/-x4, trained on LR renders of
# training images; no segment refinement): the edge/DGS map cannot tell sub-LR-pixel blur apart
# (x4, 12 training renders, sigma_HR 1 px: -0.035 dB mean / -0.39 dB worst for a 17% cut).
LR_MAP_DEFAULTS: dict[int, dict[str, Any]] = {s: {"method": "learned", "segmenter": "none"} for s in (2, 4)}
# Threshold (sigma_HR px) and per-patch statistic of the map (``defocus_scores``) used with each
# scale's default estimator: "min" (one in-focus pixel keeps a patch heavy) or a low percentile,
# which tolerates the isolated false "in focus" pixels of an estimated map (they would break the
# defocused area into fragments that each need a context ring). Given maps use "min".
# Chosen by ``benchmarks/routed_sr.py --calibrate 12 --calibrate-stats ... --calibrate-seeds
# 1000,2000,3000`` (36 renders of 12 BSD200 *training* images the maps never trained on) as the largest
# cut within 0.03 dB of the heavy model on average and 0.3 dB on every render (side context 1 px):
#   x4: p30 at 0.625 px: -0.029 dB mean / -0.269 worst, 57.9% cut (p20: -0.024 / -0.255, 54.9%; p40 at
#       0.75 px: -0.030, 56.9%), with the map fine-tuned with the threshold term of ``defocus_loss``
#       (weight 0.5; the map before it: p20 at 0.625 px -0.028 dB, 55.7%, p30 -0.037 dB, 58.4%; weight 1.0
#       for 20k more steps was worse: p20 at 0.625 px -0.037 dB, 57.2%). A 4-level map (1/8 level, 80 px
#       crops, 20k steps) was no better at equal loss (min at 0.75 px: -0.035 dB, 56.1%).
#   x2: p20 at 0.625 px: +0.022 / -0.226, 64.4% cut (at 0.5 px one render loses 0.50-0.58 dB).
#   x4, with the smooth-patch rule (``upscale_routed(smooth=...)``, same renders and rule, texture scores
#   1.5 / 1.75 / 2 / 2.25 compared): the rule picks p20 with smooth 1.5 at 0.625 px: -0.030 / -0.281, 61.3%
#   cut (p30 without: 57.9%). Not made the default: on the defocus-sr evaluation sample it cut less than p30
#   alone (42.2% vs 43.1%) and ran slower (1.42x vs 1.61x; docs/results/routed_sr_spread_smooth.md).
#   x4, with the strong-edge rule (``upscale_routed(edges=...)``: patches whose texture score is below it stay
#   heavy) and the rule extended by the in-focus criterion of the acceptance (the 12 calibration images
#   unblurred lose <= 0.02 dB; docs/results/routed_sr_calibration_x4.md, cuts without the map's cost): p35 with
#   edges -0.25 at 0.625 px: -0.023 dB mean / -0.158 worst, 58.0% cut, in focus -0.018 dB (p30 without edges:
#   -0.029 / -0.269, 57.9%, in focus -0.015; p40 with edges: -0.029, 59.1% but -0.023 in focus; edges -0.5 and
#   0 were also compared in a first search). The rule keeps 0.6% of the patches heavy and
#   lowers the worst render's loss from 0.27 to 0.16 dB: the light model cannot rebuild strong edges. It does
#   not help a soft in-focus photo whose edges are weaker than that (Set14 foreman, a video frame the map
#   takes for mild defocus, loses 0.49 dB either way; docs/results/routed_sr_history.md, session 8).
LR_MAP_THRESHOLD_HR: dict[int, float] = {2: 0.625, 4: 0.625}
LR_MAP_STAT: dict[int, str | float] = {2: 20.0, 4: 35.0}
LR_MAP_SMOOTH: dict[int, float] = {}  # texture score per scale; scales not listed: off
LR_MAP_EDGES: dict[int, float] = {4: -0.25}  # texture score below which patches stay heavy; scales not listed: off

ROUTE_COLOURS = {HEAVY: (0.95, 0.25, 0.2), LIGHT: (0.2, 0.8, 0.3), BICUBIC: (0.25, 0.45, 1.0)}


def execute_plan(*args: Any, **kwargs: Any) -> tuple[np.ndarray, dict[str, float]]:
    """Run a RoutePlan (see :func:`blurwise.routing.execute.execute_plan`; imported lazily: torch)."""
    from blurwise.routing.execute import execute_plan as _exec

    return _exec(*args, **kwargs)


@dataclass
class RouteReport:
    """What a routed upscale did and cost: route shares, MACs per route, FLOPs % of heavy, timings."""

    fractions: dict[str, float]  # share of LR pixels per route
    macs: dict[str, float]  # per route (context included) and 'map'
    full_heavy_macs: float
    timings: dict[str, float]  # seconds: map, plan (incl. score: the router), heavy, light, bicubic, blend, total
    thresholds: tuple[float, ...]
    scale: int
    scorer: str = "defocus"
    n_tiles: dict[str, int] = field(default_factory=dict)
    overhead: float = 1.0
    heavy: str = ""
    light: str = ""
    plan: RoutePlan | None = None
    sigma_lr: np.ndarray | None = None  # the defocus map used (given or estimated), for --save-map
    smooth_share: float = 0.0  # share of patches sent light only for being smooth (``smooth``)
    edge_share: float = 0.0  # share of patches kept heavy only for their strong edges (``edges``)
    notes: list[str] = field(default_factory=list)  # what the caller should know (e.g. a budget not reached)

    @property
    def total_macs(self) -> float:
        """MACs of the whole routed pipeline (map estimation included)."""
        return float(sum(self.macs.values()))

    @property
    def flops_fraction(self) -> float:
        """Routed FLOPs as a fraction of the heavy model on the whole image (FLOPs = 2 x MACs on both sides)."""
        return self.total_macs / max(self.full_heavy_macs, 1e-12)

    @property
    def flops_cut(self) -> float:
        """1 - flops_fraction: the share of the heavy model's FLOPs saved."""
        return 1.0 - self.flops_fraction

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly view (for --json outputs and benchmark logs)."""
        return {
            "fractions": self.fractions,
            "macs": self.macs,
            "full_heavy_macs": self.full_heavy_macs,
            "flops_fraction": self.flops_fraction,
            "timings": self.timings,
            "thresholds": list(self.thresholds),
            "scale": self.scale,
            "scorer": self.scorer,
            "n_tiles": self.n_tiles,
            "overhead": self.overhead,
            "heavy": self.heavy,
            "light": self.light,
            "notes": self.notes,
        }

    def summary(self) -> str:
        """One line: route shares, FLOPs % of the full heavy model, time per stage."""
        routes = " / ".join(f"{k} {100 * v:.0f}%" for k, v in self.fractions.items())
        if self.smooth_share:
            routes += f" (smooth {100 * self.smooth_share:.0f}%)"
        if self.edge_share:
            routes += f" (edges kept heavy {100 * self.edge_share:.0f}%)"
        if self.plan is not None and self.plan.extra.get("fallback"):
            routes += f" ({self.plan.extra['fallback']})"
        if self.scorer != "defocus":
            routes += f" by the {self.scorer} {'router' if self.scorer == 'learned' else 'score'}"
        t = self.timings
        stages = ", ".join(f"{k} {t[k]:.2f}" for k in ("map", "plan", *ROUTE_NAMES, "blend") if k in t)
        cut = round(100 * self.flops_cut)
        notes = "".join(f" | {n}" for n in self.notes)
        return (
            f"routes {routes} | FLOPs {100 * self.flops_fraction:.0f}% of {self.heavy or 'heavy'} "
            f"({f'cut {cut}%' if cut > 0 else 'no cut'}) | {t.get('total', 0.0):.2f} s ({stages}){notes}"
        )


# ---------------------------------------------------------------------- models


def _as_model(spec: Any, *, device: Any, allow_untrained: bool) -> tuple[Any, Any]:
    """(model, ModelInfo) from a pair, or a registered name / weights path loaded via load_model."""
    if isinstance(spec, tuple) and len(spec) == 2:
        return spec
    from blurwise.models import load_model

    return load_model(spec, device=device or "cpu", allow_untrained=allow_untrained)


@functools.lru_cache(maxsize=8)
def _shipped_fingerprint(name: str) -> str | None:
    """The weights fingerprint of a registered model's shipped weights (None: not a shipped registered model), read
    from the file: no model is built for it."""
    from blurwise.models import get_variant, weights_fingerprint
    from blurwise.models.registry import WEIGHTS_DIR, is_shipped, read_weights

    try:
        v = get_variant(name)
        if not is_shipped(v):
            return None
        return weights_fingerprint(read_weights(WEIGHTS_DIR / v.weights)[0])
    except (ModelError, KeyError):
        return None


def taught_by(light_info: Any, heavy: Any, heavy_info: Any) -> bool:
    """Whether the EBM-SR ``light_info`` was distilled from these very heavy weights.

    By the teacher's weights fingerprint (``blurwise.models.weights_fingerprint``), which distillation stores; for
    an EBM-SR without one, the fingerprint of its teacher's shipped weights when its teacher is a shipped model,
    else the teacher's name (or file stem). Names alone do not do: a model trained from a shipped config carries
    the shipped name, and a file given as ``my_edsr.pth`` is called ``my_edsr``.
    """
    from blurwise.models import weights_fingerprint

    teacher = light_info.teacher
    if not teacher:
        return True
    want = light_info.metadata.get("teacher_fingerprint") or _shipped_fingerprint(teacher)
    if want:
        return want == weights_fingerprint(heavy)
    return heavy_info.name in (teacher, Path(teacher).stem)


def check_taught_by(light_info: Any, heavy: Any, heavy_info: Any) -> None:
    """A one-line ModelError unless the light model (an EBM-SR) was distilled from these heavy weights
    (:func:`taught_by`); other light models pass."""
    if light_info.task == "ebmsr" and not taught_by(light_info, heavy, heavy_info):
        raise ModelError(
            f"light model {light_info.name!r} was distilled from {light_info.teacher!r}, not from these heavy "
            f"weights ({heavy_info.name!r}); make a matching one with 'blurwise train distill --teacher FILE'"
        )


def find_light_model(heavy_name: str, scale: int, heavy: Any = None) -> str:
    """Name of the registered EBM-SR distilled from ``heavy_name`` at ``scale`` (and, with the ``heavy`` model
    given, from these very weights: :func:`taught_by`), or a one-line ModelError."""
    from blurwise.models import list_variants, weights_fingerprint

    for v in list_variants():
        if v.task == "ebmsr" and v.teacher == heavy_name and v.scale == scale:
            if heavy is None or _shipped_fingerprint(heavy_name) in (None, weights_fingerprint(heavy)):
                return v.name
            raise ModelError(
                f"the registered EBM-SR {v.name!r} was distilled from the shipped {heavy_name!r}, and these weights "
                f"differ from it; make one for them with 'blurwise train distill --teacher FILE' and give it "
                "(--light / light=), or turn routing off (--route off / route='off')"
            )
    raise ModelError(
        f"no EBM-SR is registered for heavy model {heavy_name!r} at x{scale}; "
        f"make one with 'blurwise train distill --teacher {heavy_name}', give a light model (--light / light=), "
        "or turn routing off (--route off / route='off')"
    )


def resolve_models(
    heavy: Any,
    light: Any = None,
    *,
    scale: int | None = None,
    device: Any = None,
    allow_untrained: bool = False,
    check_teacher: bool = True,
) -> tuple[tuple[Any, Any], tuple[Any, Any]]:
    """Load and check the heavy and light models: same scale (and ``scale`` if given), light taught by heavy.

    ``light=None`` finds the registered EBM-SR whose teacher is the heavy model. Raises ModelError
    for a scale mismatch, a missing EBM-SR, or an EBM-SR distilled from another teacher.
    """
    hm, hi = _as_model(heavy, device=device, allow_untrained=allow_untrained)
    if hi.task not in ("sr",):
        raise ModelError(f"heavy model {hi.name!r} is a {hi.task} model, not super-resolution")
    if scale is not None and hi.scale != scale:
        raise ModelError(f"scale mismatch: heavy model {hi.name!r} is x{hi.scale}, asked for x{scale}")
    if light is None:
        light = find_light_model(hi.name, hi.scale, hm if check_teacher else None)
    lm, li = _as_model(light, device=device, allow_untrained=allow_untrained)
    if li.scale != hi.scale:
        raise ModelError(
            f"scale mismatch: heavy model {hi.name!r} is x{hi.scale}, light model {li.name!r} is x{li.scale}"
        )
    if check_teacher:
        check_taught_by(li, hm, hi)
    if li.in_channels not in (3, 4):
        raise ModelError(f"light model {li.name!r} takes {li.in_channels} channels; expected 4 (RGB + sigma) or 3")
    return (hm, hi), (lm, li)


# ---------------------------------------------------------------------- map


def lr_map_kwargs(scale: int, depth: bool = False, **kw: Any) -> dict[str, Any]:
    """The estimator settings of the LR map at ``scale``: ``LR_MAP_DEFAULTS`` (when its model is shipped)
    overridden by ``kw``, so the map and its FLOPs accounting always name the same estimator. With a
    depth map (``depth=True``) the depth-guided DGS estimator is used instead: the learned map takes RGB only.
    """
    base = {} if depth else dict(LR_MAP_DEFAULTS.get(int(scale), {}))
    if base.get("method") == "learned":
        from blurwise.defocus.learned import scale_model_available

        if not scale_model_available(int(scale)):
            base = {}
    if kw.get("method", base.get("method")) != base.get("method"):
        base = {}  # another estimator: none of the default's settings apply to it
    base.update(kw)
    return base


def _default_map_in_use(scale: int, map_kwargs: dict[str, Any] | None, depth: bool) -> bool:
    """Whether these map settings resolve to the scale's default (calibrated) estimator."""
    used = lr_map_kwargs(scale, depth, **(map_kwargs or {}))
    return bool(used) and used == lr_map_kwargs(scale)


def default_threshold_hr(scale: int, map_kwargs: dict[str, Any] | None = None, depth: bool = False) -> float:
    """Default routing threshold (sigma_HR px) for maps made by ``estimate_lr_map(.., **map_kwargs)``:
    the value calibrated with the scale's default estimator when that is the one in use, else
    ``DEFAULT_THRESHOLD_HR`` (calibrated with the edge/DGS map)."""
    if _default_map_in_use(scale, map_kwargs, depth) and int(scale) in LR_MAP_THRESHOLD_HR:
        return LR_MAP_THRESHOLD_HR[int(scale)]
    return DEFAULT_THRESHOLD_HR


def default_stat(scale: int, map_kwargs: dict[str, Any] | None = None, depth: bool = False) -> str | float:
    """Default per-patch statistic for maps made by ``estimate_lr_map(.., **map_kwargs)``: the one
    calibrated with the scale's default estimator when that is in use, else "min" (conservative)."""
    if _default_map_in_use(scale, map_kwargs, depth) and int(scale) in LR_MAP_STAT:
        return LR_MAP_STAT[int(scale)]
    return "min"


def default_edges(scale: int, map_kwargs: dict[str, Any] | None = None, depth: bool = False) -> float | None:
    """Default strong-edge rule (texture score, see ``upscale_routed``) for maps made by
    ``estimate_lr_map(.., **map_kwargs)``: the calibrated one with the scale's default estimator, else None (off)."""
    if _default_map_in_use(scale, map_kwargs, depth):
        return LR_MAP_EDGES.get(int(scale))
    return None


def default_smooth(scale: int, map_kwargs: dict[str, Any] | None = None, depth: bool = False) -> float | None:
    """Default smooth-patch rule (texture score, see ``upscale_routed``) for maps made by
    ``estimate_lr_map(.., **map_kwargs)``: the calibrated one with the scale's default estimator, else None (off)."""
    if _default_map_in_use(scale, map_kwargs, depth):
        return LR_MAP_SMOOTH.get(int(scale))
    return None


def map_macs(shape: tuple[int, int], method: str = "auto", segmenter: str = "auto", lr_scale: int = 1) -> float:
    """MACs of estimating the defocus map of an LR image of ``shape`` (x``lr_scale``), for the FLOPs accounting
    (:func:`blurwise.defocus.estimate_macs`: the classical filters' count, or the network's measured MACs)."""
    from blurwise.defocus import estimate_macs

    return float(estimate_macs(shape[0], shape[1], method=method, segmenter=segmenter, lr_scale=lr_scale))


def lr_map_macs(shape: tuple[int, int], scale: int, depth: bool = False, **kw: Any) -> float:
    """MACs of the map :func:`estimate_lr_map` makes with these settings (same resolution of the defaults)."""
    mk = lr_map_kwargs(scale, depth, **kw)
    return map_macs(shape, mk.get("method", "auto"), mk.get("segmenter", "auto"), lr_scale=scale)


def estimate_lr_map(
    lr: np.ndarray,
    scale: int,
    depth: np.ndarray | None = None,
    *,
    device: Any = None,
    half: bool | str = False,
    **kw: Any,
) -> np.ndarray:
    """Defocus map of an LR image (sigma in LR px), calibrated for an x``scale`` bicubic-made LR input.

    ``device`` and ``half`` say where and in what precision the learned estimator runs (not which
    estimator: ``kw`` does, see :func:`lr_map_kwargs`); the edge/DGS estimator ignores them.
    """
    try:
        from blurwise.defocus import estimate_defocus
    except ImportError:
        raise NotAvailableError(
            "defocus map estimation is not available; turn routing off (--route off / route='off')"
        ) from None
    kw = lr_map_kwargs(scale, depth is not None, **kw)
    kw.setdefault("lr_scale", scale)
    kw.setdefault("device", None if device is None else str(device))
    kw.setdefault("half", half)
    return np.asarray(estimate_defocus(lr, depth, **kw), dtype=np.float32)


def map_precision(map_half: bool | str | None, half: bool | str, device: Any) -> bool | str:
    """The precision the routing map runs in: ``map_half`` when given (False = fp32, "bf16", "fp16"); by
    default the SR models' ``half`` on a GPU, and on a CPU bf16 where it is native (AMX / AVX512-BF16).

    The map only decides routes (which side of a threshold each patch lies on; on the router's 48
    calibration items a bf16 map moves the cut by 0.2 points and the loss by 0.002 dB, see
    docs/results/routed_sr_history.md), and on such CPUs it takes 3-5% of a whole-image heavy run in fp32.
    """
    import torch

    from blurwise.tiling import cpu_has_fast_bf16, half_dtype

    dev = torch.device("cpu" if device in (None, "auto") else device)
    if map_half is not None:
        try:  # the spellings every ``half`` flag takes
            fp32 = half_dtype(map_half, torch.device("cpu")) is None
        except ValueError:
            raise UsageError(f"map precision must be fp32, fp16 or bf16, not {map_half!r}") from None
        if map_half in ("fp16", "float16") and dev.type == "cpu":  # CPU autocast would run it as bf16
            raise UsageError("an fp16 map (--map-precision fp16) needs a GPU; on a CPU use bf16 or fp32")
        return False if fp32 else map_half
    if dev.type == "cpu":
        return "bf16" if cpu_has_fast_bf16() else False
    return half


# ---------------------------------------------------------------------- learned router

# The learned patch router per scale (``blurwise/models/router.py``, trained by ``blurwise.train.router``):
# it predicts from the map and the luma texture what sending each patch to the light model costs, and
# replaces the map threshold + percentile + edge rules when it applies (see :func:`router_for`).
ROUTER_MODELS: dict[int, str] = {2: "router-x2", 4: "router-x4"}
LEARNED_NO_DEPTH = "the learned router takes no depth map; router 'map' (--router map) routes with one"


def router_for(
    scale: int,
    heavy_name: str,
    map_kwargs: dict[str, Any] | None = None,
    depth: bool = False,
    models: tuple[Any, Any] | None = None,
) -> str | None:
    """The shipped router for this setting, or None: it must exist for the scale, have been trained for
    this heavy model (its predictions are that model's gain over its EBM-SR; with the (heavy, light) ``models``
    given, for these very weights of both, not only their names) and see the map it was trained on (the
    scale's default estimator, no depth)."""
    name = ROUTER_MODELS.get(int(scale))
    if name is None or not _default_map_in_use(scale, map_kwargs, depth):
        return None
    from blurwise.models import get_variant
    from blurwise.models.registry import is_shipped

    try:
        if not is_shipped(get_variant(name)):
            return None
    except Exception:  # noqa: BLE001 - an unknown variant: no router
        return None
    info = _load_router(name)[1]
    trained_for = info.metadata.get("training", {}).get("heavy")
    if trained_for not in (None, heavy_name):
        return None
    if models is not None and trained_for is not None:  # the very weights of the pair it learned
        from blurwise.models import weights_fingerprint

        learned = info.metadata.get("training", {}).get("pair")
        if learned:
            want = (learned.get("heavy"), learned.get("light"))
        else:  # a router without the record: the shipped weights of both
            try:
                want = tuple(map(_shipped_fingerprint, (trained_for, find_light_model(trained_for, scale))))
            except ModelError:
                return None
        if any(w != weights_fingerprint(m) for w, m in zip(want, models, strict=True)):
            return None
    return name


@functools.lru_cache(maxsize=4)
def _load_router(name: str) -> tuple[Any, Any]:
    """A router by registered name or path, loaded once per process (it is tiny and asked for per image)."""
    from blurwise.models import load_model

    return load_model(name)


def learned_scores(
    lr: np.ndarray, sigma_lr: np.ndarray, router: Any, *, scale: int, patch: int = DEFAULT_PATCH
) -> tuple[np.ndarray, float, float]:
    """Per-patch scores of the learned router (higher = safer to route light: minus the predicted loss),
    its default threshold in the same units, and its MACs on this grid.

    ``router``: a registered name, a ``.safetensors`` path or a (model, ModelInfo) pair.
    """
    import torch

    from blurwise.routing.features import patch_features

    model, info = _load_router(str(router)) if isinstance(router, str | Path) else router
    if info.task != "router":
        raise ModelError(f"{info.name!r} is a {info.task} model, not a patch router")
    feats = patch_features(lr, sigma_lr, scale=scale, patch=patch)
    if feats.shape[-1] != info.in_channels:
        raise ModelError(f"router {info.name!r} takes {info.in_channels} features, got {feats.shape[-1]}")
    with torch.inference_mode():
        pred = model(torch.from_numpy(np.ascontiguousarray(feats.transpose(2, 0, 1)))[None])[0, 0].numpy()
    tau = float(info.metadata.get("routing", {}).get("threshold", 0.0))
    macs = float(info.macs_per_pixel) * pred.size
    return (-pred).astype(np.float32), -tau, macs


# ---------------------------------------------------------------------- pipeline


def _as_unit_float(lr: Any) -> np.ndarray:
    """``lr`` as float32 in [0, 1]: 8/16-bit images are scaled (:func:`blurwise.io.image.to_float`), floats kept.

    An 8-bit array passed as it is would otherwise run as values up to 255: the map, the router and both
    models would see an image 255 times too bright and route and upscale it wrongly, without a word. A
    float image far above 1 (0-255 data in a float array) is refused for the same reason; a slight
    overshoot, as sharpening or colour conversion leave, is kept (the models clip their output).
    """
    from blurwise.io.image import float_pixels_problem, to_float

    a = to_float(np.asarray(lr))
    problem = float_pixels_problem(a)
    if problem:
        raise UsageError(problem)
    return a


def upscale_routed(
    lr: np.ndarray,
    *,
    heavy: Any,
    light: Any = None,
    scale: int | None = None,
    sigma_lr: np.ndarray | None = None,
    threshold: float | tuple[float, float] | None = None,
    budget: float | None = None,
    routes: int = 2,
    depth: np.ndarray | None = None,
    batch: int | None = None,
    device: Any = None,
    progress: bool = False,
    scorer: str = "auto",
    router: Any = None,
    patch: int = DEFAULT_PATCH,
    overlap: int = DEFAULT_OVERLAP,
    context: int = DEFAULT_CONTEXT,
    side_context: int | None = DEFAULT_SIDE_CONTEXT,
    inset: bool = True,
    max_tile: int | None = None,
    stat: str | float | None = None,
    blend: str = "linear",
    half: bool | str = False,
    seed: int = 0,
    allow_untrained: bool = False,
    check_teacher: bool = True,
    map_kwargs: dict[str, Any] | None = None,
    smooth: float | str | None = "auto",
    edges: float | str | None = "auto",
    min_saving: float | None = None,
    map_half: bool | str | None = None,
) -> tuple[np.ndarray, RouteReport]:
    """Defocus-aware SR of ``lr`` (HWC RGB, float in [0, 1] or 8/16-bit): returns (SR image, RouteReport).

    ``heavy``/``light``: (model, ModelInfo) pairs or registered names/paths (``light=None`` = the
    heavy model's EBM-SR). ``sigma_lr``: the defocus map (Gaussian sigma in LR px, HxW of ``lr``);
    estimated with ``blurwise.defocus.estimate_defocus(lr, depth)`` when not given (timed and counted).
    ``threshold`` (LR px; sigma_HR = scale x sigma_LR; default :func:`default_threshold_hr`) or
    ``budget`` (fraction of the heavy model's FLOPs) decide the routes; ``routes=3`` adds the bicubic route for very
    defocused patches (with the learned router: the patches it sends light whose map is at least
    ``default_threshold(scale, bicubic=True)`` over the whole patch and its blend band).
    ``scorer`` = "learned" | "defocus" | "texture" | "random" picks what the patches are ranked by: the
    learned router (``router``: default :func:`router_for`; it predicts from the map and the texture what
    the light route costs on each patch; a ``threshold`` is then in its units, the predicted asinh(dMSE / 2),
    default the calibrated one in its metadata), the map alone (DCE), or texture and random (they need a
    threshold in their own units or a budget). "auto" = "learned" when a router applies
    (:func:`router_for`, the map estimated here, no sigma ``threshold``), else "defocus". ``stat`` is the
    per-patch statistic of the map ("min": any in-focus pixel keeps a patch heavy; a number: that
    percentile; None: :func:`default_stat` for an estimated map, "min" for a given one). Grid:
    ``patch``, ``overlap`` (blend half-width) and ``context`` in LR px (``side_context`` on heavy-tile
    sides that border only cheaper routes; ``inset``: their blend band inside the core, see :func:`plan_routes`),
    tiles up to ``max_tile`` LR px (None: 256 for the heavy tiles while the
    light model may run on the whole image; a number bounds every route's tiles, as ``tile`` bounds memory);
    ``half`` (True/"fp16"/"bf16")
    autocasts both routes' models as ``tiling.run_tiled`` does: fp16 or bf16 on CUDA, bf16 on a CPU.
    ``smooth`` (defocus routing with a threshold): a patch whose texture score
    (:func:`texture_scores`, -log10 of its gradient energy) is at least ``smooth`` goes light even where
    the map calls it in focus. Smooth content gives the heavy model nothing to add, and mild defocus
    (a fraction of an LR pixel) is invisible to the map exactly there; the report's ``smooth_share`` says
    how many patches went light for this reason alone. "auto": :func:`default_smooth` for a map estimated
    here by the scale's default estimator without a budget, else off; None: off.
    ``edges`` (defocus routing with a threshold): a patch whose texture score is below ``edges`` (strong
    edges or fine texture) stays heavy even where the map calls it defocused: the light model cannot
    rebuild such edges, and a map that mistakes a soft but in-focus photo for mild defocus costs most
    there (``edge_share`` in the report). "auto": :func:`default_edges` as for ``smooth``; None: off.
    ``min_saving``: a plan saving less than this fraction of the heavy model's FLOPs runs the heavy model
    everywhere (None: :data:`DEFAULT_MIN_SAVING`; 0: route whatever it saves; ignored with a ``budget``).
    ``map_half``: the precision of the map estimated here (:func:`map_precision`; None: bf16 on CPUs with
    bf16 units, else as ``half``; False or "fp32": full precision, the same routes on every CPU).
    """
    t_start = time.perf_counter()
    arr = _as_unit_float(lr)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise UsageError(f"routed SR needs an RGB HWC image, got shape {arr.shape}")
    if scorer not in ("auto", "learned", "defocus", "texture", "random"):
        raise UsageError(f"scorer must be 'auto', 'learned', 'defocus', 'texture' or 'random', got {scorer!r}")
    (hm, hi), (lm, li) = resolve_models(
        heavy, light, scale=scale, device=device, allow_untrained=allow_untrained, check_teacher=check_teacher
    )
    s = hi.scale
    h, w = arr.shape[:2]
    timings: dict[str, float] = {}
    if scorer == "auto":
        auto_router = router or (
            router_for(s, hi.name, map_kwargs, depth is not None, (hm, lm))
            if sigma_lr is None and threshold is None
            else None
        )
        scorer, router = ("learned", auto_router) if auto_router else ("defocus", None)
    elif scorer == "learned":
        if router is None and depth is not None:
            raise UsageError(LEARNED_NO_DEPTH)
        router = router or router_for(s, hi.name, map_kwargs, models=(hm, lm))
        if router is None:
            raise NotAvailableError(
                f"no learned router for x{s} with these models ({hi.name}, {li.name}) and this map; "
                "route by the map (router 'map', --router map)"
            )
    need_map = scorer in ("defocus", "learned") or li.in_channels == 4
    mdev = next((p.device for p in hm.parameters()), device)  # the map runs beside the heavy model
    mhalf = map_precision(map_half, half, mdev)
    m_macs = 0.0
    if sigma_lr is None and need_map:
        t0 = time.perf_counter()
        sigma_lr = estimate_lr_map(arr, s, depth, device=mdev, half=mhalf, **(map_kwargs or {}))
        timings["map"] = time.perf_counter() - t0
        m_macs = lr_map_macs((h, w), s, depth is not None, **(map_kwargs or {}))
        if threshold is None and budget is None and scorer == "defocus":
            threshold = default_threshold_hr(s, map_kwargs, depth is not None) / s  # calibrated with this map
        if stat is None:
            stat = default_stat(s, map_kwargs, depth is not None)
        auto_ok = scorer == "defocus" and budget is None  # the router has its own texture features
        if smooth == "auto":
            smooth = default_smooth(s, map_kwargs, depth is not None) if auto_ok else None
        if edges == "auto":
            edges = default_edges(s, map_kwargs, depth is not None) if auto_ok else None
    if stat is None:
        stat = "min"
    if smooth == "auto":
        smooth = None  # a given map: the caller decides
    if edges == "auto":
        edges = None
    if sigma_lr is not None:
        sigma_lr = np.asarray(sigma_lr, dtype=np.float32)
        if sigma_lr.shape != (h, w):
            raise UsageError(
                f"the sigma map is {'x'.join(map(str, sigma_lr.shape))} but the LR image is {h}x{w}; "
                "give the map at the LR resolution"
            )
    t0 = time.perf_counter()
    common = dict(
        scale=s,
        threshold=threshold,
        budget=budget,
        routes=routes,
        patch=patch,
        overlap=overlap,
        context=context,
        side_context=side_context,
        inset=inset,
        max_tile=max_tile or DEFAULT_MAX_TILE,
        light_whole=max_tile is None,
        stat=stat,
        heavy_macs=hi.macs_per_pixel,
        light_macs=li.macs_per_pixel,
        map_macs=m_macs,
        scorer=scorer,
        min_saving=DEFAULT_MIN_SAVING if min_saving is None else float(min_saving),
    )
    for rule_name, rule in (("smooth", smooth), ("edges", edges)):
        if rule is not None and (scorer != "defocus" or budget is not None):
            raise UsageError(
                f"{rule_name} applies to defocus routing with a threshold, not to a budget or other scorers"
            )
    if scorer == "learned":
        scores, tau, r_macs = learned_scores(arr, sigma_lr, router, scale=s, patch=patch)  # type: ignore[arg-type]
        timings["score"] = time.perf_counter() - t0  # part of "plan": the router's features and forward pass
        if threshold is None and budget is None:
            common["threshold"] = tau
        elif threshold is not None:
            common["threshold"] = -float(threshold)  # given as a predicted loss: light at or below it
        common["map_macs"] = m_macs + r_macs
        bic = None
        if routes == 3:  # the router separates heavy from light; the map picks the light patches bicubic can take
            assert sigma_lr is not None
            blur = defocus_scores(sigma_lr, patch=patch, margin=overlap, stat="min")
            bic = blur >= default_threshold(s, bicubic=True)
        plan = plan_routes(scores=scores, shape=(h, w), bicubic_ok=bic, **common)  # type: ignore[arg-type]
    elif scorer == "defocus":
        # a budget on a map with flat stretches is met finely by ranking equal-blur patches by texture;
        # with ``smooth``, smooth patches go light whatever the map says
        # with ``edges``, patches with strong edges stay heavy whatever the map says
        need_tex = budget is not None or smooth is not None or edges is not None
        tex = texture_scores(arr, patch=patch, margin=overlap) if need_tex else None
        ties = tex if budget is not None else None
        floor = tex >= float(smooth) if smooth is not None else None  # type: ignore[operator]
        keep = tex < float(edges) if edges is not None else None  # type: ignore[operator]
        plan = plan_routes(sigma_lr, tie_scores=ties, light_floor=floor, keep_heavy=keep, **common)  # type: ignore[arg-type]
    elif scorer == "texture":
        plan = plan_routes(scores=texture_scores(arr, patch=patch, margin=overlap), shape=(h, w), **common)
    else:
        plan = plan_routes(scores=random_scores((h, w), patch=patch, seed=seed), shape=(h, w), **common)
    timings["plan"] = time.perf_counter() - t0
    from blurwise.routing.execute import execute_plan as _exec

    models = {HEAVY: hm, LIGHT: lm}
    kw = dict(batch=batch, device=device, half=half, blend=blend, progress=progress)
    sr, run_t = _exec(arr, plan, models, sigma_lr, **kw)
    timings.update(run_t)
    timings["total"] = time.perf_counter() - t_start
    report = RouteReport(
        fractions=plan.fractions(),
        macs=plan.macs(),
        full_heavy_macs=plan.full_heavy_macs,
        timings=timings,
        thresholds=plan.thresholds,
        scale=s,
        scorer=scorer,
        n_tiles={ROUTE_NAMES[r]: len(plan.tiles_of(r)) for r in range(plan.routes)},
        overhead=plan.overhead,
        heavy=hi.name,
        light=li.name,
        plan=plan,
        sigma_lr=sigma_lr,
        smooth_share=float(plan.extra.get("floor_share", 0.0)),
        edge_share=float(plan.extra.get("kept_share", 0.0)),
    )
    if plan.extra.get("budget_met") is False:
        report.notes.append(
            f"budget {budget:g} not reachable: the plan uses {100 * report.flops_fraction:.1f}% of the heavy FLOPs "
            f"(map{', router' if scorer == 'learned' else ''} and light model included)"
        )
    return sr, report


def routing_overlay(lr: np.ndarray, plan: RoutePlan, *, alpha: float = 0.45, zoom: int = 1) -> np.ndarray:
    """The LR image tinted by route (heavy red, light green, bicubic blue) with merged tile outlines.

    Returns float32 HWC in [0, 1] (``zoom`` times the LR size, nearest-neighbour) for ``--save-map``.
    """
    img = np.asarray(lr, dtype=np.float32)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    img = img[..., :3]
    if img.shape[:2] != tuple(plan.shape):
        raise UsageError(f"overlay: image {img.shape[:2]} does not match the plan {plan.shape}")
    rm = plan.route_map()
    colours = np.array([ROUTE_COLOURS[r] for r in range(3)], dtype=np.float32)
    out = (1 - alpha) * img + alpha * colours[rm]
    if zoom > 1:
        out = out.repeat(zoom, axis=0).repeat(zoom, axis=1)
    z = max(1, zoom)
    for t in plan.tiles:
        y0, y1, x0, x1 = (v * z for v in t.core)
        out[y0:y1, [x0, x1 - 1]] = 1.0
        out[[y0, y1 - 1], x0:x1] = 1.0
    return np.clip(out, 0, 1).astype(np.float32)
