"""Entry point with the reference's flags: train, train_avd, reconstruction, animate, evaluate.

    python run.py --config config/vox-256.yaml                      # train on one CPU/GPU
    torchrun --nproc_per_node=4 run.py --config config/vox-256.yaml # DDP, one process per GPU
    python run.py --config config/vox-256.yaml --device_ids 0,1,2,3 # the same, run.py starts the processes
    python run.py --config C --mode train --checkpoint log/x/checkpoint.pth.tar   # resume
    torchrun --max-restarts=3 --nproc_per_node=4 run.py --config C --log_dir log/run1 --checkpoint auto
                                                   # elastic: (re)start from log/run1's newest checkpoint
    python run.py --config C --mode train_avd --checkpoint log/x/checkpoint.pth.tar
    python run.py --config C --mode reconstruction --checkpoint P   # -> <P's folder>/reconstruction/
    python run.py --config C --mode animate --checkpoint P          # -> <P's folder>/animation/ (FOMM protocol)
    python run.py --config C --mode evaluate --log_dir log/x        # metrics of a reconstruction
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import torch

from utils.errors import UserError


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="path to a YAML config")
    parser.add_argument("--mode", default="train", choices=["train", "reconstruction", "train_avd", "animate",
                                                             "evaluate"])
    parser.add_argument("--log_dir", default=None,
                        help="folder for the run's outputs (default: log; reconstruction and animate with "
                             "--checkpoint: the checkpoint's folder, as the reference)")
    parser.add_argument("--checkpoint", default=None,
                        help="checkpoint to resume from / to evaluate; in train mode 'auto': --log_dir is the run "
                             "folder, resumed from its newest complete checkpoint (fresh start if none)")
    parser.add_argument("--dist_timeout", type=float, default=600,
                        help="seconds a collective may wait for the other ranks before failing (under torchrun)")
    parser.add_argument("--device_ids", default=None,
                        help="GPU ids, e.g. 0,1,2,3: training starts one DDP process per id (as torchrun would); "
                             "with --device cpu, one gloo CPU process per id")
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


RUN_FOLDER_FILES = ("config.yaml", "log.txt", "tensorboard")  # what a run folder holds from its start (train.py)


def auto_resume(log_dir: str) -> tuple[str | None, str]:
    """`--checkpoint auto` in `log_dir`: (checkpoint or None for a fresh start, the line saying so).

    Resumes from the newest complete checkpoint (saying why when newer ones were passed over). A fresh
    start only in a new or empty folder, or a run folder (config.yaml / log.txt) with no checkpoint yet
    (a run stopped before its first). Any other folder is refused (UserError): one that holds run
    folders with checkpoints (the folder above the run, e.g. `runs/` for `runs/C_<time>/`) names the
    newest of them, since starting over there would throw that training away.
    """
    from modules.checkpoint import latest_checkpoint
    from utils.runlock import LOCK_NAME

    skipped: list[str] = []
    found = latest_checkpoint(log_dir, skipped=skipped)
    if found:
        why = f" (passed over newer: {'; '.join(skipped)})" if skipped else ""
        return found, f"--checkpoint auto: resuming from {found}{why}"
    entries = [e for e in os.listdir(log_dir) if e != LOCK_NAME] if os.path.isdir(log_dir) else []
    if skipped:
        raise UserError(f"--checkpoint auto: no checkpoint in {log_dir} reads ({'; '.join(skipped)}); "
                        f"give --checkpoint PATH of a good one, or a new --log_dir to start over")
    if not entries or any(name in entries for name in RUN_FOLDER_FILES):
        return None, f"--checkpoint auto: no checkpoint in {log_dir}, fresh start"
    runs = []  # (newest checkpoint's time, run folder) of the subfolders holding checkpoints (not read: names)
    for name in entries:
        sub = os.path.join(log_dir, name)
        files = [os.path.join(sub, f) for f in (os.listdir(sub) if os.path.isdir(sub) else [])
                 if f.endswith("checkpoint.pth.tar")]
        if files:
            runs.append((max(os.path.getmtime(f) for f in files), sub))
    if runs:
        newest = max(runs)[1]
        newest = newest if os.path.relpath(newest).startswith("..") else os.path.relpath(newest)
        raise UserError(f"--checkpoint auto: {log_dir} holds no checkpoint but {len(runs)} run folder(s) with "
                        f"checkpoints; did you mean --log_dir {newest}? (a new or empty folder starts over)")
    raise UserError(f"--checkpoint auto: {log_dir} is neither empty nor a run folder (no checkpoint, config.yaml "
                    f"or log.txt); give a run folder, or a new or empty --log_dir to start over")


def resume_checkpoint(args, log_dir: str) -> str | None:
    """--checkpoint as given, or for 'auto' `auto_resume(log_dir)` (rank 0 decides; every rank gets its
    answer, or its refusal as the same one-line error)."""
    if args.checkpoint != "auto":
        return args.checkpoint
    from utils import dist as du

    answer = None
    if du.is_main_process():
        try:
            answer = auto_resume(log_dir)
        except UserError as err:
            answer = (None, str(err), True)
    found, line, *refused = du.broadcast_object(answer)
    if refused:
        raise UserError(line)
    if du.is_main_process():
        print(line, file=sys.stderr)
    return found


def default_log_dir(args) -> str:
    """The reference's output folder: reconstruction/animate with a checkpoint write beside it, else `log`."""
    if args.log_dir is not None:
        return args.log_dir
    if args.mode in ("reconstruction", "animate") and args.checkpoint:
        return os.path.dirname(os.path.abspath(args.checkpoint))
    return "log"


