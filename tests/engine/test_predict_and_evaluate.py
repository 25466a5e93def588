from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from colonseg.data.io import read_mask, write_png
from colonseg.data.sources import DataSource
from colonseg.engine.checkpoint import ModelMeta
from colonseg.engine.evaluate import SUMMARY_KEYS, run_evaluate
from colonseg.engine.predict import Predictor
from colonseg.engine.predict_files import run_predict
from colonseg.errors import ColonsegError
from colonseg.models import create_model


@pytest.fixture
def predictor():
    net = create_model("unet", encoder="test_efficientnet", pretrained=False)
    return Predictor(
        net, ModelMeta("unet", {"encoder": "test_efficientnet"}, size=(64, 64)), device="cpu"
    )


def test_predictor_returns_original_size(predictor):
    image = np.zeros((37, 51, 3), np.uint8)
    out = predictor.predict(image)
    assert out.prob.shape == (37, 51) and out.mask.shape == (37, 51)
    assert out.prob.dtype == np.float32 and 0 <= out.prob.min() <= out.prob.max() <= 1
    np.testing.assert_array_equal(out.mask, out.prob >= predictor.threshold)
    for mode in ("flip", "d4"):
        tta = Predictor(predictor.model, predictor.meta, device="cpu", tta=mode).predict(image)
        assert tta.prob.shape == (37, 51)


def test_tta_averages_the_flip_and_follows_the_checkpoint_default(predictor):
    from dataclasses import replace

    image = np.random.default_rng(1).integers(0, 256, (64, 64, 3), np.uint8)
    x = predictor.preprocess([image])
    plain = predictor.predict_torch(x)
    flipped = predictor.predict_torch(x.flip(-1)).flip(-1)
    meta = ModelMeta.from_json(replace(predictor.meta, tta="flip").to_json(), Path("config.json"))
    assert meta.tta == "flip" and predictor.meta.tta == "none"
    on = Predictor(predictor.model, meta, device="cpu", precision=predictor.precision)
    assert on.tta == "flip" and "flip TTA" in on.settings() and "no TTA" in predictor.settings()
    np.testing.assert_allclose(on.predict_torch(x), (plain + flipped) / 2, atol=1e-5)
    assert Predictor(predictor.model, meta, device="cpu", tta="none").tta == "none"
    # checkpoints written before the modes said true / false
    legacy = {**predictor.meta.to_json(), "tta": True}
    assert ModelMeta.from_json(legacy, Path("config.json")).tta == "flip"
    with pytest.raises(ColonsegError, match="config.json: Unknown TTA 'sideways'"):
        ModelMeta.from_json({**legacy, "tta": "sideways"}, Path("config.json"))


def test_smooth_blurs_the_model_resolution_map_before_it_is_resized(predictor):
    image = np.random.default_rng(2).integers(0, 256, (96, 128, 3), np.uint8)
    model_res = predictor.predict_torch(predictor.preprocess([image]))[0, 0].numpy()
    model = predictor.model
    smooth = Predictor(model, predictor.meta, device="cpu", postprocess="smooth=3")
    expected = cv2.resize(
        cv2.GaussianBlur(model_res, (0, 0), 3, borderType=cv2.BORDER_REFLECT), (128, 96)
    )
    out = smooth.predict(image)
    np.testing.assert_allclose(out.prob, np.clip(expected, 0, 1), atol=1e-5)
    assert out.prob.std() < predictor.predict(image).prob.std()
    assert "post-processing smooth=3" in smooth.settings()


