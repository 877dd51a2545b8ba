"""demo.make_animation (the reference API on the engine) against the reference's per-frame loop, same inputs.

    python bench/bench_dropin.py [--config config/vox-256.yaml] [--frames 8] [--threads 2]

Prints seconds per frame of each and the largest difference between their frames. Weights
from the seeded recipe (no download needed); frames are real (tests/data).
"""
from __future__ import annotations

import argparse
import time

from common import DRIVING_CLIP, SOURCE_CLIP, load_models  # noqa: E402  (sets up sys.path first)

import numpy as np  # noqa: E402
import torch  # noqa: E402


def frames(path: str, count: int, size: int) -> np.ndarray:
    """`count` frames of a clip as H x W x 3 floats in [0, 1] at size x size."""
    from utils.video import open_video, square_frames

    reader = open_video(path)
    raw = reader.get_frames(list(range(min(count, reader.num_frames))))
    return square_frames(raw, size).permute(0, 2, 3, 1).numpy()  # n x H x W x 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="config/vox-256.yaml")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from demo import make_animation
    from modules.animation import animate_plain
    from utils.frame_size import frame_size

    size = frame_size(args.config)[0]
    models = load_models(args.config)
    source = frames(SOURCE_CLIP, 1, size)[0]
    driving = list(frames(DRIVING_CLIP, args.frames, size))
    nets = (models["inpainting_network"], models["kp_detector"], models["dense_motion_network"], models["avd_network"])
    make_animation(source, driving[:1], *nets, device="cpu")  # warm-up (prepared networks are cached)
    start = time.perf_counter()
    ours = make_animation(source, driving, *nets, device="cpu", mode="relative")
    t_ours = (time.perf_counter() - start) / len(driving)
    src = torch.from_numpy(source).permute(2, 0, 1)[None]
    drv = torch.from_numpy(np.stack(driving)).permute(0, 3, 1, 2)
    start = time.perf_counter()
    reference = animate_plain(src, drv, models, mode="relative")
    t_ref = (time.perf_counter() - start) / len(driving)
    diff = float(np.abs(np.stack(ours) - reference.permute(0, 2, 3, 1).numpy()).max())
    print(f"{args.config} {size}px, {len(driving)} frames, {args.threads} threads")
    print(f"demo.make_animation (engine): {t_ours:.3f} s/frame")
    print(f"reference per-frame loop:     {t_ref:.3f} s/frame  ({t_ref / t_ours:.2f}x)")
    print(f"max |difference| of the frames: {diff:.2e}")


if __name__ == "__main__":
    main()
