"""Training speed: one optimisation step of a family's training class (TPSMM by default, all four losses;
`--config config/mraa/vox256.yaml` for MRAA, `config/fomm/vox-256.yaml` for FOMM) at batch 1 and 4, with and
without channels-last and bf16 autocast, plus the data loader's share.

    .venv/bin/python bench/bench_train.py [--config config/vox-256.yaml] [--batches 1,4] [--steps 2]

Each variant trains a fresh copy of the same (seeded) networks through the trainer's own
code path (`train.TrainStep` over the family's `stages`, the autocast factory of train.py) on real 256 px
frame pairs, at an epoch where every loss (TPSMM: and the background predictor) is active. The perceptual network is VGG-19 with
seeded weights (`random_vgg19`: the published FLOPs, no download). Prints ms per step,
samples/s, FLOPs per step (forward + backward, torch.utils.flop_counter), the fraction
of the measured matmul peak, peak memory, and the time a training loop of the fastest
variant waits for the data loader (FramesDataset on the built-in clips, 0 and 1 workers).
"""
from __future__ import annotations

import argparse
import copy
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import torch  # noqa: E402

VARIANTS = {  # name: (channels_last, autocast precision)
    "fp32": (False, "fp32"),
    "fp32 channels-last": (True, "fp32"),
    "bf16 autocast": (False, "bf16"),
    "bf16 autocast + channels-last": (True, "bf16"),
}


def make_family(config: dict, models: dict, channels_last: bool):
    from modules.perceptual import build_perceptual
    from train import training_class

    models = copy.deepcopy(models)
    for m in models.values():
        m.train()
        if channels_last:
            m.to(memory_format=torch.channels_last)
    perceptual = build_perceptual("random_vgg19", None, seed=0)
    family = training_class(config["model_family"])(models, config, perceptual)
    for m in family.ddp_modules.values():
        m.train()
        if channels_last:
            m.to(memory_format=torch.channels_last)
    return family


def pairs(size: int, batch: int, channels_last: bool) -> dict:
    source, driving = common.real_frames(size, 2 * batch, step=7)
    out = {"source": driving[0::2].contiguous(), "driving": driving[1::2].contiguous()}
    if channels_last:
        out = {k: v.contiguous(memory_format=torch.channels_last) for k, v in out.items()}
    return out


def step(family, batch: dict, epoch: int, step_index: int, autocast) -> dict:
    b = batch["source"].shape[0]
    draws = family.draws(epoch, step_index, b, slice(0, b), torch.device("cpu"))
    from train import TrainStep

    losses, _ = TrainStep(family, autocast)(batch, epoch, draws)
    return losses


