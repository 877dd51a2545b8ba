"""Data loader throughput: training pairs per second per loader worker, in each published format.

    .venv/bin/python bench/bench_loader.py                        # a small layout (8 clips)
    .venv/bin/python bench/bench_loader.py --clips 2000 --min-frames 100 --max-frames 300 --size 256 \\
        --out /data/loader-bench --keep                           # the papers' scale (writes ~tens of GB)

Writes a synthetic layout `<out>/<format>/train/<clip>`: clips of `--size` px and
`--min-frames`..`--max-frames` frames, made of the built-in real clips (moving crop
windows, so encoders see natural motion), in each format the published datasets use:

- `mp4`: H.264 as the video-preprocessing recipe writes it (x264 defaults: a keyframe
  every 250 frames, so most clips hold one);
- `mp4-g12`: the same re-encoded with a keyframe every 12 frames (`-g 12`);
- `folder`: a folder of PNG frames per clip;
- `strip`: all frames side by side in one PNG (the reference's `.png` format), read
  as is, and `strip+cache`: expanded once into a PNG frame folder (`frame_cache`).

For each format it times `FramesDataset` exactly as training uses it (vox-256's
augmentation, resize to `--size`): a process draws `--pairs` items; that is one
loader worker's rate. It also times the frame decode alone (ms per frame, the fast
path and a decode from the start), the dataset's start with and without the saved
index, and prints the workers a node of `--gpus` GPUs needs at `--gpu-rate` training
samples/s per GPU (55: docs/speed.md's H200 bf16 rate at batch 8).
"""
from __future__ import annotations

import argparse
import math
import os
import random
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import numpy as np  # noqa: E402

FORMATS = ("mp4", "mp4-g12", "folder", "strip", "strip+cache")
AUGMENTATION = {"flip_param": {"horizontal_flip": True, "time_flip": True},  # config/vox-256.yaml
                "jitter_param": {"brightness": 0.1, "contrast": 0.1, "saturation": 0.1, "hue": 0.1}}


def source_frames() -> list[np.ndarray]:
    """The built-in real clips' frames (640x360 and 176x144), the material of the synthetic clips."""
    from utils.video import open_video

    frames = []
    for name in ("single_face.mp4", "two_people_body.mp4", "carphone.mp4"):
        frames.append(np.stack(list(open_video(os.path.join(common.DATA, name)))))
    return frames


def synthetic_clip(material: list[np.ndarray], k: int, n: int, size: int) -> np.ndarray:
    """Clip `k`: n frames of one built-in clip, a square window drifting and zooming over it, resized."""
    from utils.crop import crop_resize

    rng = random.Random(k)
    video = material[k % len(material)]
    t0 = rng.randrange(len(video))
    h, w = video.shape[1:3]
    side = rng.uniform(0.6, 0.95) * min(h, w)
    x, y = rng.uniform(0, w - side), rng.uniform(0, h - side)
    dx, dy = rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5)
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        frame = video[(t0 + i) % len(video)] if (t0 + i) // len(video) % 2 == 0 else video[-1 - (t0 + i) % len(video)]
        s = side * (1 + 0.05 * math.sin(i / 15))
        cx = min(max(x + dx * i + side / 2, s / 2), w - s / 2)
        cy = min(max(y + dy * i + side / 2, s / 2), h - s / 2)
        out[i] = crop_resize(frame, (cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2), (size, size))
    return out


def write_layout(out: str, clips: int, min_frames: int, max_frames: int, size: int) -> dict:
    """Write every clip in every format (an existing complete layout is reused); returns {format: root}."""
    import imageio.v3 as iio
    from PIL import Image

    roots = {f: os.path.join(out, f) for f in ("mp4", "mp4-g12", "folder", "strip")}
    done = os.path.join(out, f".complete-{clips}-{min_frames}-{max_frames}-{size}")
    if os.path.exists(done):
        return roots
    material = source_frames()
    start = time.perf_counter()
    for k in range(clips):
        n = random.Random(1000 + k).randint(min_frames, max_frames)
        frames = synthetic_clip(material, k, n, size)
        name = f"id{k % max(1, clips // 4):05d}#clip{k:05d}"
        paths = {f: os.path.join(r, "train") for f, r in roots.items()}
        for p in paths.values():
            os.makedirs(p, exist_ok=True)
        iio.imwrite(os.path.join(paths["mp4"], name + ".mp4"), frames, fps=25, codec="libx264", macro_block_size=16)
        iio.imwrite(os.path.join(paths["mp4-g12"], name + ".mp4"), frames, fps=25, codec="libx264",
                    macro_block_size=16, output_params=["-g", "12"])
        folder = os.path.join(paths["folder"], name)
        os.makedirs(folder, exist_ok=True)
        for i, f in enumerate(frames):
            Image.fromarray(f).save(os.path.join(folder, f"{i:06d}.png"))
        Image.fromarray(np.concatenate(list(frames), axis=1)).save(os.path.join(paths["strip"], name + ".png"))
        print(f"\rwrote {k + 1}/{clips} clips ({time.perf_counter() - start:.0f} s)", end="", file=sys.stderr)
    print(file=sys.stderr)
    open(done, "w").close()
    return roots


