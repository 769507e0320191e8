"""The Python API: ``blurwise.upscale``, ``blurwise.deblur``, ``blurwise.defocus_map``.

Each takes a numpy array (HW or HWC; uint8, uint16 or float in [0, 1]) or a PIL image and returns
the same kind (same dtype, same channel layout). Gray images are replicated to RGB for the model and
returned gray; alpha goes around the model (resized bicubic) and is re-attached. Models are loaded
once and cached. The classes :class:`Upscaler` and :class:`Deblurrer` do the same work on
float32 HWC arrays and are what the folder pipeline (:mod:`blurwise.batch`) calls per image.

>>> import numpy as np, blurwise
>>> img = np.zeros((8, 8, 3), np.uint8)
>>> blurwise.upscale(img, scale=2, model="bicubic").shape
(16, 16, 3)
"""

from __future__ import annotations

import inspect
import logging
import numbers
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from blurwise.errors import InputError, ModelError, NotAvailableError, UsageError
from blurwise.io.alpha import merge_alpha, resize_plane
from blurwise.io.image import float_pixels_problem, from_float, to_float

log = logging.getLogger(__name__)

__all__ = ["upscale", "deblur", "defocus_map", "resolve_device", "get_model", "Upscaler", "Deblurrer", "RunReport"]

BASELINES = {"bicubic": "sr", "identity": "deblur"}
_CACHE_SIZE = 4
_cache: OrderedDict[tuple, tuple[Any, Any]] = OrderedDict()
_cache_lock = threading.Lock()
_Y = np.array([0.299, 0.587, 0.114], dtype=np.float32)


# --------------------------------------------------------------------------- devices and models


def resolve_device(device: str | Any = "auto") -> Any:
    """``"auto"``: CUDA, then Apple MPS, then CPU; else the named device (checked: one-line UsageError)."""
    from blurwise.tiling import resolve_device as _resolve

    return _resolve(device)


def _allow_untrained() -> bool:
    # Development/test switch: build registered models without shipped weights (random init).
    return os.environ.get("BLURWISE_ALLOW_UNTRAINED", "") not in ("", "0")


def get_model(
    name_or_path: str, *, device: Any = "cpu", trust_pickle: bool = False, allow_untrained: bool | None = None
) -> tuple[Any, Any]:
    """(model in eval mode, ModelInfo) for a registered name or weights path, from a small LRU cache."""
    from blurwise.models import load_model

    dev = resolve_device(device)
    untrained = _allow_untrained() if allow_untrained is None else allow_untrained
    key = (str(name_or_path), str(dev), bool(trust_pickle), bool(untrained))
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    model, info = load_model(name_or_path, device=dev, trust_pickle=trust_pickle, allow_untrained=untrained)
    model.eval()
    with _cache_lock:
        _cache[key] = (model, info)
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return model, info


def clear_cache() -> None:
    """Forget the cached models (frees their memory)."""
    with _cache_lock:
        _cache.clear()


def _half_mode(half: Any, dev: Any, info: Any) -> Any:
    """None/False -> fp32; "auto" -> fp16 on CUDA when the model supports it; else passed through."""
    if half in (None, False, "fp32", "no"):
        return False
    if half == "auto":
        return "fp16" if dev.type == "cuda" and getattr(info, "supports_half", True) else False
    if half not in (True, "fp16", "bf16"):
        raise UsageError(f"half must be None, 'auto', 'fp16' or 'bf16', not {half!r}")
    if half == "fp16" and dev.type == "cpu":  # CPU autocast is bf16: fp16 would silently run as bf16
        raise UsageError("fp16 (--half fp16 / half='fp16') needs a GPU; on a CPU use bf16")
    return half


def _maybe_compile(model: Any, compile: bool) -> Any:
    if not compile:
        return model
    import torch

    return torch.compile(model)


# --------------------------------------------------------------------------- array conversions


