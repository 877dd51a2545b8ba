"""FOMM animation: relative motion transfer with Jacobians and adaptive movement scale (FOMM Sec. 3.5, appendix A.3).

`normalize_kp` is the reference demo's keypoint normalisation; `FOMMAnimator` caches
everything that depends on the source only (keypoints, encoder features, the
downsampled source) and animates batches of driving frames under `inference_mode`.
"""
from __future__ import annotations

from fractions import Fraction
from math import lcm

import numpy as np
import torch
from torch import nn

from modules.animation import _check_frames, engine_precision, hull_area, prepared

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


def size_multiple(config: dict) -> int:
    """Frame sides a FOMM config's networks accept are multiples of this: the keypoint and
    dense-motion hourglasses pool `num_blocks` times after their `scale_factor`, and the
    generator's encoder `num_down_blocks` times (a sufficient multiple)."""
    mp = config.get("model_params", {})
    kp, gen = mp.get("kp_detector_params", {}), mp.get("generator_params", {})
    dense = gen.get("dense_motion_params") or {}
    multiple = 2 ** int(gen.get("num_down_blocks", 0))
    for params in (kp, dense):
        if "num_blocks" in params:
            per = Fraction(2 ** int(params["num_blocks"])) / Fraction(str(params.get("scale_factor", 1)))
            multiple = lcm(multiple, per.numerator)
    return multiple


class FOMMAnimator:
    """Animate one source image (1, C, H, W) with a stream of FOMM driving frames.

    models: {'kp_detector', 'generator', ...} from `modules.build_models` (weights loaded,
    eval mode). The generator's own forward runs on a prepared copy (folded UpBlocks; with
    bf16/fp16 the dense-motion hourglass and the decoder in that dtype, channels-last) with the
    per-video caches: source keypoints, encoder features, downsampled source and its heatmaps.
    Keypoints and Jacobians (an fp32 detector), sparse motions, softmax, sigmoids and sampling
    stay fp32. anchor (1, C, H, W): the relative-mode reference frame; default: the first
    driving frame seen. background: FOMM has no background predictor (True is an error).
    """

    size_multiple = staticmethod(size_multiple)  # frame sides must be multiples of size_multiple(config)

    def __init__(self, models: dict[str, nn.Module], source: torch.Tensor, mode: str = "relative",
                 precision: str = "fp32", anchor: torch.Tensor | None = None, background: bool = False,
                 use_relative_movement: bool | None = None, use_relative_jacobian: bool | None = None,
                 adapt_movement_scale: bool | None = None, channels_last: bool | None = None,
                 fold_upsampling: bool = True):
        self.relative, self.relative_jacobian, self.adapt = resolve_options(
            mode, use_relative_movement, use_relative_jacobian, adapt_movement_scale)
        for name in ("kp_detector", "generator"):
            if name not in models:
                raise ValueError(f"FOMM animation needs '{name}' in the models (got {', '.join(models)})")
        if background:
            raise ValueError("background=True: the FOMM family has no background predictor")
        _check_frames("source", source, batch_one=True)
        self.precision, self.dtype = engine_precision(precision, "FOMM", source.device)  # 'auto' -> fp32/bf16/fp16
        if channels_last is None:
            channels_last = self.dtype != torch.float32
        opts = dict(dtype=self.dtype, channels_last=channels_last, fold_upsampling=fold_upsampling)
        self.kp_net = prepared(models["kp_detector"], **dict(opts, dtype=torch.float32))  # keypoints, Jacobians fp32
        self.generator = prepared(models["generator"], **opts, keep_fp32=("first", "down_blocks"))
        self.source = source.float()
        with torch.inference_mode():
            self.kp_source = self.kp_net(self.source)
            self.encoded = self.generator.encode(self.source).float().contiguous()  # once per video, fp32
            dense = self.generator.dense_motion_network
            self.source_down = self.source_heatmap = None
            if dense is not None:
                self.source_down = dense.downsample(self.source)
                self.source_heatmap = dense.source_heatmap(self.source_down.shape[2:], self.kp_source)
            self.kp_initial: dict | None = None
            if anchor is not None:
                _check_frames("anchor", anchor, batch_one=True)
                self.kp_initial = self.kp_net(anchor.float())

    def kp_detector(self, image: torch.Tensor) -> dict:
        """FOMMKPDetector.forward of the prepared fp32 copy: {'value', 'jacobian'}."""
        return self.kp_net(image)

    @torch.inference_mode()
    def keypoints(self, driving: torch.Tensor) -> dict:
        """Normalised keypoints for a batch of driving frames (T, C, H, W)."""
        kp_driving = self.kp_net(driving)
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
        kp_norm = self.keypoints(driving.float())
        t = driving.shape[0]
        out = self.generator(self.source, kp_driving=kp_norm, kp_source=_expand(self.kp_source, t),
                             encoded=self.encoded, source_down=self.source_down,
                             source_heatmap=self.source_heatmap)
        out["prediction"] = out["prediction"].contiguous()
        out["kp_norm"] = kp_norm
        return out

    def __call__(self, driving: torch.Tensor) -> torch.Tensor:
        """Predictions (T, C, H, W), fp32, for a batch of driving frames."""
        return self.generate(driving)["prediction"]


