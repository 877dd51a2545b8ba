"""`animate.py --paste_back` end to end: full-frame results at the photo's size, on real photos and clips.

The tiny test model (tests/fixtures/tiny.yaml, seeded weights) does not draw a face, so these
tests check what paste-back itself promises: the photo's size (or the --max_size bound), upright
by EXIF, every pixel outside the blend region the photo's own, a feathered border, an animated
region that changes from frame to frame, the driving clip's frame count and audio, and a
one-line error for a photo without a face. Photos are made at test time from real ones.
"""
from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest

from test_paste import SEAM_BOUND, landscape_640x360, portrait_1080x1350

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRAMES = 5


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> str:
    """The first FRAMES frames of tests/data/single_face.mp4, audio kept."""
    from utils.media import ffmpeg_exe

    path = str(tmp_path_factory.mktemp("paste_clip") / "driving.mp4")
    subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error", "-i", os.path.join(ROOT, "tests", "data", "single_face.mp4"),
                    "-frames:v", str(FRAMES), "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", path],
                   check=True, timeout=120)
    return path


def _frames(folder: str) -> np.ndarray:
    from PIL import Image

    names = sorted(n for n in os.listdir(folder) if n.endswith(".png"))
    return np.stack([np.asarray(Image.open(os.path.join(folder, n)).convert("RGB")) for n in names])  # T x H x W x 3


def test_portrait_with_exif_rotation_pasted_back(tiny_config_path, tiny_checkpoint, clip, tmp_path):
    """A 1080x1350 portrait stored sideways (EXIF orientation 6): PNG frames at 1080x1350, upright,
    outside the blend region equal to the photo, animated inside, no seam."""
    from PIL import Image

    from animate import run_animation
    from utils.crop import image_box
    from utils.media import read_photo
    from utils.paste import FEATHER, PasteBack, seam_measure

    upright = portrait_1080x1350()
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # what a phone writes
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 clockwise to display
    path = str(tmp_path / "portrait.jpg")
    stored.save(path, quality=92, exif=exif)
    photo = read_photo(path)
    assert photo.shape == (1350, 1080, 3)

    info = run_animation(tiny_config_path, tiny_checkpoint, path, clip, str(tmp_path / "frames"), crop="face",
                         paste_back=True, device="cpu", batch_size=FRAMES)
    assert info["paste_back"] and info["result_size"] == [1350, 1080] and info["num_frames"] == FRAMES
    frames = _frames(str(tmp_path / "frames"))
    assert frames.shape == (FRAMES, 1350, 1080, 3)

    mask = PasteBack(photo, image_box(photo, "face"), (64, 64), feather=FEATHER["face"]).full_mask()
    assert 0.05 < (mask > 0).mean() < 0.5  # the face region, not the whole photo
    for frame in frames:
        assert np.array_equal(frame[mask == 0], photo[mask == 0])
        assert seam_measure(frame, photo, mask) < SEAM_BOUND
    inside = frames[:, mask == 1.0].astype(np.int16)  # T x N x 3
    assert np.abs(inside - photo[mask == 1.0]).mean() > 1.0  # the animated crop, not the photo
    assert np.abs(np.diff(inside, axis=0)).mean(axis=(1, 2)).min() > 0.05  # it changes every frame


def test_landscape_max_size_mp4_with_audio(tiny_config_path, tiny_checkpoint, clip, tmp_path):
    """A 1280x720 landscape with --max_size 640: an mp4 of 640x360 with the clip's frames and audio (CLI)."""
    from PIL import Image

    import animate
    from utils.media import probe

    path = str(tmp_path / "landscape.png")
    Image.fromarray(landscape_640x360()).resize((1280, 720), Image.BICUBIC).save(path)
    out = str(tmp_path / "result.mp4")
    code = animate.main(["--config", tiny_config_path, "--checkpoint", tiny_checkpoint, "--source_image", path,
                         "--driving_video", clip, "--result_video", out, "--crop", "face", "--paste_back",
                         "--max_size", "640", "--colour_match", "--cpu", "--quiet"])
    assert code == 0
    info = probe(out)
    assert (info["width"], info["height"], info["num_frames"]) == (640, 360, FRAMES)
    assert info["has_audio"]


def test_no_face_in_the_photo_is_one_line(tiny_config_path, tiny_checkpoint, clip, tmp_path, capsys):
    from PIL import Image
    from skimage import data

    import animate

    path = str(tmp_path / "coffee.png")
    Image.fromarray(data.coffee()).save(path)  # a real photo of a cup, no face
    code = animate.main(["--config", tiny_config_path, "--checkpoint", tiny_checkpoint, "--source_image", path,
                         "--driving_video", clip, "--result_video", str(tmp_path / "r.mp4"), "--crop", "face",
                         "--paste_back", "--cpu", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == "error: no face found in the source image; use --crop centre", err
    assert not os.path.exists(tmp_path / "r.mp4")
