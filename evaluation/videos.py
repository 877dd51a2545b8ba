"""The test videos of a dataset, their names, batched streaming and the one resize used by reconstruction and metrics."""
from __future__ import annotations

import os
from typing import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from utils.frames import to_tensor
from utils.video import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, MediaError


def video_name(path: str) -> str:
    """A video's name: the folder name for a frame folder, the file name without extension otherwise."""
    path = os.fspath(path).rstrip("/" + os.sep)
    base = os.path.basename(path)
    return base if os.path.isdir(path) else os.path.splitext(base)[0]


def list_videos(folder: str) -> list[tuple[str, str]]:
    """Sorted (name, path) of the videos in `folder`: video files, png/jpg strips and frame folders.

    Hidden entries are skipped. Two entries with the same name (`a.mp4` and `a/`) are an error.
    """
    if not os.path.isdir(folder):
        raise MediaError(f"folder not found: {folder}")
    found: dict[str, str] = {}
    for entry in sorted(os.listdir(folder)):
        if entry.startswith("."):
            continue
        path = os.path.join(folder, entry)
        if not (os.path.isdir(path) or entry.lower().endswith(VIDEO_EXTENSIONS + IMAGE_EXTENSIONS)):
            continue
        name = video_name(path)
        if name in found:
            raise MediaError(f"two videos named {name!r} in {folder}: {os.path.basename(found[name])} and {entry}")
        found[name] = path
    return sorted(found.items())


def dataset_test_videos(root_dir: str) -> list[tuple[str, str]]:
    """The test videos of a dataset: sorted entries of `<root_dir>/test/`."""
    folder = os.path.join(root_dir, "test")
    if not os.path.isdir(folder):
        raise MediaError(f"dataset has no test/ folder: {folder}")
    videos = list_videos(folder)
    if not videos:
        raise MediaError(f"no test videos in {folder}")
    return videos


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """(n, H, W, 3) uint8 -> (n, 3, h, w) float32 in [0, 1] at `size` = (h, w).

    The one resize of this project's evaluation: bilinear with antialiasing
    (`align_corners=False`); frames already at `size` are only converted.
    """
    x = to_tensor(frames)  # n x 3 x H x W
    h, w = int(size[0]), int(size[1])
    if x.shape[-2:] != (h, w):
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True).clamp_(0.0, 1.0)
    return x


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """(n, 3, h, w) float in [0, 1] -> (n, h, w, 3) uint8, rounded (what the PNGs hold)."""
    return frames.detach().clamp(0, 1).mul(255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def batches(frames: Iterable[np.ndarray], batch_size: int) -> Iterator[np.ndarray]:
    """Group a stream of (H, W, 3) frames into (n <= batch_size, H, W, 3) arrays."""
    batch: list[np.ndarray] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == batch_size:
            yield np.stack(batch)
            batch = []
    if batch:
        yield np.stack(batch)

