"""Datasets: every published video format, id sampling, corrupt files, consistent augmentation."""
from __future__ import annotations

import logging
import os

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from datasets import DatasetError, DatasetRepeater, FramesDataset, list_videos
from datasets.augmentation import VideoAugmentation
from utils.video import open_video

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLIP = os.path.join(ROOT, "tests", "data", "carphone.mp4")


def real_frames(n: int = 6, size: int = 48) -> np.ndarray:
    frames = open_video(CLIP).get_frames(range(0, 2 * n, 2))
    return np.ascontiguousarray(frames[:, :size, :size])


def write_all_formats(folder, frames: np.ndarray) -> None:
    os.makedirs(folder / "train" / "frames#a", exist_ok=True)
    for i, f in enumerate(frames):
        iio.imwrite(folder / "train" / "frames#a" / f"{i:04d}.png", f)
    iio.imwrite(folder / "train" / "strip#b.png", np.concatenate(list(frames), axis=1))
    iio.imwrite(folder / "train" / "clip#c.mp4", frames, fps=10, codec="libx264", quality=10,
                macro_block_size=16)
    iio.imwrite(folder / "train" / "anim#d.gif", frames, duration=100, loop=0)


def test_every_format_gives_the_same_frames(tmp_path):
    frames = real_frames()
    write_all_formats(tmp_path, frames)
    videos = list_videos(str(tmp_path), "train")
    assert [os.path.basename(v) for v in videos] == ["anim#d.gif", "clip#c.mp4", "frames#a", "strip#b.png"]
    for path in videos:
        reader = open_video(path)
        assert reader.num_frames == len(frames), path
        got = reader.get_frames([4, 1])
        tol = 12 if path.endswith(".mp4") else (40 if path.endswith(".gif") else 0)  # lossy codecs
        assert np.abs(got.astype(int) - frames[[4, 1]].astype(int)).mean() <= tol, path
        streamed = np.stack(list(reader))
        assert np.array_equal(streamed[[4, 1]], got), path


def test_training_item_and_id_sampling(tmp_path):
    write_all_formats(tmp_path, real_frames())
    ds = FramesDataset(str(tmp_path), frame_shape=(32, 32, 3), id_sampling=True, is_train=True, seed=3)
    assert len(ds) == 4 and ds.ids == ["anim", "clip", "frames", "strip"]
    item = ds[2]
    assert item["source"].shape == item["driving"].shape == (3, 32, 32)
    assert item["name"] == "frames#a"
    assert 0 <= item["source"].min() and item["source"].max() <= 1
    assert not torch.equal(item["source"], item["driving"])  # two different frames
    again = FramesDataset(str(tmp_path), frame_shape=(32, 32, 3), id_sampling=True, is_train=True, seed=3)[2]
    assert torch.equal(again["source"], item["source"])  # deterministic under the seed
    repeated = DatasetRepeater(ds, 3)
    assert len(repeated) == 12
    assert not torch.equal(repeated[2]["source"], repeated[6]["source"]) or \
        not torch.equal(repeated[2]["driving"], repeated[6]["driving"])  # repeats draw anew


def test_test_item_is_whole_clip(tmp_path):
    frames = real_frames()
    os.makedirs(tmp_path / "test")
    iio.imwrite(tmp_path / "test" / "strip.png", np.concatenate(list(frames), axis=1))
    ds = FramesDataset(str(tmp_path), frame_shape=(48, 48, 3), is_train=False)
    video = ds[0]["video"]
    assert video.shape == (3, len(frames), 48, 48)
    assert torch.allclose(video[:, 2].permute(1, 2, 0), torch.from_numpy(frames[2]).float() / 255)


def test_corrupt_file_reported_once_and_skipped(tmp_path, caplog):
    write_all_formats(tmp_path, real_frames())
    (tmp_path / "train" / "broken#e.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(500))
    with caplog.at_level(logging.WARNING):
        ds = FramesDataset(str(tmp_path), frame_shape=(32, 32, 3), is_train=True)
    warnings = [r.getMessage() for r in caplog.records if "broken#e.mp4" in r.getMessage()]
    assert len(warnings) == 1
    assert len(ds) == 4 and all("broken" not in v for v in ds.videos)


def test_nothing_readable_is_a_clear_error(tmp_path):
    os.makedirs(tmp_path / "train")
    (tmp_path / "train" / "a.mp4").write_bytes(b"not a video")
    (tmp_path / "train" / "b.gif").write_bytes(b"")
    with pytest.raises(DatasetError, match="no readable videos"):
        FramesDataset(str(tmp_path), is_train=True)
    with pytest.raises(DatasetError, match="dataset folder not found"):
        FramesDataset(str(tmp_path / "nowhere"), is_train=True)


AUG = {"flip_param": {"horizontal_flip": True, "time_flip": True},
       "jitter_param": {"brightness": 0.3, "contrast": 0.3, "saturation": 0.3, "hue": 0.2},
       "crop_param": {"size": [40, 40]}, "resize_param": {"ratio": [0.8, 1.2]}, "rotation_param": {"degrees": 15}}


def test_augmentation_is_the_same_for_both_frames():
    """A clip of one repeated frame stays identical pairwise after any augmentation draw."""
    frame = torch.from_numpy(real_frames(1)[0]).permute(2, 0, 1).float() / 255
    clip = torch.stack([frame, frame])
    aug = VideoAugmentation(**AUG)
    changed = 0
    for seed in range(12):
        out = aug(clip, torch.Generator().manual_seed(seed))
        assert out.shape == clip.shape
        assert torch.equal(out[0], out[1])
        changed += int(not torch.allclose(out[0], frame))
    assert changed == 12


def test_flips_act_on_pairs():
    """Time flip swaps source and driving; horizontal flip mirrors both."""
    frames = torch.from_numpy(real_frames(2)).permute(0, 3, 1, 2).float() / 255
    aug = VideoAugmentation(flip_param={"horizontal_flip": True, "time_flip": True})
    seen = set()
    for seed in range(16):
        out = aug(frames, torch.Generator().manual_seed(seed))
        for t in (False, True):
            for h in (False, True):
                ref = frames.flip(0) if t else frames
                ref = ref.flip(3) if h else ref
                if torch.equal(out, ref):
                    seen.add((t, h))
    assert seen == {(False, False), (False, True), (True, False), (True, True)}