@dataclass
class _Kind:
    """How the caller's image looked, so the result can be given back in the same form."""

    pil_mode: str | None  # PIL input: its mode; None for numpy
    dtype: Any = np.float32
    ndim: int = 3
    gray: bool = False


def _from_user(img: Any) -> tuple[np.ndarray, np.ndarray | None, _Kind]:
    """numpy (HW/HWC uint8/uint16/float) or PIL image -> (float32 HWC C=1|3, alpha HW|None, kind)."""
    if hasattr(img, "mode") and hasattr(img, "size") and not isinstance(img, np.ndarray):
        from blurwise.io.image import _pil_to_array

        arr, _bits = _pil_to_array(img, "<PIL image>")
        mode = img.mode
        kind = _Kind(pil_mode=mode)
        data = to_float(arr)
    else:
        arr = np.asarray(img)
        if arr.dtype == object or arr.ndim not in (2, 3):
            raise InputError(f"expected an HW or HWC image array, got shape {arr.shape} and type {arr.dtype}")
        if arr.dtype not in (np.uint8, np.uint16) and not np.issubdtype(arr.dtype, np.floating):
            raise InputError(f"unsupported pixel type {arr.dtype} (use uint8, uint16 or float in [0, 1])")
        kind = _Kind(pil_mode=None, dtype=arr.dtype, ndim=arr.ndim)
        data = to_float(arr)
        if data.ndim == 2:
            data = data[:, :, None]
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise InputError(f"zero-size image ({data.shape[1]}x{data.shape[0]})")
    problem = float_pixels_problem(data)  # NaN, or 0-255 data in floats: every model would run on it silently
    if problem:
        raise InputError(problem)
    c = data.shape[2]
    if c not in (1, 2, 3, 4):
        raise InputError(f"expected 1 to 4 channels, got {c}")
    pixels, alpha = (data[:, :, :-1], data[:, :, -1]) if c in (2, 4) else (data, None)
    kind.gray = pixels.shape[2] == 1
    return np.ascontiguousarray(pixels, dtype=np.float32), alpha, kind


def _to_user(pixels: np.ndarray, alpha: np.ndarray | None, kind: _Kind) -> Any:
    """Inverse of :func:`_from_user` for a (possibly resized) result."""
    data = merge_alpha(pixels, alpha)
    if kind.pil_mode is not None:
        from PIL import Image as PILImage

        if kind.pil_mode.startswith("I") and data.shape[2] == 1:  # I;16 or I (read as 0-65535): keep 16 bits
            arr16 = from_float(data[:, :, 0], 16)
            return PILImage.fromarray(arr16.astype(np.int32) if kind.pil_mode == "I" else arr16)
        if kind.pil_mode == "F" and data.shape[2] == 1:
            return PILImage.fromarray(data[:, :, 0].astype(np.float32), mode="F")
        arr8 = from_float(data, 8)
        mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[arr8.shape[2]]
        return PILImage.fromarray(arr8[:, :, 0] if mode == "L" else arr8, mode)
    if kind.dtype == np.uint8:
        out = from_float(data, 8)
    elif kind.dtype == np.uint16:
        out = from_float(data, 16)
    else:
        out = np.clip(data, 0.0, 1.0).astype(kind.dtype)
    if kind.ndim == 2 and out.shape[2] == 1:
        out = out[:, :, 0]
    return out


