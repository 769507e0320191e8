"""A procedural 3-D-ish test scene with known depth, rendered with a shallow depth of field.

The scene is a pinhole view of a checkered floor receding to a textured back wall (stripes, noise
and a text panel), with upright textured cards standing on the floor at several distances: a near
striped card, a glyph (text) card at the focus distance, a noise-textured disc and a far checker
board. It is drawn at 2x and box-downsampled (anti-aliased), the depth buffer is exact (metres),
and :func:`blurwise.data.defocus.render_defocus` adds the depth of field. Everything is made by
code, so the example images in ``examples/`` can be regenerated::

    python -m blurwise.data.scene --out examples/
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from blurwise.data.color import to_uint8
from blurwise.data.depth import smooth_noise

CAMERA_HEIGHT = 1.2  # m
HORIZON = 0.40  # fraction of the image height
WALL_DEPTH = 14.0  # m
FOCUS_DEPTH = 2.4  # m: the text card
MAX_COC = 18.0  # px at 480 px width


def _text_texture(h: int, w: int, rng: np.random.Generator, ink=(0.08, 0.08, 0.1), paper=(0.93, 0.9, 0.82)):
    """A card with lines of text (Pillow's default font), float32 HWC."""
    from PIL import Image, ImageDraw, ImageFont

    im = Image.new("L", (w, h), 0)
    d = ImageDraw.Draw(im)
    words = ["blurwise", "defocus", "sharp", "bokeh", "focus", "depth", "layer", "blur", "pixel", "lens", "CoC"]
    size = max(8, h // 9)
    try:
        font = ImageFont.load_default(size=size)
    except (TypeError, OSError):  # very old Pillow or no FreeType: the bitmap font
        font = ImageFont.load_default()
    y = size // 2
    while y < h - size:
        line = words[int(rng.integers(len(words)))]
        while True:  # fill the line up to the card's width
            nxt = line + " " + words[int(rng.integers(len(words)))]
            if d.textlength(nxt, font=font) > w - size:
                break
            line = nxt
        d.text((size // 2, y), line, font=font, fill=255)
        y += int(size * 1.35)
    a = np.asarray(im, np.float32)[:, :, None] / 255.0
    return (np.array(paper, np.float32) * (1 - a) + np.array(ink, np.float32) * a).astype(np.float32)


def _fractal(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    n = sum(smooth_noise((h, w), rng, s) * a for s, a in ((0.5, 1.0), (0.15, 0.6), (0.05, 0.4), (0.015, 0.3)))
    return (n - n.min()) / (n.max() - n.min() + 1e-9)


def scene_sharp(size: tuple[int, int] = (360, 480), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The all-in-focus scene: (image float32 HWC [0, 1], depth float32 HW in metres)."""
    rng = np.random.default_rng(seed)
    H, W = 2 * size[0], 2 * size[1]  # supersampled canvas
    f = 1.1 * W  # focal length in canvas px
    cx, yh = W / 2.0, HORIZON * H
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32) + 0.5
    img = np.zeros((H, W, 3), np.float32)
    depth = np.full((H, W), WALL_DEPTH, np.float32)
    # back wall: vertical stripes over fractal noise, a darker skirting band
    wx = (xs - cx) * WALL_DEPTH / f
    wy = CAMERA_HEIGHT - (ys - yh) * WALL_DEPTH / f  # height above the floor
    noise = _fractal(H, W, rng)
    stripes = 0.5 + 0.5 * np.sign(np.sin(2 * np.pi * wx / 0.6))
    wall = 0.35 + 0.25 * noise[:, :, None] * np.array([1.0, 0.9, 0.7]) + 0.12 * stripes[:, :, None]
    wall = np.where((wy < 0.35)[:, :, None], wall * 0.45, wall)
    img[:] = wall * np.array([0.85, 0.9, 1.0], np.float32)
    # floor: a checkerboard of 0.5 m tiles from the camera to the wall
    below = ys > yh + 1e-3
    zf = np.where(below, f * CAMERA_HEIGHT / np.maximum(ys - yh, 1e-3), np.inf)
    floor = below & (zf < WALL_DEPTH)
    zfl = zf[floor]
    check = (np.floor((xs[floor] - cx) * zfl / f / 0.5) + np.floor(zfl / 0.5)) % 2
    img[floor] = np.where(check[:, None] > 0, [0.8, 0.78, 0.72], [0.22, 0.24, 0.3]).astype(np.float32)
    depth[floor] = zf[floor]
    # upright objects standing on the floor, drawn far to near (painter's algorithm)
    objects = [
        ("checker", 9.0, -2.2, 1.6, 1.4),  # kind, depth m, centre x m, width m, height m
        ("disc", 5.0, 1.3, 1.1, 1.1),
        ("text", FOCUS_DEPTH, -0.2, 1.0, 0.7),
        ("stripes", 1.3, -0.5, 0.2, 1.6),
    ]
    for kind, z, xm, wm, hm in objects:
        x0, x1 = cx + f * (xm - wm / 2) / z, cx + f * (xm + wm / 2) / z
        lift = 0.25 if kind == "text" else 0.0  # the text card sits on a stand
        yb = yh + f * (CAMERA_HEIGHT - lift) / z
        yt = yb - f * hm / z
        u = (xs - x0) / max(x1 - x0, 1.0)
        v = (ys - yt) / max(yb - yt, 1.0)
        if kind == "disc":
            mask = (u - 0.5) ** 2 + (v - 0.5) ** 2 <= 0.25
        else:
            mask = (u >= 0) & (u <= 1) & (v >= 0) & (v <= 1)
        if not mask.any():
            continue
        ys0, ys1 = int(max(yt, 0)), int(min(np.ceil(yb), H))
        xs0, xs1 = int(max(x0, 0)), int(min(np.ceil(x1), W))
        th, tw = max(ys1 - ys0, 1), max(xs1 - xs0, 1)
        if kind == "text":
            tex = _text_texture(th, tw, rng)
        elif kind == "stripes":
            t = 0.5 + 0.5 * np.sign(np.sin(2 * np.pi * (u + 0.6 * v) * 7))
            tex_full = np.where(t[:, :, None] > 0, [0.85, 0.2, 0.15], [0.95, 0.92, 0.88]).astype(np.float32)
            tex = tex_full[ys0:ys1, xs0:xs1]
        elif kind == "checker":
            t = (np.floor(u * 8) + np.floor(v * 7)) % 2
            tex_full = np.where(t[:, :, None] > 0, [0.1, 0.35, 0.6], [0.9, 0.85, 0.3]).astype(np.float32)
            tex = tex_full[ys0:ys1, xs0:xs1]
        else:
            n = _fractal(th, tw, rng)[:, :, None]
            tex = (0.25 + 0.7 * n * np.array([0.4, 0.9, 0.5])).astype(np.float32)
        sub = np.zeros((H, W, 3), np.float32)
        sub[ys0:ys1, xs0:xs1] = tex[: ys1 - ys0, : xs1 - xs0]
        img[mask] = sub[mask]
        depth[mask] = z
    # down to the output size: colour box-averaged (anti-aliasing), depth from one sub-sample
    out = img.reshape(size[0], 2, size[1], 2, 3).mean(axis=(1, 3))
    return np.clip(out, 0.0, 1.0).astype(np.float32), np.ascontiguousarray(depth[0::2, 0::2])


def example_scene(size: tuple[int, int] = (360, 480), seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The example scene with a shallow depth of field: (image uint8 HWC, depth float32 m, sigma float32 px).

    Focus on the text card at 2.4 m; the max CoC is 18 px at 480 px width (scaled with the width).
    """
    from blurwise.data.defocus import render_defocus

    sharp, depth = scene_sharp(size, seed)
    out, sigma = render_defocus(sharp, depth, focus_depth=FOCUS_DEPTH, max_coc=MAX_COC * size[1] / 480.0)
    return to_uint8(out), depth, sigma


def write_example(out_dir: str | Path, size: tuple[int, int] = (360, 480), seed: int = 0) -> list[Path]:
    """Write ``defocus_scene.png`` (8-bit RGB) and ``defocus_scene_depth.png`` (16-bit, depth in mm)."""
    from PIL import Image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    img, depth, _ = example_scene(size, seed)
    p1, p2 = out / "defocus_scene.png", out / "defocus_scene_depth.png"
    Image.fromarray(img).save(p1, optimize=True)
    mm = np.clip(np.round(depth * 1000.0), 0, 65535).astype(np.uint16)
    Image.fromarray(mm).save(p2, optimize=True)  # Pillow writes uint16 arrays as 16-bit grey PNG
    return [p1, p2]


def main(argv: list[str] | None = None) -> int:
    """``python -m blurwise.data.scene --out DIR``: write the example scene images."""
    from blurwise.argtypes import OneLineParser

    ap = OneLineParser(prog="python -m blurwise.data.scene", description="write the example defocus scene")
    ap.add_argument("--out", default="examples", help="output folder (default: examples)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    for p in write_example(args.out, seed=args.seed):
        print(p)
    return 0


if __name__ == "__main__":
    from blurwise.errors import run_main

    raise SystemExit(run_main("python -m blurwise.data.scene", main))
