"""Animation speed: the plain per-frame path against the engine's exact and reduced-precision paths, per family.

    .venv/bin/python bench/bench_animation.py [--families tpsmm,fomm,mraa] [--config config/vox-256.yaml]
        [--fomm-config config/fomm/vox-256.yaml] [--mraa-config config/mraa/vox256.yaml] [--checkpoint P]
        [--sizes 256,384,512] [--frames 8]
        [--batch 4] [--rounds 3] [--memory-batch 1] [--flat 1000]

Prints one table, every figure measured in this run on this machine:
- the machine's fp32 and bf16 matmul peak (GFLOP/s), so each path is also a fraction of it;
- per family (TPSMM: --config, FOMM: --fomm-config, MRAA: --mraa-config) and size: ms per frame of
  the plain path (the reference demo's loop: batch 1, one frame at a time, eval + no_grad, source
  re-encoded every frame; `animate_plain`, `animate_fomm_plain`, `animate_mraa_plain`) and of the
  engine (the family's animator, `Animator` / `FOMMAnimator` / `MRAAAnimator`: exact fp32, and
  bf16/fp16 convolutions), rounds interleaved,
  medians; the speed-up over plain; FLOPs per frame counted with torch.utils.flop_counter;
  achieved GFLOP/s and the fraction of the peak; the output difference to the plain fp32 path
  on real frames (max |diff| and PSNR), and of every path, plain included, to the plain path
  run in float64 on the first --fp64-frames frames (fp32's own rounding, for scale); peak
  memory of a separate process animating --plain-frames frames with that path alone at
  --memory-batch frames per call (default 1), over that process's RSS after loading the models;
- flatness: one stream of 1000 frames through the engine: ms per frame over frames 1-100
  and 901-1000 and over every 100-frame window (a trend, not one noisy window, is what
  would show a leak), peak memory after 100 and after 1000 frames.
Weights come from --checkpoint (TPSMM only), else the family's seeded recipe
(utils/weight_recipe.py, modules/fomm/weight_recipe.py, modules/mraa/weight_recipe.py). Every path
animates in mode 'relative'.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (puts the repository root on sys.path)
import torch  # noqa: E402

from modules import family_of_models  # noqa: E402
from modules.animation import animate_plain  # noqa: E402
from modules.fomm.animation import animate_fomm_plain  # noqa: E402
from modules.mraa.animation import animate_mraa_plain  # noqa: E402
from utils.io import atomic_write  # noqa: E402

PATH_PRECISION = {"exact": "fp32", "bf16": "bf16", "fp16": "fp16"}
PLAIN = {"tpsmm": animate_plain, "fomm": animate_fomm_plain, "mraa": animate_mraa_plain}  # each reference demo loop


def plain_loop(models: dict):
    """The family's plain per-frame path: fn(source, driving, models) -> predictions."""
    return PLAIN[family_of_models(models).name]


def engine(models: dict, source: torch.Tensor, path: str):
    """The family's animator (`Animator`, `FOMMAnimator`, `MRAAAnimator`) for one engine path ('exact', 'bf16', 'fp16')."""
    return family_of_models(models).animator_class()(models, source, precision=PATH_PRECISION[path])


def engine_run(animator, driving: torch.Tensor, batch: int) -> torch.Tensor:
    return torch.cat([animator(driving[i:i + batch]) for i in range(0, driving.shape[0], batch)], dim=0)


# ----------------------------------------------------------------------------- worker (one path, own process)

