"""GPU speed in one short run (under 5 minutes on one GPU): animation per frame at batch 1 and 16 in
fp32, bf16 and fp16, and training samples/s with and without autocast.

    .venv/bin/python bench/gpu_bench.py [--config config/vox-256.yaml] [--checkpoint P]

Animation: the plain per-frame path (batch 1, fp32) and the engine (`Animator`) at each
precision and batch, timed with CUDA events after a warm-up, with the output's PSNR
against the engine's fp32 output on real frames, its largest difference to the plain
path, GFLOP/s and the fraction of the matmul peak measured in the same run (fp32 with
TF32 off unless --tf32). Training: the trainer's step
(`TPSMMTraining`, all losses, seeded VGG-19) in fp32, bf16 autocast and fp16 autocast
with a GradScaler, channels-last. `--device cpu --config tests/fixtures/tiny.yaml
--size 64` runs the same code on the CPU (a smoke test of this script).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import torch  # noqa: E402

from modules.animation import Animator, animate_plain  # noqa: E402


class Timer:
    """Wall time of a block, synchronised with the device."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        self._sync()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self._sync()
        self.seconds = time.perf_counter() - self.t0
        return False

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def timed(fn, device, repeats: int) -> float:
    fn()  # warm-up (cuDNN autotune, allocator)
    times = []
    for _ in range(repeats):
        with Timer(device) as t:
            fn()
        times.append(t.seconds)
    return common.median(times)


def device_peak(device, dtype: torch.dtype, n: int = 8192, repeats: int = 10) -> float:
    """Measured matmul GFLOP/s of an n x n product in `dtype` on `device` (synchronised)."""
    if device.type != "cuda":
        return common.matmul_peak(dtype, n=min(n, 2048), seconds=1.0)
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    return 2 * n ** 3 / timed(lambda: torch.mm(a, b), device, repeats) / 1e9


def animation(args, device, peaks: dict) -> list[list]:
    models = common.load_models(args.config, args.checkpoint)
    for m in models.values():
        m.to(device)
    source, driving = common.real_frames(args.size, max(args.batches))
    source, driving = source.to(device), driving.to(device)
    rows = []
    plain_out = animate_plain(source, driving[:2], models)
    plain_flops = common.count_flops(lambda: animate_plain(source, driving[:1], models))
    plain = timed(lambda: animate_plain(source, driving[:2], models), device, args.repeats) / 2
    rows.append(["plain (per frame)", "fp32", 1, f"{plain * 1e3:.1f}", f"{1 / plain:.1f}", "1.00x",
                 f"{plain_flops / plain / 1e9:.0f}", f"{plain_flops / plain / 1e9 / peaks['fp32']:.0%}", "-", "-", "-"])
    reference = Animator(models, source)(driving)
    for precision in ("fp32", "bf16", "fp16"):
        for b in args.batches:
            animator = Animator(models, source, precision=precision)
            out = torch.cat([animator(driving[i:i + b]) for i in range(0, driving.shape[0], b)])
            flops = common.count_flops(lambda: animator(driving[:b])) / b
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            t = timed(lambda: animator(driving[:b]), device, args.repeats) / b
            mem = f"{torch.cuda.max_memory_allocated(device) / 2 ** 20:.0f}" if device.type == "cuda" else "-"
            rate = flops / t / 1e9
            rows.append(["engine", precision, b, f"{t * 1e3:.2f}", f"{1 / t:.1f}", f"{plain / t:.2f}x", f"{rate:.0f}",
                         f"{rate / peaks[precision]:.0%}", f"{float((out[:2] - plain_out).abs().max()):.1e}",
                         f"{common.psnr(out, reference):.1f}", mem])
            print(f"# animation {precision} batch {b}: {t * 1e3:.2f} ms/frame", flush=True)
    return rows


def training(args, device) -> list[list]:
    from bench_train import make_family, pairs

    from modules.family import load_config
    from train import TrainStep, make_autocast

    config = load_config(args.config)
    epoch = int(config["train_params"]["bg_start"])
    models = common.load_models(args.config)
    rows = []
    base = None
    for precision in ("fp32", "bf16", "fp16"):
        if precision == "fp16" and device.type != "cuda":
            continue
        family = make_family(config, models, channels_last=True)
        for m in list(family.models.values()) + list(family.ddp_modules.values()):
            m.to(device)
        for opt in family.optimizers.values():  # optimizer state is created lazily on the parameters' device
            opt.zero_grad(set_to_none=True)
        autocast = make_autocast(precision, device)
        scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
        batch = {k: v.to(device) for k, v in pairs(args.size, args.train_batch, True).items()}

        def one_step(i=[0]):
            i[0] += 1
            b = batch["source"].shape[0]
            draws = family.draws(epoch, i[0], b, slice(0, b), device)
            TrainStep(family, autocast, scaler)(batch, epoch, draws)

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t = timed(one_step, device, args.repeats)
        base = base or t
        mem = f"{torch.cuda.max_memory_allocated(device) / 2 ** 20:.0f}" if device.type == "cuda" else "-"
        label = "fp32 (no autocast)" if precision == "fp32" else f"{precision} autocast"
        rows.append([label, args.train_batch, f"{t * 1e3:.0f}", f"{args.train_batch / t:.2f}", f"{base / t:.2f}x", mem])
        print(f"# training {label}: {t:.3f} s/step", flush=True)
        del family
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=os.path.join(common.ROOT, "config", "vox-256.yaml"))
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--train-batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tf32", action="store_true", help="allow TF32 in fp32 convolutions and matmuls")
    args = parser.parse_args()
    args.batches = [int(b) for b in args.batches.split(",")]
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            print("error: no CUDA device (use --device cpu for a smoke test)", file=sys.stderr)
            sys.exit(2)
        torch.backends.cudnn.benchmark = True
        name = torch.cuda.get_device_name(device)
    else:
        name = common.machine_info(torch.get_num_threads())["cpu"]
    if device.type == "cuda":
        # fp32 means fp32: TF32 convolutions/matmuls (PyTorch's cuDNN default) only with --tf32
        torch.backends.cudnn.allow_tf32 = args.tf32
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
    t_start = time.perf_counter()
    print(f"# {name}, torch {torch.__version__}, {args.size} px, weights {args.checkpoint or 'seeded recipe'}, "
          f"TF32 {'on' if args.tf32 else 'off'}")
    peaks = {name_: device_peak(device, dtype) for name_, dtype in
             (("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16))}
    print("# matmul peak GFLOP/s: " + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items()), flush=True)
    anim = animation(args, device, peaks)
    print()
    print(common.markdown_table(["path", "precision", "batch", "ms/frame", "frames/s", "speed-up vs plain",
                                 "GFLOP/s", "of peak", "max |diff| vs plain", "PSNR vs fp32 (dB)", "peak MB"], anim))
    train_rows = training(args, device)
    print()
    print(common.markdown_table(["training", "batch", "ms/step", "samples/s", "speed-up", "peak MB"], train_rows))
    print(f"\n# {name}; whole run {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
