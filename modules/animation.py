"""Animating a source image from driving frames: standard, relative and AVD modes (TPSMM demo semantics).

`Animator` is the exact fast path: the source's keypoints, its downsampled copy and
its inpainting-encoder features are computed once per video; driving frames go
through in batches under `torch.inference_mode`. `make_animation` wraps it for
whole tensors.
"""
from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np
import torch
from torch import nn

MODES = ("standard", "relative", "avd")


def hull_area(points: torch.Tensor) -> float:
    """Area of the convex hull of 2-D points (N, 2) (monotone chain, float64)."""
    pts = sorted(set(map(tuple, points.detach().double().cpu().numpy().tolist())))
    if len(pts) < 3:
        return 0.0

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower, upper = [], []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    hull = np.array(lower[:-1] + upper[:-1])
    x, y = hull[:, 0], hull[:, 1]
    return float(0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def relative_kp(kp_source: dict, kp_driving: dict, kp_driving_initial: dict) -> dict:
    """kp_S + (kp_d - kp_D0) * sqrt(area(hull(kp_S)) / area(hull(kp_D0))) (TPSMM demo, batch element 0's hulls)."""
    scale = np.sqrt(hull_area(kp_source["fg_kp"][0])) / np.sqrt(hull_area(kp_driving_initial["fg_kp"][0]))
    diff = (kp_driving["fg_kp"] - kp_driving_initial["fg_kp"]) * float(scale)
    return {**kp_driving, "fg_kp": diff + kp_source["fg_kp"]}


def _check_frames(name: str, x: torch.Tensor, batch_one: bool) -> None:
    if not torch.is_tensor(x) or x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"{name} must be a float tensor of shape ({'1' if batch_one else 'T'}, 3, H, W), "
                         f"got {tuple(x.shape) if torch.is_tensor(x) else type(x).__name__}")
    if batch_one and x.shape[0] != 1:
        raise ValueError(f"{name} must have batch size 1, got {x.shape[0]}")


class Animator:
    """Animate one source image with a stream of driving frames.

    models: the dict from `modules.build_models` (weights loaded, eval mode).
    The first driving frame seen is the relative-mode anchor.
    """

    def __init__(self, models: dict[str, nn.Module], source: torch.Tensor, mode: str = "relative"):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if mode == "avd" and "avd_network" not in models:
            raise ValueError("mode 'avd' needs an avd_network in the models")
        _check_frames("source", source, batch_one=True)
        self.mode = mode
        self.kp_detector = models["kp_detector"]
        self.dense_motion = models["dense_motion_network"]
        self.inpainting = models["inpainting_network"]
        self.avd = models.get("avd_network")
        self.source = source
        with torch.inference_mode():
            self.kp_source = self.kp_detector(source)
            self.source_down = self.dense_motion.downsample(source)
            self.encoder_maps = self.inpainting.encode(source)
        self.kp_initial: dict | None = None

    @torch.inference_mode()
    def keypoints(self, driving: torch.Tensor) -> dict:
        """Keypoints to animate with, for a batch of driving frames (T, 3, H, W)."""
        kp_driving = self.kp_detector(driving)
        if self.kp_initial is None:
            self.kp_initial = {k: v[:1] for k, v in kp_driving.items()}
        if self.mode == "standard":
            return kp_driving
        t = driving.shape[0]
        kp_source = {k: v.expand(t, *v.shape[1:]) for k, v in self.kp_source.items()}
        if self.mode == "relative":
            return relative_kp(kp_source, kp_driving, {k: v.expand_as(kp_driving[k]) for k, v in self.kp_initial.items()})
        return self.avd(kp_source, kp_driving)

    @torch.inference_mode()
    def __call__(self, driving: torch.Tensor) -> torch.Tensor:
        """Predictions (T, 3, H, W) for a batch of driving frames."""
        _check_frames("driving", driving, batch_one=False)
        kp_norm = self.keypoints(driving)
        t = driving.shape[0]
        kp_source = {k: v.expand(t, *v.shape[1:]) for k, v in self.kp_source.items()}
        dense = self.dense_motion(self.source, kp_driving=kp_norm, kp_source=kp_source,
                                  source_down=self.source_down.expand(t, -1, -1, -1))
        out = self.inpainting(self.source, dense, encoder_maps=self.encoder_maps, with_warped_maps=False)
        return out["prediction"]

    def stream(self, batches: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        for batch in batches:
            yield self(batch)


def make_animation(source: torch.Tensor, driving: torch.Tensor, models: dict[str, nn.Module],
                   mode: str = "relative", batch_size: int = 8) -> torch.Tensor:
    """Animate `source` (1, 3, H, W) with `driving` (T, 3, H, W), floats in [0, 1] -> (T, 3, H, W).

    Same semantics as the reference demo (first driving frame is the relative anchor,
    no background predictor). Runs on the device of `source`; models must be there too.
    """
    if "generator" in models:  # FOMM family
        from modules.fomm import make_fomm_animation
        return make_fomm_animation(source, driving, models, mode=mode, batch_size=batch_size)
    _check_frames("driving", driving, batch_one=False)
    animator = Animator(models, source, mode=mode)
    return torch.cat([animator(driving[i:i + batch_size]) for i in range(0, driving.shape[0], batch_size)], dim=0)
