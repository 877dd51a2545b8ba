"""MRAA's PCA of the region covariances: the closed-form 2x2 eigen-decomposition on the tensor's device against
the published path (`torch.svd` of a CPU copy, then back to the device).

    .venv/bin/python bench/bench_mraa_eig.py [--device cpu|cuda] [--counts 10,80,1280,20480] [--rounds 50]

Prints, per number of covariances (batch x regions; vox256 animates 10 regions per frame): microseconds
per call of each path (median of --rounds), and the largest difference of the affines between them on
random covariances. Then the full-size region predictor (config/mraa/vox256.yaml, recipe weights) at
256 px, batch 1 and 8: ms per call with each path. On a GPU the published path adds a device-to-host copy
and a synchronisation per call; on the CPU only the decomposition itself differs.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402,F401  (puts the repository root on sys.path)
import torch  # noqa: E402

import modules.mraa.region_predictor as region_module  # noqa: E402
from modules import build_models  # noqa: E402
from modules.mraa.geometry import pca_affine  # noqa: E402
from modules.mraa.weight_recipe import fill_mraa_module  # noqa: E402


def published_pca(covar: torch.Tensor):
    """The published region predictor's PCA: torch.svd on a CPU copy, affine = u diag(sqrt(s))."""
    b, k = covar.shape[:2]
    u, s, _ = torch.svd(covar.view(-1, 2, 2).cpu())
    u, s = u.to(covar.device), s.to(covar.device)
    d = torch.diag_embed(s ** 0.5)
    return torch.matmul(u, d).view(b, k, 2, 2), u, d


def timed(fn, rounds: int, device: torch.device) -> float:
    """Median seconds of `fn()` over `rounds` calls (after 3 warm-up calls), synchronised on CUDA."""
    times = []
    for i in range(rounds + 3):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 3:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--counts", default="10,80,1280,20480", help="numbers of covariances per call")
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'covariances':>12} {'closed form us':>15} {'published us':>13} {'max |affine diff|':>18}")
    for count in (int(c) for c in args.counts.split(",")):
        factor = torch.randn(count, 1, 2, 2, device=device) * 0.3
        covar = factor @ factor.transpose(-1, -2)
        with torch.no_grad():
            ours = timed(lambda: pca_affine(covar), args.rounds, device)
            theirs = timed(lambda: published_pca(covar), args.rounds, device)
            diff = (pca_affine(covar)[0] - published_pca(covar)[0]).abs().max().item()
        print(f"{count:>12} {ours * 1e6:>15.1f} {theirs * 1e6:>13.1f} {diff:>18.2e}")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    region_predictor = build_models(os.path.join(root, "config", "mraa", "vox256.yaml"))["region_predictor"]
    region_predictor = fill_mraa_module("region_predictor", region_predictor).eval().to(device)
    print(f"\nregion predictor, vox256 at 256 px ({device}):")
    for batch in (1, 8):
        frames = torch.rand(batch, 3, 256, 256, device=device)
        with torch.no_grad():
            ours = timed(lambda: region_predictor(frames), max(5, args.rounds // 5), device)
            region_module.pca_affine = published_pca
            try:
                theirs = timed(lambda: region_predictor(frames), max(5, args.rounds // 5), device)
                ref = region_predictor(frames)["affine"]
            finally:
                region_module.pca_affine = pca_affine
            diff = (region_predictor(frames)["affine"] - ref).abs().max().item()
        print(f"  batch {batch}: closed form {ours * 1e3:.2f} ms, published svd path {theirs * 1e3:.2f} ms, "
              f"max |affine diff| {diff:.2e}")


if __name__ == "__main__":
    main()
