"""Entry point with the reference's flags: train, train_avd, reconstruction, evaluate.

    python run.py --config config/vox-256.yaml                      # train on one CPU/GPU
    torchrun --nproc_per_node=4 run.py --config config/vox-256.yaml # DDP, one process per GPU
    python run.py --config C --mode train --checkpoint log/x/checkpoint.pth.tar   # resume
    torchrun --max-restarts=3 --nproc_per_node=4 run.py --config C --log_dir log/run1 --checkpoint auto
                                                   # elastic: (re)start from log/run1's newest checkpoint
    python run.py --config C --mode train_avd --checkpoint log/x/checkpoint.pth.tar
    python run.py --config C --mode reconstruction --checkpoint P --log_dir log
    python run.py --config C --mode evaluate --log_dir log/x        # metrics of a reconstruction
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time

import torch


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="path to a YAML config")
    parser.add_argument("--mode", default="train", choices=["train", "reconstruction", "train_avd", "evaluate"])
    parser.add_argument("--log_dir", default="log", help="folder for the run's outputs")
    parser.add_argument("--checkpoint", default=None,
                        help="checkpoint to resume from / to evaluate; in train mode 'auto': --log_dir is the run "
                             "folder, resumed from its newest complete checkpoint (fresh start if none)")
    parser.add_argument("--dist_timeout", type=float, default=600,
                        help="seconds a collective may wait for the other ranks before failing (under torchrun)")
    parser.add_argument("--device_ids", default=None,
                        help="(reference flag) ignored: use torchrun --nproc_per_node=N for several GPUs")
    parser.add_argument("--device", default=None, help="cpu, cuda (default: cuda if available)")
    parser.add_argument("--verbose", action="store_true", help="(reference flag) accepted, no effect")
    return parser.parse_args(argv)


def run_folder(args, config_path: str) -> str:
    """The reference's naming: resume into the checkpoint's folder, else `<log_dir>/<config>_<time>`."""
    from utils import dist as du

    if args.checkpoint == "auto" and args.mode == "train":
        return os.path.abspath(args.log_dir)
    if args.checkpoint and args.mode == "train":
        return os.path.dirname(os.path.abspath(args.checkpoint))
    if args.mode == "train_avd":
        folder = os.path.dirname(os.path.abspath(args.checkpoint))
        # AVD outputs never go where the main run's checkpoints are
        return folder if os.path.basename(args.checkpoint).startswith("avd") else os.path.join(folder, "avd")
    if args.mode in ("reconstruction", "evaluate"):
        return args.log_dir
    name = os.path.splitext(os.path.basename(config_path))[0] + time.strftime("_%Y%m%d-%H%M%S")
    return du.broadcast_object(os.path.join(args.log_dir, name))  # every rank writes to rank 0's folder


def resume_checkpoint(args, log_dir: str) -> str | None:
    """--checkpoint as given, or for 'auto' the newest complete checkpoint in `log_dir` (rank 0 decides)."""
    if args.checkpoint != "auto":
        return args.checkpoint
    from modules.checkpoint import latest_checkpoint
    from utils import dist as du

    found = du.broadcast_object(latest_checkpoint(log_dir) if du.is_main_process() else None)
    if du.is_main_process():
        print(f"--checkpoint auto: {'resuming from ' + found if found else 'no checkpoint in ' + log_dir + ', fresh start'}",
              file=sys.stderr)
    return found


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.device_ids:
        print("note: --device_ids is ignored; for several GPUs run "
              "`torchrun --nproc_per_node=N run.py --config ...`", file=sys.stderr)
    from datasets import DatasetError
    from modules import CheckpointError, build_models
    from modules.perceptual import PerceptualWeightsError
    from utils import dist as du
    from utils.config import ConfigError, load_config
    from utils.video import MediaError

    try:
        config = load_config(args.config)
        if args.mode == "evaluate":
            from evaluation.cli import main as evaluate_main

            return evaluate_main(["--log_dir", args.log_dir])
        if args.mode == "reconstruction":
            from reconstruction import main as reconstruction_main

            extra = ["--checkpoint", args.checkpoint] if args.checkpoint else []
            extra += ["--device", args.device] if args.device else []
            return reconstruction_main(["--config", args.config, "--log_dir", args.log_dir] + extra)
        if args.mode == "train_avd" and not args.checkpoint:
            raise ValueError("--mode train_avd needs --checkpoint (the main run's checkpoint)")
        if args.checkpoint == "auto" and args.mode != "train":
            raise ValueError("--checkpoint auto is for --mode train")
        device = du.init_from_env(None if args.device is None else torch.device(args.device).type,
                                  timeout_s=args.dist_timeout)
        log_dir = run_folder(args, args.config)
        models = build_models(config)
        if args.mode == "train":
            from train import train

            summary = train(config, models, log_dir, checkpoint=resume_checkpoint(args, log_dir), device=device)
        else:
            from train import train_avd

            summary = train_avd(config, models, args.checkpoint, log_dir, device=device)
        if du.is_main_process():
            print(f"done: {summary['epochs_run']} epoch(s); checkpoint {summary['checkpoint']}")
        du.cleanup()
        return 0
    except (ConfigError, CheckpointError, DatasetError, MediaError, PerceptualWeightsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
