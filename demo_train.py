"""`make demo`: the pretrained model at work (when it is there), then a short training run from scratch.

Steps (outputs under demo_out/, log/demo/ and checkpoints/demo.pth.tar):
1. the pretrained model, when checkpoints/demo128.pth.tar is there (config/demo128.yaml: a narrow TPSMM trained
   for hours by data/train_demo128.py on 128 px face crops of five real videos, data/demo128)
   reconstructs every held-out clip of data/demo128 from its first frame; per clip, its L1
   beside the L1 of simply repeating that first frame (the baseline a motion model has to beat)
   and how well the face landmarks' motion follows the driving clip (Pearson r, MediaPipe);
2. it animates data/demo128/source.png (a face it never saw) with a held-out clip: an mp4, a
   side-by-side image, the same face animated and pasted back into the whole photo it comes from
   (skimage's astronaut, 512x512), and how well that face's landmarks follow the driving clip's
   (Pearson r of landmark motion: cross-identity motion, what a user sees);
3. config/demo.yaml (64 px, 8 epochs) is trained from scratch on data/demo in minutes, to show
   that training works; its held-out table (with motion r) is printed beside the pretrained model's
   (without a pretrained model, the short run animates data/demo/source.png);
4. a PNG of the training curves (losses per epoch) of both runs.

    python demo_train.py [--retrain] [--no_training] [--epochs N] [--steps_per_epoch N] [--work_dir DIR]
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
SHIPPED_CONFIG = os.path.join(ROOT, "config", "demo128.yaml")
SHIPPED = os.path.join(ROOT, "checkpoints", "demo128.pth.tar")
SHIPPED_LOG = os.path.join(ROOT, "data", "demo128", "training_log.txt")  # the long run's log.txt
SHIPPED_DRIVING = os.path.join(ROOT, "data", "demo128", "test", "wolfganglanger-heldout#000.mp4")
SHIPPED_SOURCE = os.path.join(ROOT, "data", "demo128", "source.png")  # a crop of skimage's astronaut


def write_full_photo(path: str) -> str:
    """The whole photo data/demo128/source.png was cropped from (skimage.data.astronaut, public domain, 512x512)."""
    import imageio.v3 as iio
    from skimage import data as skdata

    iio.imwrite(path, skdata.astronaut())
    return path


def repeat_source_l1(root: str, size: tuple[int, int]) -> dict[str, float]:
    """Per test clip: mean |frame_t - frame_0| over all frames (what a model that does nothing scores)."""
    from evaluation.videos import dataset_test_videos, resize_frames
    from utils.video import open_video

    out = {}
    for name, path in dataset_test_videos(root):  # the listing reconstruction.py uses
        video = resize_frames(np.stack(list(open_video(path))), size)  # T x 3 x H x W
        out[name] = float((video - video[:1]).abs().mean())
    return out


def _resize_uint8(frame: np.ndarray, h: int, w: int) -> np.ndarray:
    """One (H, W, 3) uint8 frame resized to (h, w) (bilinear, antialiased)."""
    from utils.frames import to_tensor, to_uint8

    small = torch.nn.functional.interpolate(to_tensor(frame[None]), size=(h, w), mode="bilinear", antialias=True)
    return to_uint8(small)[0]


def side_by_side_image(source_png: str, driving: str, result: str, path: str, count: int = 6) -> None:
    """One image: the source, then `count` driving frames over the matching animated frames."""
    import imageio.v3 as iio

    from utils.video import open_video, read_image

    drive, res = open_video(driving), open_video(result)
    idx = np.linspace(0, min(drive.num_frames, res.num_frames) - 1, count).round().astype(int).tolist()
    d, r = drive.get_frames(idx), res.get_frames(idx)
    h, w = r.shape[1:3]
    src = _resize_uint8(read_image(source_png), h, w)
    d = np.stack([_resize_uint8(f, h, w) for f in d])
    blank = np.full_like(src, 255)
    top = np.concatenate([src] + list(d), axis=1)
    bottom = np.concatenate([blank] + list(r), axis=1)
    iio.imwrite(path, np.concatenate([top, bottom], axis=0))


def held_out_report(config: dict, checkpoint: str, out_dir: str, motion: bool) -> dict[str, dict]:
    """Reconstruct the held-out clips of `config`'s dataset into `out_dir`; per clip and 'all frames':
    {'l1', 'baseline' (repeat the source), 'ratio', 'frames'} and, with `motion`, 'pearson' (landmark
    motion of the reconstruction vs the driving clip, `evaluation.motion`)."""
    from evaluation.videos import dataset_test_videos
    from modules import build_models
    from reconstruction import reconstruction

    models = build_models(config)
    summary = reconstruction(config, models, checkpoint, out_dir, progress=False)
    root = config["dataset_params"]["root_dir"]
    baseline = repeat_source_l1(root, tuple(config["dataset_params"]["frame_shape"][:2]))
    rows = {}
    for name, path in dataset_test_videos(root):
        got = summary["videos"][name]
        rows[name] = {"l1": got["l1"], "baseline": baseline[name], "frames": got["frames"]}
        if motion:
            from evaluation.motion import motion_correlation

            generated = os.path.join(out_dir, "reconstruction", "png", name)  # a folder of PNGs
            rows[name]["pearson"] = motion_correlation(generated, path)["pearson"]
    frames = sum(r["frames"] for r in rows.values())
    rows["all frames"] = {"l1": summary["l1"], "frames": frames,
                          "baseline": sum(r["baseline"] * r["frames"] for r in rows.values()) / frames}
    for row in rows.values():
        row["ratio"] = row["l1"] / row["baseline"]
    return rows


PRETRAINED_TITLE = "pretrained model, 128 px ({shipped}); motion r: landmark motion vs the driving clip"


def print_report(title: str, rows: dict[str, dict]) -> None:
    """The held-out table: clip, model L1, repeat-the-source L1, their ratio, and motion r when measured."""
    motion = any("pearson" in r for r in rows.values())
    print(f"\n{title}")
    print(f"{'clip':<28} {'model':>8} {'repeat source':>14} {'ratio':>6}" + (f" {'motion r':>9}" if motion else ""))
    for name, r in rows.items():
        extra = f" {r['pearson']:9.3f}" if "pearson" in r else (f" {'':>9}" if motion else "")
        print(f"{name:<28} {r['l1']:8.4f} {r['baseline']:14.4f} {r['ratio']:6.2f}{extra}")


def _load(config_path: str, epochs: int | None = None, steps: int | None = None) -> dict:
    from modules.family import load_config

    config = load_config(config_path)
    if epochs is not None:
        config["train_params"]["num_epochs"] = epochs
    if steps is not None:
        config["train_params"]["max_steps_per_epoch"] = steps
    config["dataset_params"]["root_dir"] = os.path.join(ROOT, config["dataset_params"]["root_dir"])
    return config


def shipped_model(out_dir: str, shipped: str = SHIPPED) -> tuple[dict, dict] | None:
    """[1/4] and [2/4]: the shipped model's held-out table (printed at once), then a face it never saw animated.

    Returns (held-out rows, {'pearson': the unseen face's landmark motion r against the driving clip, ...}).
    """
    from animate import run_animation
    from evaluation.motion import motion_correlation

    if not os.path.isfile(shipped):
        print(f"[1/4] no pretrained model at {shipped} (data/train_demo128.py trains it); skipped")
        return None
    config = _load(SHIPPED_CONFIG)
    print(f"[1/4] the pretrained model {shipped}: reconstructing the held-out clips of data/demo128 "
          f"from their first frame")
    rows = held_out_report(config, shipped, os.path.join(out_dir, "pretrained"), motion=True)
    print_report(PRETRAINED_TITLE.format(shipped=shipped), rows)
    video = os.path.join(out_dir, "animation.mp4")
    print(f"\n[2/4] animating {os.path.relpath(SHIPPED_SOURCE, ROOT)} (a face the model never saw) with "
          f"{os.path.relpath(SHIPPED_DRIVING, ROOT)}, then the same face pasted back into its whole photo")
    run_animation(config, shipped, SHIPPED_SOURCE, SHIPPED_DRIVING, video, mode="relative", crop="none", audio=False)
    side_by_side_image(SHIPPED_SOURCE, SHIPPED_DRIVING, video, os.path.join(out_dir, "side_by_side.png"))
    photo = write_full_photo(os.path.join(out_dir, "astronaut.png"))
    pasted = os.path.join(out_dir, "animation_pasted.mp4")
    run_animation(config, shipped, photo, SHIPPED_DRIVING, pasted, mode="relative", crop="face", audio=False,
                  paste_back=True)
    unseen = motion_correlation(video, SHIPPED_DRIVING)
    print(f"unseen face: landmark motion r {unseen['pearson']:.3f} against the driving clip "
          f"({unseen['steps']} of {unseen['steps_total']} frame steps with a face in both)")
    return rows, {"pearson": unseen["pearson"], "video": video, "pasted": pasted}


def short_training(args, log_dir: str, checkpoint: str) -> dict:
    """[3/4]: train config/demo.yaml from scratch on data/demo (or reuse a finished run), copy it to `checkpoint`."""
    from modules import build_models
    from train import train

    config = _load(CONFIG, args.epochs, args.steps_per_epoch)
    trained = os.path.join(log_dir, "checkpoint.pth.tar")
    done = os.path.exists(trained) and not args.retrain and \
        torch.load(trained, weights_only=True, map_location="cpu").get("epoch", -1) + 1 >= \
        config["train_params"]["num_epochs"]
    if done:
        print(f"[3/4] using the short run's model {trained} (--retrain to train again)")
    else:
        print(f"[3/4] training {os.path.relpath(CONFIG, ROOT)} from scratch on data/demo "
              f"({config['train_params']['num_epochs']} epochs, CPU) -> {log_dir}")
        resume = trained if os.path.exists(trained) and not args.retrain else None
        if args.retrain and os.path.isdir(log_dir):
            shutil.rmtree(log_dir)
        torch.manual_seed(0)
        train(config, build_models(config), log_dir, checkpoint=resume)
    os.makedirs(os.path.dirname(checkpoint), exist_ok=True)
    shutil.copyfile(trained, checkpoint)
    return config


def training_curves(log_dir: str, path: str) -> str | None:
    """[4/4] the PNG of the losses per epoch: the short run, and the shipped model's run when its log is here."""
    from utils.curves import plot_curves, read_loss_log

    runs = {}
    if os.path.isfile(SHIPPED_LOG):
        runs["pretrained model (config/demo128.yaml)"] = read_loss_log(SHIPPED_LOG)
    short_log = os.path.join(log_dir, "log.txt")
    if os.path.isfile(short_log):
        runs["short run (config/demo.yaml)"] = read_loss_log(short_log)
    return plot_curves(runs, path) if runs else None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--retrain", action="store_true", help="train the short run again even if it finished")
    parser.add_argument("--no_training", action="store_true", help="only the pretrained model (steps 1, 2)")
    parser.add_argument("--epochs", type=int, default=None, help="override the short run's num_epochs")
    parser.add_argument("--steps_per_epoch", type=int, default=None, help="cap the short run's steps per epoch")
    parser.add_argument("--shipped", default=SHIPPED, help="the pretrained model of steps 1-2 (config/demo128.yaml)")
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

    t0 = time.time()
    os.makedirs(out_dir, exist_ok=True)
    shipped = shipped_model(out_dir, args.shipped)
    t_shipped = time.time() - t0
    short = None
    if not args.no_training:
        config = short_training(args, log_dir, checkpoint)
        t_train = time.time() - t0 - t_shipped
        print("      reconstructing the short run's held-out clips (data/demo)")
        short = held_out_report(config, checkpoint, os.path.join(out_dir, "short_run"), motion=True)
        if shipped is None:  # no shipped model: the short run animates the photo
            video = os.path.join(out_dir, "animation.mp4")
            driving = os.path.join(ROOT, "data", "demo", "test", "carphone#003.png")
            source = os.path.join(ROOT, "data", "demo", "source.png")
            run_animation(config, checkpoint, source, driving, video, mode="relative", crop="none", audio=False)
            side_by_side_image(source, driving, video, os.path.join(out_dir, "side_by_side.png"))
    curves = training_curves(log_dir, os.path.join(out_dir, "training_curves.png"))

    print("\nheld-out reconstruction L1 (lower is better; pixel values in [0, 1]); ratio = model / repeat source")
    if shipped is not None:
        print_report(PRETRAINED_TITLE.format(shipped=args.shipped), shipped[0])
    if short is not None:
        print_report("short run from scratch, 64 px (config/demo.yaml); motion r: landmark motion vs the driving clip",
                     short)
    if shipped is not None:
        print(f"\nunseen face (data/demo128/source.png) driven by {os.path.basename(SHIPPED_DRIVING)}: "
              f"landmark motion r {shipped[1]['pearson']:.3f}")
    print(f"\nanimation       {os.path.join(out_dir, 'animation.mp4')}\n"
          f"side by side    {os.path.join(out_dir, 'side_by_side.png')}")
    if shipped is not None:
        print(f"pasted back     {shipped[1]['pasted']}")
    if curves:
        print(f"training curves {curves}")
    if short is not None:
        print(f"short run       {checkpoint} (log {log_dir})")
    folders = [os.path.join(out_dir, name) for name, rows in (("pretrained", shipped), ("short_run", short)) if rows]
    print(f"reconstructions {', '.join(folders)}")
    total = time.time() - t0
    timing = f"time: pretrained model {t_shipped / 60:.1f} min"
    if short is not None:
        timing += f", training {t_train / 60:.1f} min"
    print(timing + f", total {total / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