def parse_device_ids(text: str) -> list[int]:
    try:
        ids = [int(part) for part in text.split(",") if part.strip() != ""]
    except ValueError:
        raise UserError(f"--device_ids must be comma-separated integers, got {text!r}") from None
    if not ids or len(set(ids)) != len(ids) or min(ids) < 0:
        raise UserError(f"--device_ids must list distinct non-negative ids, got {text!r}")
    return ids


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn_device_ids(argv: list[str], ids: list[int], on_cpu: bool) -> int:
    """Run this command once per id as a DDP process (the environment torchrun would give), wait for all.

    GPU: CUDA_VISIBLE_DEVICES lists the ids, so local rank i is GPU ids[i] (nccl). On the CPU
    (`--device cpu`) the ids only count the gloo processes. Ctrl-C / SIGTERM go to every process
    (each saves its checkpoint at the next step boundary); one failing stops the others.
    """
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
           "WORLD_SIZE": str(len(ids)), "LOCAL_WORLD_SIZE": str(len(ids))}
    if not on_cpu:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, ids))
    procs = [subprocess.Popen([sys.executable, os.path.abspath(__file__), *argv],
                              env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)})
             for rank in range(len(ids))]
    print(f"run.py: started {len(procs)} DDP processes for device ids {','.join(map(str, ids))} "
          f"({'gloo on the CPU' if on_cpu else 'nccl'})", file=sys.stderr)

    def forward(signum, frame):
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = 0
        while any(proc.poll() is None for proc in procs):
            failed = [proc for proc in procs if proc.poll() not in (None, 0)]
            if failed and code == 0:
                code = failed[0].returncode
                forward(signal.SIGTERM, None)
            time.sleep(0.2)
        codes = [proc.returncode for proc in procs]
        for rank, rc in enumerate(codes):
            print(f"run.py: rank {rank} (device id {ids[rank]}) exited with {rc}", file=sys.stderr)
        return code or next((rc for rc in codes if rc), 0)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def device_ids_launch(args, argv: list[str] | None) -> int | None:
    """--device_ids without torchrun: the exit code of the spawned training, or None to run here."""
    if not args.device_ids or "WORLD_SIZE" in os.environ:
        return None  # under torchrun / a spawned rank: the ids are already applied
    ids = parse_device_ids(args.device_ids)
    on_cpu = args.device is not None and torch.device(args.device).type == "cpu"
    if args.mode in ("train", "train_avd") and len(ids) > 1:
        return spawn_device_ids(list(sys.argv[1:] if argv is None else argv), ids, on_cpu)
    if not on_cpu and args.device is None and torch.cuda.is_available():
        if args.mode in ("train", "train_avd"):
            os.environ["LOCAL_RANK"] = str(ids[0])  # one process on that GPU
        else:
            args.device = f"cuda:{ids[0]}"
    return None


def animation_pairs(names: list[str], num_pairs: int, pairs_list: str | None = None,
                    seed: int = 0) -> list[tuple[int, int]]:
    """(driving index, source index) pairs of the reference's animation protocol (FOMM `animate_params`).

    Without a pairs list: `num_pairs` distinct pairs drawn without replacement (numpy's legacy
    generator, seed 0) from the grid of the first min(num_pairs, N) test videos. With a csv
    (columns `source`, `driving`, video names): its rows whose videos exist, in order, at most `num_pairs`.
    """
    if pairs_list is None:
        n = min(num_pairs, len(names))
        grid = np.mgrid[:n, :n].reshape(2, -1).T  # (n*n) x 2: (driving, source)
        count = min(grid.shape[0], num_pairs)
        chosen = np.random.RandomState(seed).choice(grid.shape[0], count, replace=False)
        return [(int(grid[i][0]), int(grid[i][1])) for i in chosen]
    import csv

    if not os.path.isfile(pairs_list):
        raise UserError(f"dataset_params.pairs_list {pairs_list} not found (the published lists ship in the FOMM "
                         f"repository's data/ folder); set it to null for seeded random pairs")
    index = {name: i for i, name in enumerate(names)}
    with open(pairs_list, newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("source") in index and r.get("driving") in index]
    return [(index[r["driving"]], index[r["source"]]) for r in rows[:num_pairs]]


