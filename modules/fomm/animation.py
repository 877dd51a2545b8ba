"""FOMM animation: relative motion transfer with Jacobians and adaptive movement scale (FOMM Sec. 3.5, appendix A.3).

`normalize_kp` is the reference demo's keypoint normalisation; `FOMMAnimator` caches
everything that depends on the source only (keypoints, encoder features, the
downsampled source) and animates batches of driving frames under `inference_mode`.
"""
from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np
import torch
from torch import nn

from modules.animation import _check_frames, hull_area

# mode -> (use_relative_movement, use_relative_jacobian, adapt_movement_scale)
FOMM_MODES: dict[str, tuple[bool, bool, bool]] = {
    "relative": (True, True, True),   # the reference demo's default (demo.py --relative --adapt_scale)
    "standard": (False, False, False),  # absolute driving keypoints
}


def adapt_scale(kp_source: dict, kp_driving_initial: dict) -> float:
    """sqrt(hull area of the source keypoints) / sqrt(hull area of the first driving frame's), batch element 0."""
    return float(np.sqrt(hull_area(kp_source["value"][0])) / np.sqrt(hull_area(kp_driving_initial["value"][0])))


def normalize_kp(kp_source: dict, kp_driving: dict, kp_driving_initial: dict, adapt_movement_scale: bool = False,
                 use_relative_movement: bool = False, use_relative_jacobian: bool = False) -> dict:
    """Keypoints to animate with (FOMM Eq. 8-9): value = (kp_d - kp_d0) * s + kp_s, J = (J_d inv(J_d0)) J_s.

    s is `adapt_scale` when `adapt_movement_scale`, else 1; without relative movement the
    driving keypoints are returned unchanged (absolute transfer).
    """
    out = dict(kp_driving)
    if not use_relative_movement:
        return out
    scale = adapt_scale(kp_source, kp_driving_initial) if adapt_movement_scale else 1.0
    out["value"] = (kp_driving["value"] - kp_driving_initial["value"]) * scale + kp_source["value"]
    if use_relative_jacobian and "jacobian" in kp_driving:
        jacobian_diff = torch.matmul(kp_driving["jacobian"], torch.inverse(kp_driving_initial["jacobian"]))
        out["jacobian"] = torch.matmul(jacobian_diff, kp_source["jacobian"])  # B x K x 2 x 2
    return out


def resolve_options(mode: str = "relative", use_relative_movement: bool | None = None,
                    use_relative_jacobian: bool | None = None,
                    adapt_movement_scale: bool | None = None) -> tuple[bool, bool, bool]:
    """Mode preset, then the explicit keyword options on top (None keeps the preset)."""
    if mode == "avd":
        raise ValueError("mode 'avd' needs the TPSMM AVD network; FOMM models animate with mode 'relative' or "
                         "'standard' (or use_relative_movement / use_relative_jacobian / adapt_movement_scale)")
    if mode not in FOMM_MODES:
        raise ValueError(f"FOMM mode must be one of {', '.join(FOMM_MODES)}, got {mode!r}")
    relative, jacobian, adapt = FOMM_MODES[mode]
    relative = relative if use_relative_movement is None else bool(use_relative_movement)
    jacobian = jacobian if use_relative_jacobian is None else bool(use_relative_jacobian)
    adapt = adapt if adapt_movement_scale is None else bool(adapt_movement_scale)
    return relative, jacobian, adapt


def _expand(kp: dict, t: int) -> dict:
    return {k: v.expand(t, *v.shape[1:]) for k, v in kp.items()}


class FOMMAnimator:
    """Animate one source image (1, C, H, W) with a stream of FOMM driving frames.

    models: {'kp_detector', 'generator', ...} from `modules.build_models` (weights loaded,
    eval mode). The relative-mode anchor is `anchor`, or else the first driving frame seen.
    """

    def __init__(self, models: dict[str, nn.Module], source: torch.Tensor, mode: str = "relative",
                 use_relative_movement: bool | None = None, use_relative_jacobian: bool | None = None,
                 adapt_movement_scale: bool | None = None, anchor: torch.Tensor | None = None):
        """`anchor` (1, C, H, W): the relative-mode reference frame; default: the first driving frame seen."""
        self.relative, self.relative_jacobian, self.adapt = resolve_options(
            mode, use_relative_movement, use_relative_jacobian, adapt_movement_scale)
        for name in ("kp_detector", "generator"):
            if name not in models:
                raise ValueError(f"FOMM animation needs '{name}' in the models (got {', '.join(models)})")
        _check_frames("source", source, batch_one=True)
        self.kp_detector = models["kp_detector"]
        self.generator = models["generator"]
        self.source = source
        with torch.inference_mode():
            self.kp_source = self.kp_detector(source)
            self.encoded = self.generator.encode(source)
            dense = self.generator.dense_motion_network
            self.source_down = dense.downsample(source) if dense is not None else None
            self.kp_initial: dict | None = None
            if anchor is not None:
                _check_frames("anchor", anchor, batch_one=True)
                self.kp_initial = self.kp_detector(anchor)

    @torch.inference_mode()
    def keypoints(self, driving: torch.Tensor) -> dict:
        """Normalised keypoints for a batch of driving frames (T, C, H, W)."""
        kp_driving = self.kp_detector(driving)
        if self.kp_initial is None:
            self.kp_initial = {k: v[:1] for k, v in kp_driving.items()}
        t = driving.shape[0]
        return normalize_kp(_expand(self.kp_source, t), kp_driving, _expand(self.kp_initial, t),
                            adapt_movement_scale=self.adapt, use_relative_movement=self.relative,
                            use_relative_jacobian=self.relative_jacobian)

    @torch.inference_mode()
    def generate(self, driving: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every generator output (prediction, deformed, mask, ...) for a batch of driving frames."""
        _check_frames("driving", driving, batch_one=False)
        kp_norm = self.keypoints(driving)
        t = driving.shape[0]
        source_down = self.source_down.expand(t, -1, -1, -1) if self.source_down is not None else None
        out = self.generator(self.source.expand(t, -1, -1, -1), kp_driving=kp_norm,
                             kp_source=_expand(self.kp_source, t),
                             encoded=self.encoded.expand(t, -1, -1, -1), source_down=source_down)
        out["kp_norm"] = kp_norm
        return out

    def __call__(self, driving: torch.Tensor) -> torch.Tensor:
        """Predictions (T, C, H, W) for a batch of driving frames."""
        return self.generate(driving)["prediction"]

    def stream(self, batches: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        for batch in batches:
            yield self(batch)


def make_fomm_animation(source: torch.Tensor, driving: torch.Tensor, models: dict[str, nn.Module],
                        mode: str = "relative", batch_size: int = 8, use_relative_movement: bool | None = None,
                        use_relative_jacobian: bool | None = None,
                        adapt_movement_scale: bool | None = None) -> torch.Tensor:
    """Animate `source` (1, C, H, W) with `driving` (T, C, H, W), floats in [0, 1] -> (T, C, H, W).

    mode 'relative' = relative movement + relative Jacobian + adaptive movement scale
    (the reference demo's default), 'standard' = absolute keypoints; the keyword options
    override the preset one by one (e.g. the published configs' `normalization_params`:
    relative movement and Jacobian without adaptive scale).
    """
    _check_frames("driving", driving, batch_one=False)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    animator = FOMMAnimator(models, source, mode=mode, use_relative_movement=use_relative_movement,
                            use_relative_jacobian=use_relative_jacobian, adapt_movement_scale=adapt_movement_scale)
    return torch.cat([animator(driving[i:i + batch_size]) for i in range(0, driving.shape[0], batch_size)], dim=0)