def worker(args) -> None:
    """Stream `args.frames` frames through one path; print JSON with time and memory along the stream.

    Frames cycle through a fixed 60-frame buffer (memory independent of the length).
    Reported: wall and CPU ms/frame over the first 100 frames, the last 100 and all, and
    the peak RSS after 100 frames and at the end (the per-video setup counted in both).
    """
    import gc

    torch.set_num_threads(args.threads)
    models = common.load_models(args.config, args.checkpoint)
    source, clip = common.real_frames(args.size, 60)
    gc.collect()
    baseline = common.rss_mb()  # models, frames and the Python runtime
    common.reset_peak_rss()  # the weight recipe / checkpoint load peaks are not the path's
    n, b = args.frames, args.batch
    wall, cpu, peak_at = [], [], {}
    done = 0
    if args.path == "plain":
        plain = plain_loop(models)
        plain(source, clip[:1], models)  # warm-up
        step = lambda i, k: plain(source, clip[i:i + k], models)  # noqa: E731
        k_max = 1
    else:
        animator = engine(models, source, args.path)  # counted: per-video setup
        animator(clip[:b])  # warm-up, sets the anchor
        step = lambda i, k: animator(clip[i:i + k])  # noqa: E731
        k_max = b
    while done < n:
        i = done % 60
        k = min(k_max, 60 - i, n - done)
        t0, c0 = time.perf_counter(), time.process_time()
        out = step(i, k)
        wall += [(time.perf_counter() - t0) / k] * k
        cpu += [(time.process_time() - c0) / k] * k
        del out
        done += k
        if done >= 100 and "100" not in peak_at:
            peak_at["100"] = common.peak_rss_mb()
    peak_at["end"] = common.peak_rss_mb()

    def mean(x):
        return sum(x) / max(1, len(x))

    print(json.dumps({"frames": done, "batch": k_max, "s_per_frame": common.median(wall),
                      "mean_s_per_frame": mean(wall), "first100_s": mean(wall[:100]), "last100_s": mean(wall[-100:]),
                      "first100_cpu_s": mean(cpu[:100]), "last100_cpu_s": mean(cpu[-100:]),
                      "windows_s": [mean(wall[i:i + 100]) for i in range(0, len(wall), 100)],
                      "peak_rss_mb": peak_at["end"], "peak_rss_100_mb": peak_at.get("100"),
                      "baseline_rss_mb": baseline}))


def run_worker(args, config: str, path: str, size: int, frames: int, batch: int) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--path", path, "--size", str(size),
           "--frames", str(frames), "--batch", str(batch), "--threads", str(args.threads),
           "--config", config] + (["--checkpoint", args.checkpoint] if args.checkpoint else [])
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"worker {path} {size}px failed: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- one family at one size

def timed_rounds(calls: dict, frames: dict, rounds: int) -> tuple[dict, dict]:
    """Wall and process-CPU seconds per frame of every call, `rounds` interleaved rounds."""
    times = {name: [] for name in calls}
    cpu = {name: [] for name in calls}  # process CPU time: steadier than wall time on a shared machine
    for _ in range(rounds):
        for name, fn in calls.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            times[name].append((time.perf_counter() - t0) / frames[name])
            cpu[name].append((time.process_time() - c0) / frames[name])
    return times, cpu


def measure_size(args, config: str, models: dict, size: int, paths: list[str]) -> dict:
    """Every path of one family at one size: {path: timings, FLOPs, differences, setup, memory}."""
    plain = plain_loop(models)
    source, driving = common.real_frames(size, args.frames)
    b = args.batch
    animators = {p: engine(models, source, p) for p in paths}
    setup = {}
    for p in paths:  # time the once-per-video work separately
        t0 = time.perf_counter()
        engine(models, source, p)
        setup[p] = time.perf_counter() - t0
    nf = {"plain": min(args.plain_frames, args.frames), **{p: args.frames for p in paths}}
    calls = {"plain": lambda: plain(source, driving[:nf["plain"]], models)}
    for p in paths:
        calls[p] = (lambda a=animators[p]: engine_run(a, driving, b))
    outputs = {name: fn() for name, fn in calls.items()}  # warm-up, and the outputs compared
    truth = None
    if args.fp64_frames:  # the same maths in float64: how far each fp32 path is from exact arithmetic
        n64 = min(args.fp64_frames, nf["plain"])
        models64 = {k: copy.deepcopy(m).double() for k, m in models.items()}
        truth = plain(source.double(), driving[:n64].double(), models64).float()
        del models64
    times, cpu = timed_rounds(calls, nf, args.rounds)
    flops = {"plain": common.count_flops(lambda: plain(source, driving[:2], models))
             - common.count_flops(lambda: plain(source, driving[:1], models))}
    for p in paths:
        flops[p] = common.count_flops(lambda a=animators[p]: a(driving[:b])) / b
    memory = {}
    if not args.no_memory:  # same frames and batch for every path, each in a fresh process
        for name in calls:
            memory[name] = run_worker(args, config, name, size, frames=nf["plain"],
                                      batch=1 if name == "plain" else args.memory_batch)
    base, cpu_base = common.median(times["plain"]), common.median(cpu["plain"])
    entry = {}
    for name in calls:
        t, c = common.median(times[name]), common.median(cpu[name])
        ref, got = outputs["plain"], outputs[name][:outputs["plain"].shape[0]]
        entry[name] = {"s_per_frame": t, "ratio": t / base, "gflop": flops[name] / 1e9,
                       "max_abs_diff": float((got - ref).abs().max()), "psnr": common.psnr(got, ref),
                       "max_abs_diff_fp64": None if truth is None
                       else float((outputs[name][:truth.shape[0]] - truth).abs().max()),
                       "setup_s": setup.get(name), "memory": memory.get(name), "times": times[name],
                       "cpu_s_per_frame": c, "cpu_ratio": c / cpu_base, "cpu_times": cpu[name]}
    return entry


