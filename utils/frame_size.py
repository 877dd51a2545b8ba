"""The frame size a config works at: `dataset_params.frame_shape`, where `null` means frames as stored.

The published configs all say `frame_shape: null`; the reference then reads the frames
at the size they are stored (256 px for VoxCeleb/TaiChi/MGif, 384 px for TED-384).
`frame_size` gives that size: the config's `frame_shape` when it names one, else the
size of the first readable video under `root_dir/{test,train}`, else the number in the
config file's name (`ted-384.yaml` -> 384), else 256 (the reference demo's default).
"""
from __future__ import annotations

import os
import re
from typing import Any, Mapping

import yaml

DEFAULT_SIZE = 256


def _raw_frame_shape(config: Mapping[str, Any] | str | os.PathLike, config_path: str | None) -> tuple[Any, bool]:
    """(frame_shape as written, whether it was found), from the YAML file when there is one."""
    path = os.fspath(config) if isinstance(config, (str, os.PathLike)) else config_path
    if path and os.path.isfile(path):
        with open(path) as f:
            raw = yaml.safe_load(f) or {}
        return (raw.get("dataset_params") or {}).get("frame_shape"), True
    if isinstance(config, Mapping):
        return (config.get("dataset_params") or {}).get("frame_shape"), True
    return None, False


def stored_size(root_dir: str | None) -> tuple[int, int] | None:
    """(H, W) of the first readable video under root_dir/test, root_dir/train or root_dir; None if there is none."""
    from utils.video import MediaError, open_video

    if not root_dir or not os.path.isdir(root_dir):
        return None
    for sub in ("test", "train", ""):
        folder = os.path.join(root_dir, sub)
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            if name.startswith(".") or name in ("test", "train"):
                continue
            try:
                reader = open_video(os.path.join(folder, name))
                frame = reader.get_frames([0])[0]  # H x W x 3
            except (MediaError, OSError, ValueError, IndexError):
                continue
            return int(frame.shape[0]), int(frame.shape[1])
    return None


def name_size(config_path: str | None) -> tuple[int, int] | None:
    """The size in a published config's name: `ted-384.yaml` -> (384, 384)."""
    if not config_path:
        return None
    match = re.search(r"-(\d{2,4})\.ya?ml$", os.path.basename(os.fspath(config_path)))
    return (int(match.group(1)),) * 2 if match else None


def frame_size(config: Mapping[str, Any] | str | os.PathLike, config_path: str | None = None,
               root_dir: str | None = None) -> tuple[int, int]:
    """(H, W) the config's frames are read, trained, reconstructed and animated at (see module doc).

    `config`: a YAML path or a config dict (raw or resolved); `config_path`: the YAML file a dict
    came from (its `frame_shape` as written wins); `root_dir`: the data to look at instead of the config's.
    """
    shape, _ = _raw_frame_shape(config, config_path)
    if shape is not None:
        return int(shape[0]), int(shape[1])
    path = os.fspath(config) if isinstance(config, (str, os.PathLike)) else config_path
    root = None
    if isinstance(config, Mapping):
        root = (config.get("dataset_params") or {}).get("root_dir")
    elif path and os.path.isfile(path):
        with open(path) as f:
            root = ((yaml.safe_load(f) or {}).get("dataset_params") or {}).get("root_dir")
    return stored_size(root_dir or root) or name_size(path) or (DEFAULT_SIZE, DEFAULT_SIZE)
