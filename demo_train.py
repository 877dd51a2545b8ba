"""`make demo`: train a small TPSMM on the built-in clips, reconstruct the held-out clips, animate a photo.

Steps (outputs under demo_out/ and checkpoints/demo.pth.tar):
1. train config/demo.yaml on data/demo (64 px face crops of two real clips) on the CPU;
2. reconstruct every held-out test clip from its first frame and print its L1 next to the
   L1 of simply repeating that first frame (the baseline a motion model has to beat);
3. animate data/demo/source.png (a face the model never saw) with a held-out clip:
   an mp4 and a side-by-side image.

    python demo_train.py [--retrain] [--epochs N] [--steps_per_epoch N] [--work_dir DIR]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.abspath(__file__))
CONFIG = os.path.join(ROOT, "config", "demo.yaml")


def repeat_source_l1(root: str, size: tuple[int, int]) -> dict[str, float]:
    """Per test clip: mean |frame_t - frame_0| over all frames (what a model that does nothing scores)."""
    from evaluation.videos import dataset_test_videos, resize_frames
    from utils.video import open_video

    out = {}
    for name, path in dataset_test_videos(root):  # the listing reconstruction.py uses
        video = resize_frames(np.stack(list(open_video(path))), size)  # T x 3 x H x W
        out[name] = float((video - video[:1]).abs().mean())
    return out


def side_by_side_image(source_png: str, driving: str, result: str, path: str, count: int = 6) -> None:
    """One image: the source, then `count` driving frames over the matching animated frames."""
    import imageio.v3 as iio

    from utils.video import open_video, read_image

    drive, res = open_video(driving), open_video(result)
    idx = np.linspace(0, min(drive.num_frames, res.num_frames) - 1, count).round().astype(int).tolist()
    d, r = drive.get_frames(idx), res.get_frames(idx)
    h, w = r.shape[1:3]
    src = read_image(source_png)
    src = np.asarray(torch.nn.functional.interpolate(torch.from_numpy(src).permute(2, 0, 1)[None].float(),
                                                     size=(h, w), mode="bilinear", antialias=True)[0]
                     .permute(1, 2, 0).round().clamp(0, 255).byte())
    d = np.stack([np.asarray(torch.nn.functional.interpolate(torch.from_numpy(f).permute(2, 0, 1)[None].float(),
                                                             size=(h, w), mode="bilinear", antialias=True)[0]
                             .permute(1, 2, 0).round().clamp(0, 255).byte()) for f in d])
    blank = np.full_like(src, 255)
    top = np.concatenate([src] + list(d), axis=1)
    bottom = np.concatenate([blank] + list(r), axis=1)
    iio.imwrite(path, np.concatenate([top, bottom], axis=0))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--retrain", action="store_true", help="train again even if a demo checkpoint exists")
    parser.add_argument("--epochs", type=int, default=None, help="override train_params.num_epochs")
    parser.add_argument("--steps_per_epoch", type=int, default=None, help="cap steps per epoch (smoke runs)")
    parser.add_argument("--work_dir", default=ROOT,
                        help="where log/demo, demo_out/ and checkpoints/demo.pth.tar go (default: the repository)")
    args = parser.parse_args(argv)
    log_dir = os.path.join(args.work_dir, "log", "demo")
    out_dir = os.path.join(args.work_dir, "demo_out")
    checkpoint = os.path.join(args.work_dir, "checkpoints", "demo.pth.tar")
    sys.path.insert(0, ROOT)
    os.chdir(ROOT)
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, os.cpu_count() or 1))

    from animate import run_animation
    from modules import build_models, load_checkpoint
    from reconstruction import reconstruction
    from train import train
    from modules.family import load_config

    t0 = time.time()
    config = load_config(CONFIG)
    if args.epochs is not None:
        config["train_params"]["num_epochs"] = args.epochs
    if args.steps_per_epoch is not None:
        config["train_params"]["max_steps_per_epoch"] = args.steps_per_epoch
    config["dataset_params"]["root_dir"] = os.path.join(ROOT, config["dataset_params"]["root_dir"])
    size = tuple(config["dataset_params"]["frame_shape"][:2])
    trained = os.path.join(log_dir, "checkpoint.pth.tar")
    if args.retrain or not os.path.exists(trained) or \
            torch.load(trained, weights_only=True, map_location="cpu").get("epoch", -1) + 1 < \
            config["train_params"]["num_epochs"]:
        print(f"[1/3] training {CONFIG} on {config['dataset_params']['root_dir']} "
              f"({config['train_params']['num_epochs']} epochs, CPU) -> {log_dir}")
        resume = trained if os.path.exists(trained) and not args.retrain else None
        if args.retrain and os.path.isdir(log_dir):
            shutil.rmtree(log_dir)
        torch.manual_seed(0)
        train(config, build_models(config), log_dir, checkpoint=resume)
    else:
        print(f"[1/3] using the trained demo model {trained} (--retrain to train again)")
    t_train = time.time() - t0
    os.makedirs(os.path.dirname(checkpoint), exist_ok=True)
    shutil.copyfile(trained, checkpoint)

    print("[2/3] reconstructing the held-out clips from their first frame")
    models = build_models(config)
    load_checkpoint(checkpoint, models, strict=False)
    summary = reconstruction(config, models, checkpoint, out_dir, progress=False)
    baseline = repeat_source_l1(config["dataset_params"]["root_dir"], size)
    per_video = summary["videos"]

    print("[3/3] animating data/demo/source.png with the held-out clip")
    driving = os.path.join(ROOT, "data", "demo", "test", "carphone#003.png")
    video = os.path.join(out_dir, "animation.mp4")
    run_animation(config, checkpoint, os.path.join(ROOT, "data", "demo", "source.png"), driving, video,
                  mode="relative", crop="none", audio=False)
    grid = os.path.join(out_dir, "side_by_side.png")
    side_by_side_image(os.path.join(ROOT, "data", "demo", "source.png"), driving, video, grid)

    total = time.time() - t0
    print("\nheld-out reconstruction L1 (lower is better; pixel values in [0, 1])")
    print(f"{'clip':<22} {'model':>8} {'repeat source':>14}")
    for name, base in baseline.items():
        print(f"{name:<22} {per_video[name]['l1']:8.4f} {base:14.4f}")
    frames = {name: per_video[name]["frames"] for name in baseline}
    base_all = sum(baseline[n] * frames[n] for n in baseline) / sum(frames.values())
    print(f"{'all frames':<22} {summary['l1']:8.4f} {base_all:14.4f}")
    print(f"\ncheckpoint {checkpoint}\nanimation  {video}\nside by side {grid}\n"
          f"reconstructions {os.path.join(out_dir, 'reconstruction')}")
    print(f"time: training {t_train / 60:.1f} min, total {total / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
