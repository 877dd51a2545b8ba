"""Trains the built-in pretrained model (config/demo128.yaml on data/demo128) in resumable pieces.

    .venv/bin/python data/train_demo128.py --minutes 60      # one piece; run it again to go on
    .venv/bin/python data/train_demo128.py --device cuda     # on a GPU, all epochs in one go

Each run resumes from `<log_dir>/checkpoint.pth.tar` when there is one (the trainer's
`--checkpoint`: it resumes at the very step where the last piece stopped, bit for bit).
After `--minutes` the run asks the trainer to stop (as Ctrl-C or SIGTERM do): it saves
the checkpoint at the next step boundary and exits. The process lowers its priority
(`--nice`) and uses `--threads` CPU threads (default 1), so tests keep their cores.

When the last epoch is done, the networks animation needs (keypoint detector, dense
motion, inpainting) are exported weights-only in fp16 to `--export`
(checkpoints/demo128.pth.tar). `modules.load_checkpoint` loads that file into the fp32
networks (`load_state_dict` copies and casts), so it is used like any checkpoint:

    .venv/bin/python animate.py --config config/demo128.yaml --checkpoint checkpoints/demo128.pth.tar ...
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

CONFIG = os.path.join(ROOT, "config", "demo128.yaml")
ANIMATION_NETWORKS = ("kp_detector", "dense_motion_network", "inpainting_network")


def export_fp16(checkpoint: str, path: str, networks: tuple[str, ...] = ANIMATION_NETWORKS) -> dict:
    """Write `networks`' weights from a training checkpoint, floats stored as fp16, plus 'epoch'; returns sizes.

    Integer buffers (BatchNorm's `num_batches_tracked`) stay as they are. Loading casts back to fp32.
    """
    from modules.checkpoint import read_checkpoint, write_checkpoint_file

    data = read_checkpoint(checkpoint)
    missing = [name for name in networks if name not in data]
    if missing:
        raise ValueError(f"{checkpoint} has no {', '.join(missing)}")
    out: dict = {name: {k: (v.half() if v.is_floating_point() else v) for k, v in data[name].items()}
                 for name in networks}
    out["epoch"] = int(data.get("epoch", -1))
    out["precision"] = "fp16"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_checkpoint_file(out, path)
    return {"path": path, "bytes": os.path.getsize(path), "epoch": out["epoch"]}


def limit_resources(threads: int, niceness: int) -> None:
    """Lower this process's priority and cap the CPU threads of torch and its BLAS/OpenMP pools."""
    if niceness > 0 and hasattr(os, "nice"):
        os.nice(niceness)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    import torch

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)


def stop_after(minutes: float | None) -> threading.Timer | None:
    """After `minutes`, send this process SIGTERM: the trainer saves at the next step and returns."""
    if minutes is None:
        return None
    timer = threading.Timer(minutes * 60.0, lambda: os.kill(os.getpid(), signal.SIGTERM))
    timer.daemon = True
    timer.start()
    return timer


def run_piece(config: dict, log_dir: str, device: str, minutes: float | None) -> dict:
    """Train from scratch or resume from `log_dir`'s checkpoint, for at most `minutes`; the trainer's summary."""
    import torch

    from modules import build_models
    from train import train

    last = os.path.join(log_dir, "checkpoint.pth.tar")
    resume = last if os.path.exists(last) else None
    torch.manual_seed(int(config["train_params"]["seed"]))
    timer = stop_after(minutes)
    try:
        return train(config, build_models(config), log_dir, checkpoint=resume, device=torch.device(device))
    finally:
        if timer is not None:
            timer.cancel()


def finished(checkpoint: str, num_epochs: int) -> bool:
    """True when `checkpoint` was saved at the end of the last epoch (not in the middle of one)."""
    import torch

    data = torch.load(checkpoint, map_location="cpu", weights_only=True)
    return int(data.get("epoch", -1)) + 1 >= num_epochs and int(data.get("resume_step", 0)) == 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=CONFIG)
    parser.add_argument("--log_dir", default=os.path.join(ROOT, "log", "demo128"))
    parser.add_argument("--export", default=os.path.join(ROOT, "checkpoints", "demo128.pth.tar"),
                        help="where the fp16 animation weights go once training is complete")
    parser.add_argument("--minutes", type=float, default=None, help="stop (and save) after this long")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    parser.add_argument("--nice", type=int, default=10, help="priority decrease (default 10)")
    parser.add_argument("--epochs", type=int, default=None, help="override train_params.num_epochs")
    parser.add_argument("--steps_per_epoch", type=int, default=None, help="cap steps per epoch (smoke runs)")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default=None,
                        help="override train_params.precision: bf16 autocast (with channels-last) is about 1.8x "
                             "faster on CPUs with AMX (1.3 against 2.3 s per step on a 2-core Xeon) and faster on CPUs "
                             "with AVX-512 BF16 (2-core AMD EPYC, 1 thread: 13.9 against 17.8 CPU-s for start-up and 3 "
                             "steps; the ResNet-18 keypoint detector's forward and backward 0.53 against 1.25 CPU-s); "
                             "measure before using it on a CPU with neither")
    args = parser.parse_args(argv)
    limit_resources(args.threads, args.nice)

    from modules.family import load_config

    config = load_config(args.config)
    tp = config["train_params"]
    if args.epochs is not None:
        tp["num_epochs"] = args.epochs
    if args.steps_per_epoch is not None:
        tp["max_steps_per_epoch"] = args.steps_per_epoch
    if args.precision is not None:
        tp["precision"] = args.precision
        tp["channels_last"] = args.precision == "bf16"
    root_dir = config["dataset_params"]["root_dir"]
    if not os.path.isabs(root_dir):
        config["dataset_params"]["root_dir"] = os.path.join(ROOT, root_dir)
    t0 = time.time()
    summary = run_piece(config, args.log_dir, args.device, args.minutes)
    minutes = (time.time() - t0) / 60.0
    last = summary["checkpoint"]
    if not finished(last, int(tp["num_epochs"])):
        print(f"piece done in {minutes:.1f} min ({summary['epochs_run']} epochs completed); "
              f"run again to resume from {last}")
        return 0
    info = export_fp16(last, args.export)
    print(f"training complete (epoch {info['epoch']}) in {minutes:.1f} min this piece; "
          f"exported {info['path']} ({info['bytes'] / 2**20:.1f} MiB, fp16)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
