"""Builds data/demo/ (the built-in demo dataset) from the real clips in tests/data/.

Faces cropped with a fixed square box per clip (found with the offline face
detector over the clip, enlarged around the face), resized to 64 px, written as
lossless PNG strips in the published layout. Run from the repository root:
    .venv/bin/python data/make_demo.py
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
import torch
import torch.nn.functional as F
import imageio.v3 as iio
from skimage import data as skdata


from utils.video import open_video

SIZE = 64
# clip -> (centre x, centre y, side) of the crop, around the median detected face box
CROPS = {"carphone": (80, 62, 112), "single_face": (292, 194, 306)}
# (clip, first frame, last frame + 1, split, name)
SPLITS = [
    ("carphone", 0, 30, "train", "carphone#000"), ("carphone", 30, 60, "train", "carphone#001"),
    ("carphone", 60, 90, "train", "carphone#002"), ("carphone", 90, 120, "test", "carphone#003"),
    ("single_face", 0, 20, "train", "single_face#000"), ("single_face", 20, 40, "train", "single_face#001"),
    ("single_face", 40, 60, "train", "single_face#002"), ("single_face", 60, 72, "test", "single_face#003"),
]


def crop_frames(frames: np.ndarray, cx: int, cy: int, side: int) -> np.ndarray:
    h, w = frames.shape[1:3]
    x0, y0 = max(0, cx - side // 2), max(0, cy - side // 2)
    x1, y1 = min(w, x0 + side), min(h, y0 + side)
    x = torch.from_numpy(frames[:, y0:y1, x0:x1]).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


def main() -> None:
    out = os.path.join("data", "demo")
    for clip, a, b, split, name in SPLITS:
        frames = open_video(os.path.join("tests", "data", f"{clip}.mp4")).get_frames(range(a, b))
        crops = crop_frames(frames, *CROPS[clip])
        os.makedirs(os.path.join(out, split), exist_ok=True)
        iio.imwrite(os.path.join(out, split, f"{name}.png"), np.concatenate(list(crops), axis=1))
    face = skdata.astronaut()[20:220, 140:340]  # the astronaut's face, a person the model never saw
    iio.imwrite(os.path.join(out, "source.png"), crop_frames(face[None], 100, 100, 200)[0])


if __name__ == "__main__":
    main()