def table_row(family: str, size: int, name: str, e: dict, peak: float, peak_name: str) -> list:
    e["gflops"] = e["gflop"] / e["s_per_frame"]
    e["of_peak"] = e["gflops"] / peak
    mem = e["memory"]
    return [family, size, name, f"{e['s_per_frame'] * 1e3:.0f}", f"{e['ratio']:.2f}x", f"{1 / e['ratio']:.2f}x",
            f"{e['cpu_ratio']:.2f}x", f"{e['gflop']:.1f}", f"{e['gflops']:.0f}",
            f"{100 * e['of_peak']:.0f}% {peak_name}",
            "-" if name == "plain" else f"{e['max_abs_diff']:.1e}",
            "-" if name == "plain" else f"{e['psnr']:.1f}",
            "-" if e["max_abs_diff_fp64"] is None else f"{e['max_abs_diff_fp64']:.1e}",
            f"{mem['peak_rss_mb']:.0f} (+{mem['peak_rss_mb'] - mem['baseline_rss_mb']:.0f})" if mem else "-"]


HEADER = ["family", "px", "path", "ms/frame", "time vs plain", "speed-up", "CPU time vs plain", "GFLOP/frame",
          "GFLOP/s", "of peak", "max |diff| vs plain", "PSNR vs plain (dB)", "max |diff| vs fp64",
          "peak RSS MB at batch 1 (+ over models)"]


def flat_check(args, config: str, flat: int) -> dict:
    """The long-stream check of the first family; prints its table."""
    rows, results = [], {}
    for p in [p for p in args.flat_paths.split(",") if p]:
        r = run_worker(args, config, p, args.flat_size, flat, batch=args.batch)
        results[p] = r
        rows.append([p, args.flat_size, f"{r['first100_s'] * 1e3:.0f}", f"{r['last100_s'] * 1e3:.0f}",
                     f"{r['first100_cpu_s'] * 1e3:.0f}", f"{r['last100_cpu_s'] * 1e3:.0f}",
                     f"{r['peak_rss_100_mb']:.0f}", f"{r['peak_rss_mb']:.0f}",
                     " ".join(f"{w * 1e3:.0f}" for w in r["windows_s"])])
    print()
    print(common.markdown_table(
        ["path", "px", "ms/frame, frames 1-100", f"ms/frame, frames {flat - 99}-{flat}",
         "CPU ms/frame, 1-100", f"CPU ms/frame, {flat - 99}-{flat}", "peak RSS after 100 frames (MB)",
         f"peak RSS after {flat} frames (MB)", "ms/frame per 100-frame window"], rows))
    return results


# ----------------------------------------------------------------------------- main