def _animator(config: dict, models: dict, source: torch.Tensor):
    """The family's engine: FOMM with `animate_params.normalization_params`, MRAA in `animate_params.mode`
    (published: avd), TPSMM in relative mode."""
    if config["model_family"] == "fomm":
        from modules.fomm.animation import FOMMAnimator

        return FOMMAnimator(models, source, **config["animate_params"]["normalization_params"])
    if config["model_family"] == "mraa":
        from modules.mraa.animation import MRAAAnimator

        return MRAAAnimator(models, source, mode=config["animate_params"]["mode"])
    from modules.animation import Animator

    return Animator(models, source, mode="relative")


def animate_test_set(config: dict, config_path: str, checkpoint: str | None, log_dir: str,
                     device: str | None = None, batch_size: int = 8) -> dict:
    """`run.py --mode animate`: each protocol pair's source (first frame) animated by the driving video.

    Writes `<log_dir>/animation/png/<driving>-<source>.png` (the predictions side by side, as the
    reference) and `<log_dir>/animation/<driving>-<source><format>` (source | driving | prediction).
    """
    from evaluation.videos import dataset_test_videos, resize_frames, to_uint8
    from modules import build_models, load_checkpoint
    from utils.frame_size import frame_size
    from utils.media import open_writer
    from utils.video import open_video

    if not checkpoint:
        raise UserError("--mode animate needs --checkpoint")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    names = {"fomm": ("kp_detector", "generator"),
             "mraa": ("region_predictor", "generator")
             + (("avd_network",) if config.get("animate_params", {}).get("mode") == "avd" else ()),
             }.get(config["model_family"], ("kp_detector", "dense_motion_network", "inpainting_network"))
    built = build_models(config)
    models = {name: built[name] for name in names}
    load_checkpoint(checkpoint, models)
    for model in models.values():
        model.eval().to(dev)
    params = {"num_pairs": 50, "format": ".mp4", **(config.get("animate_params") or {})}
    videos = dataset_test_videos(config["dataset_params"]["root_dir"])
    pairs = animation_pairs([n for n, _ in videos], int(params["num_pairs"]),
                            config["dataset_params"].get("pairs_list"))
    size = frame_size(config, config_path)
    folder = os.path.join(log_dir, "animation")
    os.makedirs(os.path.join(folder, "png"), exist_ok=True)
    for driving_index, source_index in pairs:
        (driving_name, driving_path), (source_name, source_path) = videos[driving_index], videos[source_index]
        source = resize_frames(open_video(source_path).get_frames([0]), size).to(dev)  # 1 x 3 x H x W
        animator = _animator(config, models, source)
        reader = open_video(driving_path)
        result = f"{driving_name}-{source_name}"
        strip = []
        with open_writer(os.path.join(folder, result + params["format"]), fps=reader.fps) as writer:
            for start in range(0, reader.num_frames, batch_size):
                idx = list(range(start, min(start + batch_size, reader.num_frames)))
                driving = resize_frames(reader.get_frames(idx), size).to(dev)  # B x 3 x H x W
                prediction = to_uint8(animator(driving))  # B x H x W x 3
                strip.extend(prediction)
                shown = np.concatenate([to_uint8(source.expand(len(idx), -1, -1, -1)), to_uint8(driving),
                                        prediction], axis=2)  # B x H x 3W x 3
                writer.write_batch(shown)
        import imageio.v3 as iio

        iio.imwrite(os.path.join(folder, "png", result + ".png"), np.concatenate(strip, axis=1))
    return {"pairs": len(pairs), "folder": folder}


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        launched = device_ids_launch(args, argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if launched is not None:
        return launched
    args.log_dir = default_log_dir(args)
    from modules import build_models, load_config
    from utils import dist as du

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
        if args.mode == "animate":
            summary = animate_test_set(config, args.config, args.checkpoint, args.log_dir, device=args.device)
            print(f"done: {summary['pairs']} pair(s) -> {summary['folder']}")
            return 0
        if args.mode == "train_avd" and not args.checkpoint:
            raise UserError("--mode train_avd needs --checkpoint (the main run's checkpoint)")
        if args.checkpoint == "auto" and args.mode != "train":
            raise UserError("--checkpoint auto is for --mode train")
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
        main_process = du.is_main_process()  # before cleanup: afterwards every rank reads as rank 0
        du.cleanup()
        return report_training(summary, main_process)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def report_training(summary: dict, main_process: bool) -> int:
    """Print the run's outcome; the exit code: 0 done, 130 / 143 stopped by SIGINT / SIGTERM after saving
    (a scheduler can requeue the job and `--checkpoint auto` continues it)."""
    stopped_by = summary.get("signal")
    if main_process:
        saved = summary["checkpoint"] if os.path.isfile(summary["checkpoint"]) else "none written"
        verb = f"stopped by signal {stopped_by}" if stopped_by else "done"
        print(f"{verb}: {summary['epochs_run']} epoch(s); checkpoint {saved}")
    return 128 + int(stopped_by) if stopped_by else 0


if __name__ == "__main__":
    sys.exit(main())
