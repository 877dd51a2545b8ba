"""Live animation speed: frames/s and latency of the live path with a simulated camera.

    .venv/bin/python bench/bench_live.py [--config config/demo.yaml] [--checkpoint P] [--threads 2]
        [--precisions fp32,bf16] [--sizes 64] [--camera_fps 30] [--seconds 10] [--device cpu]

A camera thread plays tests/data/single_face.mp4 (640x360, looped) at --camera_fps: each frame is
shrunk to 320 px and JPEG-encoded (what the page sends) and put into the live path's one-frame
`LatestFrameQueue` (stale frames dropped). The worker does what a web session's worker does:
JPEG decode, centre crop + resize, `FrameAnimator` (the engine, first frame as anchor), JPEG
encode. Printed per precision and size: animated frames/s, camera frames dropped, latency
from the camera frame's capture to its encoded result (mean, p50, p95; loopback transport and
the browser's decode are not included: the live page shows the end-to-end figure).
Weights come from --checkpoint, else the seeded recipe (utils/weight_recipe.py): speed does not
depend on the weights' values.
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (puts the repository root on sys.path)
import numpy as np  # noqa: E402
import torch  # noqa: E402

from utils.live import LatestFrameQueue  # noqa: E402
from web.live import FrameAnimator, _decode, _encode  # noqa: E402


def camera_frames(count: int = 72) -> list[bytes]:
    """The clip's frames as the page sends them: at most 320 px, JPEG."""
    from PIL import Image

    from utils.video import open_video

    out = []
    for i, frame in enumerate(open_video(common.SOURCE_CLIP)):
        if i >= count:
            break
        image = Image.fromarray(frame)
        image.thumbnail((320, 320))
        out.append(_encode(np.asarray(image)))
    return out


def camera(queue: LatestFrameQueue, frames: list[bytes], fps: float, stop: threading.Event) -> None:
    start, i = time.monotonic(), 0
    while not stop.is_set():
        due = start + i / fps
        time.sleep(max(0.0, due - time.monotonic()))
        queue.put((time.monotonic(), frames[i % len(frames)]))
        i += 1


def run(models: dict, size: int, precision: str, device: str, frames: list[bytes], fps: float, seconds: float) -> dict:
    from utils.media import read_photo

    photo = read_photo(os.path.join(common.ROOT, "web", "examples", "astronaut.png"))
    animator = FrameAnimator(models, photo, (size, size), precision=precision, device=device)
    animator(_decode(frames[0]))  # anchor + warm-up
    queue, stop = LatestFrameQueue(1), threading.Event()
    thread = threading.Thread(target=camera, args=(queue, frames, fps, stop), daemon=True)
    thread.start()
    latencies, done, start = [], 0, time.monotonic()
    while time.monotonic() - start < seconds:
        item = queue.get(timeout=1.0)
        if item is None:
            continue
        captured, data = item
        _encode(animator(_decode(data)))
        latencies.append((time.monotonic() - captured) * 1000.0)
        done += 1
    elapsed = time.monotonic() - start
    stop.set()
    thread.join()
    lat = np.asarray(latencies)
    return {"fps": done / elapsed, "frames": done, "camera": queue.put_count, "dropped": queue.dropped,
            "mean": float(lat.mean()), "p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=os.path.join(common.ROOT, "config", "demo.yaml"))
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--sizes", default=None, help="frame sides, e.g. 64,128 (default: the config's)")
    parser.add_argument("--camera_fps", type=float, default=30.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models = common.load_models(args.config, args.checkpoint)
    for model in models.values():
        model.to(args.device)
    from modules.family import load_config

    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else [int(load_config(args.config)["dataset_params"]["frame_shape"][0])]
    frames = camera_frames()
    print(f"config {os.path.relpath(args.config, common.ROOT)}, weights {'checkpoint' if args.checkpoint else 'seeded recipe'}, "
          f"{args.threads} threads, device {args.device}, camera {args.camera_fps:g} frames/s, {args.seconds:g} s per row, "
          f"load average {os.getloadavg()[0]:.1f}")
    print("| size | precision | frames/s | animated / camera frames | dropped | latency mean | p50 | p95 |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for size in sizes:
        for precision in args.precisions.split(","):
            r = run(models, size, precision, args.device, frames, args.camera_fps, args.seconds)
            print(f"| {size} | {precision} | {r['fps']:.1f} | {r['frames']} / {r['camera']} | {r['dropped']} | "
                  f"{r['mean']:.0f} ms | {r['p50']:.0f} ms | {r['p95']:.0f} ms |", flush=True)


if __name__ == "__main__":
    main()
