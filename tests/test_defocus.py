"""Tests for blurwise.defocus: edge estimate, segmenters, propagation, depth inputs, learned model, previews."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from scipy.special import ndtr

from blurwise.defocus import as_float_image, colorize, defocus_details, estimate_defocus, overlay
from blurwise.defocus.depth import prepare_depth
from blurwise.defocus.edge import edge_defocus
from blurwise.defocus.propagate import box_filter, guided_filter, zhuo_sim_propagate
from blurwise.defocus.segment import segment
from blurwise.errors import InputError, ModelError, NotAvailableError, UsageError


def step_edge(sigma: float, size: int = 96, angle: float = 0.3, offset: float = 0.37) -> np.ndarray:
    """A straight step edge blurred by an exact Gaussian (erf profile), sampled at pixel centres."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    d = (xx - size / 2 - offset) * np.cos(angle) + (yy - size / 2) * np.sin(angle)
    return (0.2 + 0.6 * ndtr(d / sigma)).astype(np.float32)


def texture(size: int = 128, seed: int = 0) -> np.ndarray:
    """A sharp RGB test scene: random rectangles and discs of random colours."""
    rng = np.random.default_rng(seed)
    img = np.full((size, size, 3), 0.5, dtype=np.float32)
    yy, xx = np.mgrid[0:size, 0:size]
    for _ in range(40):
        c = rng.uniform(0.05, 0.95, 3)
        y, x, r = rng.integers(0, size, 2).tolist() + [int(rng.integers(4, 14))]
        if rng.random() < 0.5:
            img[max(0, y - r) : y + r, max(0, x - r) : x + r] = c
        else:
            img[(yy - y) ** 2 + (xx - x) ** 2 < r * r] = c
    return img


