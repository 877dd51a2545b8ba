"""reconstruction.py on a tiny dataset made from the real clips: PNGs, mp4s, CSV, JSON, and an L1
that an independent recomputation from the PNGs reproduces; parity of the forward with the
reference's reconstruction outputs; the runs table."""
from __future__ import annotations

import csv
import json
import os

import av
import imageio.v3 as iio
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reconstruction import Reconstructor, load_weights, main, reconstruction
from utils.video import open_video

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def _frames(name, indices):
    return open_video(os.path.join(DATA, name)).get_frames(list(indices))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """root/test with the three kinds of video: mp4 file, frame folder, png strip (few frames, various sizes)."""
    root = tmp_path_factory.mktemp("tinyds")
    test = root / "test"
    (test / "car#1").mkdir(parents=True)
    for i, frame in enumerate(_frames("carphone.mp4", range(0, 10, 2))):  # 5 frames 176 x 144
        iio.imwrite(test / "car#1" / f"{i:04d}.png", frame)
    face = _frames("single_face.mp4", range(7))[:, :, 140:500]  # 7 frames 360 x 360
    iio.imwrite(test / "face.mp4", face, plugin="pyav", codec="libx264", fps=25)
    body = _frames("two_people_body.mp4", range(120, 124))[:, 104:360, 174:430]  # 4 frames 256 x 256
    iio.imwrite(test / "body.png", np.concatenate(list(body), axis=1))
    (test / "notes.txt").write_text("not a video")
    (root / "train").mkdir()
    return str(root)


