"""Fast frame access returns exactly the frames of a decode from the start, in every format.

Random access (keyframe seeks, skipped non-reference frames, one pass for a pair),
readers reopened from a saved index and strips expanded into a frame cache must all
give the frames that streaming the whole video gives, bit for bit.
"""
from __future__ import annotations

import json
import os
import random

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from datasets import FramesDataset
from datasets.video_index import INDEX_NAME, expanded_strip, open_videos
from utils.media import open_writer
from utils.video import FileVideoReader, open_video

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data")


def index_sets(n: int, count: int, seed: int = 0) -> list[list[int]]:
    """Frame index lists a loader asks for: pairs in both orders, repeats, the ends, across the clip."""
    rng = random.Random(seed)
    sets = [[0], [n - 1], [n - 1, 0], [3, 3], [1, 2]]
    sets += [[rng.randrange(n) for _ in range(rng.choice((1, 2, 3)))] for _ in range(count)]
    return sets


def moving_frames(n: int, size: int = 64) -> np.ndarray:
    """Frames of a real clip, moving (so an encoder uses P- and B-frames), (n, size, size, 3) uint8."""
    base = open_video(os.path.join(DATA, "carphone.mp4")).get_frames(list(range(0, 2 * n, 2)))  # n x 144 x 176 x 3
    return np.ascontiguousarray(np.stack([f[i % 40:i % 40 + size, i:i + size] for i, f in enumerate(base)]))


def short_gop_mp4(path: str, frames: np.ndarray, gop: int = 8) -> None:
    """An H.264 mp4 with a keyframe every `gop` frames and B-frames (so seeks and skips are exercised)."""
    iio.imwrite(path, frames, fps=25, codec="libx264", macro_block_size=16,
                output_params=["-g", str(gop), "-keyint_min", str(gop), "-bf", "3", "-sc_threshold", "0"])


def assert_random_access_exact(path: str, count: int) -> FileVideoReader:
    reader = open_video(path)
    full = np.stack(list(reader))  # decoded from the start
    assert len(full) == reader.num_frames
    for indices in index_sets(reader.num_frames, count):
        got = reader.get_frames(indices)
        assert got.shape == (len(indices),) + full.shape[1:]
        assert np.array_equal(got, full[indices]), (path, indices)
    return reader


@pytest.mark.parametrize("name,count", [("carphone.mp4", 8), ("single_face.mp4", 6), ("two_people_body.mp4", 3)])
def test_real_clips_random_access_is_exact(name, count):
    assert_random_access_exact(os.path.join(DATA, name), count)


def test_short_gop_mp4_seeks_and_is_exact(tmp_path):
    path = str(tmp_path / "gop.mp4")
    short_gop_mp4(path, moving_frames(40))
    reader = assert_random_access_exact(path, 12)
    assert reader.state()["keyframes"] == [0, 8, 16, 24, 32]  # several keyframes: the seek path ran
    assert reader.keyframe_before(17) == 16 and reader.keyframe_before(7) == 0
    full = np.stack(list(reader))
    across = [7, 8, 9, 23, 31, 39]  # on both sides of keyframes, seeking and decoding on
    assert np.array_equal(reader.get_frames(across), full[across])


def test_webm_random_access_is_exact(tmp_path):
    path = str(tmp_path / "clip.webm")
    with open_writer(path, fps=25) as writer:
        writer.write_batch(moving_frames(30))
    assert_random_access_exact(path, 8)


def write_every_format(folder, frames: np.ndarray) -> dict[str, str]:
    os.makedirs(folder / "frames", exist_ok=True)
    for i, f in enumerate(frames):
        iio.imwrite(folder / "frames" / f"{i:04d}.png", f)
    iio.imwrite(folder / "strip.png", np.concatenate(list(frames), axis=1))
    iio.imwrite(folder / "anim.gif", frames, duration=40, loop=0)
    short_gop_mp4(str(folder / "gop.mp4"), frames)
    return {k: str(folder / k) for k in ("frames", "strip.png", "anim.gif", "gop.mp4")}


def test_saved_state_gives_the_same_frames_in_every_format(tmp_path):
    frames = moving_frames(20)
    for name, path in write_every_format(tmp_path, frames).items():
        scanned = open_video(path)
        state = json.loads(json.dumps(scanned.state()))  # as the index file keeps it
        restored = open_video(path, state=state)
        assert restored.num_frames == scanned.num_frames == 20, name
        assert (restored.height, restored.width) == (64, 64), name
        full = np.stack(list(scanned))
        for indices in index_sets(20, 6):
            assert np.array_equal(restored.get_frames(indices), full[indices]), (name, indices)
        if name in ("frames", "strip.png"):  # lossless formats hold the very frames written
            assert np.array_equal(full, frames), name