def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default="tpsmm,fomm", help="model families to bench: tpsmm,fomm,mraa")
    parser.add_argument("--config", default=os.path.join(common.ROOT, "config", "vox-256.yaml"),
                        help="the TPSMM config")
    parser.add_argument("--fomm-config", default=os.path.join(common.ROOT, "config", "fomm", "vox-256.yaml"))
    parser.add_argument("--mraa-config", default=os.path.join(common.ROOT, "config", "mraa", "vox256.yaml"))
    parser.add_argument("--checkpoint", default=None, help="TPSMM weights (default: the seeded recipe)")
    parser.add_argument("--sizes", default="256,384,512")
    parser.add_argument("--frames", type=int, default=8, help="frames per timed call of the engine")
    parser.add_argument("--plain-frames", type=int, default=4,
                        help="frames per timed call of the plain path; also the frames of each memory process")
    parser.add_argument("--batch", type=int, default=4, help="engine batch of driving frames (timing, flatness)")
    parser.add_argument("--memory-batch", type=int, default=1, help="engine batch of the peak-memory processes")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (median)")
    parser.add_argument("--paths", default="exact,bf16", help="engine paths beside plain: exact,bf16,fp16")
    parser.add_argument("--flat", default="1000", help="frames streamed for the flatness check ('' to skip)")
    parser.add_argument("--flat-size", type=int, default=256)
    parser.add_argument("--flat-paths", default="bf16", help="paths for the flatness check (first family)")
    parser.add_argument("--no-memory", action="store_true", help="skip the per-path peak-memory processes")
    parser.add_argument("--fp64-frames", type=int, default=2,
                        help="frames of the plain path run in float64, the accuracy yardstick of every path (0: skip)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--path", default="exact", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=256, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.worker:
        return worker(args)
    if args.checkpoint and set(args.families.split(",")) - {"tpsmm"}:
        raise SystemExit("--checkpoint holds TPSMM weights: bench --families tpsmm with it")
    torch.set_num_threads(args.threads)
    info = common.machine_info(args.threads)
    peak32 = common.matmul_peak(torch.float32)
    peak16 = common.matmul_peak(torch.bfloat16, n=4096)
    configs = {"tpsmm": args.config, "fomm": args.fomm_config, "mraa": args.mraa_config}
    families = [f for f in args.families.split(",") if f]
    print(f"# {info['cpu']}, {info['cores']} cores, {args.threads} threads, torch {info['torch']}, "
          f"ISA {' '.join(info['isa'])}, load average at start {info['loadavg'][0]:.1f}")
    print(f"# matmul peak: fp32 {peak32:.0f} GFLOP/s, bf16 {peak16:.0f} GFLOP/s")
    print(f"# weights: {args.checkpoint or 'seeded recipe'}; configs "
          + ", ".join(f"{f} {os.path.relpath(configs[f], common.ROOT)}" for f in families)
          + f"; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}; engine batch {args.batch}, "
          f"memory processes at batch {args.memory_batch}")
    paths = [p for p in args.paths.split(",") if p]
    results = {"machine": info, "peak_gflops": {"fp32": peak32, "bf16": peak16}, "families": {}, "flat": {}}
    for family in families:
        models = common.load_models(configs[family], args.checkpoint)
        results["families"][family] = {}
        for size in [int(s) for s in args.sizes.split(",") if s]:
            entry = measure_size(args, configs[family], models, size, paths)
            results["families"][family][size] = entry
            print(f"# {family} {size}px: "
                  + ", ".join(f"{k} {v['s_per_frame'] * 1e3:.0f} ms/frame" for k, v in entry.items())
                  + f"; load average {os.getloadavg()[0]:.1f}", flush=True)
        del models

    rows = []
    if any(results["families"].values()):  # the peaks again: the best of the two windows is the machine's
        peak32 = max(peak32, common.matmul_peak(torch.float32))
        peak16 = max(peak16, common.matmul_peak(torch.bfloat16, n=4096))
        results["peak_gflops"] = {"fp32": peak32, "bf16": peak16}
        print(f"# matmul peak (best of start and end): fp32 {peak32:.0f} GFLOP/s, bf16 {peak16:.0f} GFLOP/s")
        for family, sizes in results["families"].items():
            for size, entry in sizes.items():
                for name, e in entry.items():
                    reduced = name in ("bf16", "fp16")
                    rows.append(table_row(family, size, name, e, peak16 if reduced else peak32,
                                          "bf16" if reduced else "fp32"))
        print()
        print(common.markdown_table(HEADER, rows))

    flat = int(args.flat) if args.flat else 0
    if flat and families:
        results["flat"] = flat_check(args, configs[families[0]], flat)
    print(f"\n# load average at end {os.getloadavg()[0]:.1f} (2 cores shared with other processes: "
          f"ratios are from interleaved rounds of this run)")
    if args.json:
        with atomic_write(args.json) as f:
            json.dump(results, f, indent=1, default=str)


if __name__ == "__main__":
    main()
