"""Video reconstruction, the evaluation protocol of FOMM (Sec. 4.1) and TPSMM (Sec. 4.1).

Every test video is animated from its own first frame: source = frame 0, driving =
every frame, background predictor on when the model has one; the prediction should
reproduce the driving frame. Frames are read, run through the networks and written
in batches, so a video is never held in memory whole.

Outputs, under `<log_dir>/reconstruction/`:

    png/<video>/000000.png ...  generated frames, lossless (what `python -m evaluation` reads)
    mp4/<video>.mp4             source | driving | generated, side by side (H.264)
    l1.csv                      video, frames, l1, l1_png
    l1.json                     overall and per-video L1, checkpoint, epoch, config, dataset
    config.yaml                 the resolved config used

`l1` is mean |prediction - driving| over pixels and channels in [0, 1] with the float
prediction (the reference code's number); `l1_png` uses the rounded 8-bit frames that
were written, so it can be recomputed from the PNGs exactly. Overall values average
all frames of all videos (as the reference prints), `l1_video_mean` averages videos.

    python reconstruction.py --config config/vox-256.yaml --checkpoint checkpoints/vox.pth.tar --log_dir log/vox
"""
from __future__ import annotations

import argparse
import csv
import datetime
import io
import json
import os
import sys
from typing import Any, Mapping, Optional

import numpy as np
import torch
from torch import nn

from evaluation.videos import dataset_test_videos, resize_frames, to_uint8
from modules.checkpoint import CheckpointError, load_checkpoint, unwrap
from modules.family import load_config
from utils.config import save_config
from utils.errors import UserError
from utils.io import write_text
from utils.precision import CHOICES as PRECISION_CHOICES
from utils.frame_size import frame_size
from utils.video import MediaError, open_video

OUTPUT_DIR = "reconstruction"


class Reconstructor:
    """Reconstruct driving frames from one source frame: the animation engine in mode 'standard'.

    TPSMM: `modules.animation.Animator(background=True)` when the models have a bg_predictor
    (the reference protocol); FOMM: `FOMMAnimator` (absolute keypoints). The source's
    keypoints, downsampled copy, heatmaps and encoder features are computed once; `__call__`
    takes a batch of driving frames (T, 3, H, W) and returns the predictions (T, 3, H, W) in [0, 1].
    """

    def __init__(self, models: Mapping[str, nn.Module], source: torch.Tensor, precision: str = "fp32"):
        if source.dim() != 4 or source.shape[0] != 1 or source.shape[1] != 3:
            raise ValueError(f"source must be (1, 3, H, W), got {tuple(source.shape)}")
        from modules.family import family_of_models

        engine = family_of_models(models).animator_class()  # the family's animator
        self.engine = engine(dict(models), source, mode="standard", precision=precision,
                             background="bg_predictor" in models)

    def __call__(self, driving: torch.Tensor) -> torch.Tensor:
        return self.engine(driving)  # T x 3 x H x W


def load_weights(models: dict[str, nn.Module], checkpoint: Optional[str]) -> dict[str, Any]:
    """Load a checkpoint for reconstruction; returns {'epoch', 'bg_predictor'} and drops unused networks.

    The AVD network is not used. A TPSMM checkpoint saved before `bg_start` has no
    `bg_predictor`: then reconstruction runs without it (as the reference's
    `bg_predictor=None`), and the result records it.
    """
    models.pop("avd_network", None)
    if checkpoint is None:
        return {"epoch": None, "bg_predictor": "bg_predictor" in models}
    core = {k: v for k, v in models.items() if k != "bg_predictor"}
    rest = load_checkpoint(checkpoint, core)
    if "bg_predictor" in models:
        state = rest.get("bg_predictor")
        if state is None:
            models.pop("bg_predictor")
        else:
            load_checkpoint_part(checkpoint, "bg_predictor", models["bg_predictor"], state)
    # MRAA's checkpoints name the stage: `epoch_reconstruction` (the networks' own), `epoch_avd` (a published file)
    epoch = next((rest[k] for k in ("epoch", "epoch_reconstruction", "epoch_avd") if k in rest), None)
    return {"epoch": int(epoch) if isinstance(epoch, (int, float)) else None, "bg_predictor": "bg_predictor" in models}


def load_checkpoint_part(path: str, name: str, module: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Strictly load one network's state dict, with a one-line CheckpointError on mismatch."""
    try:
        unwrap(module).load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint {path} does not match the config: {name}: "
                              f"{str(err).strip().splitlines()[-1].strip()[:200]}") from None


