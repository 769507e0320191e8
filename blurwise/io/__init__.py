"""Image and depth I/O: decode to float32 HWC in [0, 1] with metadata, write atomically.

``read_image`` / ``write_image`` handle PNG, JPEG, TIFF, BMP and WebP at 8/16 bits (float TIFF too),
with alpha kept apart, EXIF orientation applied and ICC/EXIF carried to the output (``write_images``:
several files, all or none); ``read_depth``
reads depth maps for the defocus estimator; ``split_alpha`` / ``merge_alpha`` route alpha around
models. Nothing here imports torch.
"""

from __future__ import annotations

from blurwise.io.alpha import merge_alpha, resize_plane, split_alpha
from blurwise.io.depth import depth_plane, read_depth, resize_depth
from blurwise.io.image import (
    FORMATS,
    MAX_PIXELS,
    Image,
    bits_of,
    format_of,
    from_float,
    read_image,
    to_float,
    write_image,
    write_images,
)

__all__ = [
    "FORMATS",
    "MAX_PIXELS",
    "Image",
    "bits_of",
    "depth_plane",
    "format_of",
    "from_float",
    "merge_alpha",
    "read_depth",
    "read_image",
    "resize_depth",
    "resize_plane",
    "split_alpha",
    "to_float",
    "write_image",
    "write_images",
]