def test_d4_tta_averages_eight_views_and_makes_any_model_equivariant(predictor):
    image = np.random.default_rng(3).integers(0, 256, (64, 64, 3), np.uint8)
    x = predictor.preprocess([image])
    d4 = Predictor(predictor.model, predictor.meta, device="cpu", tta="d4", precision="fp32")
    plain = Predictor(predictor.model, predictor.meta, device="cpu", precision="fp32")
    views = []
    for k in range(4):
        for mirror in (False, True):
            v = torch.rot90(x.flip(-1) if mirror else x, k, (-2, -1))
            p = torch.rot90(plain.predict_torch(v), -k, (-2, -1))
            views.append(p.flip(-1) if mirror else p)
    out = d4.predict_torch(x)
    np.testing.assert_allclose(out, torch.stack(views).mean(0), atol=1e-5)
    # the model alone is not rotation-equivariant; averaged over the eight views it is
    turned = torch.rot90(x, 1, (-2, -1))
    assert not torch.allclose(
        plain.predict_torch(turned), torch.rot90(plain.predict_torch(x), 1, (-2, -1)), atol=1e-3
    )
    np.testing.assert_allclose(d4.predict_torch(turned), torch.rot90(out, 1, (-2, -1)), atol=1e-5)
    assert "D4 TTA (8 views)" in d4.settings()


def test_d4_tta_refuses_a_non_square_input(predictor):
    d4 = Predictor(predictor.model, predictor.meta, device="cpu", tta="d4", size=None)
    d4.size = (64, 96)
    with pytest.raises(ColonsegError, match="needs a square input size, not 64×96"):
        d4.predict(np.zeros((40, 60, 3), np.uint8))


def test_precision_auto_follows_the_hardware_and_bf16_stays_close(predictor):
    import torch

    from colonseg.device import native_bf16
    from colonseg.errors import ColonsegError

    expected = "bf16" if native_bf16(torch.device("cpu")) else "fp32"
    assert predictor.precision == expected
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)
    fp32 = Predictor(predictor.model, predictor.meta, device="cpu", precision="fp32")
    bf16 = Predictor(predictor.model, predictor.meta, device="cpu", precision="bf16")
    assert np.abs(fp32.predict(image).prob - bf16.predict(image).prob).max() < 0.05
    with pytest.raises(ColonsegError, match="Unknown precision 'fp8'"):
        Predictor(predictor.model, predictor.meta, device="cpu", precision="fp8")


def test_run_predict_writes_outputs_and_skips_bad_files(predictor, tiny_dataset_dir, tmp_path):
    (tiny_dataset_dir / "images" / "broken.png").write_bytes(b"junk")
    result = run_predict(predictor, [tiny_dataset_dir / "images"], tmp_path / "out", progress=False)
    assert len(result["written"]) == 8
    assert len(result["failed"]) == 1 and "broken.png" in result["failed"][0][1]
    mask = read_mask(tmp_path / "out" / "masks" / "case_0.png")
    assert mask.shape == (64, 64)
    assert (tmp_path / "out" / "overlays" / "case_0.png").is_file()
    assert (tmp_path / "out" / "probs" / "case_0.png").is_file()


def test_evaluate_writes_the_four_files(predictor, tiny_dataset_dir, tmp_path):
    summary = run_evaluate(
        predictor, [DataSource(str(tiny_dataset_dir))], tmp_path / "ev", progress=False
    )
    saved = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert saved == summary
    stats = saved["tiny"]
    assert stats["n"] == 8 and set(SUMMARY_KEYS) <= set(stats)
    assert all(0 <= stats[k] <= 1 for k in SUMMARY_KEYS if k != "hd95")
    lines = (tmp_path / "ev" / "per_case.csv").read_text().splitlines()
    assert len(lines) == 9 and lines[0].startswith("dataset,id,dice")
    html = (tmp_path / "ev" / "report.html").read_text()
    assert html.count("data:image/png;base64") >= 3 and "Worst cases" in html
    assert predictor.settings() in html  # every report says how its numbers were made
    assert f"<td>{stats['hd95_missing']}</td>" in html  # a count, not a float
    assert "| tiny | 8 |" in (tmp_path / "ev" / "table.md").read_text()