def write_l1_tables(out_dir: str, summary: Mapping[str, Any]) -> None:
    """l1.csv (one row per video) and l1.json (the whole summary), written atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["video", "frames", "l1", "l1_png"])
    for name, row in summary["videos"].items():
        writer.writerow([name, row["frames"], f"{row['l1']:.8f}", f"{row['l1_png']:.8f}"])
    writer.writerow(["ALL", summary["frames"], f"{summary['l1']:.8f}", f"{summary['l1_png']:.8f}"])
    write_text(os.path.join(out_dir, "l1.csv"), buffer.getvalue())
    write_text(os.path.join(out_dir, "l1.json"), json.dumps(summary, indent=2) + "\n")


def reconstruct_video(models: Mapping[str, nn.Module], path: str, size: tuple[int, int], png_dir: str,
                      mp4_path: Optional[str], device: str | torch.device = "cpu", batch_size: int = 16,
                      progress=None, precision: str = "fp32") -> dict[str, Any]:
    """Reconstruct one video from its first frame; write its PNGs (and mp4); return its per-frame L1s."""
    from utils.media import FFmpegWriter, PngFolderWriter, WriterGroup

    reader = open_video(path)
    writers = [PngFolderWriter(png_dir)]
    if mp4_path is not None:
        writers.append(FFmpegWriter(mp4_path, fps=reader.fps or 25.0))
    l1, l1_png = [], []
    try:
        reconstructor = None
        source_u8 = None
        batch: list[np.ndarray] = []
        frames = iter(reader)
        while True:
            batch = [frame for _, frame in zip(range(batch_size), frames)]
            if not batch:
                break
            driving = resize_frames(np.stack(batch), size).to(device)  # T x 3 x H x W
            if reconstructor is None:
                reconstructor = Reconstructor(models, driving[:1], precision=precision)
                source_u8 = to_uint8(driving[:1])[0]
            prediction = reconstructor(driving).float().clamp(0, 1)  # T x 3 x H x W
            pred_u8 = to_uint8(prediction)  # T x H x W x 3
            png = resize_frames(pred_u8, size).to(device)  # T x 3 x H x W, float32 k/255 as read back
            l1 += (prediction.double() - driving.double()).abs().mean(dim=(1, 2, 3)).tolist()
            l1_png += (png.double() - driving.double()).abs().mean(dim=(1, 2, 3)).tolist()
            writers[0].write_batch(pred_u8)
            if mp4_path is not None:
                driving_u8 = to_uint8(driving)
                for d, p in zip(driving_u8, pred_u8):
                    writers[1].write(np.concatenate([source_u8, d, p], axis=1))  # H x 3W x 3
            if progress is not None:
                progress.update(len(batch))
        if not l1:
            raise MediaError(f"video has no frames: {path}")
        WriterGroup(writers).finish_and_publish()
    except BaseException:
        WriterGroup(writers).abort()
        raise
    return {"frames": len(l1), "l1": float(np.mean(l1)), "l1_png": float(np.mean(l1_png)),
            "l1_per_frame": l1, "l1_png_per_frame": l1_png}


def reconstruction(config: Mapping[str, Any] | str, models: dict[str, nn.Module], checkpoint: Optional[str],
                   log_dir: str, dataset_root: Optional[str] = None, device: str | torch.device = "cpu",
                   batch_size: Optional[int] = None, max_videos: Optional[int] = None, write_mp4: bool = True,
                   progress: bool = True, precision: str = "fp32") -> dict[str, Any]:
    """Reconstruct every test video of the dataset (sorted `<root>/test/` entries) and report L1.

    precision: fp32 by default (the L1 is the measurement); 'auto' (`utils.precision`), bf16 or fp16 for a
    quicker look, the choice printed, an emulated one with a one-line warning.

    config: resolved config dict or YAML path; models: `modules.build_models(config)`
    (weights from `checkpoint`, or left as they are when it is None); dataset_root
    overrides `dataset_params.root_dir`; batch_size defaults to `evaluation_params.batch_size`.
    Returns the summary also written to `<log_dir>/reconstruction/l1.json`.
    """
    from tqdm import tqdm

    requested = config  # frame_shape as written (null: frames as stored)
    config = load_config(config)
    root = dataset_root or config["dataset_params"]["root_dir"]
    if not root:
        raise MediaError("no dataset: set dataset_params.root_dir in the config or pass --dataset_root")
    videos = dataset_test_videos(root)
    if max_videos is not None:
        videos = videos[:max_videos]
    batch_size = int(batch_size or config["evaluation_params"]["batch_size"])
    if batch_size < 1:
        raise UserError(f"batch_size must be >= 1, got {batch_size}")
    size = frame_size(requested, root_dir=root)

    models = dict(models)  # load_weights drops unused networks from this copy only
    info = load_weights(models, checkpoint)
    if checkpoint is None:
        print("warning: no checkpoint given, reconstructing with the models' current (random) weights", file=sys.stderr)
    for model in models.values():
        model.to(device).eval()
    if precision != "fp32":
        from modules.family import family_of
        from utils.precision import resolve_precision

        try:
            chosen = resolve_precision(precision, torch.device(device), family_of(config).precisions)
        except ValueError as err:
            raise UserError(str(err)) from None
        print(f"warning: {chosen.warning}" if chosen.warning else f"reconstruction: {chosen.line()}", file=sys.stderr)
        precision = chosen.name

    # every test video opens and has frames (an empty frame folder is an error) before anything is created
    lengths = {name: len(open_video(path)) for name, path in videos}
    empty = [name for name, n in lengths.items() if n == 0]
    if empty:
        raise MediaError(f"test video {os.path.join(root, 'test', empty[0])} has no frames"
                         + (f" (and {len(empty) - 1} more)" if len(empty) > 1 else ""))
    total = sum(lengths.values())

    out_dir = os.path.join(log_dir, OUTPUT_DIR)
    os.makedirs(os.path.join(out_dir, "png"), exist_ok=True)
    if write_mp4:
        os.makedirs(os.path.join(out_dir, "mp4"), exist_ok=True)
    save_config(config, os.path.join(out_dir, "config.yaml"))
    per_video: dict[str, dict[str, Any]] = {}
    all_l1, all_png = [], []
    with tqdm(total=total, unit="frame", desc="reconstruction", disable=not progress, dynamic_ncols=True) as bar:
        for name, path in videos:
            bar.set_postfix_str(name[-40:])
            res = reconstruct_video(models, path, size, png_dir=os.path.join(out_dir, "png", name),
                                    mp4_path=os.path.join(out_dir, "mp4", f"{name}.mp4") if write_mp4 else None,
                                    device=device, batch_size=batch_size, progress=bar, precision=precision)
            all_l1 += res.pop("l1_per_frame")
            all_png += res.pop("l1_png_per_frame")
            per_video[name] = {"frames": res["frames"], "l1": res["l1"], "l1_png": res["l1_png"],
                               "source": os.path.abspath(path)}

    summary = {
        "l1": float(np.mean(all_l1)),
        "l1_png": float(np.mean(all_png)),
        "l1_video_mean": float(np.mean([v["l1"] for v in per_video.values()])),
        "frames": len(all_l1),
        "num_videos": len(per_video),
        "checkpoint": os.path.abspath(checkpoint) if checkpoint else None,
        "epoch": info["epoch"],
        "bg_predictor": info["bg_predictor"],
        "model_family": config["model_family"],
        "frame_shape": list(size),
        "dataset_root": os.path.abspath(root),
        "device": str(device),
        "batch_size": batch_size,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "protocol": "source = first frame of each test video, driving = every frame; "
                    "l1 = mean |prediction - driving| in [0, 1] over all frames of all videos",
        "videos": per_video,
    }
    write_l1_tables(out_dir, summary)
    print(f"reconstruction L1 {summary['l1']:.6f} (PNG {summary['l1_png']:.6f}) over {summary['frames']} frames "
          f"of {summary['num_videos']} videos -> {out_dir}")
    return summary


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Reconstruct every test video from its first frame; report L1.")
    parser.add_argument("--config", required=True, help="YAML config")
    parser.add_argument("--checkpoint", default=None, help="checkpoint (.pth.tar); omitted: random weights")
    parser.add_argument("--log_dir", required=True, help="outputs go to <log_dir>/reconstruction/")
    parser.add_argument("--dataset_root", default=None, help="overrides dataset_params.root_dir")
    parser.add_argument("--device", default=_default_device(), help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--batch_size", type=int, default=None, help="frames per forward (default evaluation_params.batch_size)")
    parser.add_argument("--max_videos", type=int, default=None, help="only the first N test videos")
    parser.add_argument("--no_mp4", action="store_true", help="skip the side-by-side mp4s")
    parser.add_argument("--evaluate", action="store_true",
                        help="then compute AKD/MKR/AED on the outputs (see python -m evaluation)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--precision", default="fp32", choices=PRECISION_CHOICES,
                        help="fp32 (default: the L1 is the measurement), auto (bf16 where the device runs it "
                             "natively, fp16 on older CUDA, else fp32), bf16 or fp16")
    args = parser.parse_args(argv)
    try:
        from modules import build_models

        config = load_config(args.config)
        models = build_models(config)
        reconstruction(args.config, models, args.checkpoint, args.log_dir, dataset_root=args.dataset_root,
                       device=args.device, batch_size=args.batch_size, max_videos=args.max_videos,
                       write_mp4=not args.no_mp4, progress=not args.quiet, precision=args.precision)
        if args.evaluate:
            from evaluation.cli import main as evaluate_main
            return evaluate_main(["--log_dir", args.log_dir, "--config", args.config]
                                 + (["--quiet"] if args.quiet else []))
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
