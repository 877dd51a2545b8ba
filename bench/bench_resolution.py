"""What animating above a model's training size gives: the model at its own size, upsampled, against the
same model run on 2x larger frames (`--img_shape` / `img_shape=` at twice `frame_shape`), on real frames.

    .venv/bin/python bench/bench_resolution.py [--config config/demo128.yaml]
        [--checkpoint checkpoints/demo128.pth.tar] [--factor 2] [--threads 2]

For each held-out part of the built-in data (`data/make_demo128.py`'s split: the last frames of each
raw video in tests/data/, cropped with the box `data/demo128/clips.csv` records), the frames are cropped
from the raw video at the model's size S and at factor x S (real detail where the raw face is larger
than S, as single_face's 360 px face is). Each is reconstructed from its first frame (the engine in
mode 'standard'), and both results are compared with the factor x S crop:

- `native + upsample`: the model at S, its output upsampled (bicubic) to factor x S;
- `run at factor x S`: the model on factor x S frames (keypoints and motion at factor x the
  resolution it was trained on, the same weights);
- `repeat source`: the first frame repeated (what doing nothing scores), for scale.

Prints L1 (pixel values in [0, 1]) and ms per frame, one row per clip and path.
"""
from __future__ import annotations

import argparse
import csv
import importlib.util
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402,F401  (puts the repository root on sys.path)
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def held_out_raw() -> dict[str, tuple[str, int]]:
    """{held-out clip: (raw video in the repository, first held-out frame)}, read from data/make_demo128.py's
    `INPUTS` (the split it makes); clips whose raw video ships inside a package archive are left out."""
    spec = importlib.util.spec_from_file_location("make_demo128", os.path.join(ROOT, "data", "make_demo128.py"))
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return {f"{name}-heldout#000": (where, first) for name, (where, _, first) in script.INPUTS.items()
            if first is not None and os.path.isfile(os.path.join(ROOT, where))}


def crops(clip: str, raw: str, start: int, sizes: list[int]) -> dict[int, torch.Tensor]:
    """{size: (T, 3, size, size) float frames} of `clip`, frames `start`.. of `raw`, cropped with its recorded box."""
    from utils.crop import crop_resize
    from utils.frames import to_tensor
    from utils.video import open_video

    with open(os.path.join(ROOT, "data", "demo128", "clips.csv"), encoding="utf-8") as handle:
        box = next(row["box"] for row in csv.DictReader(handle) if row["clip"] == f"test/{clip}.mp4")
    reader = open_video(os.path.join(ROOT, raw))
    frames = reader.get_frames(list(range(start, reader.num_frames)))  # T x H x W x 3, uint8
    box = [float(v) for v in box.split()]
    return {s: to_tensor(np.stack([crop_resize(f, box, (s, s)) for f in frames])) for s in sizes}


def reconstruct(models: dict, frames: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(predictions, ms per frame) of the engine reconstructing `frames` from the first."""
    from reconstruction import Reconstructor

    with torch.no_grad():
        engine = Reconstructor(models, frames[:1])
        engine(frames[:1])  # warm-up: preparation and first call
        start = time.perf_counter()
        out = torch.cat([engine(frames[i:i + 8]) for i in range(0, len(frames), 8)]).clamp(0, 1)
        return out, 1000.0 * (time.perf_counter() - start) / len(frames)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=os.path.join(ROOT, "config", "demo128.yaml"))
    parser.add_argument("--checkpoint", default=os.path.join(ROOT, "checkpoints", "demo128.pth.tar"))
    parser.add_argument("--factor", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from modules.family import load_config
    from modules.loading import load_models

    config = load_config(args.config)
    size = int(config["dataset_params"]["frame_shape"][0])
    big = size * args.factor
    models = load_models(config, args.checkpoint, "standard", torch.device("cpu"))
    print(f"{args.checkpoint} (trained at {size} px), compared with real {big} px crops; L1 and ms/frame")
    print(f"{'clip':<26} {'path':<22} {'L1':>7} {'ms/frame':>9}")
    for clip, (raw, start) in held_out_raw().items():
        frames = crops(clip, raw, start, [size, big])
        truth = frames[big]
        native, ms_native = reconstruct(models, frames[size])
        upsampled = F.interpolate(native, size=(big, big), mode="bicubic", align_corners=False).clamp(0, 1)
        direct, ms_direct = reconstruct(models, truth)
        rows = [("repeat source", (truth[:1] - truth).abs().mean(), float("nan")),
                ("native + upsample", (upsampled - truth).abs().mean(), ms_native),
                (f"run at {big} px", (direct - truth).abs().mean(), ms_direct)]
        for name, l1, ms in rows:
            print(f"{clip:<26} {name:<22} {float(l1):7.4f} {ms:9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
