"""Training datasets (torch ``Dataset``): SR pairs, defocused SR pairs with blur maps, deblur pairs.

Determinism: item ``i`` of epoch ``e`` is made from ``np.random.default_rng([seed, e, i])`` alone
(plus renders keyed by ``(seed, image, variant)``), so the same seed and index give a bit-identical
item in any worker, in any order, with or without a warm cache. Call ``set_epoch(e)`` before each
epoch for fresh crops (with persistent DataLoader workers, the trainer must recreate the iterator).

Items are dicts of float32 CHW tensors in [0, 1] (sigma maps: 1 x h x w, in pixels of that
resolution): SR ``{"lr", "hr"}``; defocused SR ``{"lr", "hr", "sigma_lr", "sigma_hr"}`` where
``hr`` is the *defocused* HR target; deblur ``{"blur", "sharp"}``.

Only training folders are used by default (``sr/train/*``, ``deblur/gopro_frames``,
``defocus/depth``); pointing a dataset at a test folder raises unless ``allow_test=True``.

Cost and caching (2-core CPU, measured): decoded images are cached per process (the default SR
training set, T91 + BSD200 half + 6 DIV2K, is 36.7 Mpx = 110 MB as uint8, plus its LR). A
defocus render (synthetic depth + 128-layer compositing) costs ~3 us per HR pixel (~0.8 s for
512x512, ~7 s for a 2K DIV2K image) and is made once per (image, variant): by default 4 variants
per image, so ~8 CPU-minutes to render the whole default set once; every later crop is free. Pass
``cache_dir`` to keep renders on disk across processes and runs (~5.3 bytes per HR pixel and
variant: uint8 HR, float16 HR sigma, LR and LR sigma; ~0.8 GB for the default set with 4 variants);
without it they live in memory (bounded by ``cache_mb``, least recently used evicted; with several
DataLoader workers each holds its own). GoPro frames are decoded once per process (80 frames of
1280x720 = 220 MB) and a 256x256 frame-averaged crop costs ~5 ms.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from blurwise.data.color import to_uint8
from blurwise.data.paths import data_path, data_root
from blurwise.errors import InputError, UsageError

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
TEST_DIRS = (
    ("sr", "test"),
    ("deblur", "gopro_pairs"),
    ("deblur", "levin"),
    ("deblur", "real_blurred"),
    ("defocus", "real"),
    ("defocus", "gt_maps"),
)
RENDER_VERSION = 1  # bump when the renderer changes: invalidates disk caches


def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one dataset item: a function of (seed, epoch, index) only."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), int(index)])


def list_images(roots: list[str | Path] | str | Path) -> list[Path]:
    """Image files under each root (recursive), sorted by path; raises if none."""
    roots = [roots] if isinstance(roots, (str, Path)) else list(roots)
    files: list[Path] = []
    for r in roots:
        r = Path(r)
        if r.is_file():
            files.append(r)
        elif r.is_dir():
            files.extend(p for p in r.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())
        else:
            raise InputError(f"{r}: no such file or folder")
    files = sorted(set(files))
    if not files:
        raise InputError(f"no images found under {', '.join(str(r) for r in roots)}")
    return files


def check_train_roots(roots: list[str | Path], allow_test: bool = False) -> None:
    """Refuse roots inside the shared test folders (training and test images never mix)."""
    if allow_test:
        return
    base = data_root().resolve()
    tests = [base.joinpath(*t) for t in TEST_DIRS]
    for r in roots:
        rp = Path(r).resolve()
        for t in tests:
            if rp == t or t in rp.parents or rp in t.parents:
                raise UsageError(f"{r} holds test data ({t.relative_to(base)}); pass allow_test=True to use it")


def read_rgb(path: str | Path) -> np.ndarray:
    """Decode an image file to uint8 HWC RGB (EXIF orientation applied)."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            return np.asarray(im.convert("RGB")).copy()
    except OSError as e:
        raise InputError(f"{path}: cannot read image ({e})") from e


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) from the file header (no decoding)."""
    from PIL import Image

    with Image.open(path) as im:
        w, h = im.size
    return h, w


class _LRU:
    """A byte-bounded least-recently-used dict (per process)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.data: OrderedDict = OrderedDict()
        self.size = 0

    def get(self, key):
        if key in self.data:
            self.data.move_to_end(key)
            return self.data[key]
        return None

    def put(self, key, value, nbytes: int) -> None:
        if nbytes > self.max_bytes:
            return
        self.data[key] = (value, nbytes)
        self.size += nbytes
        while self.size > self.max_bytes:
            _, (_, nb) = self.data.popitem(last=False)
            self.size -= nb

    def value(self, key):
        v = self.get(key)
        return None if v is None else v[0]


