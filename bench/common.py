"""Shared pieces of the benchmarks: models, real frames, machine peaks, FLOP counts, timing, memory."""
from __future__ import annotations

import os
import platform
import resource
import statistics
import sys
import time
from typing import Callable

# Idle OpenMP threads sleep instead of spinning. On a 2-core machine shared with other processes a
# spinning thread waits for a descheduled peer at every parallel region: a tiny model ran 30x slower
# (2.7 s vs 0.09 s per frame at load 4). Set before torch loads libgomp; an explicit value wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402

DATA = os.path.join(ROOT, "tests", "data")
SOURCE_CLIP = os.path.join(DATA, "single_face.mp4")
DRIVING_CLIP = os.path.join(DATA, "carphone.mp4")


def load_models(config: str, checkpoint: str | None = None) -> dict:
    """The config's networks in eval mode: checkpoint weights, or the family's seeded recipe when none is given."""
    from modules import build_models, family_of, load_checkpoint, load_config
    from modules.fomm.weight_recipe import fill_fomm_models
    from utils.weight_recipe import fill_models

    resolved = load_config(config)
    models = build_models(resolved)
    if checkpoint:
        load_checkpoint(checkpoint, models)
    elif family_of(resolved).name == "fomm":
        fill_fomm_models(models)
    elif family_of(resolved).name == "mraa":
        from modules.mraa.weight_recipe import fill_mraa_models
        fill_mraa_models(models)
    else:
        fill_models(models)
    for m in models.values():
        m.eval()
    return models


def real_frames(size: int, count: int, step: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Source (1, 3, S, S): first frame of single_face.mp4; driving (count, 3, S, S): carphone.mp4 every `step`."""
    from utils.video import open_video, square_frames

    source = square_frames(open_video(SOURCE_CLIP).get_frames([0]), size)
    reader = open_video(DRIVING_CLIP)
    idx = [(i * step) % reader.num_frames for i in range(count)]
    return source, square_frames(reader.get_frames(idx), size)


def machine_info(threads: int) -> dict:
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = line
                    break
        model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                     platform.processor())
    except OSError:
        model = platform.processor()
    isa = [f for f in ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_fp16", "amx_fp16")
           if f" {f}" in flags]
    return {"cpu": model, "cores": os.cpu_count(), "threads": threads, "isa": isa, "torch": torch.__version__,
            "loadavg": os.getloadavg()}


def matmul_peak(dtype: torch.dtype, n: int = 2048, seconds: float = 3.0) -> float:
    """Best measured GFLOP/s of an n x n matmul in `dtype` (the machine's practical peak).

    n shrinks (by halves, down to 256) while one call would take over a second: a CPU without a
    fast kernel for `dtype` (bf16 matmul on an AMD EPYC without AMX: 5 s at n = 1024) still
    reports its rate in a few seconds.
    """
    trial = torch.randn(256, 256).to(dtype)
    t0 = time.perf_counter()
    torch.mm(trial, trial)
    per_flop = (time.perf_counter() - t0) / (2 * 256 ** 3)
    while n > 256 and 2 * n ** 3 * per_flop > 1.0:
        n //= 2
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    best, t_end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def count_flops(fn: Callable[[], object]) -> float:
    """FLOPs of one call of `fn` (matmuls and convolutions, torch.utils.flop_counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _status_mb(key: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Restart the peak-RSS count from the current RSS (Linux /proc/self/clear_refs); False if unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident set size of this process (MB) since start or the last `reset_peak_rss`."""
    hwm = _status_mb("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.float() - b.float()) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