def _independent_l1(png_dir: str, gt_frames: np.ndarray) -> list[float]:
    """Per-frame L1 from the PNG files and the ground truth resized by F.interpolate (the documented resize)."""
    files = sorted(os.listdir(png_dir))
    gen = np.stack([iio.imread(os.path.join(png_dir, f)) for f in files]).astype(np.float64) / 255.0
    gt = torch.from_numpy(gt_frames).permute(0, 3, 1, 2).float() / 255.0
    gt = F.interpolate(gt, size=gen.shape[1:3], mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
    gt = gt.permute(0, 2, 3, 1).double().numpy()
    return [float(np.abs(g - t).mean()) for g, t in zip(gen, gt)]


def _read_mp4(path):
    with av.open(path) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def test_reconstruction_writes_everything_and_l1_is_reproducible(dataset, tiny_config_path, tiny_checkpoint,
                                                               tmp_path, capsys):
    from modules import build_models

    log_dir = str(tmp_path / "log")
    models = build_models(tiny_config_path)
    summary = reconstruction(tiny_config_path, models, tiny_checkpoint, log_dir, dataset_root=dataset,
                             batch_size=3, progress=False)  # 3 does not divide 5, 7 or 4
    out = os.path.join(log_dir, "reconstruction")
    assert "reconstruction L1" in capsys.readouterr().out
    assert summary["num_videos"] == 3 and summary["frames"] == 5 + 7 + 4
    assert summary["epoch"] == 100 and summary["bg_predictor"] is True
    assert set(summary["videos"]) == {"body", "car#1", "face"}
    assert "avd_network" in models  # the caller's dict is left as it was

    gt = {"car#1": np.stack([iio.imread(os.path.join(dataset, "test", "car#1", f))
                             for f in sorted(os.listdir(os.path.join(dataset, "test", "car#1")))]),
          "face": np.stack(list(iio.imiter(os.path.join(dataset, "test", "face.mp4"), plugin="pyav"))),
          "body": np.stack(np.split(iio.imread(os.path.join(dataset, "test", "body.png")), 4, axis=1))}
    all_l1 = []
    for name, frames in gt.items():
        png_dir = os.path.join(out, "png", name)
        files = sorted(os.listdir(png_dir))
        assert files == [f"{i:06d}.png" for i in range(len(frames))]
        assert iio.imread(os.path.join(png_dir, files[0])).shape == (64, 64, 3)
        l1 = _independent_l1(png_dir, frames)
        all_l1 += l1
        assert summary["videos"][name]["l1_png"] == pytest.approx(np.mean(l1), abs=1e-6)
        assert summary["videos"][name]["l1"] == pytest.approx(np.mean(l1), abs=2e-3)  # float vs 8-bit prediction
        video = _read_mp4(os.path.join(out, "mp4", f"{name}.mp4"))
        assert video.shape == (len(frames), 64, 3 * 64, 3)  # source | driving | generated
        generated = np.stack([iio.imread(os.path.join(png_dir, f)) for f in files]).astype(float)
        assert np.abs(video[:, :, 128:].astype(float) - generated).mean() < 8  # H.264, lossy
        assert np.abs(video[:, :, :64].astype(float) - generated[:1]).mean() < 40  # source column is frame 0
    assert summary["l1_png"] == pytest.approx(np.mean(all_l1), abs=1e-6)  # frame-pooled over all videos
    assert 0.01 < summary["l1"] < 0.5

    with open(os.path.join(out, "l1.csv"), newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["video"] for r in rows] == ["body", "car#1", "face", "ALL"]
    assert float(rows[-1]["l1"]) == pytest.approx(summary["l1"], abs=1e-7)
    assert int(rows[1]["frames"]) == 5
    saved = json.loads(open(os.path.join(out, "l1.json")).read())
    assert saved["l1"] == summary["l1"] and saved["checkpoint"] == os.path.abspath(tiny_checkpoint)
    assert os.path.isfile(os.path.join(out, "config.yaml"))
    assert not [f for f in os.listdir(out) if "partial" in f or ".tmp" in f]

    # the metrics read the same layout and agree with reconstruction's own PNG L1
    from evaluation.cli import main as evaluate_main
    from evaluation.compare import main as compare_main

    assert evaluate_main(["--log_dir", log_dir, "--kind", "none", "--quiet"]) == 0
    metrics = json.loads(open(os.path.join(out, "metrics.json")).read())
    assert metrics["l1"] == pytest.approx(summary["l1_png"], abs=1e-9)
    assert metrics["reconstruction"]["epoch"] == 100
    capsys.readouterr()
    assert compare_main([log_dir, str(tmp_path / "empty")]) == 0
    captured = capsys.readouterr()
    table = captured.out.splitlines()
    assert table[0].startswith("| run | family | checkpoint | epoch |") and len(table) == 3
    assert "| tpsmm |" in table[2]
    assert f"| {summary['l1']:.4f} |" in table[2] and "tiny.pth.tar" in table[2]
    assert "skipped" in captured.err


def test_reconstructor_matches_the_reference_reconstruction(tiny_io, tiny_models):
    """Frames batched together, bg predictor on: the reference's per-frame reconstruction outputs."""
    reconstructor = Reconstructor(tiny_models, tiny_io["source"])
    prediction = reconstructor(tiny_io["driving"])  # 3 x 3 x 64 x 64
    expected = torch.cat([step["prediction"] for step in tiny_io["reconstruction"]], dim=0)
    assert prediction.shape == expected.shape
    assert (prediction - expected).abs().max().item() < 1e-4
    without_bg = Reconstructor({k: v for k, v in tiny_models.items() if k != "bg_predictor"}, tiny_io["source"])
    assert (without_bg(tiny_io["driving"]) - expected).abs().max().item() > 1e-3  # bg predictor really used


def test_checkpoint_without_bg_predictor_runs_without_it(tiny_config_path, tiny_checkpoint, tmp_path):
    from modules import build_models

    data = torch.load(tiny_checkpoint, weights_only=True)
    del data["bg_predictor"]
    path = str(tmp_path / "early.pth.tar")
    torch.save(data, path)
    models = build_models(tiny_config_path)
    info = load_weights(models, path)
    assert info == {"epoch": 100, "bg_predictor": False}
    assert "bg_predictor" not in models and "avd_network" not in models


def test_standalone_command_and_errors(dataset, tiny_config_path, tmp_path, capsys):
    log_dir = str(tmp_path / "log")
    # random weights, first video only, no mp4
    assert main(["--config", tiny_config_path, "--log_dir", log_dir, "--dataset_root", dataset,
                 "--max_videos", "1", "--no_mp4", "--quiet", "--device", "cpu"]) == 0
    assert "no checkpoint given" in capsys.readouterr().err
    out = os.path.join(log_dir, "reconstruction")
    assert os.listdir(os.path.join(out, "png")) == ["body"] and not os.path.exists(os.path.join(out, "mp4"))

    assert main(["--config", tiny_config_path, "--log_dir", log_dir, "--dataset_root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: dataset has no test/ folder") and err.count("\n") == 1
    assert main(["--config", tiny_config_path, "--log_dir", log_dir, "--dataset_root", dataset,
                 "--checkpoint", str(tmp_path / "missing.pth.tar")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_reconstructor_fomm_matches_the_reference_absolute_animation():
    """FOMM family (generator): reconstruction = the reference's absolute-mode animation from its source."""
    from modules import build_models

    fixtures = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
    io = torch.load(os.path.join(fixtures, "fomm_tiny_io.pt"), weights_only=True)
    models = build_models(os.path.join(fixtures, "fomm_tiny.yaml"))
    load_weights(models, os.path.join(fixtures, "fomm_tiny.pth.tar"))
    for model in models.values():
        model.eval()
    prediction = Reconstructor(models, io["inputs"]["source"])(io["inputs"]["driving"])  # 3 x 3 x 64 x 64
    expected = torch.cat([f["prediction"] for f in io["animation"]["absolute"]["frames"]], dim=0)
    assert (prediction - expected).abs().max().item() < 1e-4
