"""What `precision: auto` picks on this machine and whether it pays: fp32 against bf16 for a matmul and a conv.

    .venv/bin/python bench/bench_precision.py [--threads 2] [--rounds 3]

Prints the CPU's bf16-related flags, what `utils.precision.resolve_precision('auto', 'cpu')` chooses, and
the best of `--rounds` times of a 512 x 512 matmul and a 3x3 conv (4 x 64 x 128 x 128, channels-last) per
dtype, with GFLOP/s. Where bf16 is not faster than fp32 here, `auto` should not pick it.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from utils.precision import CPU_BF16_FLAGS, CPU_FP16_FLAGS, cpu_flags, resolve_precision  # noqa: E402


def best_time(fn, rounds: int) -> float:
    fn()  # warm-up (oneDNN primitive creation)
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    flags = sorted(set(cpu_flags()) & set(CPU_BF16_FLAGS + CPU_FP16_FLAGS))
    print(f"cpu flags: {', '.join(flags) or 'none of ' + ', '.join(CPU_BF16_FLAGS)}; "
          f"torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}, {args.threads} threads")
    print(f"auto: {resolve_precision('auto', 'cpu').line()}")
    n, (b, c, h, w) = 512, (4, 64, 128, 128)
    for dtype in (torch.float32, torch.bfloat16):
        x, y = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        image = torch.randn(b, c, h, w).to(dtype).contiguous(memory_format=torch.channels_last)  # B x C x H x W
        conv = torch.nn.Conv2d(c, c, 3, padding=1).to(dtype).to(memory_format=torch.channels_last)
        with torch.inference_mode():
            mm = best_time(lambda: x @ y, args.rounds)
            cv = best_time(lambda: conv(image), args.rounds)
        print(f"{str(dtype).replace('torch.', ''):9s} matmul {n}: {mm * 1e3:7.1f} ms ({2 * n ** 3 / mm / 1e9:6.1f} GFLOP/s)"
              f"   conv3x3 {b}x{c}x{h}x{w}: {cv * 1e3:7.1f} ms ({2 * b * c * c * 9 * h * w / cv / 1e9:6.1f} GFLOP/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