def _checked(pixels: Any, alpha: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """What Upscaler/Deblurrer take: float HWC pixels in [0, 1] with 1 or 3 channels, alpha HW of the same size
    (as float32); anything else is a one-line InputError (8-bit data or 0-255 floats would run as a white image)."""
    a = np.asarray(pixels)
    if not np.issubdtype(a.dtype, np.floating) or a.ndim != 3 or a.shape[2] not in (1, 3) or 0 in a.shape:
        raise InputError(
            f"expected float32 HWC pixels in [0, 1] with 1 or 3 channels, got shape {a.shape} and type {a.dtype} "
            "(blurwise.io.read_image gives them; blurwise.upscale/deblur take any image)"
        )
    problem = float_pixels_problem(a)
    if problem:
        raise InputError(problem)
    if alpha is None:
        return a.astype(np.float32, copy=False), None
    al = np.asarray(alpha)
    if not np.issubdtype(al.dtype, np.floating) or al.shape != a.shape[:2]:
        raise InputError(f"alpha must be a float HW plane of the image's size {a.shape[:2]}, got {al.shape} {al.dtype}")
    problem = float_pixels_problem(al)
    if problem:
        raise InputError(f"{problem} (in the alpha plane)")
    return a.astype(np.float32, copy=False), al.astype(np.float32, copy=False)


def _rgb(pixels: np.ndarray) -> np.ndarray:
    return np.repeat(pixels, 3, axis=2) if pixels.shape[2] == 1 else pixels


def _back_to_gray(out: np.ndarray, gray: bool) -> np.ndarray:
    """Model output (RGB) -> gray (BT.601 luma) when the input was gray."""
    if not gray:
        return out
    return np.clip(out @ _Y, 0.0, 1.0)[:, :, None].astype(np.float32)


def _to_tensor(x: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]


def _from_tensor(t: Any) -> np.ndarray:
    return np.ascontiguousarray(t[0].float().clamp(0, 1).permute(1, 2, 0).cpu().numpy())


# --------------------------------------------------------------------------- reports


@dataclass
class RunReport:
    """What one call did: the route actually used, the models, seconds, and the routing report if routed."""

    route: str  # "routed" | "off"
    model: str
    light: str | None = None
    seconds: float = 0.0
    routing: Any = None  # blurwise.routing.RouteReport when routed
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for the CLI (with the notes)."""
        if self.routing is not None and hasattr(self.routing, "summary"):
            rest = [n for n in self.notes if n not in getattr(self.routing, "notes", ())]
            return self.routing.summary() + "".join(f" | {n}" for n in rest)
        extra = f" ({'; '.join(self.notes)})" if self.notes else ""
        return f"{self.model}, {self.seconds:.2f} s{extra}"


# --------------------------------------------------------------------------- upscale


# ``router`` choices of Upscaler / upscale / ``blurwise upscale --router`` -> upscale_routed's scorer
ROUTERS = {"auto": "auto", "learned": "learned", "map": "defocus"}
# ``map_precision`` choices (``blurwise upscale --map-precision``): see blurwise.routing.map_precision
MAP_PRECISIONS = ("auto", "fp32", "bf16", "fp16")


class Upscaler:
    """Loaded SR models plus settings; call it on float32 HWC images (the batch pipeline does, per image).

    ``route``: "auto" routes defocused patches to the light EBM-SR when one exists for the heavy model
    (falling back to the heavy model everywhere, with a note, when it does not), "on" insists on
    routing, "off" runs the heavy model on the whole image (tiled).
    """

    def __init__(
        self,
        scale: int = 4,
        *,
        model: str | None = None,
        light: str | None = None,
        route: str = "auto",
        threshold: float | None = None,
        budget: float | None = None,
        routes: int = 2,
        router: str = "auto",
        min_saving: float | None = None,
        map_precision: str = "auto",
        tile: int = 0,
        tile_pad: int = 16,
        device: Any = "auto",
        half: Any = None,
        compile: bool = False,
        trust_pickle: bool = False,
        progress: bool = False,
    ) -> None:
        if route not in ("auto", "on", "off"):
            raise UsageError(f"route must be 'auto', 'on' or 'off', not {route!r}")
        if router not in ROUTERS:
            raise UsageError(f"router must be one of {', '.join(ROUTERS)}, not {router!r}")
        if router == "learned" and threshold is not None:  # a sigma would be read as a predicted loss
            raise UsageError(
                "threshold is a blur sigma in LR px and goes with router 'map' (--router map); the learned router "
                "uses its calibrated threshold (give a budget to trade quality for speed)"
            )
        if threshold is not None and budget is not None:
            raise UsageError("give a threshold or a budget (--threshold / --budget), not both")
        if routes not in (2, 3):
            raise UsageError(f"routes must be 2 or 3, not {routes}")
        if budget is not None and not 0.0 < budget <= 1.0:
            raise UsageError(f"budget must be a fraction in (0, 1], not {budget}")
        if min_saving is not None and not 0.0 <= min_saving < 1.0:
            raise UsageError(f"min_saving must be a fraction in [0, 1), not {min_saving}")
        if map_precision not in MAP_PRECISIONS:
            raise UsageError(f"map precision must be one of {', '.join(MAP_PRECISIONS)}, not {map_precision!r}")
        if tile < 0 or tile_pad < 0:
            raise UsageError("tile and tile_pad (--tile, --tile-pad) must be >= 0")
        integral = isinstance(scale, numbers.Real) and not isinstance(scale, bool) and float(scale).is_integer()
        if not integral or scale < 1:  # int(2.5) would upscale x2 without a word
            raise UsageError(f"scale must be a positive integer, not {scale!r}")
        self.scale = int(scale)
        self.route_opts = dict(
            threshold=threshold,
            budget=budget,
            routes=routes,
            scorer=ROUTERS[router],
            min_saving=min_saving,
            map_half=None if map_precision == "auto" else map_precision,
            max_tile=tile or None,  # a tile size bounds routing's tiles too (both models), as it bounds route off's
        )
        self.tile, self.tile_pad, self.progress = tile, tile_pad, progress
        self.notes: list[str] = []
        self.light = None
        self.route = route
        if model == "bicubic":
            self.model_name, self.model, self.info, self.device, self.half = "bicubic", None, None, None, False
            if route == "on":
                raise UsageError("routing needs a neural SR model, not bicubic")
            return
        from blurwise.models import default_variant

        self.device = resolve_device(device)
        name = model if model is not None else default_variant("sr", self.scale).name
        net, info = get_model(name, device=self.device, trust_pickle=trust_pickle)
        if info.task != "sr":
            raise ModelError(f"model {info.name!r} is a {info.task} model, not super-resolution")
        if info.scale != self.scale:
            raise ModelError(
                f"model {info.name!r} upscales x{info.scale}, but the scale asked for is x{self.scale} (-s / scale=)"
            )
        self.model_name, self.info = str(name), info
        self.model = _maybe_compile(net, compile)
        self.half = _half_mode(half, self.device, info)
        if route != "off":
            self.light = find_light(info, self.scale, self.device, route, light, trust_pickle, self.notes, heavy=net)
        if self.light is not None:
            from blurwise.routing import map_precision

            map_precision(self.route_opts["map_half"], self.half, self.device)  # checked once, before any image

    @property
    def routed(self) -> bool:
        """Whether calls will route patches between heavy and light models."""
        return self.light is not None

    def __call__(
        self,
        pixels: np.ndarray,
        alpha: np.ndarray | None = None,
        *,
        depth: np.ndarray | str | os.PathLike | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None, RunReport]:
        """Upscale float32 HWC (C = 1 or 3) pixels; returns (pixels, alpha resized or None, report).

        ``depth`` (HW array or depth file) guides the routing map; one of another resolution is resized,
        one whose aspect ratio differs from the image's by more than 2% is an InputError.
        """
        t0 = time.perf_counter()
        pixels, alpha = _checked(pixels, alpha)
        if depth is not None:  # as a depth file is read: resized, unless it belongs to another image
            depth = _read_depth_arg(depth, pixels.shape[:2])
        gray = pixels.shape[2] == 1
        rgb = _rgb(pixels)
        report = RunReport(route="off", model=self.model_name, notes=list(self.notes))
        if self.model is None:  # bicubic baseline
            from blurwise.metrics.imresize import imresize

            out = np.clip(imresize(rgb.astype(np.float64), self.scale), 0, 1).astype(np.float32)
        else:
            out = self._routed(rgb, depth, report) if self.light is not None else None
            if out is None:
                out = _run(self.model, rgb, self.scale, self.tile, self.tile_pad, self.half, self.progress)
        out = _back_to_gray(out, gray)
        a = resize_plane(alpha, out.shape[:2]) if alpha is not None else None
        report.seconds = time.perf_counter() - t0
        return out, a, report

    def _routed(self, rgb: np.ndarray, depth: np.ndarray | None, report: RunReport) -> np.ndarray | None:
        """Routed SR, or None (with a note) when route="auto" and the image cannot be routed (size, map, router)."""
        from blurwise.routing import LEARNED_NO_DEPTH

        if depth is not None and self.route_opts["scorer"] == "learned":  # "auto" routes by the map then
            raise UsageError(LEARNED_NO_DEPTH)
        res = routed_or_none(
            rgb,
            self.route,
            report.notes,
            heavy=(self.model, self.info),
            light=self.light,
            scale=self.scale,
            depth=depth,
            device=self.device,
            half=self.half,  # the mode itself: bf16 must stay bf16 (True would be fp16 on CUDA)
            progress=self.progress,
            **self.route_opts,
        )
        if res is None:
            return None
        report.route, report.light, report.routing = "routed", self.light[1].name, res[1]
        report.notes += res[1].notes
        return np.clip(np.asarray(res[0], dtype=np.float32), 0, 1)


def find_light(
    info: Any,
    scale: int,
    device: Any,
    route: str,
    light: str | None = None,
    trust_pickle: bool = False,
    notes: list[str] | None = None,
    heavy: Any = None,
) -> tuple[Any, Any] | None:
    """(model, ModelInfo) of the light model that routed SR pairs with the heavy model ``info`` (``light``:
    a name or path; None: the EBM-SR distilled from it). With ``route="auto"`` and no ``light`` given, None
    (and a note appended to ``notes``) when routing or the light model is unavailable, for the caller to
    run the heavy model everywhere; ``route="on"`` raises instead. With the ``heavy`` network given, the light
    model must have been distilled from these very weights (``blurwise.routing.taught_by``), not just from a
    model of the same name. Shared by :class:`Upscaler` and ``blurwise.evaluate``.
    """
    notes = [] if notes is None else notes
    try:
        from blurwise.routing import check_taught_by, find_light_model, upscale_routed  # noqa: F401
    except ImportError:
        if route == "on" or light is not None:
            raise NotAvailableError(
                "routed SR is not available; turn routing off (--route off / route='off')"
            ) from None
        notes.append("routing not available: heavy model everywhere")
        return None
    try:
        name = light if light is not None else find_light_model(info.name, scale, heavy)
        lm, li = get_model(name, device=device, trust_pickle=trust_pickle)
        if heavy is not None:
            check_taught_by(li, heavy, info)
    except ModelError as exc:
        if route == "on" or light is not None:
            raise
        log.info("no light model (%s); running the heavy model everywhere", exc)
        notes.append("no light model: heavy model everywhere")
        return None
    if li.scale != scale:
        raise ModelError(f"light model {li.name!r} is x{li.scale}, but the heavy model is x{scale}")
    return (lm, li)


def routed_or_none(rgb: np.ndarray, route: str, notes: list[str], **kwargs: Any) -> tuple[np.ndarray, Any] | None:
    """``blurwise.routing.upscale_routed(rgb, **kwargs)``: (SR image, RouteReport); with ``route="auto"``,
    None (and a note appended to ``notes``) where the image cannot be routed, too small for a defocus map
    or without one available, for the caller to run the heavy model everywhere; ``route="on"`` raises
    instead. Shared by :class:`Upscaler` and ``blurwise.evaluate``.
    """
    from blurwise.defocus import MIN_SIDE
    from blurwise.routing import upscale_routed

    h, w = rgb.shape[:2]
    if min(h, w) < MIN_SIDE and route == "auto":
        # too small for a defocus map (and nothing to save): the heavy model everywhere
        notes.append(f"image too small to route ({w}x{h}): heavy model everywhere")
        return None
    try:
        return upscale_routed(rgb, **kwargs)
    except NotAvailableError as exc:
        if route != "auto":
            raise
        log.info("routing unavailable (%s); heavy model everywhere", exc)
        notes.append(f"{str(exc).split(';')[0]}: heavy model everywhere")  # the reason, not the advice
        return None


def _run(model: Any, rgb: np.ndarray, scale: int, tile: int, tile_pad: int, half: Any, progress: bool, **extra) -> Any:
    """Whole-image inference through the tiler (one code path everywhere)."""
    import torch

    from blurwise.tiling import run_tiled

    with torch.inference_mode():
        y = run_tiled(
            model,
            _to_tensor(rgb),
            scale=scale,
            tile=tile,
            tile_pad=tile_pad,
            half=half,
            progress=progress,
            extra=extra or None,
        )
    return _from_tensor(y[:, :3])


def _read_depth_arg(depth: Any, shape: tuple[int, int]) -> np.ndarray | None:
    """A depth file or array as float32 HW of ``shape``; the same checks for both (blurwise.io.depth)."""
    if depth is None:
        return None
    from blurwise.io.depth import depth_plane, read_depth

    if isinstance(depth, str | os.PathLike):
        return read_depth(depth, shape)
    return depth_plane(np.asarray(depth), shape)


def upscale(
    img: Any,
    scale: int = 4,
    *,
    model: str | None = None,
    light: str | None = None,
    route: str = "auto",
    threshold: float | None = None,
    budget: float | None = None,
    routes: int = 2,
    router: str = "auto",
    min_saving: float | None = None,
    map_precision: str = "auto",
    depth: Any = None,
    tile: int = 0,
    tile_pad: int = 16,
    device: Any = "auto",
    half: Any = None,
    return_report: bool = False,
) -> Any:
    """Super-resolve ``img`` by an integer ``scale``, routing defocused regions to a cheap model when possible.

    ``img``: numpy HW/HWC (uint8, uint16, or float in [0, 1]) or a PIL image; the result has the same
    type and dtype. ``model``: registered name or ``.safetensors`` path (default: the shipped model
    for the scale; ``"bicubic"`` for the baseline). ``route="auto"`` uses the EBM-SR distilled from the
    heavy model on defocused patches (``threshold`` in LR px of blur, or ``budget`` as a FLOPs
    fraction; ``routes=3`` adds a bicubic route), ``"off"`` runs the heavy model everywhere. ``router``
    decides which patches go light: "learned" (a small network that predicts each patch's quality loss
    from the defocus map and the texture; it has a calibrated threshold, so a ``threshold`` with it is a
    UsageError, and takes no ``depth``), "map" (the defocus map's blur against ``threshold``), or
    "auto" (the learned router where one ships for the scale and neither ``threshold`` nor ``depth`` is
    given, else the map).
    A routed plan saving less than ``min_saving`` of the heavy FLOPs runs the heavy model everywhere
    (None: ``blurwise.routing.DEFAULT_MIN_SAVING``; 0: route whatever it saves). ``map_precision``: the
    defocus map's arithmetic, "auto" (bf16 on CPUs with bf16 units, where it is 2x faster; on a GPU as
    ``half``), "fp32" (the same routes on every machine), "bf16" or "fp16".
    ``depth`` (HW array or file) helps the defocus map. ``tile`` 0 picks the tile size from memory.
    ``half``: None (fp32), "auto", "fp16" or "bf16". With ``return_report`` returns (image, RunReport).

    >>> import numpy as np, blurwise
    >>> gray16 = np.full((6, 5), 1000, np.uint16)
    >>> out = blurwise.upscale(gray16, scale=3, model="bicubic")
    >>> out.shape, out.dtype, int(out[4, 4])
    ((18, 15), dtype('uint16'), 1000)
    """
    pixels, alpha, kind = _from_user(img)
    up = Upscaler(
        scale,
        model=model,
        light=light,
        route=route,
        threshold=threshold,
        budget=budget,
        routes=routes,
        router=router,
        min_saving=min_saving,
        map_precision=map_precision,
        tile=tile,
        tile_pad=tile_pad,
        device=device,
        half=half,
    )
    out, a, report = up(pixels, alpha, depth=depth)
    result = _to_user(out, a, kind)
    return (result, report) if return_report else result


# --------------------------------------------------------------------------- deblur


class Deblurrer:
    """A loaded deblurring model plus settings; call it on float32 HWC images.

    ``model``: registered name or weights path (default: the shipped LPRN; ``"identity"``: the no-op baseline).
    ``stages``: LPRN only, a whole number from 1 to the stages it was trained with (others: UsageError).
    ``tile``/``tile_pad``: tile size and overlap in pixels (0 = automatic; LPRN's tiled output equals its
    untiled one, see :meth:`blurwise.models.lprn.LPRN.tiled_forward`). ``half``: as for :class:`Upscaler`.
    """

    def __init__(
        self,
        *,
        model: str | None = None,
        stages: int | None = None,
        tile: int = 0,
        tile_pad: int = 16,
        device: Any = "auto",
        half: Any = None,
        compile: bool = False,
        trust_pickle: bool = False,
        progress: bool = False,
    ) -> None:
        if tile < 0 or tile_pad < 0:
            raise UsageError("tile and tile_pad (--tile, --tile-pad) must be >= 0")
        _check_stage_count(stages)
        self.tile, self.tile_pad, self.progress = tile, tile_pad, progress
        self.extra: dict[str, Any] = {}
        if model == "identity":
            if stages is not None:
                raise UsageError("the identity baseline has no stages; stages (--stages) apply to LPRN models")
            self.model_name, self.model, self.info, self.device, self.half = "identity", None, None, None, False
            return
        from blurwise.models import default_variant

        self.device = resolve_device(device)
        name = model if model is not None else default_variant("deblur", 1).name
        net, info = get_model(name, device=self.device, trust_pickle=trust_pickle)
        if info.task != "deblur":
            raise ModelError(f"model {info.name!r} is a {info.task} model, not deblurring")
        self.extra = stage_kwargs(net, info, stages)
        self.model_name, self.info = str(name), info
        self.model = _maybe_compile(net, compile)
        self.half = _half_mode(half, self.device, info)

    def __call__(
        self, pixels: np.ndarray, alpha: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray | None, RunReport]:
        """Deblur float32 HWC (C = 1 or 3) pixels; returns (pixels, alpha, report)."""
        t0 = time.perf_counter()
        pixels, alpha = _checked(pixels, alpha)
        gray = pixels.shape[2] == 1
        if self.model is None:
            out = pixels
        else:
            rgb = _rgb(pixels)
            out = _run(self.model, rgb, 1, self.tile, self.tile_pad, self.half, self.progress, **self.extra)
            out = _back_to_gray(out, gray)
        return out, alpha, RunReport(route="off", model=self.model_name, seconds=time.perf_counter() - t0)


def _check_stage_count(stages: Any) -> None:
    if stages is not None and (isinstance(stages, bool) or not isinstance(stages, numbers.Integral)):
        raise UsageError(f"stages (--stages) must be a whole number, not {stages!r}")  # 2.5 would run 2


def stage_kwargs(net: Any, info: Any, stages: int | None) -> dict[str, Any]:
    """The forward keyword arguments that run ``stages`` of a deblurring model's stages ({} for all of them):
    a run-time speed/quality dial for LPRN, refused (one-line UsageError) for models without stages and
    beyond the count it was trained with."""
    _check_stage_count(stages)
    if stages is None:
        return {}
    if "stages" not in inspect.signature(net.forward).parameters:
        raise UsageError(f"model {info.name!r} has no stages; stages (--stages) apply to LPRN models")
    total = int(getattr(net, "stages", stages))
    # Shared weights would run any number of stages, but past the trained ones the output degrades fast
    # (lprn at 20 stages: 29 dB away from its 6-stage output): a run-time dial from 1 to the trained count.
    if not 1 <= stages <= total:
        raise UsageError(
            f"stages (--stages) must be from 1 to {total} for {info.name!r} (it was trained with {total}), not {stages}"
        )
    return {"stages": int(stages)}


def deblur(
    img: Any,
    *,
    model: str | None = None,
    stages: int | None = None,
    tile: int = 0,
    tile_pad: int = 16,
    device: Any = "auto",
    half: Any = None,
) -> Any:
    """Remove motion/camera-shake blur from ``img`` (numpy or PIL; returned in the same type and dtype).

    ``model``: registered name or weights path (default: the shipped deblurring model; ``"identity"``
    returns the input). ``stages``: for LPRN, how many of its shared-weight stages to run (fewer =
    faster). ``tile`` 0 picks the tile size from memory; ``tile_pad`` is the tiles' overlap.

    >>> import numpy as np, blurwise
    >>> img = np.linspace(0, 1, 12, dtype=np.float32).reshape(2, 2, 3)
    >>> bool(np.array_equal(blurwise.deblur(img, model="identity"), img))
    True
    """
    pixels, alpha, kind = _from_user(img)
    run = Deblurrer(model=model, stages=stages, tile=tile, tile_pad=tile_pad, device=device, half=half)
    out, a, _ = run(pixels, alpha)
    return _to_user(out, a, kind)


# --------------------------------------------------------------------------- defocus map


def defocus_map(
    img: Any, depth: Any = None, *, method: str = "auto", segmenter: str = "auto", **kwargs: Any
) -> np.ndarray:
    """Per-pixel defocus blur of ``img``: float32 HW Gaussian sigma in pixels of ``img``.

    ``depth`` (HW array or a depth file: PNG/TIFF/NPY) sharpens the map along depth edges. ``method``
    and ``segmenter`` choose the estimator (see :func:`blurwise.defocus.estimate_defocus`); extra keyword
    arguments are passed to it. Always returns a numpy array (a map, not an image), also for PIL input.
    """
    pixels, _alpha, _kind = _from_user(img)
    d = _read_depth_arg(depth, pixels.shape[:2])
    try:
        from blurwise.defocus import estimate_defocus
    except ImportError:
        raise NotAvailableError("defocus map estimation is not available yet (blurwise.defocus)") from None
    sigma = estimate_defocus(_rgb(pixels), d, method=method, segmenter=segmenter, **kwargs)
    return np.asarray(sigma, dtype=np.float32)


def defocus_overlay(pixels: np.ndarray, sigma: np.ndarray, *, vmax: float | None = None) -> np.ndarray:
    """A visual check of a defocus map: the image (grayed) tinted by sigma (blue sharp -> red blurred)."""
    rgb = _rgb(np.asarray(pixels, dtype=np.float32))
    s = np.asarray(sigma, dtype=np.float32)
    if s.shape != rgb.shape[:2]:
        raise InputError(f"sigma map {s.shape} does not match the image {rgb.shape[:2]}")
    finite = s[np.isfinite(s)]  # pixels without an estimate: shown as sharp, and kept out of the scale
    top = float(vmax if vmax is not None else max(np.percentile(finite, 99) if finite.size else 0.0, 1e-6))
    t = np.clip(np.nan_to_num(s, nan=0.0) / top, 0, 1)[:, :, None]
    colour = np.concatenate([t, 0.25 * np.ones_like(t), 1 - t], axis=2)
    luma = (rgb @ _Y)[:, :, None]
    return np.clip(0.5 * luma + 0.5 * colour, 0, 1).astype(np.float32)