def test_expanded_strip_is_the_strip(tmp_path):
    frames = moving_frames(12)
    path = write_every_format(tmp_path, frames)["strip.png"]
    strip = open_video(path)
    cached = expanded_strip(path, strip, str(tmp_path / "cache"))
    assert cached.num_frames == 12
    assert np.array_equal(cached.get_frames([11, 0, 5]), frames[[11, 0, 5]])
    again = expanded_strip(path, strip, str(tmp_path / "cache"))  # reused, not written again
    assert again.path == cached.path and len(os.listdir(tmp_path / "cache")) == 1


def test_index_file_is_used_and_refreshed(tmp_path, monkeypatch):
    train = tmp_path / "train"
    os.makedirs(train)
    paths = write_every_format(train, moving_frames(16))
    first = FramesDataset(str(tmp_path), frame_shape=(32, 32, 3), is_train=True, seed=1)
    saved = json.loads((train / INDEX_NAME).read_text())
    assert sorted(saved["videos"]) == ["anim.gif", "frames", "gop.mp4", "strip.png"]

    def no_scan(path):
        raise AssertionError(f"scanned {path} although the index holds it")

    with monkeypatch.context() as m:  # a second start reads the index, scans nothing
        m.setattr(FileVideoReader, "_scan", staticmethod(no_scan))
        second = FramesDataset(str(tmp_path), frame_shape=(32, 32, 3), is_train=True, seed=1)
        for i in range(len(first)):
            assert torch.equal(second[i]["source"], first[i]["source"])
            assert torch.equal(second[i]["driving"], first[i]["driving"])

    short_gop_mp4(paths["gop.mp4"], moving_frames(24))  # the same name, another video
    os.utime(paths["gop.mp4"], ns=(1, 1))
    readers, errors = open_videos(list(paths.values()), str(train / INDEX_NAME))
    assert not errors and readers[paths["gop.mp4"]].num_frames == 24
    assert json.loads((train / INDEX_NAME).read_text())["videos"]["gop.mp4"]["state"]["pts"]["count"] == 24


def test_frame_cache_gives_the_same_items(tmp_path):
    train = tmp_path / "train"
    os.makedirs(train)
    iio.imwrite(train / "strip.png", np.concatenate(list(moving_frames(10)), axis=1))
    plain = FramesDataset(str(tmp_path), frame_shape=(32, 32, 3), is_train=True, seed=2, index_cache=False)
    cached = FramesDataset(str(tmp_path), frame_shape=(32, 32, 3), is_train=True, seed=2, index_cache=False,
                           frame_cache=str(tmp_path / "cache"))
    for epoch in range(3):
        plain.set_epoch(epoch)
        cached.set_epoch(epoch)
        a, b = plain[0], cached[0]
        assert torch.equal(a["source"], b["source"]) and torch.equal(a["driving"], b["driving"])
    assert os.listdir(tmp_path / "cache" / "train")  # the strip was expanded
    assert not os.path.exists(train / INDEX_NAME)


def test_the_config_selects_the_caches(tmp_path, tiny_config_path):
    """`dataset_params.frame_cache` / `index_cache` reach the trainer's dataset (train._dataset)."""
    import yaml

    from modules.family import load_config
    from train import _dataset

    train = tmp_path / "train"
    os.makedirs(train)
    iio.imwrite(train / "strip.png", np.concatenate(list(moving_frames(6)), axis=1))
    raw = yaml.safe_load(open(tiny_config_path, encoding="utf-8"))
    raw["dataset_params"].update({"root_dir": str(tmp_path), "frame_shape": [32, 32, 3]})
    _dataset(load_config(raw))[0]
    assert os.path.exists(train / INDEX_NAME) and not os.path.exists(tmp_path / "cache")  # the defaults
    os.remove(train / INDEX_NAME)
    raw["dataset_params"].update({"index_cache": False, "frame_cache": str(tmp_path / "cache")})
    _dataset(load_config(raw))[0]
    assert not os.path.exists(train / INDEX_NAME) and os.listdir(tmp_path / "cache" / "train")
