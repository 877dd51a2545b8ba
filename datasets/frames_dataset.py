"""Video datasets in the published layout `root/{train,test}/<video>` (FOMM/TPSMM data format).

A video is an mp4/mov/avi/webm/gif file, a folder of frames, or a png/jpg strip of
square frames. With `id_sampling`, a training epoch visits each id (the part of the
name before '#') once and picks one of its videos. A training item is two frames of
one clip, decoded alone and augmented identically; a test item is the whole clip.
Videos are opened once, from a saved index where possible (`datasets.video_index`),
and each item decodes only the frames it needs.

Randomness of an item is a pure function of (seed, epoch, index), independent of
the number of workers, so runs are reproducible and resumable.
"""
from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from datasets.augmentation import VideoAugmentation
from datasets.video_index import INDEX_NAME, expanded_strip, is_strip, open_videos
from utils.errors import UserError
from utils.frames import to_tensor
from utils.video import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, MediaError, VideoReader

log = logging.getLogger(__name__)


class DatasetError(UserError):
    """A dataset that cannot be used (one line, names the folder)."""


def list_videos(root_dir: str, split: str) -> list[str]:
    """Sorted paths of the videos in `root_dir/split` (files with a video/image extension, or folders)."""
    folder = os.path.join(root_dir, split)
    if not os.path.isdir(folder):
        raise DatasetError(f"dataset folder not found: {folder} (expected {root_dir}/{{train,test}}/<video>)")
    names = sorted(os.listdir(folder))
    return [os.path.join(folder, n) for n in names
            if not n.startswith(".") and (os.path.isdir(os.path.join(folder, n))
                                          or n.lower().endswith(VIDEO_EXTENSIONS + IMAGE_EXTENSIONS))]


def video_id(path: str) -> str:
    """The id of a video: its name up to '#' (VoxCeleb naming: id#clip)."""
    return os.path.basename(path).split("#")[0]


def frames_to_tensor(frames: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (T, 3, h, w) float in [0, 1], resized (antialiased bilinear) if needed."""
    x = to_tensor(frames)  # T x 3 x H x W
    if tuple(x.shape[2:]) != tuple(size):
        x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True).clamp_(0, 1)
    return x


def item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The RNG of one item: a pure function of (seed, epoch, index)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 1_000_033 + index)


class FramesDataset(Dataset):
    """Training pairs (`source`, `driving`) or whole test clips (`video`) from `root_dir/{train,test}`.

    index_cache: keep the videos' index in `<split>/.video_index.json` (rebuilt where stale).
    frame_cache: a folder where png/jpg strips are expanded into frames on first use
    (None: strips are decoded whole for every item).
    """

    def __init__(self, root_dir: str, frame_shape=(256, 256, 3), id_sampling: bool = False, is_train: bool = True,
                 augmentation_params: dict | None = None, seed: int = 0, pairs_list: str | None = None,
                 index_cache: bool = True, frame_cache: str | None = None):
        if not root_dir:
            raise DatasetError("dataset_params.root_dir is not set")
        self.root_dir = root_dir
        self.size = (int(frame_shape[0]), int(frame_shape[1]))
        self.is_train = is_train
        self.id_sampling = id_sampling and is_train
        self.seed = seed
        self.epoch = 0
        self.pairs_list = pairs_list
        split = "train" if is_train else "test"
        self.frame_cache = os.path.join(frame_cache, split) if frame_cache else None
        candidates = list_videos(root_dir, split)
        index_file = os.path.join(root_dir, split, INDEX_NAME) if index_cache else None
        readers, errors = open_videos(candidates, index_file)
        for path, err in errors.items():
            log.warning("skipping unreadable video %s: %s", path, err)
        self.videos: list[str] = []
        self.readers: dict[str, VideoReader] = {}
        self.num_frames: dict[str, int] = {}
        for path in candidates:
            if path not in readers:
                continue
            if is_train and readers[path].num_frames < 2:
                log.warning("skipping video with fewer than 2 frames: %s", path)
                continue
            self.videos.append(path)
            self.readers[path] = readers[path]
            self.num_frames[path] = readers[path].num_frames
        if not self.videos:
            raise DatasetError(f"no readable videos in {os.path.join(root_dir, split)} "
                               f"({len(candidates)} candidate(s) checked)")
        if self.id_sampling:
            groups: dict[str, list[str]] = {}
            for path in self.videos:
                groups.setdefault(video_id(path), []).append(path)
            self.ids = sorted(groups)
            self.groups = groups
        self.transform = VideoAugmentation(**(augmentation_params or {})) if is_train else None

    def reader(self, path: str) -> VideoReader:
        """The reader of one of the dataset's videos (a strip is expanded into `frame_cache` on first use)."""
        reader = self.readers[path]
        if self.frame_cache and is_strip(path):
            reader = expanded_strip(path, reader, self.frame_cache)
            self.readers[path] = reader
        return reader

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.ids) if self.id_sampling else len(self.videos)

    def _pick(self, index: int, gen: torch.Generator) -> str:
        if self.id_sampling:
            group = self.groups[self.ids[index]]
            return group[int(torch.randint(len(group), (1,), generator=gen))]
        return self.videos[index]

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.get(index, draw=index)

    def get(self, index: int, draw: int) -> dict[str, Any]:
        """Item `index`, with randomness from (seed, epoch, draw)."""
        if not self.is_train:
            path = self.videos[index]
            try:
                frames = np.stack(list(self.readers[path]))
            except MediaError as err:
                raise DatasetError(f"failed to read {path}: {err}") from None
            video = frames_to_tensor(frames, self.size)  # T x 3 x H x W
            return {"video": video.permute(1, 0, 2, 3), "name": os.path.basename(path)}  # 3 x T x H x W
        gen = item_generator(self.seed, self.epoch, draw)
        path = self._pick(index, gen)
        n = self.num_frames[path]
        pair = torch.randperm(n, generator=gen)[:2].sort().values.tolist()
        try:
            frames = self.reader(path).get_frames(pair)
        except MediaError as err:
            raise DatasetError(f"failed to read frames {pair} of {path}: {err}") from None
        clip = frames_to_tensor(frames, self.size)  # 2 x 3 x H x W
        clip = self.transform(clip, gen)
        return {"source": clip[0], "driving": clip[1], "name": os.path.basename(path)}


class DatasetRepeater(Dataset):
    """Repeat a dataset `num_repeats` times per epoch (the reference's epoch length)."""

    def __init__(self, dataset: FramesDataset, num_repeats: int = 100):
        self.dataset = dataset
        self.num_repeats = int(num_repeats)

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return self.num_repeats * len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.dataset.get(index % len(self.dataset), draw=index)  # distinct draws per repeat
