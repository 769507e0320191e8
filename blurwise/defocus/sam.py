"""Segment-Anything automatic masks as a DGS segmenter (optional: ``pip install segment-anything``).

The ``segment-anything`` package's own ``SamPredictor`` and ``SamAutomaticMaskGenerator`` import
torchvision (for resizing and box NMS), which blurwise does not depend on. So we load only the
package's torch-only parts (``modeling`` and ``build_sam``) without running its ``__init__`` and do
the automatic mask generation here: resize the long side to the encoder size, embed once, prompt a
regular point grid in batches, keep masks with high predicted IoU and stability, remove duplicates
with a mask-IoU NMS in numpy, and paint the masks (best last) into a label map. Pixels no mask covers
become regions of their own (connected components).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from blurwise.errors import InputError, ModelError, NotAvailableError

_ALIAS = "_blurwise_segment_anything"


def sam_package() -> tuple[Any, Any]:
    """(modeling, build_sam) modules of the installed ``segment-anything``, without torchvision."""
    spec = importlib.util.find_spec("segment_anything")
    if spec is None or not spec.submodule_search_locations:
        raise NotAvailableError("segmenter 'sam' needs the optional 'segment-anything' package")
    if _ALIAS not in sys.modules:
        pkg = types.ModuleType(_ALIAS)
        pkg.__path__ = list(spec.submodule_search_locations)  # type: ignore[attr-defined]
        pkg.__package__ = _ALIAS
        sys.modules[_ALIAS] = pkg
    try:
        modeling = importlib.import_module(_ALIAS + ".modeling")
        build = importlib.import_module(_ALIAS + ".build_sam")
    except ImportError as exc:
        raise NotAvailableError(f"segment-anything is installed but cannot be imported: {exc}") from None
    return modeling, build


@lru_cache(maxsize=1)
def load_sam(checkpoint: str) -> Any:
    """Build the SAM variant matching ``checkpoint`` (vit_b/l/h, told by its shapes) and load it."""
    import torch

    p = Path(checkpoint)
    if not p.is_file():
        raise InputError(f"SAM checkpoint not found: {p}")
    _, build = sam_package()
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"cannot read SAM checkpoint {p.name}: {str(exc).splitlines()[0]}") from None
    blocks = {int(k.split(".")[2]) for k in state if k.startswith("image_encoder.blocks.")}
    kind = {12: "vit_b", 24: "vit_l", 32: "vit_h"}.get(len(blocks))
    if kind is None:
        raise ModelError(f"{p.name} is not a Segment-Anything checkpoint (ViT-B/L/H)")
    sam = build.sam_model_registry[kind](checkpoint=None)
    try:
        sam.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelError(f"{p.name}: weights do not match SAM {kind}: {str(exc).splitlines()[0]}") from None
    return sam.eval()


def _nms_masks(masks: np.ndarray, scores: np.ndarray, iou_thresh: float) -> np.ndarray:
    """Indices kept by greedy NMS on mask IoU (masks: n x h x w bool, compared at <= 64 px)."""
    n = len(masks)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    step = max(1, max(masks.shape[1:]) // 64)
    small = masks[:, ::step, ::step].reshape(n, -1).astype(np.float32)
    inter = small @ small.T
    area = small.sum(1)
    iou = inter / np.maximum(area[:, None] + area[None, :] - inter, 1.0)
    order = np.argsort(-scores)
    keep: list[int] = []
    suppressed = np.zeros(n, dtype=bool)
    for i in order:
        if suppressed[i]:
            continue
        keep.append(int(i))
        suppressed |= iou[i] > iou_thresh
    return np.array(keep, dtype=np.int64)


def sam_masks(
    image: np.ndarray,
    sam: Any,
    *,
    points_per_side: int = 16,
    batch: int = 64,
    pred_iou_thresh: float = 0.86,
    stability_thresh: float = 0.9,
    stability_offset: float = 1.0,
    nms_iou: float = 0.7,
    min_area: int = 16,
) -> tuple[np.ndarray, np.ndarray]:
    """Automatic masks of ``image`` (HWC float [0, 1]): (n x H x W bool, n scores), best first."""
    import torch
    import torch.nn.functional as F

    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    h, w = img.shape[:2]
    size = int(sam.image_encoder.img_size)
    s = size / max(h, w)
    nh, nw = max(1, int(round(h * s))), max(1, int(round(w * s)))
    x = torch.from_numpy(np.ascontiguousarray(img[..., :3].transpose(2, 0, 1)))[None] * 255.0
    with torch.inference_mode():
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
        feats = sam.image_encoder(sam.preprocess(x))
        pe = sam.prompt_encoder.get_dense_pe()
        g = (np.arange(points_per_side) + 0.5) / points_per_side
        gx, gy = np.meshgrid(g * w, g * h)
        pts = np.stack([gx.ravel(), gy.ravel()], 1) * s  # (x, y) in the resized frame
        all_masks, all_scores = [], []
        for i in range(0, len(pts), batch):
            p = torch.from_numpy(pts[i : i + batch].astype(np.float32))[:, None, :]
            lab = torch.ones(p.shape[:2], dtype=torch.int64)
            sparse, dense = sam.prompt_encoder(points=(p, lab), boxes=None, masks=None)
            low, iou = sam.mask_decoder(
                image_embeddings=feats,
                image_pe=pe,
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=True,
            )
            logits = sam.postprocess_masks(low, (nh, nw), (h, w)).flatten(0, 1)  # (B*3, H, W)
            iou = iou.flatten()
            hi = (logits > sam.mask_threshold + stability_offset).flatten(1).sum(1).float()
            lo = (logits > sam.mask_threshold - stability_offset).flatten(1).sum(1).float()
            stab = hi / lo.clamp(min=1.0)
            keep = (iou > pred_iou_thresh) & (stab > stability_thresh)
            m = (logits[keep] > sam.mask_threshold).numpy()
            sc = iou[keep].numpy()
            big = m.reshape(len(m), h * w).sum(1) >= min_area
            all_masks.append(m[big])
            all_scores.append(sc[big])
    masks = np.concatenate(all_masks) if all_masks else np.zeros((0, h, w), dtype=bool)
    scores = np.concatenate(all_scores) if all_scores else np.zeros(0, dtype=np.float32)
    keep = _nms_masks(masks, scores, nms_iou)
    return masks[keep], scores[keep]


def masks_to_labels(masks: np.ndarray, scores: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Paint masks (lowest score first, so the best wins overlaps) into consecutive int32 labels."""
    from skimage.measure import label

    lab = np.full(shape, -1, dtype=np.int64)
    for k in np.argsort(scores):
        lab[masks[k]] = k
    uncovered = lab < 0
    if uncovered.any():
        cc = label(uncovered, connectivity=1)
        lab[uncovered] = len(masks) + cc[uncovered]
    _, inv = np.unique(lab.ravel(), return_inverse=True)
    return inv.reshape(shape).astype(np.int32)


def sam_labels(
    image: np.ndarray,
    *,
    checkpoint: str | Path | None = None,
    model: Any = None,
    model_type: str = "auto",
    **amg: Any,
) -> np.ndarray:
    """Region labels from SAM automatic masks; ``model`` (a built ``Sam``) or ``checkpoint`` (path)."""
    if model is None:
        if checkpoint is None:
            sam_package()  # a clearer message first when the package itself is missing
            raise NotAvailableError("segmenter 'sam' needs a checkpoint (--sam-checkpoint PATH)")
        model = load_sam(str(checkpoint))
    masks, scores = sam_masks(image, model, **amg)
    return masks_to_labels(masks, scores, tuple(np.asarray(image).shape[:2]))