def to_tensor(arr: np.ndarray) -> torch.Tensor:
    """uint8 or float HWC/HW numpy -> float32 CHW tensor ([0, 1] for uint8; floats kept as they are)."""
    a = np.asarray(arr)
    if a.ndim == 2:
        a = a[:, :, None]
    t = torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))
    return t.float().div_(255.0) if a.dtype == np.uint8 else t.float()


class _Base(Dataset):
    def __init__(self, seed: int, length: int):
        self.seed = int(seed)
        self.length = int(length)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch: items of another epoch get other crops and augmentations."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length


class SRDataset(_Base):
    """Bicubic SR pairs from sharp images: ``{"lr", "hr"}`` float32 CHW tensors.

    ``roots``: image folders/files (default ``sr/train``); ``scale`` 2/3/4; ``patch``: HR patch size
    (a multiple of the scale; ``None`` gives whole mod-cropped images); images smaller than the patch
    are skipped. ``length`` items per epoch (default: one per image); item ``i`` uses image
    ``i % n_images``. LR images are made once per image from the whole HR (not per crop) and cached.
    """

    def __init__(
        self,
        roots: list[str | Path] | None = None,
        *,
        scale: int = 4,
        patch: int | None = 192,
        length: int | None = None,
        seed: int = 0,
        augment: bool = True,
        cache_mb: int = 2048,
        allow_test: bool = False,
    ):
        roots = [data_path("sr", "train")] if roots is None else list(roots)
        check_train_roots(roots, allow_test)
        if patch is not None and patch % scale:
            raise UsageError(f"patch {patch} must be a multiple of the scale {scale}")
        files = list_images(roots)
        if patch is not None:
            files = [f for f in files if min(image_size(f)) >= patch]
            if not files:
                raise InputError(f"no image is at least {patch} px on its short side")
        self.files, self.scale, self.patch, self.augment = files, int(scale), patch, augment
        self._cache = _LRU(cache_mb << 20)
        super().__init__(seed, len(files) if length is None else length)

    def pair(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        """(lr, hr) uint8 HWC of image ``j`` (whole image, cached)."""
        from blurwise.data.sr import make_sr_pair

        key = ("pair", j)
        v = self._cache.value(key)
        if v is None:
            v = make_sr_pair(read_rgb(self.files[j]), self.scale)
            self._cache.put(key, v, v[0].nbytes + v[1].nbytes)
        return v

    def __getitem__(self, i: int) -> dict:
        from blurwise.data import sr

        if not 0 <= i < len(self):
            raise IndexError(i)
        rng = item_rng(self.seed, self.epoch, i)
        lr, hr = self.pair(i % len(self.files))
        if self.patch is not None:
            lr, hr = sr.random_crop([lr, hr], self.patch // self.scale, rng, [1, self.scale])
        if self.augment:
            lr, hr = sr.augment([lr, hr], rng)
        return {"lr": to_tensor(lr), "hr": to_tensor(hr)}


class DefocusSRDataset(_Base):
    """Defocused SR: sharp HR -> synthetic shallow depth of field -> LR; the target is the defocused HR.

    Items ``{"lr", "hr", "sigma_lr", "sigma_hr"}``: ``hr`` is the defocused HR (uint8-rounded, as the
    eval set stores it), ``lr = imresize(hr, 1/scale)`` rounded to uint8, ``sigma_hr`` the rendered
    Gaussian-sigma map (HR px) and ``sigma_lr`` its block mean / scale (LR px). Each image is rendered
    in ``variants`` versions (depth, focus and aperture drawn from ``(seed, image, variant)``); item
    ``i`` takes image ``i % n`` and a random variant, then a random crop.

    ``depth``: "synthetic" (segment-based synthetic depth for every image of ``roots``), "real" (the
    RGB-D samples of ``defocus/depth`` with their measured depth) or "mixed" (both). ``target``: range
    of the fraction of pixels with sigma > 1 px; ``max_coc``: cap of the CoC in px. See the module
    docstring for the cost and ``cache_dir``.
    """

    def __init__(
        self,
        roots: list[str | Path] | None = None,
        *,
        scale: int = 4,
        patch: int | None = 192,
        length: int | None = None,
        seed: int = 0,
        variants: int = 4,
        depth: str = "synthetic",
        depth_root: str | Path | None = None,
        target: tuple[float, float] = (0.55, 0.85),
        max_coc: float = 25.0,
        psf: str = "gaussian",
        n_layers: int = 128,
        augment: bool = True,
        cache_dir: str | Path | None = None,
        cache_mb: int = 2048,
        allow_test: bool = False,
    ):
        from blurwise.data.depth import depth_samples

        if depth not in ("synthetic", "real", "mixed"):
            raise UsageError(f"depth must be 'synthetic', 'real' or 'mixed', got {depth!r}")
        if patch is not None and patch % scale:
            raise UsageError(f"patch {patch} must be a multiple of the scale {scale}")
        super().__init__(seed, 0)
        self.scale, self.patch, self.augment = int(scale), patch, augment
        self.files: list[Path] = []
        self.depth_files: list[Path | None] = []
        if depth in ("synthetic", "mixed"):
            roots = [data_path("sr", "train")] if roots is None else list(roots)
            check_train_roots(roots, allow_test)
            for f in list_images(roots):
                if patch is None or min(image_size(f)) >= patch:
                    self.files.append(f)
                    self.depth_files.append(None)
        if depth in ("real", "mixed"):
            if depth_root is not None:
                check_train_roots([depth_root], allow_test)
            for smp in depth_samples(depth_root):
                if patch is None or min(image_size(smp.image)) >= patch:
                    self.files.append(smp.image)
                    self.depth_files.append(smp.depth)
        if not self.files:
            raise InputError("no training images for the defocused SR dataset")
        self.variants, self.depth_mode, self.target, self.max_coc = int(variants), depth, tuple(target), max_coc
        self.psf, self.n_layers = psf, int(n_layers)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._cache = _LRU(cache_mb << 20)
        self.length = len(self.files) if length is None else int(length)

    def _key(self, j: int, v: int) -> str:
        f = self.files[j]
        st = f.stat()
        parts = (RENDER_VERSION, f.name, st.st_size, self.seed, j, v, self.scale, self.target, self.max_coc)
        parts += (self.psf, self.n_layers, str(self.depth_files[j]))
        return hashlib.sha1(repr(parts).encode()).hexdigest()[:20]

    def render(self, j: int, v: int) -> dict:
        """The cached render of image ``j``, variant ``v``: {'hr', 'lr' uint8, 'sigma_hr', 'sigma_lr' float32, ...}."""
        key = ("render", j, v)
        r = self._cache.value(key)
        if r is not None:
            return r
        path = self.cache_dir / f"{self._key(j, v)}.npz" if self.cache_dir is not None else None
        if path is not None and path.is_file():
            try:
                with np.load(path) as z:
                    r = {k: z[k] for k in z.files}
            except (OSError, ValueError):
                r = None
        if r is None:
            r = render_item(
                read_rgb(self.files[j]),
                np.random.default_rng([self.seed & 0xFFFFFFFF, 0xDEF0C05, j, v]),
                scale=self.scale,
                depth_path=self.depth_files[j],
                target=self.target,
                max_coc=self.max_coc,
                psf=self.psf,
                n_layers=self.n_layers,
            )
            r["sigma_hr"] = r["sigma_hr"].astype(np.float16)  # half the cache; +-0.002 px at sigma 6
            if path is not None:
                _save_npz_atomic(path, r)
        self._cache.put(key, r, sum(a.nbytes for a in r.values()))
        return r

    def __getitem__(self, i: int) -> dict:
        from blurwise.data import sr

        if not 0 <= i < len(self):
            raise IndexError(i)
        rng = item_rng(self.seed, self.epoch, i)
        j = i % len(self.files)
        v = int(rng.integers(self.variants))
        r = self.render(j, v)
        arrays = [r["lr"], r["sigma_lr"], r["hr"], r["sigma_hr"]]
        if self.patch is not None:
            arrays = sr.random_crop(arrays, self.patch // self.scale, rng, [1, 1, self.scale, self.scale])
        if self.augment:
            arrays = sr.augment(arrays, rng)
        lr, slr, hr, shr = arrays
        return {"lr": to_tensor(lr), "hr": to_tensor(hr), "sigma_lr": to_tensor(slr), "sigma_hr": to_tensor(shr)}


def render_item(
    sharp: np.ndarray,
    rng: np.random.Generator,
    *,
    scale: int,
    depth_path: str | Path | None = None,
    target: tuple[float, float] = (0.55, 0.85),
    max_coc: float = 25.0,
    psf: str = "gaussian",
    n_layers: int = 128,
) -> dict:
    """Defocus one sharp image (mod-cropped to ``scale``) and make its LR: the recipe of the dataset and eval set.

    Depth is synthetic (from ``rng``) unless ``depth_path`` names a real depth map (resized to the
    image if needed). Returns uint8 ``hr``/``lr``, float32 ``sigma_hr``/``sigma_lr``, and float64
    scalars ``focus_depth``, ``max_coc``, ``fraction`` (rendered share of pixels with sigma > 1 px).
    """
    from blurwise.data.defocus import render_defocus
    from blurwise.data.depth import blurred_fraction, load_depth, random_dof, synthetic_depth
    from blurwise.data.sr import downscale_sigma, make_sr_pair, mod_crop

    img = mod_crop(sharp, scale)
    if depth_path is not None:
        d = load_depth(depth_path)
        if d.shape != img.shape[:2]:
            d = mod_crop(d, scale) if d.shape[0] >= img.shape[0] and d.shape[1] >= img.shape[1] else d
            if d.shape != img.shape[:2]:
                from scipy import ndimage

                d = ndimage.zoom(d, (img.shape[0] / d.shape[0], img.shape[1] / d.shape[1]), order=1)
                d = d[: img.shape[0], : img.shape[1]]
            d = d[: img.shape[0], : img.shape[1]]
    else:
        d = synthetic_depth(img, rng)
    dof = random_dof(d, rng, target=target, max_coc_cap=max_coc)
    out, sigma = render_defocus(
        img, d, focus_depth=dof["focus_depth"], max_coc=dof["max_coc"], psf=psf, n_layers=n_layers
    )
    lr, hr = make_sr_pair(to_uint8(out), scale)
    return {
        "hr": hr,
        "lr": lr,
        "sigma_hr": sigma,
        "sigma_lr": downscale_sigma(sigma, scale),
        "focus_depth": np.float64(dof["focus_depth"]),
        "max_coc": np.float64(dof["max_coc"]),
        "fraction": np.float64(blurred_fraction(sigma)),
    }


def _save_npz_atomic(path: Path, arrays: dict) -> None:
    from blurwise.io.image import usual_permissions

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        usual_permissions(tmp)  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class GoProFrames:
    """Decoded 240 fps frame sequences (uint8, decoded once per process) and frame-averaged crops."""

    def __init__(self, root: str | Path | None = None):
        from blurwise.data.motion import gopro_sequences

        self.seqs = gopro_sequences(root)
        if not self.seqs:
            raise InputError(f"no frame sequences under {root or data_path('deblur', 'gopro_frames')}")
        self.names = sorted(self.seqs)
        self._frames: dict[Path, np.ndarray] = {}
        h, w = image_size(self.seqs[self.names[0]][0])
        self.shape = (h, w)

    def frame(self, path: Path) -> np.ndarray:
        f = self._frames.get(path)
        if f is None:
            f = self._frames[path] = read_rgb(path)
        return f

    def window(
        self,
        seq: str,
        start: int,
        n: int,
        box: tuple[slice, slice] | None = None,
        gamma: float = 2.2,
        stride: int = 1,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(blur float32, sharp uint8) of ``n`` frames ``start, start+stride, ...`` of ``seq``; sharp = the middle one.

        ``stride`` > 1 makes a slow sequence stand for a faster motion (as if filmed at 240/stride fps).
        """
        from blurwise.data.motion import frame_average

        last = start + (n - 1) * stride
        paths = self.seqs[seq][start : last + 1 : stride]
        if len(paths) != n:
            raise InputError(f"{seq} has no frames {start}..{last} (stride {stride})")
        box = box or (slice(None), slice(None))
        crops = [self.frame(p)[box] for p in paths]
        return frame_average(crops, gamma), crops[n // 2]


class DeblurDataset(_Base):
    """Deblur pairs ``{"blur", "sharp"}``: GoPro-style frame averages and synthetic camera shake.

    With probability ``synth_fraction`` an item is a sharp crop of ``sharp_roots`` (default
    ``sr/train``) blurred by a random camera-shake kernel (size log-uniform in ``kernel_sizes``, the
    crop taken with a margin so the borders hold real image content), otherwise an average of
    ``frames`` (7..13) consecutive frames of ``gopro_root`` (default ``deblur/gopro_frames``) in
    linear light (gamma drawn from ``gammas``; 1.0 = a plain mean of the 8-bit frames, as the shared GoPro
    pairs are made) with the middle frame as target; ``frame_stride`` (drawn per item) skips frames so a
    slow sequence gives the larger motions of faster ones. Optional Gaussian noise (std drawn from
    ``noise``) and JPEG (quality drawn from ``jpeg_quality``, applied with probability ``jpeg_prob``).
    """

    def __init__(
        self,
        gopro_root: str | Path | None = None,
        sharp_roots: list[str | Path] | None = None,
        *,
        patch: int = 256,
        length: int = 1000,
        seed: int = 0,
        synth_fraction: float = 0.5,
        frames: tuple[int, int] = (7, 13),
        kernel_sizes: tuple[int, int] = (7, 65),
        frame_stride: tuple[int, int] = (1, 1),
        gammas: tuple[float, ...] = (2.2,),
        noise: tuple[float, float] = (0.0, 0.0),
        jpeg_prob: float = 0.0,
        jpeg_quality: tuple[int, int] = (60, 95),
        augment: bool = True,
        cache_mb: int = 2048,
        allow_test: bool = False,
    ):
        super().__init__(seed, length)
        sharp_roots = [data_path("sr", "train")] if sharp_roots is None else list(sharp_roots)
        roots = list(sharp_roots) + ([gopro_root] if gopro_root is not None else [])
        check_train_roots(roots, allow_test)
        self.patch, self.synth_fraction, self.frames_range = int(patch), float(synth_fraction), tuple(frames)
        self.kernel_sizes, self.noise, self.augment = tuple(kernel_sizes), tuple(noise), augment
        self.frame_stride, self.gammas = tuple(frame_stride), tuple(float(g) for g in gammas)
        if not self.gammas or min(self.frame_stride) < 1:
            raise UsageError("DeblurDataset needs at least one gamma and frame strides >= 1")
        self.jpeg_prob, self.jpeg_quality = float(jpeg_prob), tuple(jpeg_quality)
        self.gopro = GoProFrames(gopro_root) if self.synth_fraction < 1.0 else None
        self.files = []
        if self.synth_fraction > 0.0:
            self.files = [f for f in list_images(sharp_roots) if min(image_size(f)) >= self.patch]
            if not self.files:
                raise InputError(f"no sharp image is at least {self.patch} px on its short side")
        self._cache = _LRU(cache_mb << 20)

    def _sharp(self, j: int) -> np.ndarray:
        key = ("img", j)
        v = self._cache.value(key)
        if v is None:
            v = read_rgb(self.files[j])
            self._cache.put(key, v, v.nbytes)
        return v

    def _synthetic(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        from blurwise.data.motion import apply_kernel, motion_kernel, random_kernel_size

        img = self._sharp(int(rng.integers(len(self.files))))
        ks = random_kernel_size(rng, *self.kernel_sizes)
        k = motion_kernel(ks, rng)
        h, w = img.shape[:2]
        m = min(ks // 2, (min(h, w) - self.patch) // 2)  # context margin (as much as the image allows)
        y = int(rng.integers(0, h - self.patch - 2 * m + 1))
        x = int(rng.integers(0, w - self.patch - 2 * m + 1))
        region = img[y : y + self.patch + 2 * m, x : x + self.patch + 2 * m]
        blur = apply_kernel(region, k)[m : m + self.patch, m : m + self.patch]
        return blur, region[m : m + self.patch, m : m + self.patch]

    def _gopro(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        seq = self.gopro.names[int(rng.integers(len(self.gopro.names)))]
        n = int(rng.integers(self.frames_range[0], self.frames_range[1] + 1))
        n_frames = len(self.gopro.seqs[seq])
        n = min(n, n_frames)
        stride = int(rng.integers(self.frame_stride[0], self.frame_stride[1] + 1))
        stride = max(1, min(stride, (n_frames - 1) // max(n - 1, 1)))
        start = int(rng.integers(0, n_frames - (n - 1) * stride))
        gamma = self.gammas[int(rng.integers(len(self.gammas)))]
        h, w = self.gopro.shape
        p = min(self.patch, h, w)
        y, x = int(rng.integers(0, h - p + 1)), int(rng.integers(0, w - p + 1))
        return self.gopro.window(seq, start, n, (slice(y, y + p), slice(x, x + p)), gamma=gamma, stride=stride)

    def __getitem__(self, i: int) -> dict:
        from blurwise.data import motion, sr

        if not 0 <= i < len(self):
            raise IndexError(i)
        rng = item_rng(self.seed, self.epoch, i)
        synth = rng.random() < self.synth_fraction
        blur, sharp = self._synthetic(rng) if synth else self._gopro(rng)
        if self.noise[1] > 0:
            blur = motion.add_noise(blur, rng.uniform(*self.noise), rng)
        if self.jpeg_prob > 0 and rng.random() < self.jpeg_prob:
            blur = motion.jpeg(blur, int(rng.integers(self.jpeg_quality[0], self.jpeg_quality[1] + 1)))
        blur = to_uint8(blur)  # the 8-bit blurred image a camera or file would hold
        if self.augment:
            blur, sharp = sr.augment([blur, sharp], rng)
        return {"blur": to_tensor(blur), "sharp": to_tensor(sharp)}
