"""TED at 384: `frame_shape: null` means frames as stored (`utils.frame_size.frame_size`)."""
from __future__ import annotations

import os

import numpy as np
import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIDE = 384


@pytest.fixture(scope="module")
def ted_layout(tmp_path_factory):
    """A TED384-like layout: png strips of 384 px frames (2 frames each), 1 train and 2 test videos."""
    import imageio.v3 as iio

    root = tmp_path_factory.mktemp("ted384")
    rng = np.random.default_rng(0)
    for split, names in (("train", ["a#000"]), ("test", ["b#000", "c#000"])):
        os.makedirs(root / split)
        for name in names:
            base = rng.integers(0, 255, (SIDE // 8, SIDE // 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
            strip = np.concatenate([base, np.roll(base, 8, axis=1)], axis=1)  # 384 x 768: two frames
            iio.imwrite(root / split / f"{name}.png", strip)
    return str(root)


def ted_config(tmp_path, tiny_config_path, root) -> str:
    """ted-384.yaml's dataset_params (frame_shape: null) with tiny.yaml's networks."""
    with open(os.path.join(ROOT, "config", "ted-384.yaml")) as f:
        config = yaml.safe_load(f)
    with open(tiny_config_path) as f:
        config["model_params"] = yaml.safe_load(f)["model_params"]
    config["dataset_params"]["root_dir"] = root
    assert config["dataset_params"]["frame_shape"] is None
    path = str(tmp_path / "ted-384.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(config, f)
    return path


def test_frame_size_rules(tmp_path, ted_layout, tiny_config_path):
    from utils.frame_size import frame_size

    assert frame_size(os.path.join(ROOT, "config", "ted-384.yaml")) == (384, 384)  # no data: the name's size
    assert frame_size(os.path.join(ROOT, "config", "vox-256.yaml")) == (256, 256)
    assert frame_size(tiny_config_path) == (64, 64)  # an explicit frame_shape wins
    assert frame_size(ted_config(tmp_path, tiny_config_path, ted_layout)) == (SIDE, SIDE)  # the data's size
    assert frame_size({"dataset_params": {"frame_shape": None, "root_dir": ted_layout}}) == (SIDE, SIDE)
    assert frame_size({"dataset_params": {"frame_shape": None}}) == (256, 256)  # nothing to go by


def test_reconstruction_and_training_read_384(tmp_path, ted_layout, tiny_config_path, tiny_checkpoint):
    from modules import build_models
    from reconstruction import reconstruction
    from train import _dataset
    from modules.family import load_config

    path = ted_config(tmp_path, tiny_config_path, ted_layout)
    summary = reconstruction(path, build_models(path), tiny_checkpoint, str(tmp_path / "log"), write_mp4=False,
                             progress=False)
    assert summary["frame_shape"] == [SIDE, SIDE]
    import imageio.v3 as iio

    frame = iio.imread(tmp_path / "log" / "reconstruction" / "png" / "b#000" / "000000.png")
    assert frame.shape == (SIDE, SIDE, 3)
    config = load_config(path)
    config["dataset_params"]["frame_shape"] = None  # what load_config is to keep for `null`
    item = _dataset(config)[0]
    assert tuple(item["source"].shape) == (3, SIDE, SIDE) and tuple(item["driving"].shape) == (3, SIDE, SIDE)


def test_demo_animates_ted_at_384_by_default(tmp_path, ted_layout, tiny_config_path, tiny_checkpoint):
    """`python demo.py --config ted-384.yaml ...` without --img_shape animates at 384."""
    import imageio.v3 as iio

    from demo import main

    path = ted_config(tmp_path, tiny_config_path, str(tmp_path / "no-data"))  # size from the name
    src = tmp_path / "s.png"
    iio.imwrite(src, np.full((100, 80, 3), 128, np.uint8))
    out = tmp_path / "out"
    assert main(["--config", path, "--checkpoint", tiny_checkpoint, "--source_image", str(src),
                 "--driving_video", os.path.join(ted_layout, "test", "b#000.png"), "--result_video", str(out),
                 "--cpu"]) == 0
    frames = sorted(os.listdir(out))
    assert len(frames) == 2 and iio.imread(out / frames[0]).shape == (SIDE, SIDE, 3)


def test_animate_py_defaults_to_384_for_ted_384():
    import torch

    import animate
    from modules import load_config

    path = os.path.join(ROOT, "config", "ted-384.yaml")
    assert animate._frame_size(load_config(path), None, path, torch.device("cpu"), 1) == (384, 384)
    vox = os.path.join(ROOT, "config", "vox-256.yaml")
    assert animate._frame_size(load_config(vox), None, vox, torch.device("cpu"), 1) == (256, 256)