def half_blurred_blocks(size: int = 256, seed: int = 0, sigma: float = 3.0, block: int = 8) -> np.ndarray:
    """Random colour blocks (edges everywhere), the right half blurred by a Gaussian of ``sigma`` px."""
    rng = np.random.default_rng(seed)
    g = rng.uniform(0.1, 0.9, (size // block, size // block, 3)).astype(np.float32)
    sharp = np.kron(g, np.ones((block, block, 1), np.float32))
    if sigma <= 0:
        return sharp
    img = sharp.copy()
    img[:, size // 2 :] = ndimage.gaussian_filter(sharp, (sigma, sigma, 0))[:, size // 2 :]
    return img


# --------------------------------------------------------------------------- input conversion


def test_as_float_image_pixel_types():
    img8 = (texture(32) * 255).round().astype(np.uint8)
    ref = img8.astype(np.float32) / 255
    np.testing.assert_allclose(as_float_image(img8), ref, atol=1e-7)
    np.testing.assert_allclose(as_float_image(img8.astype(np.uint16) * 257), ref, atol=1e-6)
    np.testing.assert_array_equal(as_float_image(img8 > 127), (img8 > 127).astype(np.float32))
    assert as_float_image(np.full((32, 32), 1.2, np.float64)).max() == 1.0  # floats clipped to [0, 1]
    with pytest.raises(InputError, match="unsupported pixel type int32"):
        as_float_image(img8.astype(np.int32))
    with pytest.raises(InputError, match="NaN or infinite"):
        as_float_image(np.full((32, 32), np.nan, np.float32))


# --------------------------------------------------------------------------- edge estimate


class TestEdgeEstimate:
    @pytest.mark.parametrize("sigma", [1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    @pytest.mark.parametrize("angle", [0.0, 0.5])
    def test_step_edge_sigma_within_20_percent(self, sigma: float, angle: float) -> None:
        est = edge_defocus(step_edge(sigma, angle=angle), low=0.001, high=0.002, clean="none")
        assert est.count > 50
        med = float(np.median(est.sigma[est.mask]))
        assert abs(med - sigma) <= 0.2 * sigma, (sigma, med)

    @pytest.mark.parametrize("sigma", [1.0, 3.0, 6.0])
    def test_full_map_recovers_step_sigma(self, sigma: float) -> None:
        # Uncalibrated: the shipped calibration corrects natural images' texture bias (they read ~25%
        # sharper than their true blur), which an isolated ideal step does not have.
        img = step_edge(sigma, size=128)
        out = estimate_defocus(np.repeat(img[..., None], 3, axis=2), method="edge", segmenter="slic", calibrate=False)
        near = np.abs(img - 0.5) < 0.25  # the edge's ramp, where sigma is observable
        assert abs(float(np.median(out[near])) - sigma) <= 0.2 * sigma

    def test_no_edges_gives_empty_estimate(self) -> None:
        est = edge_defocus(np.full((32, 32, 3), 0.4, np.float32))
        assert est.count == 0 and np.isnan(est.sigma).all()

    def test_cleanup_median_removes_outlier(self) -> None:
        img = step_edge(2.0)
        est = edge_defocus(img, low=0.001, high=0.002, clean="none")
        ys, xs = np.nonzero(est.mask)
        est.sigma[ys[len(ys) // 2], xs[len(xs) // 2]] = 11.0
        from blurwise.defocus.edge import clean_sparse

        cleaned = clean_sparse(est.sigma, est.mask, method="median")
        assert cleaned[ys[len(ys) // 2], xs[len(xs) // 2]] < 3.0


# --------------------------------------------------------------------------- dense maps


class TestDenseMap:
    @pytest.mark.parametrize("segmenter", ["slic", "felzenszwalb", "none"])
    def test_uniform_blur_gives_constant_map(self, segmenter: str) -> None:
        img = ndimage.gaussian_filter(texture(), (2.0, 2.0, 0))
        raw = estimate_defocus(img, method="edge", segmenter=segmenter, calibrate=False)
        out = estimate_defocus(img, method="edge", segmenter=segmenter)
        assert out.dtype == np.float32 and out.shape == img.shape[:2]
        inner = raw[8:-8, 8:-8]
        assert abs(float(np.median(inner)) - 2.0) < 0.5
        assert float(np.percentile(inner, 95) - np.percentile(inner, 5)) < 0.8
        # calibrated (natural-image texture bias corrected: reads higher), still constant
        inner = out[8:-8, 8:-8]
        assert float(np.percentile(inner, 95) - np.percentile(inner, 5)) < 0.4 * float(np.median(inner))

    def test_blurred_half_is_higher(self) -> None:
        sharp = texture(seed=3)
        img = sharp.copy()
        img[:, 64:] = ndimage.gaussian_filter(sharp, (3.0, 3.0, 0))[:, 64:]
        out = estimate_defocus(img, method="edge")
        assert np.median(out[:, 80:]) > np.median(out[:, :48]) + 1.5

    def test_zhuo_sim_matting_interpolates(self) -> None:
        img = ndimage.gaussian_filter(texture(48, seed=1), (1.5, 1.5, 0))
        from blurwise.defocus.edge import edge_defocus as ed

        sp = ed(img)
        out = zhuo_sim_propagate(img, sp, method="matting")
        assert out.shape == (48, 48) and np.isfinite(out).all()
        assert 0.7 < float(np.median(out)) < 2.5

    def test_details_report_timings(self) -> None:
        res = defocus_details(texture(64), method="edge", segmenter="slic")
        assert {"edges", "segment", "propagate", "total"} <= set(res.timings)
        assert res.labels is not None and res.labels.shape == (64, 64)

    def test_bad_arguments(self) -> None:
        with pytest.raises(UsageError, match="method"):
            estimate_defocus(texture(32), method="magic")
        with pytest.raises(UsageError, match="segmenter"):
            estimate_defocus(texture(32), segmenter="magic")
        with pytest.raises(UsageError, match="depth"):
            estimate_defocus(texture(32), segmenter="depth")
        with pytest.raises(InputError, match="too small"):
            estimate_defocus(np.zeros((4, 4, 3), np.float32))

    def test_uint8_input(self) -> None:
        img = (texture(48) * 255).astype(np.uint8)
        assert estimate_defocus(img, method="edge").shape == (48, 48)


class TestGuidedFilter:
    def test_box_filter_is_window_mean(self) -> None:
        a = np.random.default_rng(0).random((20, 30))
        ref = (
            ndimage.uniform_filter(a, 5, mode="constant")
            * 25
            / ndimage.uniform_filter(np.ones_like(a), 5, mode="constant")
            / 25
        )
        assert np.allclose(box_filter(a, 2)[2:-2, 2:-2], ref[2:-2, 2:-2])

    def test_keeps_edges_of_guide(self) -> None:
        guide = np.zeros((40, 40), np.float32)
        guide[:, 20:] = 1.0
        src = guide * 3.0 + np.random.default_rng(0).normal(0, 0.3, guide.shape)
        out = guided_filter(guide, src, 4, 1e-3)
        assert abs(out[:, :18].mean()) < 0.15 and abs(out[:, 22:].mean() - 3.0) < 0.15
        assert out[:, :18].std() < src[:, :18].std() / 2

    def test_colour_guide(self) -> None:
        img = texture(32)
        out = guided_filter(img, np.full((32, 32), 2.0, np.float32), 3, 1e-3)
        assert np.allclose(out, 2.0, atol=1e-3)


# --------------------------------------------------------------------------- segmenters + depth


class TestSegment:
    def test_depth_guidance_changes_boundaries(self) -> None:
        # Colour is one texture everywhere; depth steps at column 40. Colour superpixels straddle the
        # step, depth-guided regions never do, and depth regions split exactly there.
        img = np.repeat(ndimage.gaussian_filter(np.random.default_rng(0).random((64, 96)), 1.0)[..., None], 3, 2)
        img = img.astype(np.float32)
        depth = np.where(np.arange(96)[None, :] < 40, 1.0, 5.0).repeat(64, 0).astype(np.float32)
        crosses = lambda lab: len(set(np.unique(lab[:, :40])) & set(np.unique(lab[:, 40:])))  # noqa: E731
        colour = segment(img, None, "slic", n_segments=12)
        assert crosses(colour) > 0
        for kind in ("depth", "color+depth"):
            lab = segment(img, depth, kind, n_segments=12)
            assert crosses(lab) == 0, kind
        lab = segment(img, depth, "depth")
        assert len(np.unique(lab)) == 2 and (lab[:, 39] != lab[:, 40]).all()

    def test_auto_uses_depth_when_given(self) -> None:
        img = texture(48)
        depth = np.where(np.arange(48)[None, :] < 20, 1.0, 3.0).repeat(48, 0)
        lab = segment(img, depth, "auto")
        assert len(set(np.unique(lab[:, :20])) & set(np.unique(lab[:, 20:]))) == 0

    def test_labels_are_consecutive_int32(self) -> None:
        for kind in ("slic", "felzenszwalb"):
            lab = segment(texture(48), None, kind)
            assert lab.dtype == np.int32 and lab.min() == 0
            assert len(np.unique(lab)) == lab.max() + 1

    def test_depth_changes_map_at_depth_step(self) -> None:
        sharp = texture(seed=5)
        img = sharp.copy()
        img[:, 64:] = ndimage.gaussian_filter(sharp, (3.0, 3.0, 0))[:, 64:]
        depth = np.where(np.arange(128)[None, :] < 64, 1.0, 4.0).repeat(128, 0)
        out = estimate_defocus(img, depth, method="edge", segmenter="depth")
        assert np.median(out[:, 70:]) > np.median(out[:, :58]) + 1.5

    def test_unknown_kind(self) -> None:
        with pytest.raises(UsageError):
            segment(texture(16), None, "nope")


class TestMixedRegions:
    """A depth map with one or few levels (constant, linear ramp) gives one or few huge regions; a region
    holding a sharp part and a defocused part must not take its low quantile, the sharp part's 0."""

    @pytest.mark.parametrize("kind", ["constant", "ramp", "ramp_near"])
    def test_flat_or_ramp_depth_is_not_flattened_to_zero(self, kind: str) -> None:
        img = half_blurred_blocks()
        n, h = img.shape[0], img.shape[0] // 2
        rows = {"constant": np.full(n, 3.0), "ramp": np.linspace(2.0, 3.0, n), "ramp_near": np.linspace(1.0, 5.0, n)}
        # The ramp runs top to bottom, across the left/right blur step: every depth band is half blurred.
        depth = np.repeat(rows[kind][:, None], n, axis=1).astype(np.float32)
        out = estimate_defocus(img, depth, method="edge", segmenter="depth")
        left, right = np.s_[:, : h - 16], np.s_[:, h + 16 :]
        assert float(np.median(out[left])) < 0.3
        assert float(np.median(out[right])) > 2.0  # was 0 everywhere: one region, quantile of mostly-0 edges
        for ref_seg, tol in (("slic", 0.35), ("none", 0.5)):
            ref = estimate_defocus(img, method="edge", segmenter=ref_seg)
            assert abs(float(np.median(out[right]) - np.median(ref[right]))) < 0.15 * float(np.median(ref[right]))
            assert float(np.mean(np.abs(out - ref))) < tol, ref_seg

    def test_uniform_blur_with_constant_depth_keeps_one_level(self) -> None:
        from blurwise.defocus.propagate import mixed_regions

        img = ndimage.gaussian_filter(half_blurred_blocks(sigma=0.0), (2.0, 2.0, 0))
        res = defocus_details(img, np.full(img.shape[:2], 3.0, np.float32), method="edge", segmenter="depth")
        assert res.labels.max() == 0 and not mixed_regions(res.edges, res.labels).any()
        inner = res.sigma[8:-8, 8:-8]
        assert float(np.percentile(inner, 95) - np.percentile(inner, 5)) < 0.05
        assert 1.5 < float(np.median(inner)) < 3.5

    def test_depth_regions_that_agree_with_the_edges_are_kept(self) -> None:
        from blurwise.defocus.propagate import dgs_propagate, mixed_regions

        img = half_blurred_blocks(seed=1)
        n = img.shape[0]
        depth = np.where(np.arange(n)[None, :] < n // 2, 1.0, 4.0).repeat(n, 0).astype(np.float32)
        res = defocus_details(img, depth, method="edge", segmenter="depth")
        assert res.labels.max() == 1 and not mixed_regions(res.edges, res.labels).any()
        off, _ = dgs_propagate(img, res.edges, res.labels, depth=depth, split_mixed=False)
        np.testing.assert_array_equal(res.sigma, off)

    def test_split_regions_cuts_only_the_flagged_ones(self) -> None:
        from blurwise.defocus.propagate import split_regions

        img = texture(64)
        labels = np.zeros((64, 64), np.int32)
        labels[:, 32:] = 1
        out = split_regions(img, labels, np.array([False, True]))
        assert out.dtype == np.int32 and len(np.unique(out)) == out.max() + 1
        assert len(np.unique(out[:, :32])) == 1 and len(np.unique(out[:, 32:])) > 4
        assert not set(np.unique(out[:, :32])) & set(np.unique(out[:, 32:]))
        assert split_regions(img, labels, np.array([False, False])) is labels


class TestDepthInput:
    def test_rgb_image_rejected(self) -> None:
        rgb = np.random.default_rng(0).random((32, 32, 3)).astype(np.float32)
        with pytest.raises(InputError, match="RGB"):
            prepare_depth(rgb, (32, 32))

    def test_grey_saved_as_rgb_accepted(self) -> None:
        d = np.random.default_rng(0).random((32, 32)).astype(np.float32)
        assert prepare_depth(np.stack([d] * 3, 2), (32, 32)).shape == (32, 32)

    def test_all_nan_rejected(self) -> None:
        with pytest.raises(InputError, match="finite"):
            prepare_depth(np.full((16, 16), np.nan, np.float32), (16, 16))

    def test_aspect_mismatch_rejected(self) -> None:
        with pytest.raises(InputError, match="aspect"):
            prepare_depth(np.ones((40, 40), np.float32), (40, 60))

    def test_resized_and_holes_filled(self) -> None:
        d = np.ones((20, 30), np.float32)
        d[5, 5] = np.nan
        d[6, 6] = np.inf
        out = prepare_depth(d, (40, 60))
        assert out.shape == (40, 60) and np.isfinite(out).all()
        # within tolerance (1% aspect difference) is resized, not rejected
        assert prepare_depth(np.ones((40, 61), np.float32), (40, 60)).shape == (40, 60)

    def test_estimate_rejects_bad_depth(self) -> None:
        with pytest.raises(InputError, match="aspect"):
            estimate_defocus(texture(32), np.ones((10, 40), np.float32))

    def test_depth_files(self, tmp_path) -> None:
        from PIL import Image

        d = (np.arange(24 * 32).reshape(24, 32) % 200).astype(np.uint16) * 300
        Image.fromarray(d).save(tmp_path / "d16.png")
        np.save(tmp_path / "d.npy", d.astype(np.float32))
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(
            tmp_path / "rgb.png"
        )
        for name in ("d16.png", "d.npy"):
            out = prepare_depth(tmp_path / name, (48, 64))
            assert out.shape == (48, 64) and out.max() > 1000
        with pytest.raises(InputError, match="RGB"):
            prepare_depth(tmp_path / "rgb.png", (24, 32))
        with pytest.raises(InputError, match="not found"):
            prepare_depth(tmp_path / "missing.png", (24, 32))

    def test_heif_without_package(self, tmp_path) -> None:
        # Only the absent-package branch is testable without a HEIC photo that has a depth map.
        try:
            import pillow_heif  # noqa: F401
        except ImportError:
            p = tmp_path / "x.heic"
            p.write_bytes(b"\0" * 64)
            with pytest.raises(NotAvailableError, match="pillow-heif"):
                prepare_depth(p, (8, 8))
        else:
            pytest.skip("pillow-heif installed; the absent-package error is not reachable")


# --------------------------------------------------------------------------- SAM


def tiny_sam():  # type: ignore[no-untyped-def]
    """A randomly initialised, tiny Sam built from the segment-anything package's own classes."""
    from functools import partial

    import torch

    from blurwise.defocus.sam import sam_package

    modeling, _ = sam_package()
    torch.manual_seed(0)
    emb, size, patch = 16, 64, 8
    return modeling.Sam(
        image_encoder=modeling.ImageEncoderViT(
            img_size=size,
            patch_size=patch,
            embed_dim=32,
            depth=1,
            num_heads=2,
            mlp_ratio=2,
            out_chans=emb,
            qkv_bias=True,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            use_rel_pos=True,
            window_size=4,
            global_attn_indexes=(),
        ),
        prompt_encoder=modeling.PromptEncoder(
            embed_dim=emb,
            image_embedding_size=(size // patch, size // patch),
            input_image_size=(size, size),
            mask_in_chans=4,
        ),
        mask_decoder=modeling.MaskDecoder(
            num_multimask_outputs=3,
            transformer=modeling.TwoWayTransformer(depth=1, embedding_dim=emb, mlp_dim=32, num_heads=2),
            transformer_dim=emb,
            iou_head_depth=2,
            iou_head_hidden_dim=16,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    ).eval()


class TestSam:
    def test_missing_checkpoint_or_package(self) -> None:
        with pytest.raises(NotAvailableError):
            segment(texture(32), None, "sam")

    @pytest.mark.slow
    def test_tiny_random_sam_end_to_end(self, tmp_path) -> None:
        import importlib.util

        if importlib.util.find_spec("segment_anything") is None:
            pytest.skip("segment-anything not installed")
        import torch

        from blurwise.defocus.sam import load_sam, sam_labels, sam_masks

        torch.set_num_threads(1)
        sam = tiny_sam()
        img = texture(40)
        masks, scores = sam_masks(img, sam, points_per_side=4, pred_iou_thresh=-1e9, stability_thresh=-1.0, min_area=1)
        assert masks.ndim == 3 and masks.shape[1:] == (40, 40) and len(masks) == len(scores) >= 1
        lab = sam_labels(img, model=sam, points_per_side=4, pred_iou_thresh=-1e9, stability_thresh=-1.0)
        assert lab.shape == (40, 40) and lab.dtype == np.int32 and len(np.unique(lab)) == lab.max() + 1
        out = estimate_defocus(img, method="edge", segmenter="sam", sam_model=sam)
        assert out.shape == (40, 40) and np.isfinite(out).all()
        # A checkpoint that is not SAM's is refused with a clear message.
        torch.save(sam.state_dict(), tmp_path / "tiny.pth")
        from blurwise.errors import ModelError

        with pytest.raises(ModelError, match="Segment-Anything"):
            load_sam(str(tmp_path / "tiny.pth"))


# --------------------------------------------------------------------------- learned model


class TestLearned:
    def test_shape_contract(self) -> None:
        import torch

        from blurwise.models import create_model
        from blurwise.models.registry import count_params, get_variant

        torch.set_num_threads(1)
        m = create_model("defocus-cnn").eval()
        assert count_params(m) < 100_000
        assert m.in_channels == 3 and m.out_channels == 1 and m.scale == 1
        assert get_variant("defocus-cnn").task == "defocus"
        with torch.inference_mode():
            for h, w in ((37, 50), (64, 64), (9, 13)):
                y = m(torch.rand(2, 3, h, w))
                assert y.shape == (2, 1, h, w) and (y >= 0).all()
        m4 = create_model("defocus-cnn", in_channels=4).eval()
        with torch.inference_mode():
            assert m4(torch.rand(1, 4, 20, 24)).shape == (1, 1, 20, 24)

    def test_fourth_level_starts_as_a_no_op(self) -> None:
        """A 4-level net (1/8 level added residually, zero-initialised) loading 3-level weights gives the
        3-level output (exactly where both pad alike: sizes that are multiples of 8), any size works."""
        import torch

        from blurwise.models import create_model

        torch.manual_seed(0)
        m3 = create_model("defocus-cnn").eval()
        m4 = create_model("defocus-cnn", channels=(16, 32, 48, 64)).eval()
        missing, unexpected = m4.load_state_dict(m3.state_dict(), strict=False)
        assert not unexpected and {k.split(".")[0] for k in missing} == {"enc4", "up4"}
        with torch.inference_mode():
            x = torch.rand(1, 3, 40, 64)
            torch.testing.assert_close(m4(x), m3(x))
            for h, w in ((37, 50), (9, 13)):
                assert m4(torch.rand(1, 3, h, w)).shape == (1, 1, h, w)
        with pytest.raises(ModelError, match="3 or 4"):
            create_model("defocus-cnn", channels=(16, 32))

    def test_loss_threshold_term(self) -> None:
        """The routing-side term only acts with a threshold and a weight, and it ranks a map that puts
        every pixel on the right side of the threshold above one that does not, at equal L1."""
        import torch

        from blurwise.defocus.learned import defocus_loss

        target = torch.tensor([0.14, 0.16]).view(1, 1, 1, 2)
        right = torch.tensor([0.10, 0.20]).view(1, 1, 1, 2)  # both pixels on their side of 0.15
        wrong = torch.tensor([0.18, 0.12]).view(1, 1, 1, 2)  # the same absolute errors, sides swapped
        plain_r, plain_w = defocus_loss(right, target), defocus_loss(wrong, target)
        assert defocus_loss(right, target, 0.15, 0.0) == plain_r  # no weight: the plain loss
        assert defocus_loss(right, target, None, 1.0) == plain_r  # no threshold: the plain loss
        torch.testing.assert_close(plain_r, plain_w, atol=0.01, rtol=0)
        assert defocus_loss(right, target, 0.15, 1.0) + 0.5 < defocus_loss(wrong, target, 0.15, 1.0)
        assert defocus_loss(right, target, 0.15, 1.0) > plain_r

    def test_exported_training_metadata_is_the_checkpoints(self, tmp_path) -> None:
        """Weights exported with --no-train record how the checkpoint was trained, not the CLI defaults."""
        from blurwise.defocus import learned
        from blurwise.models import load_model

        rng = np.random.default_rng(0)
        images = [(rng.random((48, 48, 3)) * 255).astype(np.uint8) for _ in range(6)]
        sigmas = [rng.random((48, 48)).astype(np.float16) for _ in range(6)]
        (tmp_path / "x4").mkdir()
        learned._save_bank(tmp_path / "x4" / "bank_x4.npz", [f"r{i}" for i in range(6)], {
            "images_4": images, "sigmas_4": sigmas,
        })  # fmt: skip
        common = ["--work", str(tmp_path), "--scale", "4", "--init", "", "--patch", "16", "--batch", "2"]
        learned.main([*common, "--iterations", "3", "--lr", "1e-4", "--out", str(tmp_path / "a.safetensors")])
        learned.main([*common, "--no-train", "--out", str(tmp_path / "b.safetensors")])
        for name in ("a", "b"):
            tr = load_model(tmp_path / f"{name}.safetensors")[1].metadata["training"]
            assert (tr["iterations"], tr["lr"], tr["steps"], tr["renders_per_image"]) == (3, 1e-4, 3, 4), name

    def test_map_macs_follow_the_model_in_use(self, monkeypatch) -> None:
        from blurwise import defocus
        from blurwise.defocus import learned

        if not defocus._learned_available():
            pytest.skip("defocus-cnn weights not shipped")
        monkeypatch.setattr(
            learned, "learned_macs_per_pixel", lambda lr_scale=1, model="defocus-cnn": 1000.0 * lr_scale
        )
        assert defocus.estimate_macs(10, 10, method="learned", segmenter="none", lr_scale=4) == 400_000.0
        assert (
            defocus.estimate_macs(10, 10, method="edge", segmenter="none")
            == 100 * defocus.ZHUO_SIM_GUIDED_MACS_PER_PIXEL
        )

    def test_shipped_weights(self) -> None:
        from blurwise.models.registry import WEIGHTS_DIR

        if not (WEIGHTS_DIR / "defocus-cnn.safetensors").is_file():
            pytest.skip("defocus-cnn weights not shipped")
        img = ndimage.gaussian_filter(texture(64), (2.0, 2.0, 0))
        for s in (1, 4):
            out = estimate_defocus(img, method="learned", segmenter="none", lr_scale=s)
            assert out.shape == (64, 64) and out.dtype == np.float32 and (out >= 0).all()
        sharp = estimate_defocus(texture(64), method="learned", segmenter="none")
        blurred = estimate_defocus(img, method="learned", segmenter="none")
        assert np.median(blurred) > np.median(sharp)

    def test_per_scale_model(self, monkeypatch) -> None:
        """At lr_scale 4 the x4 model (trained on LR x4 renders) replaces the general one when shipped."""
        from blurwise.defocus import learned
        from blurwise.models.registry import get_variant, is_shipped

        if not is_shipped(get_variant("defocus-cnn-x4")):
            pytest.skip("defocus-cnn-x4 weights not shipped")
        assert learned.scale_model_available(4) and not learned.scale_model_available(3)
        used = []
        real = learned._cached_model
        monkeypatch.setattr(learned, "_cached_model", lambda name: used.append(name) or real(name))
        img = texture(32)
        learned.learned_defocus(img, lr_scale=4)
        learned.learned_defocus(img, lr_scale=3)  # no x3 model: the general one
        learned.learned_defocus(img, lr_scale=4, model="defocus-cnn-x4")
        assert used == ["defocus-cnn-x4", "defocus-cnn", "defocus-cnn-x4"]
        from blurwise.models import load_model

        _, info = load_model("defocus-cnn-x4")
        assert info.metadata["lr_scale"] == 4 and "4" in info.metadata["calibration"]


# --------------------------------------------------------------------------- previews


class TestPreviews:
    def test_colorize_has_bar(self) -> None:
        s = np.linspace(0, 4, 60 * 80, dtype=np.float32).reshape(60, 80)
        rgb = colorize(s)
        assert rgb.dtype == np.uint8 and rgb.shape[0] == 60 and rgb.shape[1] > 80 and rgb.shape[2] == 3
        assert colorize(s, bar=False).shape == (60, 80, 3)

    def test_overlay(self) -> None:
        img = texture(32)
        out = overlay(img, np.zeros((32, 32), np.float32))
        assert out.shape == (32, 32, 3) and out.dtype == np.uint8
        with pytest.raises(InputError):
            overlay(img, np.zeros((10, 10), np.float32))


def test_defocus_inputs_keep_their_values_or_are_refused():
    from PIL import Image as PILImage

    from blurwise.defocus import as_float_image, colorize
    from blurwise.errors import InputError

    ramp16 = (np.arange(4096).reshape(64, 64) * 16).astype(np.uint16)
    assert abs(float(as_float_image(PILImage.fromarray(ramp16)).max()) - 65520 / 65535) < 1e-6  # was clipped to 1
    assert float(as_float_image(PILImage.fromarray(np.full((16, 16), 0.5, np.float32))).max()) == 0.5  # was 0
    with pytest.raises(InputError, match="reaches"):  # 0-255 floats: a white image, silently, before
        as_float_image(np.full((16, 16, 3), 200.0, np.float32))
    s = np.full((20, 20), 4.0, np.float32)
    s[0, 0] = np.nan  # one pixel without an estimate must not pin the scale to 1 px
    np.testing.assert_array_equal(colorize(s), colorize(s, vmax=4.0))  # the scale of the finite pixels
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(InputError, match="vmax"):
            colorize(s, vmax=bad)


def test_defocus_options_are_checked():
    from blurwise.defocus import estimate_macs, overlay
    from blurwise.defocus.segment import slic_labels

    img = np.random.default_rng(0).random((32, 32, 3)).astype(np.float32)
    for bad in (-5, 0, 2.5):
        with pytest.raises(UsageError, match="n_segments"):
            slic_labels(img, bad)
    with pytest.raises(UsageError, match="unknown method"):
        estimate_macs(10, 10, method="bogus")
    with pytest.raises(UsageError, match="not negative"):
        estimate_macs(-10, 10)
    with pytest.raises(InputError, match="alpha"):
        overlay(img, np.zeros((32, 32), np.float32), alpha=2.0)