def test_perfect_predictor_scores_one(tiny_dataset_dir, tmp_path):
    class Oracle(Predictor):
        def predict(self, image):
            from colonseg.engine.predict import Prediction

            mask = (image[..., 1] > 130).astype(np.uint8)  # discs are brighter (synthetic data)
            return Prediction(mask.astype(np.float32), mask)

    oracle = Oracle(
        create_model("unet", encoder="test_efficientnet", pretrained=False),
        ModelMeta("unet", {}),
        device="cpu",
    )
    for i in range(8):  # make ground truth exactly what the oracle sees
        from colonseg.data.io import read_image

        image = read_image(tiny_dataset_dir / "images" / f"case_{i}.png")
        write_png(
            tiny_dataset_dir / "masks" / f"case_{i}.png",
            (image[..., 1] > 130).astype(np.uint8) * 255,
        )
    stats = run_evaluate(
        oracle, [DataSource(str(tiny_dataset_dir))], tmp_path / "ev", progress=False
    )["tiny"]
    assert stats["dice"] == pytest.approx(1.0) and stats["iou"] == pytest.approx(1.0)
    assert stats["mae"] == pytest.approx(0.0) and stats["hd95"] == pytest.approx(0.0)


def test_attention_maps_export(tiny_dataset_dir, tmp_path, predictor):
    kwargs = {"encoder": "test_efficientnet", "classes": 1}
    net = create_model("attention_unet", pretrained=False, **kwargs)
    att = Predictor(net, ModelMeta(arch="attention_unet", init_kwargs=kwargs, size=(64, 64)))
    image = np.zeros((50, 70, 3), np.uint8)
    maps = att.attention_maps(image)
    assert len(maps) == 5 and all(m.shape == (50, 70) for m in maps.values())
    result = run_predict(att, [tiny_dataset_dir / "images"], tmp_path / "p", save_attention=True)
    first = tmp_path / "p" / "attention" / f"{Path(result['written'][0]).stem}.png"
    assert first.is_file()
    with pytest.raises(ValueError, match="has no attention maps"):
        run_predict(predictor, [tiny_dataset_dir / "images"], tmp_path / "q", save_attention=True)


def test_checkpoint_post_processing_is_the_default_and_can_be_switched_off():
    from colonseg.postprocess import PostProcess

    net = create_model("unet", encoder="test_efficientnet", pretrained=False)
    meta = ModelMeta("unet", {"encoder": "test_efficientnet"}, size=(64, 64))
    meta.postprocess = "fill_holes,keep_largest"
    assert Predictor(net, meta, device="cpu").post == PostProcess(
        fill_holes=True, keep_largest=True
    )
    assert not Predictor(net, meta, device="cpu", postprocess="none").post
    speckled = np.zeros((64, 64), np.float32)
    speckled[10:30, 10:30], speckled[50:53, 50:53] = 0.9, 0.9
    frame = np.full((64, 64, 3), 128, np.uint8)
    out = Predictor(net, meta, device="cpu").finish(speckled[None], frame)
    assert out.mask[51, 51] == 0 and out.mask[20, 20] == 1  # keep_largest applied
    raw = Predictor(net, meta, device="cpu", postprocess="none").finish(speckled[None], frame)
    assert raw.mask[51, 51] == 1


def test_with_fov_the_model_never_sees_text_burnt_into_the_mucosa():
    net = create_model("unet", encoder="test_efficientnet", pretrained=False)
    meta = ModelMeta("unet", {"encoder": "test_efficientnet"}, size=(64, 64))
    frame = np.clip(np.random.default_rng(0).normal((170, 90, 70), 10, (240, 240, 3)), 0, 255)
    frame = frame.astype(np.uint8)
    plain = frame.copy()
    for i, line in enumerate(["05/10/2015", "11:11:18", "CVP:8"]):
        cv2.putText(frame, line, (10, 40 + 14 * i), cv2.FONT_HERSHEY_PLAIN, 0.9, (235,) * 3, 1)
    blind = Predictor(net, meta, device="cpu", postprocess="none").preprocess([frame])
    fov = Predictor(net, meta, device="cpu", postprocess="fov").preprocess([frame])
    clean = Predictor(net, meta, device="cpu", postprocess="fov").preprocess([plain])
    # the text is gone from what the model sees: its brightness no longer there
    brighter = (blind - clean).mean().item()
    assert brighter > 0.002 and abs((fov - clean).mean().item()) < 0.2 * brighter