def make_fomm_animation(source: torch.Tensor, driving: torch.Tensor, models: dict[str, nn.Module],
                        mode: str = "relative", batch_size: int = 8, use_relative_movement: bool | None = None,
                        use_relative_jacobian: bool | None = None, adapt_movement_scale: bool | None = None,
                        precision: str = "fp32", anchor: torch.Tensor | None = None) -> torch.Tensor:
    """Animate `source` (1, C, H, W) with `driving` (T, C, H, W), floats in [0, 1] -> (T, C, H, W).

    mode 'relative' = relative movement + relative Jacobian + adaptive movement scale
    (the reference demo's default), 'standard' = absolute keypoints; the keyword options
    override the preset one by one (e.g. the published configs' `normalization_params`:
    relative movement and Jacobian without adaptive scale). precision: 'fp32', 'bf16' or
    'fp16' (see `FOMMAnimator`); anchor: the relative-mode reference frame.
    """
    _check_frames("driving", driving, batch_one=False)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    animator = FOMMAnimator(models, source, mode=mode, precision=precision, anchor=anchor,
                            use_relative_movement=use_relative_movement, use_relative_jacobian=use_relative_jacobian,
                            adapt_movement_scale=adapt_movement_scale)
    return torch.cat([animator(driving[i:i + batch_size]) for i in range(0, driving.shape[0], batch_size)], dim=0)


@torch.no_grad()
def animate_fomm_plain(source: torch.Tensor, driving: torch.Tensor, models: dict[str, nn.Module],
                       mode: str = "relative") -> torch.Tensor:
    """The reference FOMM demo's loop (demo.py make_animation), the baseline of the benches.

    Batch 1, one frame at a time, no caching: the source keypoints and the first driving
    frame's are computed once (as the reference does); the generator re-encodes the source
    and rebuilds its heatmaps for every frame. mode: 'relative' (relative movement and
    Jacobian, adaptive scale) or 'standard'.
    """
    relative, jacobian, adapt = resolve_options(mode)
    kp_detector, generator = models["kp_detector"], models["generator"]
    kp_source = kp_detector(source)
    kp_initial = kp_detector(driving[:1])
    out = []
    for t in range(driving.shape[0]):
        kp_driving = kp_detector(driving[t:t + 1])
        kp_norm = normalize_kp(kp_source, kp_driving, kp_initial, adapt_movement_scale=adapt,
                               use_relative_movement=relative, use_relative_jacobian=jacobian)
        out.append(generator(source, kp_driving=kp_norm, kp_source=kp_source)["prediction"])
    return torch.cat(out, dim=0)  # T x C x H x W
