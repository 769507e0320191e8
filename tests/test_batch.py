"""Folder pipeline: input expansion, output naming, reader/writer run, failures, skip, dry run, Ctrl-C."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
from conftest import synth_image

from blurwise.batch import BatchResult, expand_inputs, output_ext, plan_jobs, run_batch
from blurwise.errors import InputError, UsageError
from blurwise.io import read_image, write_image


def _copy(img, job):
    return [(job.dst, img)]


def _no_temp(folder) -> bool:
    return not [p for p in folder.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]


class TestPlan:
    def test_expand_flat_and_recursive(self, image_folder):
        flat = [p.name for p, _ in expand_inputs([image_folder])]
        assert flat == ["a.png", "b16.png", "c.jpg"]
        deep = [p.relative_to(image_folder).as_posix() for p, _ in expand_inputs([image_folder], recursive=True)]
        assert deep == ["a.png", "b16.png", "c.jpg", "sub/d.tif", "sub/e_rgba.png", "sub/f_gray.png"]

    def test_hidden_and_non_images_ignored(self, image_folder):
        (image_folder / "notes.txt").write_text("x")
        (image_folder / ".a.png.123.tmp").write_bytes(b"")
        (image_folder / ".hidden.png").write_bytes(b"")
        assert [p.name for p, _ in expand_inputs([image_folder])] == ["a.png", "b16.png", "c.jpg"]

    def test_mirror_suffix_ext(self, image_folder, tmp_path):
        jobs = plan_jobs([image_folder], tmp_path / "out", suffix="x4", ext="auto", recursive=True)
        rel = sorted(j.dst.relative_to(tmp_path / "out").as_posix() for j in jobs)
        assert rel == ["a_x4.png", "b16_x4.png", "c_x4.jpg", "sub/d_x4.tif", "sub/e_rgba_x4.png", "sub/f_gray_x4.png"]
        jobs = plan_jobs([image_folder], tmp_path / "out", suffix="", ext="tif")
        assert sorted(j.dst.name for j in jobs) == ["a.tif", "b16.tif", "c.tif"]

    def test_default_ext(self, image_folder, tmp_path):
        jobs = plan_jobs([image_folder / "a.png"], tmp_path, default_ext="tif")
        assert jobs[0].dst.suffix == ".tif"
        assert output_ext(image_folder / "c.jpg", "png") == ".png"
        assert output_ext(image_folder / "x.heic", "auto") == ".png"  # read-only formats -> PNG
        with pytest.raises(UsageError):
            output_ext(image_folder / "c.jpg", "gif")

    def test_file_target(self, image_folder, tmp_path):
        jobs = plan_jobs([image_folder / "a.png"], tmp_path / "x.jpg")
        assert len(jobs) == 1 and jobs[0].dst == tmp_path / "x.jpg"
        with pytest.raises(UsageError, match="names a file"):
            plan_jobs([image_folder], tmp_path / "x.jpg")
        assert plan_jobs([image_folder / "a.png"], tmp_path / "x.jpeg", ext="jpg")[0].dst.suffix == ".jpeg"
        with pytest.raises(UsageError, match="names a .png file, but --ext asks for jpg"):
            plan_jobs([image_folder / "a.png"], tmp_path / "x.png", ext="jpg")
        with pytest.raises(UsageError, match="cannot write .gif images"):  # not taken for a folder name
            plan_jobs([image_folder / "a.png"], tmp_path / "anim.gif")
        assert plan_jobs([image_folder / "a.png"], tmp_path / "run.v2")[0].dst.parent.name == "run.v2"  # a folder

    def test_collisions_and_self_overwrite(self, tmp_path):
        src = tmp_path / "in"
        src.mkdir()
        write_image(src / "a.png", synth_image(4, 4, 3))
        write_image(src / "a.jpg", synth_image(4, 4, 3))
        jobs = plan_jobs([src], tmp_path / "out", ext="png")
        assert [j.error is None for j in jobs] == [True, False]
        assert "would also be written" in jobs[1].error
        jobs = plan_jobs([src / "a.png"], src, suffix="")
        assert "replace its input" in jobs[0].error

    def test_output_inside_input_not_reprocessed(self, image_folder):
        out = image_folder / "results"
        write_image(out / "a_out.png", synth_image(4, 4, 3))
        jobs = plan_jobs([image_folder], out, recursive=True)
        assert all("results" not in j.src.parts for j in jobs)

    def test_output_folder_holding_the_input_excludes_nothing(self, image_folder, monkeypatch):
        # -o . (or any folder above the input folder) used to leave every input out: "no input images"
        monkeypatch.chdir(image_folder.parent)
        jobs = plan_jobs([image_folder.name], ".", recursive=True)
        assert len(jobs) == 6 and all(j.error is None for j in jobs)
        assert sorted(j.dst.as_posix() for j in jobs)[:2] == ["a_out.png", "b16_out.png"]  # the tree mirrored under .

    def test_output_folder_is_the_input_folder(self, image_folder):
        write_image(image_folder / "a_out.png", synth_image(4, 4, 3))  # an earlier run's output
        jobs = plan_jobs([image_folder], image_folder)
        assert sorted(j.src.name for j in jobs) == ["a.png", "b16.png", "c.jpg"]
        assert sorted(j.dst.name for j in jobs) == ["a_out.png", "b16_out.png", "c_out.jpg"]

    def test_inputs_named_twice_run_once(self, image_folder, tmp_path):
        a = image_folder / "a.png"
        jobs = plan_jobs([a, image_folder, a], tmp_path / "out")
        assert sorted(j.src.name for j in jobs) == ["a.png", "b16.png", "c.jpg"]
        assert all(j.error is None for j in jobs)

    def test_no_images(self, tmp_path):
        with pytest.raises(UsageError, match="no input images"):
            plan_jobs([tmp_path], tmp_path / "out")

    def test_missing_input_kept_as_job(self, tmp_path):
        jobs = plan_jobs([tmp_path / "missing.png"], tmp_path / "out")
        assert len(jobs) == 1


class TestRun:
    def test_copy_all(self, image_folder, tmp_path):
        jobs = plan_jobs([image_folder], tmp_path / "out", recursive=True)
        res = run_batch(jobs, _copy, quiet=True)
        assert len(res.done) == 6 and not res.failed and res.exit_code == 0
        img = read_image(tmp_path / "out" / "sub" / "e_rgba_out.png")
        assert img.alpha is not None
        assert read_image(tmp_path / "out" / "b16_out.png").bit_depth == 16
        assert _no_temp(tmp_path / "out")

    def test_failures_continue(self, image_folder, tmp_path):
        (image_folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
        (image_folder / "empty.jpg").write_bytes(b"")
        msgs: list[str] = []
        jobs = plan_jobs([image_folder, tmp_path / "gone.png"], tmp_path / "out")
        res = run_batch(jobs, _copy, quiet=True, say=msgs.append)
        assert len(res.done) == 3 and len(res.failed) == 3 and res.exit_code == 1
        text = "\n".join(msgs)
        assert "broken.png" in text and "empty file" in text and "file not found" in text
        assert all("\n" not in m for m in msgs)
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_out.png", "b16_out.png", "c_out.jpg"]

    def test_process_error_reported_others_go_on(self, image_folder, tmp_path):
        def flaky(img, job):
            if job.src.name == "b16.png":
                raise RuntimeError("model exploded\nsecond line")
            return _copy(img, job)

        msgs: list[str] = []
        res = run_batch(plan_jobs([image_folder], tmp_path / "out"), flaky, quiet=True, say=msgs.append)
        assert len(res.done) == 2 and res.failed[0][1] == "RuntimeError: model exploded"

    def test_existing_output(self, image_folder, tmp_path):
        jobs = plan_jobs([image_folder], tmp_path / "out")
        run_batch(jobs, _copy, quiet=True)
        stamp = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()}
        res = run_batch(plan_jobs([image_folder], tmp_path / "out"), _copy, quiet=True, say=lambda m: None)
        assert len(res.failed) == 3 and "--overwrite" in res.failed[0][1]
        res = run_batch(plan_jobs([image_folder], tmp_path / "out"), _copy, quiet=True, skip_existing=True)
        assert len(res.skipped) == 3 and not res.done and res.exit_code == 0
        assert {p: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()} == stamp
        res = run_batch(plan_jobs([image_folder], tmp_path / "out"), _copy, quiet=True, overwrite=True)
        assert len(res.done) == 3

    def test_dry_run_touches_nothing(self, image_folder, tmp_path):
        res = run_batch(plan_jobs([image_folder], tmp_path / "out"), _copy, dry_run=True)
        assert not (tmp_path / "out").exists()
        assert len(res.planned) == 3 and "would write" in res.table()

    def test_extra_outputs(self, image_folder, tmp_path):
        def two(img, job):
            return [(job.dst, img), (job.dst.with_name(job.dst.stem + "_map.png"), np.zeros((2, 2), np.uint8))]

        run_batch(plan_jobs([image_folder / "a.png"], tmp_path / "o"), two, quiet=True)
        assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["a_out.png", "a_out_map.png"]

    def test_extra_outputs_all_or_none(self, image_folder, tmp_path):
        out = tmp_path / "o"

        def two(img, job, bad=False):
            side = np.zeros((2, 2, 2, 2), np.uint8) if bad else np.zeros((2, 2), np.uint8)  # 4-D: cannot be written
            return [(job.dst, img), (job.dst.with_name(job.dst.stem + "_map.png"), side)]

        # an existing side output fails the job before its main output is written
        out.mkdir()
        (out / "a_out_map.png").write_bytes(b"old")
        res = run_batch(plan_jobs([image_folder / "a.png"], out), two, quiet=True, say=lambda m: None)
        assert res.exit_code == 1 and "a_out_map.png" in res.failed[0][1] and "--overwrite" in res.failed[0][1]
        assert sorted(p.name for p in out.iterdir()) == ["a_out_map.png"]
        assert (out / "a_out_map.png").read_bytes() == b"old"
        # a side output that cannot be written takes back the main output written before it
        (out / "a_out_map.png").unlink()
        res = run_batch(
            plan_jobs([image_folder / "a.png"], out), lambda i, j: two(i, j, bad=True), quiet=True, say=lambda m: None
        )
        assert res.exit_code == 1 and list(out.iterdir()) == []

    def test_ctrl_c_stops_after_current_image(self, tmp_path):
        src = tmp_path / "in"
        for k in range(5):
            write_image(src / f"i{k}.png", synth_image(8, 8, 3, seed=k))
        seen = []

        def interrupt_on_second(img, job):
            seen.append(job.src.name)
            if len(seen) == 2:
                os.kill(os.getpid(), signal.SIGINT)  # the handler only sets a flag
            return _copy(img, job)

        res = run_batch(plan_jobs([src], tmp_path / "out"), interrupt_on_second, quiet=True, say=lambda m: None)
        assert res.interrupted and res.exit_code == 130
        assert seen == ["i0.png", "i1.png"]
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["i0_out.png", "i1_out.png"]
        assert _no_temp(tmp_path / "out")
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler

    def test_unwritable_side_output_name_fails_the_job_not_the_run(self, tmp_path):
        # an output name the system refuses (ENAMETOOLONG) was an OSError in the writer thread: a traceback, the
        # job neither done nor failed, exit 0, and with more images than the queue holds, a hang
        src = tmp_path / "in"
        for k in range(5):
            write_image(src / f"i{k}.png", synth_image(8, 8, 3, seed=k))

        def with_long_side(img, job):
            name = "x" * 300 + ".png" if job.src.name == "i1.png" else f"{job.dst.stem}_s.png"
            return [(job.dst, img), (job.dst.with_name(name), img)]

        lines: list[str] = []
        res = run_batch(plan_jobs([src], tmp_path / "out"), with_long_side, quiet=True, prefetch=1, say=lines.append)
        assert res.exit_code == 1 and len(res.done) == 4 and [f.name for f, _ in res.failed] == ["i1.png"]
        assert "cannot write" in lines[0] and "\n" not in lines[0]
        assert "i1_out.png" not in [p.name for p in (tmp_path / "out").iterdir()]  # all or none
        assert _no_temp(tmp_path / "out")

    def test_disk_full_mid_job_leaves_the_old_outputs(self, image_folder, tmp_path, monkeypatch):
        import blurwise.io.image as mod

        out = tmp_path / "o"

        def two(img, job):
            return [(job.dst, img), (job.dst.with_name(job.dst.stem + "_map.png"), np.zeros((2, 2), np.uint8))]

        run_batch(plan_jobs([image_folder / "a.png"], out), two, quiet=True)
        before = {p.name: p.read_bytes() for p in out.iterdir()}
        real = mod._encode

        def map_fails(img, fmt, bits, quality, f, path=None):
            if path is not None and path.name.endswith("_map.png"):
                raise OSError(28, "No space left on device")
            real(img, fmt, bits, quality, f, path)

        monkeypatch.setattr(mod, "_encode", map_fails)
        res = run_batch(plan_jobs([image_folder / "a.png"], out), two, overwrite=True, quiet=True, say=lambda m: None)
        assert res.exit_code == 1 and "No space left on device" in res.failed[0][1]
        # the new main output was complete, but it is not put in place beside the old map: both stay the old ones
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    def test_ctrl_c_while_finishing_the_writes(self, tmp_path, monkeypatch):
        # Ctrl-C again while the computed images are being written: the file being written is finished (the writer
        # thread is not abandoned mid-write, which left its temp file), the rest are dropped, KeyboardInterrupt
        import _thread
        import threading
        import time

        import blurwise.batch as batch

        src = tmp_path / "in"
        for k in range(4):
            write_image(src / f"i{k}.png", synth_image(8, 8, 3, seed=k))
        real = batch.write_images

        def slow(items, overwrite=False):
            time.sleep(0.4)
            return real(items, overwrite=overwrite)

        monkeypatch.setattr(batch, "write_images", slow)
        timer = threading.Timer(0.7, _thread.interrupt_main)  # lands in the final join (the computing is instant)
        timer.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                run_batch(plan_jobs([src], tmp_path / "out"), _copy, quiet=True, prefetch=4, say=lambda m: None)
        finally:
            timer.cancel()
        written = sorted((tmp_path / "out").iterdir())
        assert 1 <= len(written) < 4 and _no_temp(tmp_path / "out")
        assert all(read_image(p).width == 8 for p in written)

    def test_stale_temp_files_cleaned_fresh_ones_kept(self, image_folder, tmp_path):
        from blurwise.io.image import temp_prefix

        out = tmp_path / "o"
        out.mkdir()
        stale, fresh = out / f"{temp_prefix('a_out.png')}abcd1234.tmp", out / f"{temp_prefix('a_out.png')}wxyz9876.tmp"
        for f in (stale, fresh):
            f.write_bytes(b"partial")
        os.utime(stale, (0, 0))  # a SIGKILLed run's leftover, long ago
        res = run_batch(plan_jobs([image_folder / "a.png"], out), _copy, quiet=True)
        assert res.exit_code == 0 and sorted(p.name for p in out.iterdir()) == sorted(["a_out.png", fresh.name])

    def test_summary_table(self):
        res = BatchResult(done=[1, 2], skipped=[3], failed=[(4, "x")], seconds=2.0)  # type: ignore[list-item]
        head, row = res.table().splitlines()
        assert head.split() == ["done", "skipped", "failed", "time", "images/s"]
        assert row.split() == ["2", "1", "1", "2.0s", "1.00"]

    def test_read_kwargs_limit(self, image_folder, tmp_path):
        jobs = plan_jobs([image_folder / "a.png"], tmp_path / "o")
        res = run_batch(jobs, _copy, quiet=True, read_kwargs={"max_pixels": 10}, say=lambda m: None)
        assert "too large" in res.failed[0][1]
        assert isinstance(InputError("x"), Exception)