def test_hidden_files_of_stopped_writes_are_never_read_as_inputs(tmp_path):
    from colonseg.data.io import collect_images
    from colonseg.data.synthetic import write_folder_dataset

    root = write_folder_dataset(tmp_path / "d", n=2, size=32)
    (root / "images" / ".case_0.ab12cd.png").write_bytes(b"half a png")  # left by kill -9
    (root / "images" / "._case_1.png").write_bytes(b"macOS resource fork")
    assert [p.name for p in collect_images([root / "images"])] == ["case_0.png", "case_1.png"]
    from colonseg.data.layouts import find_pairs

    assert len(find_pairs(root)) == 2


def test_decoding_workers_end_when_predict_is_killed(tmp_path):
    """A worker asks the kernel for SIGKILL when its parent dies (prctl PDEATHSIG)."""
    import signal
    import subprocess
    import sys
    import time

    code = (
        "import os, sys, time\n"
        "from colonseg.engine.predict_files import end_with_parent\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    end_with_parent()\n"
        "    time.sleep(60)\n"
        "    os._exit(0)\n"
        "print(pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    for _ in range(50):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        with open(f"/proc/{child}/stat") as f:  # reaped by init: a zombie counts as ended
            if f.read().split()[2] == "Z":
                break
        time.sleep(0.1)
    else:
        os.kill(child, signal.SIGKILL)
        pytest.fail("the worker outlived its killed parent")


def test_a_killed_runs_temporary_files_are_deleted_and_no_other_file(
    predictor, tiny_dataset_dir, tmp_path
):
    out = tmp_path / "out"
    (out / "masks").mkdir(parents=True)
    (out / "other").mkdir()
    stale = [out / "masks" / ".case_0.k3j5x9q_.png", tmp_path / ".s.a1b2c3d4.csv"]  # kill -9
    kept = [
        out / "masks" / ".case_0.backup.png",  # hidden, but not the shape write_atomic names
        out / "masks" / "case_0.k3j5x9q2.png",  # not hidden
        out / "masks" / ".case_0.k3j5x9q2.png.txt",
        out / "other" / ".case_0.k3j5x9q2.png",  # a folder predict does not write to
        tmp_path / ".notes.a1b2c3d4.csv",  # beside the RLE CSV, but not its temporary file
    ]
    for path in stale + kept:
        path.write_bytes(b"half a file")
    run_predict(predictor, [tiny_dataset_dir / "images"], out, rle_csv=tmp_path / "s.csv",
                progress=False)  # fmt: skip
    assert [p for p in stale if p.exists()] == []
    assert [p for p in kept if not p.exists()] == []


def test_skip_existing_predicts_only_what_a_stopped_run_left_undone(
    predictor, tiny_dataset_dir, tmp_path, monkeypatch
):
    images, out, rle = tiny_dataset_dir / "images", tmp_path / "out", tmp_path / "s.csv"
    run_predict(predictor, [images], out, rle_csv=rle, progress=False)
    full_rle = rle.read_text()
    (out / "masks" / "case_1.png").unlink()  # stopped before its mask
    (out / "overlays" / "case_2.png").unlink()  # stopped between its mask and its overlay
    rle.unlink()
    untouched = (out / "masks" / "case_0.png").stat().st_mtime_ns
    predicted, real = [], predictor.predict_batch
    monkeypatch.setattr(predictor, "predict_batch", lambda x: predicted.append(len(x)) or real(x))

    result = run_predict(predictor, [images], out, rle_csv=rle, skip_existing=True, progress=False)
    assert sum(predicted) == 2 and len(result["skipped"]) == 6
    assert sorted(Path(f).name for f in result["written"]) == ["case_1.png", "case_2.png"]
    assert (out / "masks" / "case_0.png").stat().st_mtime_ns == untouched
    assert rle.read_text() == full_rle  # the skipped images' rows are read back from their masks
    assert all((out / k / "case_1.png").is_file() for k in ("masks", "probs", "overlays"))

    for kind in ("probs", "overlays"):
        (out / kind / "case_5.png").unlink()
    predicted.clear()  # not asked for: a missing probability map or overlay is no reason
    run_predict(predictor, [images], out, save_probs=False, save_overlays=False,
                skip_existing=True, progress=False)  # fmt: skip
    assert predicted == []
    result = run_predict(predictor, [images], out, skip_existing=True, progress=False)
    assert sum(predicted) == 1 and result["written"] == [str(images / "case_5.png")]


def test_predict_cli_skip_existing_says_how_many_were_done(predictor, tiny_dataset_dir, tmp_path):
    from typer.testing import CliRunner

    from colonseg.cli.main import app
    from colonseg.engine.checkpoint import save_pretrained

    model = save_pretrained(predictor.model, predictor.meta, tmp_path / "model")
    out = tmp_path / "out"
    args = ["predict", str(tiny_dataset_dir / "images"), "--out", str(out), "--model", str(model),
            "--device", "cpu"]  # fmt: skip
    assert CliRunner().invoke(app, args).exit_code == 0
    (out / "masks" / "case_3.png").unlink()
    result = CliRunner().invoke(app, [*args, "--skip-existing"])
    assert result.exit_code == 0, result.output
    assert "1 images →" in result.output and "skipped 7 already done" in result.output


def _known_predictions(predictor, monkeypatch, peaks, classes=1):
    """Make ``predictor`` predict, for the i-th image, a disc of probability ``peaks[i]`` (class
    1) and an ellipse of probability 0.6 (class ``classes``) on a 0.1 background; a peak of at
    most 0.5 gives an empty mask. Returns the disc and ellipse masks."""
    from colonseg.engine.predict import Prediction

    disc = cv2.circle(np.zeros((64, 64), np.uint8), (18, 18), 11, 1, -1)
    ellipse = cv2.ellipse(np.zeros((64, 64), np.uint8), (44, 44), (14, 8), 30, 0, 360, 1, -1)
    queue = list(peaks)

    def predict_batch(images):
        outs = []
        for _ in images:
            peak = queue.pop(0)
            prob = np.full((64, 64), 0.1, np.float32)
            prob[disc > 0] = peak
            if peak > 0.5:
                prob[ellipse > 0] = 0.6
            mask = (prob > 0.5).astype(np.uint8)
            cls = mask * 1
            cls[(ellipse > 0) & (mask > 0)] = classes
            probs = None
            if classes > 1:  # background, then the classes: only their sum (1 - bg) matters
                probs = np.stack([1 - prob, prob / 2, prob / 2])
            outs.append(Prediction(prob, mask, cls, probs))
        return outs

    monkeypatch.setattr(predictor, "predict_batch", predict_batch)
    return disc, ellipse


def test_predict_on_a_dataset_root_leaves_the_labels_out_and_mirrors_the_tree(
    predictor, tiny_dataset_dir, tmp_path
):
    from colonseg.data.synthetic import write_glas_dataset

    out = tmp_path / "out"
    result = run_predict(predictor, [tiny_dataset_dir], out, progress=False)
    assert len(result["written"]) == 8 and len(result["labels"]) == 8
    assert all("masks" in Path(f).parts for f in result["labels"])
    assert sorted(p.relative_to(out / "masks").as_posix() for p in out.rglob("masks/**/*.png")) \
        == [f"images/case_{i}.png" for i in range(8)]  # fmt: skip
    assert (out / "overlays" / "images" / "case_0.png").is_file()

    glas = write_glas_dataset(tmp_path / "glas", {"train": 2}, size=(40, 56))
    write_png(glas / "train_9_anno.png", np.zeros((40, 56), np.uint8))  # its image missing
    result = run_predict(predictor, [glas], tmp_path / "g", progress=False)
    assert sorted(Path(f).name for f in result["written"]) == ["train_1.png", "train_2.png"]
    labels = sorted(Path(f).name for f in result["labels"])
    assert labels == ["train_1_anno.png", "train_2_anno.png", "train_9_anno.png"]

    # a plain folder: everything in it, subfolders mirrored, only true collisions renamed
    plain = tmp_path / "plain"
    image = np.full((32, 32, 3), 90, np.uint8)
    for name in ("a.png", "a.jpg", "x/b.png", "y/b.png"):
        (plain / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(plain / name), image)
    inputs = [plain, tiny_dataset_dir / "images" / "case_3.png", plain / "x" / "b.png"]
    result = run_predict(predictor, inputs, plain / "out", progress=False)  # x/b.png once
    names = [row["mask"] for row in result["rows"]]
    assert names == ["masks/a.png", "masks/a_2.png", "masks/x/b.png", "masks/y/b.png",
                     "masks/case_3.png"]  # fmt: skip
    assert result["rows"][1]["file"] == str(plain / "a.png")  # a.jpg sorts first
    again = run_predict(predictor, [plain], plain / "out", progress=False)
    assert len(again["written"]) == 4  # the output folder inside the input is not an input


def test_predictions_csv_holds_one_row_per_image_also_when_resumed(
    predictor, tiny_dataset_dir, tmp_path, monkeypatch
):
    import csv

    images, out = tiny_dataset_dir / "images", tmp_path / "out"
    peaks = [0.9, 0.62, 0.95, 0.3, 0.7, 0.8, 0.45, 0.65]
    disc, ellipse = _known_predictions(predictor, monkeypatch, peaks)
    result = run_predict(predictor, [images], out, progress=False)
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert list(rows[0]) == ["file", "mask", "polyp", "regions", "area_percent",
                             "peak_probability", "mean_probability"]  # fmt: skip
    assert [r["file"] for r in rows] == [str(images / f"case_{i}.png") for i in range(8)]
    n_disc, n_ellipse = int(disc.sum()), int(ellipse.sum())
    first = rows[0]
    assert (first["polyp"], first["regions"]) == ("1", "2")
    assert float(first["area_percent"]) == pytest.approx(100 * (n_disc + n_ellipse) / 4096, 1e-3)
    assert float(first["peak_probability"]) == pytest.approx(0.9, abs=1e-4)
    expected_mean = (0.9 * n_disc + 0.6 * n_ellipse) / (n_disc + n_ellipse)
    assert float(first["mean_probability"]) == pytest.approx(expected_mean, abs=1e-4)
    empty = rows[3]  # peak 0.3: below the threshold, so no polyp and no mean inside a mask
    assert (empty["polyp"], empty["regions"], empty["area_percent"]) == ("0", "0", "0.0000")
    assert (empty["peak_probability"], empty["mean_probability"]) == ("0.3000", "0.0000")
    assert [r["file"] for r in result["rows"]] == [r["file"] for r in rows]
    assert result["rows"][0]["peak_probability"] == pytest.approx(0.9)

    # resumed: the skipped images' rows come back from their mask and probability map
    (out / "masks" / "case_5.png").unlink()
    (out / "predictions.csv").unlink()
    _known_predictions(predictor, monkeypatch, [0.8])
    result = run_predict(predictor, [images], out, progress=False, skip_existing=True)
    assert len(result["skipped"]) == 7
    resumed = list(csv.DictReader((out / "predictions.csv").open()))
    assert [r["file"] for r in resumed] == [r["file"] for r in rows]
    for before, after in zip(rows, resumed, strict=True):
        for key in ("mask", "polyp", "regions", "area_percent"):
            assert after[key] == before[key]
        for key in ("peak_probability", "mean_probability"):  # saved to 1/255
            assert float(after[key]) == pytest.approx(float(before[key]), abs=1 / 510 + 1e-4)


def test_review_page_shows_every_image_most_confident_first(
    predictor, tiny_dataset_dir, tmp_path, monkeypatch
):
    import re

    images, out = tiny_dataset_dir / "images", tmp_path / "out"
    (images / "case_0.png").rename(images / "case_0 <b>&.png")  # escaped, in text and URLs
    peaks = [0.9, 0.62, 0.95, 0.3, 0.7, 0.8, 0.45, 0.65]
    _known_predictions(predictor, monkeypatch, peaks)
    run_predict(predictor, [images], out, progress=False)
    page = (out / "review.html").read_text()
    shown = re.findall(r"<figcaption>([^<]*)<br>", page)
    by_peak = sorted(range(8), key=lambda i: -peaks[i])
    assert shown == [f"case_{i}.png" if i else "case_0 &lt;b&gt;&amp;.png" for i in by_peak]
    thumbs = re.findall(r"src='([^']*)'", page)
    assert thumbs[1] == "thumbs/case_0%20%3Cb%3E%26.jpg" and "<b>&" not in page
    assert all((out / "thumbs" / f"case_{i}.jpg").is_file() for i in range(1, 8))
    doubt = [float(d) for d in re.findall(r"data-doubt='([^']*)'", page)]
    assert doubt == pytest.approx([abs(peaks[i] - 0.5) for i in by_peak])
    assert "sortBy('doubt')" in page and "http" not in page  # nothing loaded from elsewhere


@pytest.mark.parametrize("fmt", ["coco", "labelme"])
def test_exported_polygons_rasterize_back_to_the_masks(
    predictor, tiny_dataset_dir, tmp_path, monkeypatch, fmt
):
    from colonseg.data.annotations import rasterize, read_coco, read_labelme
    from colonseg.data.labels import read_label
    from colonseg.metrics.functional import compute_dice

    net = create_model("unet", encoder="test_efficientnet", classes=3, pretrained=False)
    names = ["neoplastic", "non-neoplastic"]
    meta = ModelMeta("unet", {"encoder": "test_efficientnet", "classes": 3}, size=(64, 64),
                     class_names=names, labels="neopolyp")  # fmt: skip
    three = Predictor(net, meta, device="cpu")
    predictor.meta.class_names = ["lesion"]  # the checkpoint's names, not the scheme's "polyp"
    for p, classes in ((predictor, 1), (three, 2)):
        out = tmp_path / f"{fmt}{classes}"
        _known_predictions(p, monkeypatch, [0.9, 0.3, 0.8], classes)
        files = [tiny_dataset_dir / "images" / f"case_{i}.png" for i in range(3)]
        result = run_predict(p, files, out, export=fmt, progress=False)
        if fmt == "coco":
            doc = json.loads(result["coco"].read_text())
            assert [c["name"] for c in doc["categories"]] == (names if classes > 1 else ["lesion"])
            read = read_coco(result["coco"])
        for i, f in enumerate(files):
            saved = read_label(out / "masks" / f"case_{i}.png", p.scheme)
            if fmt == "coco":
                h, w, regions = read[f.name]
            else:
                image_path, h, w, regions = read_labelme(out / "masks" / f"case_{i}.json")
                assert (out / "masks" / image_path).resolve() == f.resolve()
            assert len(regions) == (2 if i != 1 else 0)  # one polygon per region
            back = rasterize(regions, h, w, names if classes > 1 else ["lesion"])
            for c in range(1, classes + 1):
                if (saved == c).any():
                    dice = compute_dice(back == c, saved == c)
                    assert dice >= 0.99, (fmt, classes, i, c, dice)
            if classes > 1 and i == 0:
                assert set(np.unique(back)) == {0, 1, 2}
                row = result["rows"][0]
                for key, c in (("area_percent_neo", 1), ("area_percent_non", 2)):
                    assert float(row[key]) == pytest.approx(100 * (saved == c).mean(), abs=1e-4)
    with pytest.raises(ColonsegError, match="Did you mean 'coco'"):
        run_predict(predictor, files, tmp_path / "x", export="cocoo", progress=False)


def test_review_orders_saturated_peaks_by_their_mean_probability(tmp_path):
    import re

    from colonseg.viz.review import write_review

    items = [{"file": f"{name}.jpg", "thumb": f"thumbs/{name}.jpg", "link": None, "polyp": 1,
              "regions": 1, "area_percent": 1.0, "peak": peak, "mean": mean}
             for name, peak, mean in [("a", 1.0, 0.80), ("b", 1.0, 0.95), ("c", 0.9999996, 0.99),
                                      ("d", 0.97, 0.99), ("e", None, None)]]  # fmt: skip
    page = write_review(tmp_path / "review.html", items, threshold=0.5).read_text()
    assert re.findall(r"<figcaption>([^<]*)<br>", page) == ["c.jpg", "b.jpg", "a.jpg", "d.jpg",
                                                            "e.jpg"]  # fmt: skip
    ties = re.findall(r"data-tie='([^']*)'", page)
    assert ties[:3] == ["-0.990000", "-0.950000", "-0.800000"] and "dataset.tie" in page