def loader_wait(config: dict, size: int, batch: int, workers: int, steps: int, train_step) -> dict:
    """Train `steps` steps on batches from FramesDataset (the built-in clips) with `workers` loader workers.

    Returns the mean time the loop waited for a batch (first batch excluded: worker start-up)
    and that wait's share of the wall time.
    """
    from torch.utils.data import DataLoader

    from datasets.frames_dataset import FramesDataset

    root = tempfile.mkdtemp(prefix="bench_data_")
    try:
        os.makedirs(os.path.join(root, "train"))
        for name in ("carphone.mp4", "single_face.mp4", "two_people_body.mp4"):
            shutil.copy(os.path.join(common.DATA, name), os.path.join(root, "train", name))
        dataset = FramesDataset(root, frame_shape=(size, size, 3), is_train=True,
                                augmentation_params=config["dataset_params"]["augmentation_params"], seed=0)
        indices = [i % len(dataset) for i in range(batch * (steps + 1))]
        loader = DataLoader(torch.utils.data.Subset(dataset, indices), batch_size=batch, num_workers=workers)
        waits = []
        t_wait = time.perf_counter()
        t_start = None
        for i, item in enumerate(loader):
            waits.append(time.perf_counter() - t_wait)
            if i == 0:
                t_start = time.perf_counter()
            train_step({"source": item["source"], "driving": item["driving"]}, i)
            t_wait = time.perf_counter()
        total = time.perf_counter() - t_start
        return {"wait_s": sum(waits[1:]) / max(1, len(waits) - 1), "first_s": waits[0],
                "wait_fraction": sum(waits[1:]) / total}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=os.path.join(common.ROOT, "config", "vox-256.yaml"))
    parser.add_argument("--batches", default="1,4")
    parser.add_argument("--steps", type=int, default=1, help="timed steps per variant and round (after a warm-up)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds over the variants (medians)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=None, help="frame size (default: the config's)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from train import make_autocast
    from modules.family import load_config

    config = load_config(args.config)
    tp = config["train_params"]
    epoch = int(tp.get("bg_start", 0))  # TPSMM: background predictor on, TPS dropout on: every loss active
    size = args.size or int(config["dataset_params"]["frame_shape"][0])
    info = common.machine_info(args.threads)
    peak32 = common.matmul_peak(torch.float32)
    peak16 = common.matmul_peak(torch.bfloat16, n=4096)
    print(f"# {info['cpu']}, {info['cores']} cores, {args.threads} threads, torch {info['torch']}, "
          f"ISA {' '.join(info['isa'])}, load average at start {info['loadavg'][0]:.1f}")
    print(f"# matmul peak: fp32 {peak32:.0f} GFLOP/s, bf16 {peak16:.0f} GFLOP/s; {size} px, epoch {epoch}")
    models = common.load_models(args.config)
    names = [v for v in args.variants.split(",") if v]
    batches = [int(x) for x in args.batches.split(",")]
    records = {}
    for b in batches:
        for r in range(args.rounds):  # rounds interleave the variants: the load of a shared machine drifts
            for name in names:
                channels_last, precision = VARIANTS[name]
                family = make_family(config, models, channels_last)
                autocast = make_autocast(precision, torch.device("cpu"))
                batch = pairs(size, b, channels_last)
                step(family, batch, epoch, 0, autocast)  # warm-up
                common.reset_peak_rss()
                rec = records.setdefault((b, name), {"wall": [], "cpu": [], "peak_mb": 0.0})
                for i in range(args.steps):
                    t0, c0 = time.perf_counter(), time.process_time()
                    losses = step(family, batch, epoch, i + 1, autocast)
                    rec["wall"].append(time.perf_counter() - t0)
                    rec["cpu"].append(time.process_time() - c0)
                rec["peak_mb"] = max(rec["peak_mb"], common.peak_rss_mb())
                rec["loss"] = sum(float(v) for v in losses.values())
                if "flops" not in rec:
                    rec["flops"] = common.count_flops(lambda: step(family, batch, epoch, 0, autocast))
                print(f"# batch {b} {name} round {r}: {common.median(rec['wall'][-args.steps:]):.2f} s/step "
                      f"(load {os.getloadavg()[0]:.1f})", flush=True)
                del family
    peak32 = max(peak32, common.matmul_peak(torch.float32))
    peak16 = max(peak16, common.matmul_peak(torch.bfloat16, n=4096))
    print(f"# matmul peak (best of start and end): fp32 {peak32:.0f} GFLOP/s, bf16 {peak16:.0f} GFLOP/s")
    rows, step_time = [], {}
    for (b, name), rec in records.items():
        precision = VARIANTS[name][1]
        t, c = common.median(rec["wall"]), common.median(rec["cpu"])
        base, cpu_base = common.median(records[(b, names[0])]["wall"]), common.median(records[(b, names[0])]["cpu"])
        step_time[(b, name)] = t
        peak = peak16 if precision == "bf16" else peak32
        flops = rec["flops"]
        rows.append([b, name, f"{t:.2f}", f"{b / t:.2f}", f"{t / base:.2f}x", f"{c / cpu_base:.2f}x",
                     f"{flops / 1e9:.0f}", f"{flops / t / 1e9:.0f}",
                     f"{100 * flops / t / 1e9 / peak:.0f}% {'bf16' if precision == 'bf16' else 'fp32'}",
                     f"{rec['peak_mb']:.0f}", f"{rec['loss']:.3f}"])
    print()
    print(common.markdown_table(["batch", "variant", "s/step", "samples/s", f"time vs {names[0]}",
                                 "CPU time vs it", "GFLOP/step", "GFLOP/s", "of peak", "peak RSS (MB)",
                                 "loss sum (last step)"], rows))

    # the data loader feeding the fastest variant at the largest batch
    b = max(int(x) for x in args.batches.split(","))
    fastest = min((t, name) for (bb, name), t in step_time.items() if bb == b)[1]
    channels_last, precision = VARIANTS[fastest]
    family = make_family(config, models, channels_last)
    autocast = make_autocast(precision, torch.device("cpu"))

    def train_step(batch: dict, i: int) -> None:
        if channels_last:
            batch = {k: v.contiguous(memory_format=torch.channels_last) for k, v in batch.items()}
        step(family, batch, epoch, i, autocast)

    load_rows = []
    for workers in (0, 1):
        r = loader_wait(config, size, b, workers, steps=3, train_step=train_step)
        load_rows.append([b, fastest, workers, f"{r['wait_s'] * 1e3:.0f}", f"{100 * r['wait_fraction']:.1f}%",
                          f"{r['first_s'] * 1e3:.0f}"])
    print()
    print(common.markdown_table(["batch", "variant", "loader workers", "wait per step (ms)",
                                 "share of wall time waiting", "first batch (ms)"], load_rows))
    print(f"\n# load average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