def folder_mb(path: str) -> float:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs) / 1e6


def time_format(root: str, size: int, pairs: int, cache: str | None) -> dict:
    """One loader worker's rates on the layout at `root` (see the module docstring)."""
    from datasets import FramesDataset
    from datasets.video_index import INDEX_NAME

    index = os.path.join(root, "train", INDEX_NAME)
    if os.path.exists(index):
        os.remove(index)
    t = time.perf_counter()
    FramesDataset(root, frame_shape=(size, size, 3), is_train=True, augmentation_params=AUGMENTATION)
    cold = time.perf_counter() - t
    t = time.perf_counter()
    ds = FramesDataset(root, frame_shape=(size, size, 3), is_train=True, augmentation_params=AUGMENTATION,
                       frame_cache=cache)
    warm = time.perf_counter() - t
    if cache:  # the one-time expansion is not the steady state: expand every strip first
        for path in ds.videos:
            ds.reader(path)
    rng = random.Random(0)
    decode, from_start = [], []
    for _ in range(min(pairs, 20)):
        path = ds.videos[rng.randrange(len(ds.videos))]
        pair = sorted(rng.sample(range(ds.num_frames[path]), 2))
        t = time.perf_counter()
        ds.reader(path).get_frames(pair)
        decode.append((time.perf_counter() - t) / 2)
        if len(from_start) < 5:
            t = time.perf_counter()
            for i, _ in enumerate(ds.reader(path)):
                if i >= pair[1]:
                    break
            from_start.append((time.perf_counter() - t) / 2)
    t = time.perf_counter()
    for i in range(pairs):
        ds.set_epoch(i // len(ds))
        item = ds[i % len(ds)]
        assert item["source"].shape == (3, size, size)
    rate = pairs / (time.perf_counter() - t)
    return {"pairs/s": rate, "decode ms/frame": 1000 * float(np.mean(decode)),
            "from start ms/frame": 1000 * float(np.mean(from_start)), "start s (scan)": cold,
            "start s (index)": warm}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--min-frames", type=int, default=100)
    parser.add_argument("--max-frames", type=int, default=300)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--pairs", type=int, default=60, help="items drawn per format")
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--gpu-rate", type=float, default=55.0, help="training samples/s per GPU")
    parser.add_argument("--out", default=None, help="layout folder (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the layout (reused by the next run)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)  # a loader worker runs one thread
    out = args.out or tempfile.mkdtemp(prefix="loader-bench-")
    try:
        roots = write_layout(out, args.clips, args.min_frames, args.max_frames, args.size)
        need = args.gpus * args.gpu_rate
        header = ["format", "pairs/s per worker", "decode ms/frame", "from start ms/frame", "workers per GPU",
                  f"workers for {args.gpus} GPUs", "start s (scan / index)", "MB on disk"]
        rows = []
        for fmt in args.formats.split(","):
            root = roots["strip" if fmt.startswith("strip") else fmt]
            cache = os.path.join(out, "frame-cache") if fmt == "strip+cache" else None
            r = time_format(root, args.size, args.pairs, cache)
            mb = folder_mb(os.path.join(root, "train")) + (folder_mb(cache) if cache else 0)
            rows.append([fmt, f"{r['pairs/s']:.1f}", f"{r['decode ms/frame']:.1f}", f"{r['from start ms/frame']:.1f}",
                         math.ceil(args.gpu_rate / r["pairs/s"]), math.ceil(need / r["pairs/s"]),
                         f"{r['start s (scan)']:.2f} / {r['start s (index)']:.2f}", f"{mb:.1f}"])
            print(f"{fmt}: {r}", file=sys.stderr)
        print(f"{args.clips} clips of {args.size} px, {args.min_frames}-{args.max_frames} frames; "
              f"{args.gpus} GPUs x {args.gpu_rate:g} samples/s = {need:g} pairs/s; one thread per worker")
        print(common.markdown_table(header, rows))
    finally:
        if not args.keep and args.out is None:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
