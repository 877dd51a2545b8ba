"""The pretrained model (checkpoints/demo128.pth.tar, config/demo128.yaml) works as `make demo` promises.

On a held-out clip (frames training never saw) its reconstruction beats repeating the first frame as
much as the committed model did, the face in the reconstruction moves as the driving face does
(landmark motion, `evaluation.motion`, Pearson r), pasted back into a full photo the head moves with
the driving face inside the blend region, and the web page opens on it. The thresholds are what the
committed model measured here, less a small margin (each constant says both), so a regression of the
model or of the engine fails them. The issue's goals (0.7x per clip, r >= 0.8) are not all reached by
this model: docs/demo.md has its table.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "config", "demo128.yaml")
SHIPPED = os.path.join(ROOT, "checkpoints", "demo128.pth.tar")
HELD_OUT = os.path.join(ROOT, "data", "demo128", "test")
CLIP = "carphone-heldout#000"  # 30 frames: short, and the face turns and talks
# What the committed model measured on CLIP (tests' own code, 2-core AMD EPYC, fp32), and the margins:
RATIO_MAX = 0.83  # reconstruction L1 / repeat-the-source L1: measured 0.803 (0.0395 / 0.0492); margin 0.03
MOTION_R_MIN = 0.50  # landmark motion r of the reconstruction against the driving clip: measured 0.562; margin 0.06
PASTED_MOTION_R = 0.55  # landmark motion r of the pasted-back portrait (another face, relative mode): 0.622; margin 0.07
PASTED_PX_MIN = 1.5  # its landmarks' mean motion in the full photo: measured 2.16 pixels per frame; margin 0.66
# (the same run: a face in all 29 frame steps of the reconstruction and all pasted frames, every landmark inside the
# blend's full-weight region)


@pytest.fixture(scope="module")
def models():
    from modules.loading import load_models
    from modules.family import load_config

    return load_config(CONFIG), load_models(load_config(CONFIG), SHIPPED, "relative", torch.device("cpu"))


@pytest.fixture(scope="module")
def reconstructed(models, tmp_path_factory):
    """(generated, driving) frames of CLIP reconstructed from its first frame, as reconstruction.py does."""
    from reconstruction import reconstruct_video
    from utils.video import open_video

    config, nets = models
    out = tmp_path_factory.mktemp("shipped")
    path = os.path.join(HELD_OUT, CLIP + ".mp4")
    with torch.no_grad():
        result = reconstruct_video(nets, path, tuple(config["dataset_params"]["frame_shape"][:2]),
                                   png_dir=str(out / "png"), mp4_path=None)
    return result, str(out / "png"), np.stack(list(open_video(path)))


def test_reconstruction_beats_repeating_the_source(reconstructed):
    result, _, driving = reconstructed
    video = torch.from_numpy(driving).float() / 255.0
    repeat = float((video - video[:1]).abs().mean())
    assert result["frames"] == len(driving)
    assert result["l1"] <= RATIO_MAX * repeat, (result["l1"], repeat)


def test_reconstructed_face_moves_with_the_driving_face(reconstructed):
    from evaluation.motion import motion_correlation

    _, generated, driving = reconstructed
    got = motion_correlation(generated, driving)
    assert got["steps"] >= 0.8 * got["steps_total"], got  # a face in (nearly) every frame
    assert got["pearson"] >= MOTION_R_MIN, got


@pytest.fixture(scope="module")
def pasted(tmp_path_factory):
    """The shipped model animating a 1080x1350 portrait (a face it never saw) with CLIP, pasted back."""
    from PIL import Image

    from animate import run_animation
    from test_paste import portrait_1080x1350

    out = tmp_path_factory.mktemp("pasted")
    photo = portrait_1080x1350()
    Image.fromarray(photo).save(out / "portrait.png")
    info = run_animation(CONFIG, SHIPPED, str(out / "portrait.png"), os.path.join(HELD_OUT, CLIP + ".mp4"),
                         str(out / "frames"), crop="face", paste_back=True, device="cpu", audio=False)
    names = sorted(n for n in os.listdir(out / "frames") if n.endswith(".png"))
    frames = np.stack([np.asarray(Image.open(out / "frames" / n).convert("RGB")) for n in names])  # T x H x W x 3
    return info, photo, frames


def test_pasted_back_head_moves_with_the_driving_face_inside_the_blend_region(pasted):
    """Full-frame result of a trained model: the photo's size, the photo's own pixels outside the blend
    region, and the face landmarks (MediaPipe) of the pasted frames move as the driving face does while
    staying where the blend has full weight (the margin holds a turning, talking head)."""
    from evaluation.motion import displacements, landmark_tracks, pearson
    from utils.crop import image_box
    from utils.paste import FEATHER, PasteBack

    info, photo, frames = pasted
    assert frames.shape[1:] == photo.shape and info["result_size"] == list(photo.shape[:2])
    mask = PasteBack(photo, image_box(photo, "face"), (128, 128), feather=FEATHER["face"]).full_mask()
    for frame in frames:
        assert np.array_equal(frame[mask == 0], photo[mask == 0])

    tracks = landmark_tracks(frames)  # T x 68 x 2, in frame widths
    found = np.isfinite(tracks[:, 0, 0])
    assert found.mean() >= 0.9, found
    width = photo.shape[1]
    points = np.round(tracks[found].reshape(-1, 2) * width).astype(int)  # (x, y) pixels
    assert (mask[points[:, 1], points[:, 0]] == 1.0).all()  # every landmark where the blend is full weight

    driving = landmark_tracks(os.path.join(HELD_OUT, CLIP + ".mp4"))
    moved, wanted = displacements(tracks), displacements(driving)  # (T - 1,) each
    valid = np.isfinite(moved) & np.isfinite(wanted)
    assert np.nanmean(moved) * width > PASTED_PX_MIN  # the head moves (pixels per frame in the full photo)
    assert pearson(moved[valid], wanted[valid]) >= PASTED_MOTION_R, pearson(moved[valid], wanted[valid])


def test_the_web_page_opens_on_the_pretrained_model():
    """The repository's own checkpoints/ and config/: demo128 is found, matches its config, and is the default."""
    import app

    found = app.find_models(os.path.join(ROOT, "checkpoints"), os.path.join(ROOT, "config"))
    assert app.default_model(found) == "demo128"
    assert found["demo128"].config == CONFIG and found["demo128"].checkpoint == SHIPPED
    app.check_model(found["demo128"], "cpu")  # a mismatch of config and weights is a one-line error
